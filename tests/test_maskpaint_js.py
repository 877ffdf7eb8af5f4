"""The mask painter's box scoring in JavaScript (dnnod/viz/maskpaint.js, run under Node) equals
:func:`dnnod.localize.extract_boxes` (paper Sec. 5.2: Eq. 2 threshold, Eq. 3 ranking with the
surround term, NMS in the DPM, IoU and explained-support modes, top k): the same kept boxes and
Eq. 3 scores within 1e-4, on 240 random mask sets (random regions, grids, lattices, thresholds,
NMS modes and overlaps, top k, surround) and on the shipped networks' masks of real test images.
Skipped, with a message, where ``node`` is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from dnnod.localize import DEFAULT_SIZES, box_scores, extract_boxes, make_lattice
from dnnod.masks import mask_targets
from dnnod.viz.maskpaint import ESM_PATH, lattice_dict
from nodejs import needs_node, run_module

pytestmark = needs_node("the mask painter's JavaScript scoring")

RUNNER = """
import { extractBoxes } from "./maskpaint.mjs";
let text = "";
process.stdin.on("data", (c) => { text += c; });
process.stdin.on("end", () => {
  const out = JSON.parse(text).map((c) => extractBoxes(c.masks, c.dy, c.dx, c.region, c.lattice, {
    threshold: c.threshold, nmsIou: c.nms_iou, nmsMode: c.nms_mode, topK: c.top_k,
    preNms: c.pre_nms, surround: c.surround, general: c.general }));
  process.stdout.write(JSON.stringify(out.map((r) => ({ boxes: r.boxes, scores: r.scores,
    n: r.nCandidates, total: r.terms.map((t) => t.total) }))));
});
"""


def run_js(cases, tmp_path: Path):
    return run_module(ESM_PATH, "maskpaint.mjs", RUNNER, cases, tmp_path, timeout=600)


def case(masks: torch.Tensor, region, aspect=None, *, threshold=0.5, nms_iou=0.5, nms_mode="dpm",
         top_k=5, pre_nms=None, surround=1.5, stride=5.0, sizes=DEFAULT_SIZES) -> dict:
    m = masks.double()
    return {"masks": m.tolist(), "dy": int(m.shape[1]), "dx": int(m.shape[2]),
            "region": [float(v) for v in region],
            "lattice": lattice_dict(region, aspect, sizes=sizes, stride=stride),
            "threshold": threshold, "nms_iou": nms_iou, "nms_mode": nms_mode, "top_k": top_k,
            "pre_nms": pre_nms, "surround": surround,
            "_py": dict(aspect_ratios=aspect, threshold=threshold, nms_iou=nms_iou, nms_mode=nms_mode,
                        top_k=top_k, pre_nms=pre_nms, surround=surround, stride=stride, sizes=sizes)}


def compare(cases, results) -> int:
    """Assert that JS and Python keep the same boxes with the same Eq. 3 scores (1e-4). Eq. 3 can
    tie exactly (e.g. two boxes inside the same cells of a coarse grid): where the two lists first
    part at such a tie (both boxes score the same to 1e-9 by the general path,
    :func:`dnnod.localize.box_scores`), either order is right and the lists are compared up to it.
    Returns the number of cases compared in full."""
    assert len(results) == len(cases)
    full = 0
    for i, (c, js) in enumerate(zip(cases, results)):
        m = torch.tensor(c["masks"], dtype=torch.float64)
        b, s = extract_boxes(m, c["region"], **c["_py"])
        b, s = b.double(), s.double()
        jb = torch.tensor(js["boxes"], dtype=torch.float64).reshape(-1, 4)
        js_s = torch.tensor(js["scores"], dtype=torch.float64)
        what = (f"case {i}: {c['dy']}x{c['dx']} masks over {c['region']}, "
                f"{ {k: v for k, v in c['_py'].items() if k != 'sizes'} }")
        # the table's terms add up to the score the ranking used
        assert torch.allclose(torch.tensor(js["total"], dtype=torch.float64), js_s, atol=1e-9, rtol=0)
        n = min(len(jb), len(b))
        same = [bool(torch.allclose(jb[k], b[k], atol=1e-3, rtol=0)) for k in range(n)]
        first = same.index(False) if False in same else n
        assert torch.allclose(js_s[:first], s[:first], atol=1e-4, rtol=0), \
            f"{what}: Eq. 3 scores differ\nJS {js_s.tolist()}\nPy {s.tolist()}"
        if first == n:
            assert len(jb) == len(b), f"{what}: JS kept {len(jb)} boxes, Python {len(b)}"
            full += 1
            continue
        # extract_boxes returns float32 boxes: take the exact lattice candidate nearest to each
        cand = make_lattice(c["region"], c["_py"]["aspect_ratios"], sizes=c["_py"]["sizes"],
                            stride=c["_py"]["stride"]).boxes()
        exact = [cand[int((cand - x).abs().amax(1).argmin())] for x in (jb[first], b[first])]
        two = box_scores(m, torch.stack(exact), c["region"],
                         surround=c["_py"]["surround"])
        assert abs(float(two[0] - two[1])) < 1e-9, \
            f"{what}: box {first} differs and is no tie\nJS {jb.tolist()}\nPy {b.tolist()}"
    return full


def random_case(g: torch.Generator) -> dict:
    """Masks that look like predictions: Eq. 1 targets of 1-4 random boxes, scaled, blurred by
    noise, plus a weak background; continuous values, so no two candidates tie."""
    def u(a, b):
        return float(a + (b - a) * torch.rand((), generator=g, dtype=torch.float64))

    W, H = round(u(40, 260)), round(u(40, 260))
    x0, y0 = round(u(0, 100)), round(u(0, 60))
    region = (float(x0), float(y0), float(x0 + W), float(y0 + H))
    d = [24, 24, 24, 12, 16][int(torch.randint(5, (), generator=g))]
    n = int(torch.randint(1, 5, (), generator=g))
    ctr = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([W, H]) \
        + torch.tensor([x0, y0])
    half = (0.08 + 0.35 * torch.rand(n, 2, generator=g, dtype=torch.float64)) * torch.tensor([W, H])
    boxes = torch.cat([ctr - half, ctr + half], 1)
    m = torch.zeros(5, d, d, dtype=torch.float64)
    for k in range(n):
        m = torch.maximum(m, u(0.5, 1.0) * mask_targets(boxes[k:k + 1], region, d=d).double())
    m = (m + 0.15 * torch.rand(5, d, d, generator=g, dtype=torch.float64)
         * torch.rand((), generator=g, dtype=torch.float64)).clamp(0, 1)
    aspect = None if torch.rand((), generator=g) < 0.5 else \
        sorted(u(0.3, 3.0) for _ in range(int(torch.randint(1, 6, (), generator=g))))
    r = float(torch.rand((), generator=g))
    mode = "dpm" if r < 0.45 else "iou" if r < 0.75 else "explain"
    top_k = [1, 3, 5, 10, None][int(torch.randint(5, (), generator=g))]
    pre_nms = [None, None, None, 50][int(torch.randint(4, (), generator=g))]
    return case(m, region, aspect, threshold=round(u(0.2, 0.7), 3), nms_iou=round(u(0.2, 0.8), 3),
                nms_mode=mode, top_k=top_k, pre_nms=pre_nms,
                surround=[1.0, 1.5, 1.5, 2.0][int(torch.randint(4, (), generator=g))],
                stride=[4.0, 5.0, 5.0, 7.5][int(torch.randint(4, (), generator=g))])


def test_js_scoring_equals_python_on_random_masks(tmp_path):
    g = torch.Generator().manual_seed(21)
    cases = [random_case(g) for _ in range(240)]
    for c in cases[::4]:               # a quarter by the box-by-box path instead of the lattice's
        c["general"] = True
    results = run_js([{k: v for k, v in c.items() if k != "_py"} for c in cases], tmp_path)
    full = compare(cases, results)
    assert full >= 200, f"only {full} of {len(cases)} cases compared in full (the others tie)"
    # the cases exercise what they claim to: boxes kept, the three NMS modes, several top-k cuts
    kept = [len(r["boxes"]) for r in results]
    assert sum(k > 0 for k in kept) >= 200 and max(kept) > 5
    assert {c["nms_mode"] for c in cases} == {"dpm", "iou", "explain"}
    assert sum(c["nms_mode"] == "explain" and len(r["boxes"]) > 1 for c, r in zip(cases, results)) >= 20


def test_js_scoring_on_an_empty_and_a_flat_mask(tmp_path):
    # No mass: nothing passes Eq. 2; a mask below the threshold everywhere: nothing either.
    cases = [case(torch.zeros(5, 24, 24), (0, 0, 96, 96)),
             case(torch.full((5, 24, 24), 0.4), (0, 0, 96, 96))]
    results = run_js([{k: v for k, v in c.items() if k != "_py"} for c in cases], tmp_path)
    assert [r["boxes"] for r in results] == [[], []]
    assert [r["n"] for r in results] == [0, 0]


def _real_cases():
    from dnnod.checkpoint import load_pretrained
    from dnnod.data import ShapesDataset
    from dnnod.predict import NetPredictor

    torch.set_num_threads(1)
    out = []
    model = load_pretrained("shapes-tiny", device="cpu")
    pred = NetPredictor(model, device="cpu")
    aspect = [float(a) for a in model.aspect_ratios]
    shapes = ShapesDataset("test", num_images=4, image_size=192, seed=0)
    for i in range(4):
        image, _ = shapes[i]
        windows = torch.tensor([[0.0, 0.0, 192.0, 192.0], [20.0, 36.0, 140.0, 156.0]])
        masks = pred(image, windows)                                   # [2, C, 5, d, d]
        for w in range(2):
            for c in range(masks.shape[1]):
                out.append(case(masks[w, c], windows[w].tolist(), aspect))
    root = Path(os.environ.get("DNNOD_DATA", "/nonexistent")) / "PennFudanPed"
    if root.is_dir():
        from PIL import Image

        model = load_pretrained("pennfudan-tiny", device="cpu")
        pred = NetPredictor(model, device="cpu")
        aspect = [float(a) for a in model.aspect_ratios]
        from dnnod.data import pennfudan_split

        for name in pennfudan_split("test")[:3]:
            image = Image.open(root / "PNGImages" / f"{name}.png").convert("RGB")
            W, H = image.size
            windows = torch.tensor([[0.0, 0.0, float(W), float(H)], [0.0, 0.0, W / 2, H / 1.0]])
            masks = pred(image, windows)
            for w in range(2):
                out.append(case(masks[w, 0], windows[w].tolist(), aspect))
                out.append(case(masks[w, 0], windows[w].tolist(), aspect, nms_mode="iou", top_k=None))
                out.append(case(masks[w, 0], windows[w].tolist(), aspect, nms_mode="explain",
                                nms_iou=0.8, top_k=None))
    return out


def test_js_scoring_equals_python_on_network_masks(tmp_path):
    cases = _real_cases()
    results = run_js([{k: v for k, v in c.items() if k != "_py"} for c in cases], tmp_path)
    full = compare(cases, results)
    # network masks saturate (exact 0s and 1s), so some rankings tie exactly further down
    assert full >= 0.75 * len(cases), f"only {full} of {len(cases)} cases compared in full"
    assert sum(len(r["boxes"]) > 0 for r in results) >= 8, "the networks found (almost) no boxes"


UNION_RUNNER = """
import { unionTargets } from "./boxtargets.mjs";
let text = "";
process.stdin.on("data", (c) => { text += c; });
process.stdin.on("end", () => {
  const out = JSON.parse(text).map((c) => Array.from(unionTargets(c.boxes, c.window, c.d)));
  process.stdout.write(JSON.stringify(out));
});
"""


def test_js_box_targets_equal_mask_targets(tmp_path):
    """Chapter 3's box-targets widget (dnnod/viz/boxtargets.js) computes Eq. 1 as
    :func:`dnnod.masks.mask_targets` does: random boxes (overlapping, touching, reaching outside
    the window, cutting cells) on random windows and grids."""
    from dnnod.viz.boxtargets import ESM_PATH as BT_PATH

    g = torch.Generator().manual_seed(3)
    cases = []
    for _ in range(60):
        win = (torch.rand(2, generator=g, dtype=torch.float64) * 50).tolist()
        size = (20 + torch.rand(2, generator=g, dtype=torch.float64) * 200).tolist()
        window = [win[0], win[1], win[0] + size[0], win[1] + size[1]]
        n = int(torch.randint(0, 5, (), generator=g))
        c = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor(size) + torch.tensor(win)
        half = (0.05 + 0.5 * torch.rand(n, 2, generator=g, dtype=torch.float64)) * torch.tensor(size)
        boxes = torch.cat([c - half, c + half], 1)
        if n >= 2:                                   # two boxes sharing an edge
            w1 = boxes[1, 2] - boxes[1, 0]
            boxes[1, 0] = boxes[0, 2]
            boxes[1, 2] = boxes[1, 0] + w1
        d = int(torch.randint(2, 33, (), generator=g))
        cases.append({"boxes": boxes.tolist(), "window": window, "d": d})
    for c, js in zip(cases, run_module(BT_PATH, "boxtargets.mjs", UNION_RUNNER, cases, tmp_path)):
        want = mask_targets(torch.tensor(c["boxes"], dtype=torch.float64).reshape(-1, 4),
                            c["window"], d=c["d"]).double().reshape(-1)
        assert torch.allclose(torch.tensor(js, dtype=torch.float64), want, atol=1e-5), c
