// Live panels (part of dnnod, MIT): the front end of dnnod.viz.live.LivePanel (an anywidget).
// Self-contained ES module: the controls are built here and every change redraws at once, with
// no kernel behind the page (the static HTML book) as well as in Jupyter and Colab.
//
// mode "frames": each combination of the controls' options has a precomputed picture and line of
//   numbers (drawn by the Python Panel at build time); a change looks them up in `table`.
// mode "iou": two boxes from eight sliders, drawn on a canvas, their IoU computed here by boxIoU
//   (tests/test_live_js.py runs it under Node against torchvision.ops.box_iou).

/** IoU of two boxes [x1, y1, x2, y2] (paper Sec. 7's match criterion), with the intersection
 * and union areas: { iou, inter, union }. Empty boxes have IoU 0. */
export function boxIoU(a, b) {
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const union = Math.max(0, a[2] - a[0]) * Math.max(0, a[3] - a[1])
    + Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]) - inter;
  return { iou: union > 0 ? inter / union : 0, inter, union };
}

/** The box a group of four slider values (left, top, width, height) describes, clipped to the
 * canvas like dnnod.viz.widgets._box_from. */
export function boxFrom(x, y, w, h, width, height) {
  return [x, y, Math.min(width, x + w), Math.min(height, y + h)];
}

/** The options of control `n` (index `level`) given the indices of the controls before it. */
export function optionsAt(controls, depends, values, level) {
  const c = controls[level], dep = depends && depends[c.name];
  if (!dep) return c.options;
  const key = values.slice(0, level).join(",");
  return dep[key] || c.options;
}

/** Clamp every index to its control's options, left to right (an earlier control's change can
 * shorten a later control's list); returns the new indices. */
export function clampValues(controls, depends, values) {
  const out = values.slice();
  for (let l = 0; l < controls.length; l++) {
    const n = optionsAt(controls, depends, out, l).length;
    out[l] = Math.max(0, Math.min(n - 1, out[l] | 0));
  }
  return out;
}

const CSS = `
.dnnod-live { font: 13px/1.35 system-ui, sans-serif; color: #222; margin: 6px 0; }
.dnnod-live .ttl { font-weight: 600; margin-bottom: 4px; }
.dnnod-live .ctl { display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: center; margin: 3px 0; }
.dnnod-live[data-live-mode=iou] .ctl { display: grid; grid-template-rows: repeat(4, auto);
  grid-auto-flow: column; justify-content: start; }
.dnnod-live .one { display: flex; gap: 6px; align-items: center; }
.dnnod-live .one > .lab { min-width: 64px; text-align: right; color: #444; }
.dnnod-live .one > .val { min-width: 42px; font-variant-numeric: tabular-nums; }
.dnnod-live input[type=range] { width: 200px; }
.dnnod-live .tg button { border: 1px solid #bbb; background: #f4f4f4; padding: 2px 9px; cursor: pointer; }
.dnnod-live .tg button.on { background: #3b6fb6; color: #fff; border-color: #3b6fb6; }
.dnnod-live .info { margin: 6px 0; }
.dnnod-live img, .dnnod-live canvas { display: block; max-width: 100%; height: auto; }
`;

function h(tag, attrs = {}, kids = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "cls") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.appendChild(k);
  return e;
}

const COLORS = { A: "#1f77b4", B: "#ff7f0e", inter: "rgba(148, 103, 189, 0.45)" };

