// Box targets (part of dnnod, MIT): draw, move and resize boxes on a window with the mouse (or a
// finger) and watch their five mask targets of Eq. 1 (paper Sec. 3), computed here in the browser.
// Self-contained ES module, the front end of dnnod.viz.boxtargets.BoxTargets (an anywidget).
//
// unionTargets is pure (tests/test_maskpaint_js.py runs it under Node against
// dnnod.masks.mask_targets): m^h(i, j) = area(T(i, j) ∩ U_h) / area(T(i, j)), U_h the union of
// part h of every box, computed exactly on the grid of elementary rectangles cut by every cell
// edge and every box edge (dnnod/masks.py does the same with matmuls).

export const MASK_TYPES = ["full", "top", "bottom", "left", "right"];

/** The five parts of a box [x1, y1, x2, y2]: full, top, bottom, left, right halves. */
export function boxParts(b) {
  const [x1, y1, x2, y2] = b, xm = (x1 + x2) / 2, ym = (y1 + y2) / 2;
  return [[x1, y1, x2, y2], [x1, y1, x2, ym], [x1, ym, x2, y2], [x1, y1, xm, y2], [xm, y1, x2, y2]];
}

/** Eq. 1 targets of `boxes` ([[x1, y1, x2, y2]], pixels) in `win` on a d × d grid:
 * Float64Array [5 · d · d], mask-major, row i (y) then column j (x). */
export function unionTargets(boxes, win, d) {
  const [wx0, wy0, wx1, wy1] = win, cw = (wx1 - wx0) / d, ch = (wy1 - wy0) / d;
  const out = new Float64Array(5 * d * d);
  for (let t = 0; t < 5; t++) {
    const rects = [];
    for (const b of boxes) {
      const p = boxParts(b);
      const r = [Math.min(Math.max(p[t][0], wx0), wx1), Math.min(Math.max(p[t][1], wy0), wy1),
        Math.min(Math.max(p[t][2], wx0), wx1), Math.min(Math.max(p[t][3], wy0), wy1)];
      if (r[2] > r[0] && r[3] > r[1]) rects.push(r);
    }
    if (!rects.length) continue;
    const xs = [], ys = [];
    for (let k = 0; k <= d; k++) { xs.push(wx0 + k * cw); ys.push(wy0 + k * ch); }
    for (const r of rects) { xs.push(r[0], r[2]); ys.push(r[1], r[3]); }
    xs.sort((a, b) => a - b); ys.sort((a, b) => a - b);
    for (let b = 0; b + 1 < ys.length; b++) {
      const hy = ys[b + 1] - ys[b];
      if (hy <= 0) continue;
      const my = (ys[b] + ys[b + 1]) / 2, i = Math.min(d - 1, Math.max(0, Math.floor((my - wy0) / ch)));
      for (let a = 0; a + 1 < xs.length; a++) {
        const hx = xs[a + 1] - xs[a];
        if (hx <= 0) continue;
        const mx = (xs[a] + xs[a + 1]) / 2;
        let inside = false;
        for (const r of rects) if (r[0] <= mx && mx < r[2] && r[1] <= my && my < r[3]) { inside = true; break; }
        if (!inside) continue;
        const j = Math.min(d - 1, Math.max(0, Math.floor((mx - wx0) / cw)));
        out[t * d * d + i * d + j] += hx * hy;
      }
    }
    for (let k = 0; k < d * d; k++) out[t * d * d + k] = Math.min(1, out[t * d * d + k] / (cw * ch));
  }
  return out;
}

// ------------------------------------------------------------------------------ the widget
const CSS = `
.dnnod-bt { font: 13px/1.35 system-ui, sans-serif; color: #222; }
.dnnod-bt .row { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 4px 0; }
.dnnod-bt .figs { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; margin: 6px 0; }
.dnnod-bt figure { margin: 0; text-align: center; }
.dnnod-bt figcaption { font-size: 12px; color: #444; }
.dnnod-bt canvas { display: block; touch-action: none; }
.dnnod-bt button { font: inherit; padding: 2px 9px; border: 1px solid #999; border-radius: 3px; background: #f6f6f6; cursor: pointer; }
.dnnod-bt input[type=range] { width: 120px; vertical-align: middle; }
.dnnod-bt .status { font-size: 12px; color: #333; }
`;
const COLOURS = ["#ff6d00", "#2979ff", "#00c853", "#d500f9", "#ffd600", "#00b8d4"];

