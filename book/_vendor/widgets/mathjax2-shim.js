/* The widget controls of ipywidgets 8 typeset their labels with the MathJax 2 API
 * (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])), but Sphinx loads MathJax 3, which has
 * no Hub: every widget then throws "Cannot read properties of undefined (reading 'Queue')".
 * This shim (part of dnnod, MIT) gives MathJax 3 a Hub.Queue that typesets with typesetPromise.
 * It must run after Sphinx's inline `window.MathJax = {...}` config and before MathJax 3 loads
 * (MathJax is deferred), so it merges into that config object. */
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
