/* Set up the page for the vendored widget manager (part of dnnod, MIT). Loaded before
 * require.js and embed-amd.js on every page with widgets (nb_ipywidgets_js in _config.yml).
 *
 * 1. require.js configuration (a global `require` object defined before require.js loads is its
 *    config). embed-amd.js finds its own URL, and from it where its fonts are, through the AMD
 *    module name "@jupyter-widgets/html-manager/dist/..."; by default that resolves next to the
 *    page (book/@jupyter-widgets/...: 404s). Map it to this folder, where the fonts are vendored.
 *    Also map the module name "anywidget" (the front end of every anywidget, e.g. the mask
 *    painter of chapter 6) to the vendored anywidget.js here: the widget manager first asks
 *    require.js for a widget's module and only on failure goes to a CDN, so with this path the
 *    page never does. The widgets' own ES modules are in the stored widget state (`_esm`).
 *
 * 2. MathJax 2 API shim. The widget controls of ipywidgets 8 typeset their labels with
 *    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), but Sphinx loads MathJax 3, which has
 *    no Hub: every widget would throw "Cannot read properties of undefined (reading 'Queue')".
 *    Give MathJax 3 a Hub.Queue that typesets with typesetPromise. This runs after Sphinx's inline
 *    `window.MathJax = {...}` config and before MathJax 3 loads (deferred), so it merges into it.
 */
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here) {
    var dir = here.split("?")[0].replace(/\/[^\/]*$/, "");
    var cfg = window.require && typeof window.require === "object" ? window.require : {};
    cfg.paths = cfg.paths || {};
    cfg.paths["@jupyter-widgets/html-manager/dist"] = dir;
    cfg.paths["anywidget"] = dir + "/anywidget";        // anywidget.js (no .js: an AMD path)
    window.require = cfg;
  }
})();

(function () {
  function queue(cmd) {
    var el = cmd && cmd[2];
    var mj = window.MathJax;
    if (el && mj && typeof mj.typesetPromise === "function") {
      mj.typesetPromise([el]).catch(function () {});
    }
  }
  var cfg = window.MathJax || {};
  if (typeof cfg.typesetPromise === "function") {   // MathJax 3 already loaded
    cfg.Hub = cfg.Hub || { Queue: queue };
    return;
  }
  cfg.Hub = { Queue: queue };                       // used while MathJax 3 is still loading
  cfg.startup = cfg.startup || {};
  var ready = cfg.startup.ready;
  cfg.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = window.MathJax.Hub || { Queue: queue };
  };
  window.MathJax = cfg;
})();