function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function render({ model, el }) {
  const win = model.get("window"), lut = model.get("cmap"), size = model.get("canvas_px");
  const W = win[2] - win[0], H = win[3] - win[1];
  const imgW = size, imgH = Math.round(size * H / W), sc = imgW / W;
  let boxes = model.get("boxes").map((b) => b.slice()), selected = boxes.length ? 0 : -1, drag = null;
  const root = h("div", { cls: "dnnod-bt" }, [h("style", { text: CSS })]);
  const dIn = h("input", { type: "range", min: 2, max: 48, step: 1, "data-control": "d" });
  const dOut = h("span");
  dIn.oninput = () => { model.set("d", Number(dIn.value)); model.save_changes(); draw(); };
  const del = h("button", { text: "remove the selected box", "data-action": "remove" });
  const reset = h("button", { text: "reset", "data-action": "reset" });
  del.onclick = () => { if (selected >= 0) { boxes.splice(selected, 1); selected = boxes.length - 1; commit(); } };
  reset.onclick = () => { boxes = model.get("start_boxes").map((b) => b.slice()); selected = 0; commit(); };
  root.append(h("div", { cls: "row" }, [h("label", { text: "grid d " }, [dIn, dOut]), del, reset]));
  const imgCanvas = h("canvas", { width: imgW, height: imgH, "data-role": "image" });
  const figs = h("div", { cls: "figs" }, [h("figure", {}, [imgCanvas,
    h("figcaption", { text: "drag a box: move · a corner: resize · elsewhere: new box",
                      style: `max-width: ${imgW}px` })])]);
  const maskCanvas = MASK_TYPES.map((t) => {
    const c = h("canvas", { width: imgW, height: imgH, "data-mask": t });
    figs.append(h("figure", {}, [c, h("figcaption", { text: `${t} target` })]));
    return c;
  });
  const status = h("div", { cls: "status", "data-role": "status" });
  root.append(figs, status);
  el.append(root);
  const image = new Image();
  image.onload = () => draw();
  image.src = model.get("image");

  function colour(v) {
    const n = lut.length, x = Math.max(0, Math.min(1, v)) * (n - 1), i = Math.min(n - 2, Math.floor(x)), f = x - i;
    const a = lut[i], b = lut[i + 1];
    return `rgb(${Math.round(a[0] + f * (b[0] - a[0]))},${Math.round(a[1] + f * (b[1] - a[1]))},${Math.round(a[2] + f * (b[2] - a[2]))})`;
  }
  const X = (x) => (x - win[0]) * sc, Y = (y) => (y - win[1]) * sc;
  function draw() {
    const d = model.get("d");
    dIn.value = d; dOut.textContent = ` ${d} × ${d} cells`;
    const ctx = imgCanvas.getContext("2d");
    ctx.fillStyle = "#ddd"; ctx.fillRect(0, 0, imgW, imgH);
    if (image.complete && image.naturalWidth) ctx.drawImage(image, win[0], win[1], W, H, 0, 0, imgW, imgH);
    boxes.forEach((b, k) => {
      ctx.strokeStyle = COLOURS[k % COLOURS.length]; ctx.lineWidth = k === selected ? 3 : 1.5;
      ctx.strokeRect(X(b[0]), Y(b[1]), X(b[2]) - X(b[0]), Y(b[3]) - Y(b[1]));
      if (k === selected) {
        ctx.fillStyle = ctx.strokeStyle;
        for (const [x, y] of [[b[0], b[1]], [b[2], b[1]], [b[0], b[3]], [b[2], b[3]]]) ctx.fillRect(X(x) - 4, Y(y) - 4, 8, 8);
      }
    });
    const m = unionTargets(boxes, win, d), cw = imgW / d, chh = imgH / d;
    const mass = [];
    maskCanvas.forEach((c, t) => {
      const g = c.getContext("2d");
      let s = 0;
      for (let i = 0; i < d; i++)
        for (let j = 0; j < d; j++) {
          const v = m[t * d * d + i * d + j];
          s += v;
          g.fillStyle = colour(v);
          g.fillRect(Math.floor(j * cw), Math.floor(i * chh), Math.ceil(cw), Math.ceil(chh));
        }
      mass.push(s);
      g.strokeStyle = "rgba(255,255,255,0.15)"; g.lineWidth = 1; g.beginPath();
      for (let k = 1; k < d; k++) {
        g.moveTo(Math.round(k * cw) + 0.5, 0); g.lineTo(Math.round(k * cw) + 0.5, imgH);
        g.moveTo(0, Math.round(k * chh) + 0.5); g.lineTo(imgW, Math.round(k * chh) + 0.5);
      }
      g.stroke();
      g.setLineDash([4, 3]);
      boxes.forEach((b, k) => {
        const p = boxParts(b)[t];
        g.strokeStyle = COLOURS[k % COLOURS.length]; g.lineWidth = 1.5;
        g.strokeRect(X(p[0]), Y(p[1]), X(p[2]) - X(p[0]), Y(p[3]) - Y(p[1]));
      });
      g.setLineDash([]);
    });
    status.textContent = `${boxes.length} box(es); target mass (sum of cells) — `
      + MASK_TYPES.map((t, k) => `${t}: ${mass[k].toFixed(2)}`).join(", ");
    el.dataset.targets = JSON.stringify(mass);
  }
  function commit() {
    draw();
    model.set("boxes", boxes.map((b) => b.slice()));
    model.save_changes();
  }
  function at(e) {
    const r = imgCanvas.getBoundingClientRect();
    const x = win[0] + Math.max(0, Math.min(imgW, (e.clientX - r.left) * imgCanvas.width / r.width)) / sc;
    const y = win[1] + Math.max(0, Math.min(imgH, (e.clientY - r.top) * imgCanvas.height / r.height)) / sc;
    return [x, y];
  }
  imgCanvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    try { imgCanvas.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events */ }
    const [x, y] = at(e), tol = 8 / sc;
    let hit = null;
    for (let k = boxes.length - 1; k >= 0 && !hit; k--) {
      const b = boxes[k];
      const corners = [[0, 1], [2, 1], [0, 3], [2, 3]];
      for (const [cx, cy] of corners)
        if (Math.abs(x - b[cx]) < tol && Math.abs(y - b[cy]) < tol) { hit = { k, kind: "corner", cx, cy }; break; }
      if (!hit && b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3]) hit = { k, kind: "move" };
    }
    if (!hit) { boxes.push([x, y, x, y]); hit = { k: boxes.length - 1, kind: "corner", cx: 2, cy: 3, fresh: true }; }
    selected = hit.k;
    drag = { ...hit, x, y, orig: boxes[hit.k].slice() };
    draw();
  });
  imgCanvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    e.preventDefault();
    const [x, y] = at(e), b = boxes[drag.k], o = drag.orig;
    if (drag.kind === "move") {
      const dx = Math.max(win[0] - o[0], Math.min(win[2] - o[2], x - drag.x));
      const dy = Math.max(win[1] - o[1], Math.min(win[3] - o[3], y - drag.y));
      b[0] = o[0] + dx; b[2] = o[2] + dx; b[1] = o[1] + dy; b[3] = o[3] + dy;
    } else {
      b[drag.cx] = x; b[drag.cy] = y;
      const ox = 2 - drag.cx, oy = 4 - drag.cy;          // the opposite corner stays
      b[ox] = o[ox]; b[oy] = o[oy];
    }
    draw();
  });
  const end = () => {
    if (!drag) return;
    const b = boxes[drag.k];
    boxes[drag.k] = [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
    const nb = boxes[drag.k];
    if (nb[2] - nb[0] < 1 || nb[3] - nb[1] < 1) { boxes.splice(drag.k, 1); selected = boxes.length - 1; }
    drag = null;
    commit();
  };
  imgCanvas.addEventListener("pointerup", end);
  imgCanvas.addEventListener("pointercancel", end);
  const onBoxes = () => { if (!drag) { boxes = model.get("boxes").map((b) => b.slice()); draw(); } };
  model.on("change:boxes", onBoxes);
  model.on("change:d", draw);
  draw();
  return () => { model.off("change:boxes", onBoxes); model.off("change:d", draw); };
}

export default { render };
