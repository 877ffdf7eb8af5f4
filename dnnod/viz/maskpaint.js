// The mask painter (part of dnnod, MIT): paint on the five masks of one window and watch the boxes
// of paper Sec. 5.2 follow, computed here in the browser. Self-contained ES module (no imports),
// the front end of dnnod.viz.maskpaint.MaskPainter (an anywidget).
//
// The first half is pure scoring (no DOM; tests/test_maskpaint_js.py runs it under Node and
// compares it with dnnod.localize.extract_boxes): the candidate lattice given by Python
// (dnnod.localize.make_lattice), Eq. 2 on the full mask as the threshold, Eq. 3 with the surround
// term for the ranking, greedy NMS ("dpm": overlap over the suppressed box's area; "iou":
// torchvision's, in float32 like it; "explain", ours: the part of a box's mask support that the
// kept boxes explain, as dnnod.localize.nms.explained_fraction), then the top k. Eq. 2 is exact
// for boxes cutting cells: the integral image of a piecewise-constant mask is bilinear inside
// each cell (localize's docstring).
// The second half draws the widget and handles mouse and touch (pointer events).

const NTYPES = 5;                 // full, top, bottom, left, right (dnnod.masks.MASK_TYPES order)
export const MASK_TYPES = ["full", "top", "bottom", "left", "right"];

// ------------------------------------------------------------------------------ scoring (pure)
/** Flatten masks given as [5][dy][dx] nested arrays (or a flat array) to a Float64Array. */
export function flatMasks(masks, dy, dx) {
  const out = new Float64Array(NTYPES * dy * dx);
  if (masks.length === out.length && typeof masks[0] === "number") {
    out.set(masks);
    return out;
  }
  let k = 0;
  for (let t = 0; t < NTYPES; t++)
    for (let i = 0; i < dy; i++)
      for (let j = 0; j < dx; j++) out[k++] = masks[t][i][j];
  return out;
}

/** Integral images [5][(dy+1)(dx+1)] (cell units: a full cell weighs 1). */
export function integrals(flat, dy, dx) {
  const W = dx + 1, out = [];
  for (let t = 0; t < NTYPES; t++) {
    const G = new Float64Array((dy + 1) * W), off = t * dy * dx;
    for (let i = 0; i < dy; i++) {
      let row = 0;
      for (let j = 0; j < dx; j++) {
        row += flat[off + i * dx + j];
        G[(i + 1) * W + j + 1] = G[i * W + j + 1] + row;
      }
    }
    out.push(G);
  }
  return out;
}

// The integral image at (u, v) in cell coordinates, bilinear inside a cell; outside [0, d] the
// border cell's formula is extrapolated (as dnnod.localize._mass).
function corner(G, dy, dx, u, v) {
  let iu = Math.floor(u), iv = Math.floor(v);
  if (iu < 0) iu = 0; else if (iu > dx - 1) iu = dx - 1;
  if (iv < 0) iv = 0; else if (iv > dy - 1) iv = dy - 1;
  const fu = u - iu, fv = v - iv, i00 = iv * (dx + 1) + iu;
  return (1 - fv) * ((1 - fu) * G[i00] + fu * G[i00 + 1])
    + fv * ((1 - fu) * G[i00 + dx + 1] + fu * G[i00 + dx + 2]);
}

/** Mask mass (cell units) in the box (u1, v1, u2, v2) given in cell coordinates. */
export function mass(G, dy, dx, u1, v1, u2, v2) {
  return corner(G, dy, dx, u2, v2) - corner(G, dy, dx, u1, v2)
    - corner(G, dy, dx, u2, v1) + corner(G, dy, dx, u1, v1);
}

/** Eq. 3 and its terms for one box in cell coordinates: {full (Eq. 2), top, bottom, left,
 * right (own half minus opposite half), surround (minus the full mask's mean in the frame
 * between bb and bb scaled by `surround`, clipped to the region), total}. */
export function eq3Terms(G, dy, dx, u1, v1, u2, v2, surround) {
  const A = (u2 - u1) * (v2 - v1), A2 = A / 2;
  const um = (u1 + u2) / 2, vm = (v1 + v2) / 2;
  const mF = mass(G[0], dy, dx, u1, v1, u2, v2);
  const top = (mass(G[1], dy, dx, u1, v1, u2, vm) - mass(G[1], dy, dx, u1, vm, u2, v2)) / A2;
  const bottom = (mass(G[2], dy, dx, u1, vm, u2, v2) - mass(G[2], dy, dx, u1, v1, u2, vm)) / A2;
  const left = (mass(G[3], dy, dx, u1, v1, um, v2) - mass(G[3], dy, dx, um, v1, u2, v2)) / A2;
  const right = (mass(G[4], dy, dx, um, v1, u2, v2) - mass(G[4], dy, dx, u1, v1, um, v2)) / A2;
  const hw = (u2 - u1) * (surround / 2), hh = (v2 - v1) * (surround / 2);
  const eu1 = Math.max(Math.min(um - hw, dx), 0), eu2 = Math.max(Math.min(um + hw, dx), 0);
  const ev1 = Math.max(Math.min(vm - hh, dy), 0), ev2 = Math.max(Math.min(vm + hh, dy), 0);
  const fa = (eu2 - eu1) * (ev2 - ev1) - A;
  const frame = fa > 1e-9 * A ? (mass(G[0], dy, dx, eu1, ev1, eu2, ev2) - mF) / fa : 0;
  const full = mF / A;
  return { full, top, bottom, left, right, surround: -frame,
           total: full + top + bottom + left + right - frame };
}

