"""The live panels' JavaScript (dnnod/viz/live.js, run under Node) against Python:

- ``boxIoU`` (chapter 2's IoU panel) equals ``torchvision.ops.box_iou`` on 400 random box pairs
  (touching, nested, disjoint, degenerate), with the intersection and union areas;
- ``boxFrom`` clips the slider box to the canvas like :func:`dnnod.viz.widgets._box_from`;
- ``clampValues`` / ``optionsAt`` (how the page follows a control whose options depend on
  others) only ever reach combinations that :func:`dnnod.viz.live.to_live` drew, on a panel
  whose class list depends on the data set.

Skipped, with a message, where ``node`` is absent.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from dnnod.viz.live import ESM_PATH
from nodejs import needs_node, run_module

pytestmark = needs_node("the live panels' JavaScript")

RUNNER = """
import { boxIoU, boxFrom, clampValues } from "./live.mjs";
let text = "";
process.stdin.on("data", (c) => { text += c; });
process.stdin.on("end", () => {
  const q = JSON.parse(text);
  const iou = q.pairs.map(([a, b]) => boxIoU(a, b));
  const from = q.sliders.map((s) => boxFrom(...s));
  const clamp = q.clamp.map((v) => clampValues(q.controls, q.depends, v));
  process.stdout.write(JSON.stringify({ iou, from, clamp }));
});
"""


def run_js(query, tmp_path: Path):
    return run_module(ESM_PATH, "live.mjs", RUNNER, query, tmp_path, timeout=120)


def _random_box(rng: random.Random):
    x, y = rng.uniform(-20, 200), rng.uniform(-20, 200)
    kind = rng.random()
    w = 0.0 if kind < 0.05 else rng.choice([rng.uniform(0.5, 5), rng.uniform(5, 150)])
    h = 0.0 if kind > 0.95 else rng.choice([rng.uniform(0.5, 5), rng.uniform(5, 150)])
    return [x, y, x + w, y + h]


def test_iou_and_clipping_match_python(tmp_path):
    from dnnod.viz import explore, live, widgets

    rng = random.Random(0)
    pairs = []
    for k in range(400):
        a = _random_box(rng)
        if k % 4 == 0:                                  # nested / shared edges / identical
            b = [a[0] + 1, a[1], a[2], a[3] - 1] if k % 8 == 0 else list(a)
        elif k % 4 == 1:                                # touching on an edge: IoU 0
            b = [a[2], a[1], a[2] + 30, a[3]]
        elif k % 4 == 2:                                # overlapping: a shifted and resized
            dx, dy = rng.uniform(-30, 30), rng.uniform(-30, 30)
            b = [a[0] + dx, a[1] + dy, a[2] + dx + rng.uniform(1, 40), a[3] + dy + rng.uniform(1, 40)]
        else:
            b = _random_box(rng)
        pairs.append([a, b])
    sliders = [[rng.randrange(220), rng.randrange(180), rng.randrange(1, 221), rng.randrange(1, 181),
                220, 180] for _ in range(100)]

    # a panel whose class list depends on the data set (2 classes, then 1)
    from live_page import pr_results  # noqa: PLC0415 - shared synthetic data
    lp = live.to_live(explore.pr_widget, pr_results(), grid={"data": None, "class": None, "cut": [0, 50, 100]})
    clamp = [[rng.randrange(-1, 4), rng.randrange(-1, 4), rng.randrange(-1, 5)] for _ in range(200)]
    out = run_js({"pairs": pairs, "sliders": sliders, "clamp": clamp, "controls": lp.controls,
                  "depends": lp.depends}, tmp_path)

    a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    ref = torch.diagonal(box_iou(a, b)).nan_to_num(0.0)          # 0/0 for two empty boxes -> 0
    got = torch.tensor([r["iou"] for r in out["iou"]], dtype=torch.float64)
    assert torch.allclose(got, ref, atol=1e-12, rtol=0), (got - ref).abs().max()
    wh = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0)  # noqa: E731
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    assert torch.allclose(torch.tensor([r["inter"] for r in out["iou"]], dtype=torch.float64), inter)
    union = wh(a).prod(1) + wh(b).prod(1) - inter
    assert torch.allclose(torch.tensor([r["union"] for r in out["iou"]], dtype=torch.float64), union)
    assert ((got > 0) & (got < 1)).sum() > 60 and (got == 0).sum() > 60   # both regimes covered

    class _S:                                                # slider stand-ins for _box_from
        def __init__(self, v):
            self.value = v
    for s, js in zip(sliders, out["from"]):
        c = {k: _S(v) for k, v in zip(("x", "y", "w", "h"), s[:4])}
        assert js == pytest.approx(list(widgets._box_from(c, "", s[4], s[5])))

    for v, js in zip(clamp, out["clamp"]):
        assert ",".join(map(str, js)) in lp.table, (v, js)
        assert all(0 <= x for x in js)