function render({ model, el }) {
  const controls = model.get("controls"), depends = model.get("depends") || {};
  const mode = model.get("mode");
  let values = clampValues(controls, depends, model.get("values"));
  const root = h("div", { cls: "dnnod-live", "data-live-mode": mode }, [h("style", { text: CSS })]);
  if (model.get("title")) root.appendChild(h("div", { cls: "ttl", text: model.get("title") }));
  const ctlBox = h("div", { cls: "ctl" });
  root.appendChild(ctlBox);
  const info = h("div", { cls: "info", "data-role": "info" });
  let out;
  if (mode === "iou") {
    const d = model.get("data");
    out = h("canvas", { width: d.width * 2, height: d.height * 2, "data-role": "canvas",
                        style: `width: ${model.get("frame_width")}px` });
  } else {
    out = h("img", { "data-role": "frame", alt: model.get("title") || "figure" });
    const fw = model.get("frame_width");
    if (fw) out.style.width = `${fw}px`;
  }
  root.append(info, out);
  el.appendChild(root);

  // one element per control; `sync` writes the current options and indices into them
  const parts = controls.map((c, level) => {
    const wrap = h("span", { cls: "one" }, [h("span", { cls: "lab", text: c.label })]);
    let input, val = null;
    if (c.kind === "dropdown") {
      input = h("select", { "data-control": c.name });
      input.onchange = () => set(level, Number(input.value));
    } else if (c.kind === "toggle") {
      input = h("span", { cls: "tg", "data-control": c.name });
    } else {
      input = h("input", { type: "range", min: 0, step: 1, "data-control": c.name });
      input.oninput = () => set(level, Number(input.value));
      val = h("span", { cls: "val" });
    }
    wrap.appendChild(input);
    if (val) wrap.appendChild(val);
    ctlBox.appendChild(wrap);
    return { c, input, val, shown: null };
  });

  function sync() {
    parts.forEach((p, level) => {
      const opts = optionsAt(controls, depends, values, level), v = values[level];
      const sig = opts.join("\u0000");
      if (p.c.kind === "dropdown") {
        if (p.shown !== sig) {
          p.input.replaceChildren(...opts.map((o, i) => h("option", { value: i, text: o })));
          p.shown = sig;
        }
        p.input.value = String(v);
      } else if (p.c.kind === "toggle") {
        if (p.shown !== sig) {
          p.input.replaceChildren(...opts.map((o, i) => {
            const b = h("button", { type: "button", "data-index": i, text: o });
            b.onclick = () => set(level, i);
            return b;
          }));
          p.shown = sig;
        }
        [...p.input.children].forEach((b, i) => b.classList.toggle("on", i === v));
      } else {
        p.input.max = String(opts.length - 1);
        p.input.value = String(v);
        p.val.textContent = opts[v];
      }
    });
  }

  function draw() {
    root.setAttribute("data-key", values.join(","));
    if (mode === "iou") return drawIoU();
    const hit = model.get("table")[values.join(",")];
    if (!hit) { info.textContent = "(no precomputed result for this combination)"; return; }
    const src = model.get("frames")[hit[0]];
    if (out.getAttribute("src") !== src) out.setAttribute("src", src);
    info.innerHTML = model.get("infos")[hit[1]];
  }

  function drawIoU() {
    const d = model.get("data"), W = d.width, H = d.height;
    const num = (name) => {
      const l = controls.findIndex((c) => c.name === name);
      return Number(controls[l].options[values[l]]);
    };
    const a = boxFrom(num("Ax"), num("Ay"), num("Aw"), num("Ah"), W, H);
    const b = boxFrom(num("Bx"), num("By"), num("Bw"), num("Bh"), W, H);
    const r = boxIoU(a, b);
    const ctx = out.getContext("2d");
    ctx.setTransform(2, 0, 0, 2, 0, 0);
    ctx.fillStyle = "#f5f5f5";
    ctx.fillRect(0, 0, W, H);
    const lt = [Math.max(a[0], b[0]), Math.max(a[1], b[1])], rb = [Math.min(a[2], b[2]), Math.min(a[3], b[3])];
    if (r.inter > 0) { ctx.fillStyle = COLORS.inter; ctx.fillRect(lt[0], lt[1], rb[0] - lt[0], rb[1] - lt[1]); }
    for (const [name, bx] of [["A", a], ["B", b]]) {
      ctx.strokeStyle = COLORS[name]; ctx.lineWidth = 2;
      ctx.strokeRect(bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1]);
      ctx.fillStyle = COLORS[name]; ctx.font = "bold 11px sans-serif";
      ctx.fillText(name, bx[0] + 3, bx[1] + 12);
    }
    ctx.fillStyle = "#222"; ctx.font = "12px sans-serif";
    ctx.fillText(`IoU = ${r.iou.toFixed(3)}`, 6, H - 6);
    const th = d.threshold;
    info.innerHTML = `intersection ${r.inter.toFixed(0)} px² / union ${r.union.toFixed(0)} px² = `
      + `<b>IoU ${r.iou.toFixed(3)}</b> (${r.iou >= th ? "a match" : "not a match"} at the VOC threshold ${th})`;
    root.setAttribute("data-iou", r.iou.toFixed(6));
  }

  function set(level, index) {
    const next = values.slice();
    next[level] = index;
    values = clampValues(controls, depends, next);
    sync();
    draw();
    model.set("values", values);
    model.save_changes();
  }

  model.on("change:values", () => {
    const v = clampValues(controls, depends, model.get("values"));
    if (v.join(",") !== values.join(",")) { values = v; sync(); draw(); }
  });
  sync();
  draw();
}

export default { render };