/** All candidate boxes of a lattice {w, h, x0, y0, nx, ny, sx, sy} (from dnnod.localize's
 * make_lattice), in its order: shape-major, then y, then x. Returns four Float64Arrays. */
export function latticeBoxes(lat) {
  let K = 0;
  for (let s = 0; s < lat.w.length; s++) K += lat.nx[s] * lat.ny[s];
  const x1 = new Float64Array(K), y1 = new Float64Array(K), x2 = new Float64Array(K),
    y2 = new Float64Array(K);
  const sxs = Array.isArray(lat.sx) ? lat.sx : null, sys = Array.isArray(lat.sy) ? lat.sy : null;
  let k = 0;
  for (let s = 0; s < lat.w.length; s++) {
    const sx = sxs ? sxs[s] : lat.sx, sy = sys ? sys[s] : lat.sy;
    for (let q = 0; q < lat.ny[s]; q++) {
      const y = lat.y0[s] + q * sy;
      for (let p = 0; p < lat.nx[s]; p++) {
        const x = lat.x0[s] + p * sx;
        x1[k] = x; y1[k] = y; x2[k] = x + lat.w[s]; y2[k] = y + lat.h[s]; k++;
      }
    }
  }
  return { x1, y1, x2, y2, length: K, lattice: lat };
}

// Interpolation index and weight of the integral image at cell coordinate u (as corner()).
function interp(u, n) {
  let i = Math.floor(u);
  if (i < 0) i = 0; else if (i > n - 1) i = n - 1;
  return [i, u - i];
}

/** Eq. 2 threshold and Eq. 3 over a whole lattice: {pass (candidate indices whose full-mask mass
 * exceeds threshold · area), eq3 (their Eq. 3)}. Separable, like dnnod.localize's fast path: for a
 * row position q and an interval [a, b] of y, the difference of the integral image's rows
 * interpolated at b and at a is one vector over x (dx + 1 numbers), and a box's mass is two
 * interpolations of it, at its x edges. Eq. 3 is linear in the masks, so per row four vectors do:
 * the full mask over the box's rows and over its surround's rows, (top − bottom) masks over the
 * top half minus the bottom half, and (left − right) masks over the box's rows; the same numbers
 * as eq3Terms, with 9 interpolations per passing box instead of 40 bilinear lookups. */
export function scoreLattice(G, dy, dx, C, region, threshold, surround) {
  const lat = C.lattice, W = dx + 1, pass = [], eq3 = [];
  const rx = region[0], ry = region[1];
  const su = dx / (region[2] - region[0]), sv = dy / (region[3] - region[1]);
  const sxs = Array.isArray(lat.sx) ? lat.sx : null, sys = Array.isArray(lat.sy) ? lat.sy : null;
  const [G0, G1, G2, G3, G4] = G;
  const DF = new Float64Array(W), DS = new Float64Array(W), DH = new Float64Array(W),
    DL = new Float64Array(W);
  // row interpolation of integral image g at y index j, weight f, column c
  const row = (g, j, f, c) => (1 - f) * g[j + c] + f * g[j + W + c];
  let k0 = 0;
  for (let s = 0; s < lat.w.length; s++) {
    const nx = lat.nx[s], ny = lat.ny[s], sx = sxs ? sxs[s] : lat.sx, sy = sys ? sys[s] : lat.sy;
    // x: where the box edges, middle line and surround edges fall, for every position p
    const X = [[], [], [], [], []].map(() => [new Int32Array(nx), new Float64Array(nx)]);
    const au = new Float64Array(nx), fx = new Float64Array(nx);
    for (let p = 0; p < nx; p++) {
      const x = lat.x0[s] + p * sx, u1 = (x - rx) * su, u2 = (x + lat.w[s] - rx) * su;
      const um = (u1 + u2) / 2, hw = (u2 - u1) * (surround / 2);
      const e1 = Math.max(Math.min(um - hw, dx), 0), e2 = Math.max(Math.min(um + hw, dx), 0);
      [u1, um, u2, e1, e2].forEach((u, k) => { [X[k][0][p], X[k][1][p]] = interp(u, dx); });
      au[p] = u2 - u1;
      fx[p] = e2 - e1;
    }
    const [i1, f1] = X[0], [im, fm] = X[1], [i2, f2] = X[2], [ie1, fe1] = X[3], [ie2, fe2] = X[4];
    for (let q = 0; q < ny; q++) {
      const y = lat.y0[s] + q * sy, v1 = (y - ry) * sv, v2 = (y + lat.h[s] - ry) * sv;
      const vm = (v1 + v2) / 2, hh = (v2 - v1) * (surround / 2);
      const e1 = Math.max(Math.min(vm - hh, dy), 0), e2 = Math.max(Math.min(vm + hh, dy), 0);
      const [j1, g1] = interp(v1, dy), [jm, gm] = interp(vm, dy), [j2, g2] = interp(v2, dy);
      const a1 = j1 * W, am = jm * W, a2 = j2 * W;
      for (let c = 0; c < W; c++)
        DF[c] = row(G0, a2, g2, c) - row(G0, a1, g1, c);
      const t = threshold * (v2 - v1), base = k0 + q * nx;
      let rowsDone = false;
      for (let p = 0; p < nx; p++) {
        const mF = (1 - f2[p]) * DF[i2[p]] + f2[p] * DF[i2[p] + 1] - (1 - f1[p]) * DF[i1[p]] - f1[p] * DF[i1[p] + 1];
        if (!(mF > t * au[p])) continue;
        if (!rowsDone) {            // the other three row vectors, once per row with a hit
          const [b1, h1] = interp(e1, dy), [b2, h2] = interp(e2, dy), c1 = b1 * W, c2 = b2 * W;
          for (let c = 0; c < W; c++) {
            DS[c] = row(G0, c2, h2, c) - row(G0, c1, h1, c);
            // top: own (top) half minus the bottom half; bottom: the reverse
            const t1 = row(G1, am, gm, c), b1v = row(G1, a1, g1, c), b2v = row(G1, a2, g2, c);
            const t2 = row(G2, am, gm, c), d1 = row(G2, a1, g1, c), d2 = row(G2, a2, g2, c);
            DH[c] = (t1 - b1v) - (b2v - t1) + (d2 - t2) - (t2 - d1);
            DL[c] = (row(G3, a2, g2, c) - row(G3, a1, g1, c)) - (row(G4, a2, g2, c) - row(G4, a1, g1, c));
          }
          rowsDone = true;
        }
        const A = au[p] * (v2 - v1), A2 = A / 2;
        const at = (D, i, f, k) => (1 - f[k]) * D[i[k]] + f[k] * D[i[k] + 1];
        const halvesY = at(DH, i2, f2, p) - at(DH, i1, f1, p);
        const halvesX = 2 * at(DL, im, fm, p) - at(DL, i1, f1, p) - at(DL, i2, f2, p);
        const fa = fx[p] * (e2 - e1) - A;
        const frame = fa > 1e-9 * A ? (at(DS, ie2, fe2, p) - at(DS, ie1, fe1, p) - mF) / fa : 0;
        pass.push(base + p);
        eq3.push(mF / A + (halvesY + halvesX) / A2 - frame);
      }
    }
    k0 += nx * ny;
  }
  return { pass, eq3: Float64Array.from(eq3) };
}

const f32 = Math.fround;

/** Greedy NMS over candidates `idx` (sorted best first); returns the kept positions in `idx`.
 * "dpm": intersection over the suppressed box's area (float64); "iou": torchvision's
 * intersection over union, computed in float32 as torchvision.ops.nms does. */
export function nms(C, idx, overlap, mode, maxKeep) {
  const n = idx.length, alive = new Uint8Array(n).fill(1), keep = [];
  const limit = maxKeep == null ? n : maxKeep;
  const iou = mode === "iou";
  if (!iou && mode !== "dpm") throw new Error(`nms mode must be "iou" or "dpm"; got ${mode}`);
  const X1 = new Float64Array(n), Y1 = new Float64Array(n), X2 = new Float64Array(n),
    Y2 = new Float64Array(n), AR = new Float64Array(n);
  for (let a = 0; a < n; a++) {
    const c = idx[a];
    if (iou) {
      X1[a] = f32(C.x1[c]); Y1[a] = f32(C.y1[c]); X2[a] = f32(C.x2[c]); Y2[a] = f32(C.y2[c]);
      AR[a] = f32(f32(X2[a] - X1[a]) * f32(Y2[a] - Y1[a]));
    } else {
      X1[a] = C.x1[c]; Y1[a] = C.y1[c]; X2[a] = C.x2[c]; Y2[a] = C.y2[c];
      AR[a] = (X2[a] - X1[a]) * (Y2[a] - Y1[a]);
    }
  }
  for (let a = 0; a < n && keep.length < limit; a++) {
    if (!alive[a]) continue;
    keep.push(a);
    const ax1 = X1[a], ay1 = Y1[a], ax2 = X2[a], ay2 = Y2[a], aa = AR[a];
    for (let b = a + 1; b < n; b++) {
      if (!alive[b]) continue;
      let ov;
      if (iou) {
        const w = Math.max(0, f32(Math.min(ax2, X2[b]) - Math.max(ax1, X1[b])));
        const h = Math.max(0, f32(Math.min(ay2, Y2[b]) - Math.max(ay1, Y1[b])));
        const inter = f32(w * h);
        ov = f32(inter / f32(f32(aa + AR[b]) - inter));
      } else {
        const w = Math.max(0, Math.min(ax2, X2[b]) - Math.max(ax1, X1[b]));
        const h = Math.max(0, Math.min(ay2, Y2[b]) - Math.max(ay1, Y1[b]));
        ov = (w * h) / AR[b];
      }
      if (ov > overlap) alive[b] = 0;
    }
  }
  return keep;
}

/** Ours, as dnnod.localize.nms with mode "explain": greedy over candidates `idx` (sorted best
 * first); a box is removed once the kept boxes explain more than `overlap` of its mask support.
 * Its support is sum_h of the mass of mask h in the box's part bb(h) (h over the five mask types);
 * the explained part is the same sum over the masks times R^h, the cell-wise max of the kept
 * boxes' Eq. 1 targets (the fraction of each cell their part h covers). A box with no support
 * counts as explained (fraction 1). `flat`: the masks (flatMasks), covering `region`. Returns the
 * kept positions in `idx`. */
export function explainNms(C, idx, overlap, maxKeep, flat, dy, dx, region) {
  const n = idx.length, alive = new Uint8Array(n).fill(1), keep = [];
  const limit = maxKeep == null ? n : maxKeep;
  const su = dx / (region[2] - region[0]), sv = dy / (region[3] - region[1]);
  // the five parts of each box in cell coordinates (dnnod.masks.box_parts): P[((h * n) + a) * 4]
  const P = new Float64Array(NTYPES * n * 4);
  for (let a = 0; a < n; a++) {
    const c = idx[a];
    const u1 = (C.x1[c] - region[0]) * su, v1 = (C.y1[c] - region[1]) * sv;
    const u2 = (C.x2[c] - region[0]) * su, v2 = (C.y2[c] - region[1]) * sv;
    const um = (u1 + u2) / 2, vm = (v1 + v2) / 2;
    const parts = [[u1, v1, u2, v2], [u1, v1, u2, vm], [u1, vm, u2, v2], [u1, v1, um, v2],
      [um, v1, u2, v2]];
    for (let t = 0; t < NTYPES; t++) P.set(parts[t], (t * n + a) * 4);
  }
  const partsMass = (G, a) => {
    let s = 0;
    for (let t = 0; t < NTYPES; t++) {
      const o = (t * n + a) * 4;
      s += mass(G[t], dy, dx, P[o], P[o + 1], P[o + 2], P[o + 3]);
    }
    return s;
  };
  const m = new Float64Array(flat.length);
  for (let k = 0; k < m.length; k++) m[k] = Math.max(flat[k], 0);
  const Gm = integrals(m, dy, dx), support = new Float64Array(n);
  for (let a = 0; a < n; a++) support[a] = partsMass(Gm, a);
  const R = new Float64Array(m.length), mR = new Float64Array(m.length);
  for (let a = 0; a < n && keep.length < limit; a++) {
    if (!alive[a]) continue;
    alive[a] = 0;
    keep.push(a);
    const c = idx[a];       // R^h = max(R^h, the kept box's Eq. 1 target of part h)
    addBoxTargets(R, dy, dx, region, [C.x1[c], C.y1[c], C.x2[c], C.y2[c]]);
    for (let k = 0; k < m.length; k++) mR[k] = m[k] * R[k];
    const Ge = integrals(mR, dy, dx);
    for (let b = a + 1; b < n; b++) {
      if (!alive[b]) continue;
      const frac = support[b] <= 1e-9 ? 1 : partsMass(Ge, b) / support[b];
      if (frac > overlap) alive[b] = 0;
    }
  }
  return keep;
}

/** Boxes from one mask set, as dnnod.localize.extract_boxes (paper Sec. 5.2).
 *
 * masks: [5][dy][dx] (or flat, mask-major); region [x1, y1, x2, y2] the masks cover; lattice as
 * latticeBoxes takes it, or `candidates` (its result, to reuse); options {threshold (Eq. 2 on the
 * full mask, > passes), nmsIou, nmsMode ("dpm" | "iou" | "explain"), topK (null: all), preNms (null: all),
 * surround}. Returns {boxes [[x1, y1, x2, y2]], scores (Eq. 3), terms (per kept box),
 * nCandidates (passing the threshold)}. */
export function extractBoxes(masks, dy, dx, region, lattice, opts = {}, candidates = null) {
  const threshold = opts.threshold ?? 0.5, nmsIou = opts.nmsIou ?? 0.5;
  const mode = opts.nmsMode ?? "dpm", topK = opts.topK === undefined ? 5 : opts.topK;
  const preNms = opts.preNms ?? null, surround = opts.surround ?? 1.5;
  const flat = masks instanceof Float64Array ? masks : flatMasks(masks, dy, dx);
  const G = integrals(flat, dy, dx);
  const C = candidates || latticeBoxes(lattice);
  const rx = region[0], ry = region[1];
  const su = dx / (region[2] - region[0]), sv = dy / (region[3] - region[1]);
  const toU = (x) => (x - rx) * su, toV = (y) => (y - ry) * sv;
  // Eq. 2 on the full mask: a mean, so no candidate passes when the mask's maximum does not
  // exceed the threshold (as extract_boxes_batch).
  let mx = -Infinity;
  for (let i = 0; i < dy * dx; i++) if (flat[i] > mx) mx = flat[i];
  let pass = [], eq3 = new Float64Array(0);
  if (mx > threshold && C.lattice && !opts.general) {
    ({ pass, eq3 } = scoreLattice(G, dy, dx, C, region, threshold, surround));
  } else if (mx > threshold) {           // given boxes: Eq. 2 and Eq. 3 box by box
    const s3 = [];
    for (let c = 0; c < C.length; c++) {
      const u1 = toU(C.x1[c]), v1 = toV(C.y1[c]), u2 = toU(C.x2[c]), v2 = toV(C.y2[c]);
      if (mass(G[0], dy, dx, u1, v1, u2, v2) > threshold * ((u2 - u1) * (v2 - v1))) {
        pass.push(c);
        s3.push(eq3Terms(G, dy, dx, u1, v1, u2, v2, surround).total);
      }
    }
    eq3 = Float64Array.from(s3);
  }
  const n = pass.length;
  const order = new Uint32Array(n);
  for (let a = 0; a < n; a++) order[a] = a;
  order.sort((a, b) => (eq3[b] - eq3[a]) || (a - b));
  const m = preNms != null && preNms < n ? preNms : n;
  const idx = new Array(m);
  for (let a = 0; a < m; a++) idx[a] = pass[order[a]];
  const kept = mode === "explain" ? explainNms(C, idx, nmsIou, topK, flat, dy, dx, region)
    : nms(C, idx, nmsIou, mode, topK);
  const boxes = [], scores = [], terms = [];
  for (const a of kept) {
    const c = idx[a];
    boxes.push([C.x1[c], C.y1[c], C.x2[c], C.y2[c]]);
    scores.push(eq3[order[a]]);
    terms.push(eq3Terms(G, dy, dx, toU(C.x1[c]), toV(C.y1[c]), toU(C.x2[c]), toV(C.y2[c]),
      surround));
  }
  return { boxes, scores, terms, nCandidates: n };
}

// ------------------------------------------------------------------------------ editing (pure)
/** Eq. 1 target of one box part on the grid: fraction of each cell it covers, max-ed into
 * mask t of `flat` (the union of one box with what is there; exact on empty masks). */
export function addBoxTargets(flat, dy, dx, region, box) {
  const cw = (region[2] - region[0]) / dx, ch = (region[3] - region[1]) / dy;
  const [x1, y1, x2, y2] = box, xm = (x1 + x2) / 2, ym = (y1 + y2) / 2;
  const parts = [[x1, y1, x2, y2], [x1, y1, x2, ym], [x1, ym, x2, y2], [x1, y1, xm, y2],
    [xm, y1, x2, y2]];
  for (let t = 0; t < NTYPES; t++) {
    const [a1, b1, a2, b2] = parts[t];
    for (let i = 0; i < dy; i++) {
      const cy1 = region[1] + i * ch, oy = Math.max(0, Math.min(b2, cy1 + ch) - Math.max(b1, cy1));
      if (oy <= 0) continue;
      for (let j = 0; j < dx; j++) {
        const cx1 = region[0] + j * cw;
        const ox = Math.max(0, Math.min(a2, cx1 + cw) - Math.max(a1, cx1));
        const v = Math.min(1, (ox * oy) / (cw * ch)), k = t * dy * dx + i * dx + j;
        if (v > flat[k]) flat[k] = v;
      }
    }
  }
}

// ------------------------------------------------------------------------------ the widget
const CSS = `
.dnnod-mp { font: 13px/1.35 system-ui, sans-serif; color: #222; }
.dnnod-mp .row { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 4px 0; }
.dnnod-mp .figs { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; margin: 6px 0; }
.dnnod-mp figure { margin: 0; text-align: center; }
.dnnod-mp figcaption { font-size: 12px; color: #444; }
.dnnod-mp canvas { display: block; touch-action: none; }
.dnnod-mp canvas.mask { cursor: crosshair; }
.dnnod-mp button { font: inherit; padding: 2px 9px; border: 1px solid #999; border-radius: 3px; background: #f6f6f6; cursor: pointer; }
.dnnod-mp button.on { background: #1565c0; color: #fff; border-color: #1565c0; }
.dnnod-mp label { white-space: nowrap; }
.dnnod-mp input[type=range] { width: 110px; vertical-align: middle; }
.dnnod-mp table { border-collapse: collapse; font-size: 12px; margin-top: 4px; }
.dnnod-mp td, .dnnod-mp th { border: 1px solid #bbb; padding: 2px 6px; text-align: right; }
.dnnod-mp .status { font-size: 12px; color: #333; }
`;

function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function colour(lut, v) {
  const n = lut.length, x = Math.max(0, Math.min(1, v)) * (n - 1), i = Math.min(n - 2, Math.floor(x));
  const f = x - i, a = lut[i], b = lut[i + 1];
  return `rgb(${Math.round(a[0] + f * (b[0] - a[0]))},${Math.round(a[1] + f * (b[1] - a[1]))},${Math.round(a[2] + f * (b[2] - a[2]))})`;
}

function render({ model, el }) {
  const dy = model.get("dy"), dx = model.get("dx");
  const region = model.get("region");
  const cell = model.get("cell_px");
  const lut = model.get("cmap");
  const N = dy * dx;
  let candidates = latticeBoxes(model.get("lattice"));
  let masks = flatMasks(model.get("masks"), dy, dx);
  let start = masks.slice();
  const history = [];
  let result = null, stroke = null, hover = null;

  const root = h("div", { cls: "dnnod-mp" });
  const style = h("style", { text: CSS });
  root.append(style);
  // controls
  const modeBtns = {}, modes = [["paint", "paint"], ["erase", "erase"], ["drag", "drag mass"],
    ["box", "draw a box (Eq. 1)"]];
  const modeRow = h("div", { cls: "row" }, [h("span", { text: "brush:" })]);
  for (const [m, label] of modes) {
    const b = h("button", { text: label, "data-mode": m });
    b.onclick = () => { model.set("mode", m); model.save_changes(); syncControls(); };
    modeBtns[m] = b;
    modeRow.append(b);
  }
  const target = h("select", { "data-control": "target" }, [
    h("option", { value: "one", text: "the mask painted on" }),
    h("option", { value: "all", text: "all five masks" })]);
  target.onchange = () => { model.set("target", target.value); model.save_changes(); };
  modeRow.append(h("label", { text: "applies to " }, [target]));
  const slider = (name, label, min, max, step, fmt) => {
    const inp = h("input", { type: "range", min, max, step, "data-control": name });
    const out = h("span", {});
    inp.oninput = () => {
      const v = Number(inp.value);
      out.textContent = fmt(v);
      model.set(name, v);
      model.save_changes();
      if (!["brush", "value"].includes(name)) update();
    };
    return { inp, out, el: h("label", { text: label + " " }, [inp, out]), fmt };
  };
  const ctl = {
    brush: slider("brush", "size", 1, 12, 1, (v) => `${v}×${v} cells`),
    value: slider("value", "value", 0, 1, 0.05, (v) => v.toFixed(2)),
    threshold: slider("threshold", "Eq. 2 threshold", 0, 1, 0.05, (v) => v.toFixed(2)),
    nms_iou: slider("nms_iou", "NMS overlap", 0.05, 1, 0.05, (v) => v.toFixed(2)),
    top_k: slider("top_k", "top k", 1, 20, 1, (v) => String(v)),
  };
  const brushRow = h("div", { cls: "row" }, [ctl.brush.el, ctl.value.el]);
  const source = h("select", { "data-control": "source" });
  const names = model.get("source_names") || Object.keys(model.get("sources"));
  for (const name of names) source.append(h("option", { value: name, text: name }));
  if (model.get("source")) source.value = model.get("source");
  const startBtn = h("button", { text: "start from", "data-action": "start" });
  const undoBtn = h("button", { text: "undo", "data-action": "undo" });
  const resetBtn = h("button", { text: "reset", "data-action": "reset" });
  startBtn.onclick = () => {
    const src = model.get("sources")[source.value];
    if (!src) return;
    push();
    model.set("source", source.value);
    start = flatMasks(src, dy, dx);
    masks = start.slice();
    commit();
  };
  source.onchange = startBtn.onclick;
  undoBtn.onclick = () => { if (history.length) { masks = history.pop(); commit(); } };
  resetBtn.onclick = () => { push(); masks = start.slice(); commit(); };
  const actRow = h("div", { cls: "row" }, [startBtn, source, undoBtn, resetBtn]);
  const nmsMode = h("select", { "data-control": "nms_mode" }, [
    h("option", { value: "dpm", text: "DPM (intersection / suppressed box)" }),
    h("option", { value: "iou", text: "IoU" }),
    h("option", { value: "explain", text: "explained mask support (ours)" })]);
  nmsMode.onchange = () => { model.set("nms_mode", nmsMode.value); model.save_changes(); update(); };
  const boxRow = h("div", { cls: "row" }, [ctl.threshold.el, h("label", { text: "NMS " }, [nmsMode]),
    ctl.nms_iou.el, ctl.top_k.el]);
  root.append(modeRow, brushRow, actRow, boxRow);

  // figures
  const imgW = Math.max(cell * dx, 200), imgH = Math.round(imgW * (region[3] - region[1]) / (region[2] - region[0]));
  const imgCanvas = h("canvas", { width: imgW, height: imgH, "data-role": "image" });
  const figs = h("div", { cls: "figs" });
  figs.append(h("figure", {}, [imgCanvas, h("figcaption", { text: "boxes (thick = chosen ★)" })]));
  const maskCanvas = [];
  for (let t = 0; t < NTYPES; t++) {
    const c = h("canvas", { width: cell * dx, height: cell * dy, cls: "mask", "data-mask": MASK_TYPES[t] });
    maskCanvas.push(c);
    figs.append(h("figure", {}, [c, h("figcaption", { text: `${MASK_TYPES[t]} mask` })]));
  }
  const bar = h("canvas", { width: 44, height: cell * dy, "data-role": "colorbar" });
  figs.append(h("figure", {}, [bar, h("figcaption", { text: "value" })]));
  root.append(figs);
  const status = h("div", { cls: "status", "data-role": "status" });
  const table = h("div", { "data-role": "table" });
  root.append(status, table);
  el.append(root);

  const image = new Image();
  image.onload = () => drawImage();
  image.src = model.get("image");

  // ---------------------------------------------------------------- state and drawing
  function push() {
    history.push(masks.slice());
    if (history.length > 100) history.shift();
  }
  function opts() {
    return { threshold: model.get("threshold"), nmsIou: model.get("nms_iou"),
             nmsMode: model.get("nms_mode"), topK: model.get("top_k"),
             preNms: model.get("pre_nms") > 0 ? model.get("pre_nms") : null,
             surround: model.get("surround") };
  }
  function update() {
    const t0 = performance.now();
    result = extractBoxes(masks, dy, dx, region, null, opts(), candidates);
    el.dataset.computeMs = (performance.now() - t0).toFixed(2);
    drawAll();
    el.dataset.boxes = JSON.stringify(result.boxes);
  }
  function nested() {
    const out = [];
    for (let t = 0; t < NTYPES; t++) {
      const m = [];
      for (let i = 0; i < dy; i++) m.push(Array.from(masks.subarray(t * N + i * dx, t * N + (i + 1) * dx)));
      out.push(m);
    }
    return out;
  }
  function commit() {          // after a stroke or button: recompute, redraw, sync to the kernel
    update();
    syncing = true;
    model.set("masks", nested());
    model.set("boxes", result.boxes);
    model.set("scores", result.scores);
    model.save_changes();
    syncing = false;
  }
  const sx = imgW / (region[2] - region[0]), sy = imgH / (region[3] - region[1]);
  function drawImage() {
    const ctx = imgCanvas.getContext("2d");
    ctx.fillStyle = "#ddd";
    ctx.fillRect(0, 0, imgW, imgH);
    if (image.complete && image.naturalWidth)
      ctx.drawImage(image, region[0], region[1], region[2] - region[0], region[3] - region[1], 0, 0, imgW, imgH);
    for (const g of model.get("gt_boxes") || []) {
      ctx.setLineDash([5, 3]); ctx.strokeStyle = "#00c853"; ctx.lineWidth = 1.5;
      ctx.strokeRect((g[0] - region[0]) * sx, (g[1] - region[1]) * sy, (g[2] - g[0]) * sx, (g[3] - g[1]) * sy);
    }
    ctx.setLineDash([]);
    if (!result) return;
    result.boxes.forEach((b, i) => {
      const x = (b[0] - region[0]) * sx, y = (b[1] - region[1]) * sy, w = (b[2] - b[0]) * sx, hh = (b[3] - b[1]) * sy;
      ctx.strokeStyle = i === 0 ? "#ff6d00" : "#2979ff";
      ctx.lineWidth = i === 0 ? 3.5 : 1.5;
      ctx.strokeRect(x, y, w, hh);
      const label = `${i + 1}${i === 0 ? "★" : ""} ${result.scores[i].toFixed(2)}`;
      ctx.font = "11px sans-serif";
      const tw = ctx.measureText(label).width + 4;
      ctx.fillStyle = i === 0 ? "#ff6d00" : "#2979ff";
      ctx.fillRect(x, Math.max(0, y - 13), tw, 13);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x + 2, Math.max(0, y - 13) + 10);
    });
  }
  function toCanvas(b) {
    const cw = cell * dx / (region[2] - region[0]), ch = cell * dy / (region[3] - region[1]);
    return [(b[0] - region[0]) * cw, (b[1] - region[1]) * ch, (b[2] - b[0]) * cw, (b[3] - b[1]) * ch];
  }
  // 256-entry colour table; each mask is drawn as a dx × dy image, scaled up without smoothing
  const rgb = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const m = /rgb\((\d+),(\d+),(\d+)\)/.exec(colour(lut, i / 255));
    rgb[3 * i] = +m[1]; rgb[3 * i + 1] = +m[2]; rgb[3 * i + 2] = +m[3];
  }
  const small = document.createElement("canvas");
  small.width = dx; small.height = dy;
  const sctx = small.getContext("2d"), pix = sctx.createImageData(dx, dy);
  function drawMasks() {
    for (let t = 0; t < NTYPES; t++) {
      const ctx = maskCanvas[t].getContext("2d");
      for (let k = 0; k < N; k++) {
        const v = masks[t * N + k], q = 3 * Math.round(255 * (v < 0 ? 0 : v > 1 ? 1 : v));
        pix.data[4 * k] = rgb[q]; pix.data[4 * k + 1] = rgb[q + 1]; pix.data[4 * k + 2] = rgb[q + 2];
        pix.data[4 * k + 3] = 255;
      }
      sctx.putImageData(pix, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(small, 0, 0, dx * cell, dy * cell);
      ctx.strokeStyle = "rgba(255,255,255,0.12)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let j = 1; j < dx; j++) { ctx.moveTo(j * cell + 0.5, 0); ctx.lineTo(j * cell + 0.5, dy * cell); }
      for (let i = 1; i < dy; i++) { ctx.moveTo(0, i * cell + 0.5); ctx.lineTo(dx * cell, i * cell + 0.5); }
      ctx.stroke();
      if (result && result.boxes.length) {
        ctx.strokeStyle = "#ff6d00"; ctx.lineWidth = 2;
        ctx.strokeRect(...toCanvas(result.boxes[0]));
      }
      if (hover && (hover.t === t || model.get("target") === "all" || model.get("mode") === "box")) {
        ctx.strokeStyle = "#ffd600"; ctx.lineWidth = 1.5; ctx.setLineDash([4, 3]);
        if (hover.box) ctx.strokeRect(...toCanvas(hover.box));
        else ctx.strokeRect(hover.c0 * cell, hover.r0 * cell, hover.n * cell, hover.n * cell);
        ctx.setLineDash([]);
      }
    }
  }
  function drawBar() {
    const ctx = bar.getContext("2d"), H = bar.height;
    for (let y = 0; y < H; y++) { ctx.fillStyle = colour(lut, 1 - y / (H - 1)); ctx.fillRect(0, y, 14, 1); }
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      const y = Math.round((1 - v) * (H - 1));
      ctx.fillRect(14, y, 4, 1);
      ctx.fillText(v.toFixed(2), 19, Math.min(H - 2, Math.max(9, y + 4)));
    }
  }
  const fmt = (v, sign) => (sign && v >= 0 ? "+" : "") + v.toFixed(2);
  function drawTable() {
    const r = result;
    status.textContent = `${r.nCandidates} candidates pass Eq. 2 > ${model.get("threshold").toFixed(2)} `
      + `(full mask); NMS (${model.get("nms_mode")}, overlap ${model.get("nms_iou").toFixed(2)}) and the top `
      + `${model.get("top_k")} keep ${r.boxes.length}; ${history.length} edit(s) to undo; `
      + `boxes computed in ${el.dataset.computeMs || "?"} ms.`;
    if (!r.boxes.length) {
      table.innerHTML = "<b>No box</b>: no candidate has enough full-mask mass (Eq. 2).";
      return;
    }
    let s = "<table><tr><th>#</th><th>box (x1, y1, x2, y2)</th><th>Eq. 2 (full)</th><th>top</th>"
      + "<th>bottom</th><th>left</th><th>right</th><th>surround</th><th>Eq. 3</th></tr>";
    r.boxes.forEach((b, i) => {
      const t = r.terms[i];
      s += `<tr><td>${i + 1}${i === 0 ? " ★" : ""}</td><td>(${b.map((v) => v.toFixed(1)).join(", ")})</td>`
        + `<td>${fmt(t.full)}</td><td>${fmt(t.top, 1)}</td><td>${fmt(t.bottom, 1)}</td><td>${fmt(t.left, 1)}</td>`
        + `<td>${fmt(t.right, 1)}</td><td>${fmt(t.surround, 1)}</td><td><b>${fmt(t.total)}</b></td></tr>`;
    });
    table.innerHTML = s + "</table>";
  }
  function drawAll() { drawImage(); drawMasks(); drawTable(); }
  function syncControls() {
    for (const [m, b] of Object.entries(modeBtns)) b.classList.toggle("on", model.get("mode") === m);
    target.value = model.get("target");
    nmsMode.value = model.get("nms_mode");
    for (const [name, c] of Object.entries(ctl)) {
      c.inp.value = model.get(name);
      c.out.textContent = c.fmt(Number(model.get(name)));
    }
  }

  // ---------------------------------------------------------------- mouse and touch
  function locate(t, e) {
    const c = maskCanvas[t], r = c.getBoundingClientRect();
    const x = (e.clientX - r.left) * (c.width / r.width), y = (e.clientY - r.top) * (c.height / r.height);
    const col = Math.max(0, Math.min(dx - 1, Math.floor(x / cell))), row = Math.max(0, Math.min(dy - 1, Math.floor(y / cell)));
    const px = region[0] + Math.max(0, Math.min(1, x / c.width)) * (region[2] - region[0]);
    const py = region[1] + Math.max(0, Math.min(1, y / c.height)) * (region[3] - region[1]);
    const n = model.get("brush"), r0 = row - Math.floor((n - 1) / 2), c0 = col - Math.floor((n - 1) / 2);
    return { t, row, col, r0, c0, n, px, py };
  }
  function kinds(t) { return model.get("target") === "all" ? [0, 1, 2, 3, 4] : [t]; }
  function applyAt(p) {
    const mode = model.get("mode"), base = stroke.base;
    if (mode === "paint" || mode === "erase") {
      const v = mode === "erase" ? 0 : model.get("value");
      for (const k of kinds(stroke.t))
        for (let i = Math.max(0, p.r0); i < Math.min(dy, p.r0 + p.n); i++)
          for (let j = Math.max(0, p.c0); j < Math.min(dx, p.c0 + p.n); j++) masks[k * N + i * dx + j] = v;
    } else if (mode === "drag") {          // move the block picked up at the stroke's start
      const s = stroke.start, dr = p.row - s.row, dc = p.col - s.col;
      masks = base.slice();
      for (const k of kinds(stroke.t)) {
        for (let i = Math.max(0, s.r0); i < Math.min(dy, s.r0 + s.n); i++)
          for (let j = Math.max(0, s.c0); j < Math.min(dx, s.c0 + s.n); j++) masks[k * N + i * dx + j] = 0;
        for (let i = Math.max(0, s.r0); i < Math.min(dy, s.r0 + s.n); i++)
          for (let j = Math.max(0, s.c0); j < Math.min(dx, s.c0 + s.n); j++) {
            const ti = i + dr, tj = j + dc;
            if (ti >= 0 && ti < dy && tj >= 0 && tj < dx) masks[k * N + ti * dx + tj] = base[k * N + i * dx + j];
          }
      }
      hover = { t: stroke.t, r0: s.r0 + dr, c0: s.c0 + dc, n: s.n };
    } else if (mode === "box") {           // Eq. 1 targets of the dragged box, into all five
      const s = stroke.start;
      const box = [Math.min(s.px, p.px), Math.min(s.py, p.py), Math.max(s.px, p.px), Math.max(s.py, p.py)];
      masks = base.slice();
      if (box[2] > box[0] && box[3] > box[1]) addBoxTargets(masks, dy, dx, region, box);
      hover = { t: stroke.t, box };
    }
  }
  let pending = false, syncing = false;
  function schedule() {          // during a stroke: recompute once per animation frame
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (stroke) update(); });
  }
  maskCanvas.forEach((c, t) => {
    c.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      try { c.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events */ }
      const p = locate(t, e);
      push();
      stroke = { t, start: p, base: masks.slice() };
      applyAt(p);
      schedule();
    });
    c.addEventListener("pointermove", (e) => {
      const p = locate(t, e);
      if (stroke) { e.preventDefault(); applyAt(p); schedule(); return; }
      hover = { t, r0: p.r0, c0: p.c0, n: p.n };
      drawMasks();
    });
    const end = (e) => {
      if (!stroke) return;
      if (e.type === "pointerup") applyAt(locate(t, e));
      stroke = null;
      if (model.get("mode") !== "drag") hover = null;
      commit();                   // the stroke's boxes, synchronously
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", () => { if (!stroke) { hover = null; drawMasks(); } });
  });

  // ---------------------------------------------------------------- from the kernel
  const onMasks = () => { if (!syncing) { masks = flatMasks(model.get("masks"), dy, dx); update(); } };
  const onLattice = () => { candidates = latticeBoxes(model.get("lattice")); update(); };
  const onCtl = () => { syncControls(); update(); };
  model.on("change:masks", onMasks);
  model.on("change:lattice", onLattice);
  for (const k of ["threshold", "nms_iou", "top_k", "nms_mode", "pre_nms", "surround"]) model.on(`change:${k}`, onCtl);
  for (const k of ["mode", "target", "brush", "value"]) model.on(`change:${k}`, syncControls);
  syncControls();
  drawBar();
  update();
  el.__maskpaint = { get masks() { return masks; }, get result() { return result; }, update, nested };
  return () => {
    model.off("change:masks", onMasks);
    model.off("change:lattice", onLattice);
    for (const k of ["threshold", "nms_iou", "top_k", "nms_mode", "pre_nms", "surround"]) model.off(`change:${k}`, onCtl);
    for (const k of ["mode", "target", "brush", "value"]) model.off(`change:${k}`, syncControls);
  };
}

export default { render };
