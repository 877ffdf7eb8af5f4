"""The mask painter's Python side (dnnod.viz.maskpaint): input checks, the synced ``masks`` trait,
the lattice passed to the browser, the stored state (the ES module kept, self-contained), and its
Python reference against :class:`dnnod.viz.editor.MaskEditor`. The JavaScript scoring is checked in
tests/test_maskpaint_js.py, the widget in a browser in tests/test_maskpaint_browser.py."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import traitlets

from dnnod.viz.editor import MaskEditor
from dnnod.localize import make_lattice
from dnnod.masks import mask_targets
from dnnod.viz.maskpaint import ESM_PATH, MaskPainter, lattice_dict

REGION = (0.0, 0.0, 96.0, 80.0)


def _painter(**kw):
    gt = mask_targets(torch.tensor([[10.0, 8.0, 50.0, 60.0]]), REGION, d=24)
    image = torch.zeros(3, 80, 96, dtype=torch.uint8)
    return MaskPainter(image, {"ground truth": gt, "empty": torch.zeros(5, 24, 24)}, REGION, **kw), gt


def test_bad_input_is_refused_with_clear_errors():
    image = torch.zeros(3, 80, 96, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\[5, dy, dx\]"):
        MaskPainter(image, {"a": torch.zeros(4, 24, 24)})
    with pytest.raises(ValueError, match="one shape"):
        MaskPainter(image, {"a": torch.zeros(5, 24, 24), "b": torch.zeros(5, 12, 12)})
    with pytest.raises(ValueError, match="start must be one of"):
        MaskPainter(image, {"a": torch.zeros(5, 24, 24)}, start="b")
    with pytest.raises(ValueError, match="at least one"):
        MaskPainter(image, {})
    with pytest.raises(ValueError, match="NaN"):
        MaskPainter(image, {"a": torch.full((5, 24, 24), float("nan"))})
    p, _ = _painter()
    with pytest.raises(traitlets.TraitError):
        p.threshold = 1.5
    with pytest.raises(traitlets.TraitError):
        p.nms_mode = "soft"
    with pytest.raises(ValueError, match="keep the shape"):
        p.masks = torch.zeros(5, 12, 12)


def test_masks_trait_takes_tensors_clamps_rounds_and_moves_the_boxes():
    p, gt = _painter()
    assert isinstance(p.masks, np.ndarray) and p.masks.shape == (5, 24, 24)
    assert np.allclose(p.masks, gt.double().numpy(), atol=5e-5)
    assert len(p.boxes) >= 1                       # the object's box, computed without a browser
    p.masks = torch.full((5, 24, 24), 1.7)         # clamped to [0, 1], as scoring sees it
    assert p.masks.max() == 1.0
    p.masks = torch.full((5, 24, 24), 0.123456)
    assert np.all(p.masks == 0.1235)               # rounded to 1e-4 (what the JSON carries)
    p.masks = torch.zeros(5, 24, 24)
    assert p.boxes == [] and p.scores == []        # no mass, no box
    # what the front end would send back (JSON lists) is accepted as well
    p.masks = gt.double().tolist()
    assert len(p.boxes) >= 1


def test_reference_equals_the_python_mask_editor():
    p, gt = _painter(threshold=0.4, top_k=3, nms_iou=0.4)
    ed = MaskEditor(p.masks, REGION, threshold=0.4, top_k=3, nms_iou=0.4)
    b, s = p.reference()
    eb, es = ed.boxes()
    assert torch.equal(b, eb) and torch.allclose(s, es)


def test_lattice_dict_gives_the_make_lattice_candidates():
    lat = lattice_dict(REGION, [0.5, 1.0, 2.0], stride=5)
    # the formula documented for the browser: shape-major, then y, then x
    rows = []
    for s in range(len(lat["w"])):
        for q in range(lat["ny"][s]):
            for p in range(lat["nx"][s]):
                x, y = lat["x0"][s] + p * lat["sx"], lat["y0"][s] + q * lat["sy"]
                rows.append([x, y, x + lat["w"][s], y + lat["h"][s]])
    want = make_lattice(REGION, [0.5, 1.0, 2.0], stride=5).boxes()
    assert torch.equal(torch.tensor(rows, dtype=torch.float64), want)


def test_state_keeps_a_self_contained_module():
    p, _ = _painter()
    state = p.get_state()
    assert state["_esm"] == ESM_PATH.read_text()       # anywidget issue #339: never dropped here
    src = ESM_PATH.read_text()
    assert not re.search(r"^\s*import\s", src, re.M), "the module must not import anything"
    assert "import(" not in src and not re.search(r"https?://", src), "no network loads"
    assert "export default" in src and "export function extractBoxes" in src
    # shipped with the package
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"viz/*.js"' in pyproject


def test_box_targets_widget_python_side():
    from dnnod.viz.boxtargets import ESM_PATH as BT_PATH, BoxTargets

    image = torch.zeros(3, 64, 80, dtype=torch.uint8)
    with pytest.raises(ValueError, match="xyxy"):
        BoxTargets(image, [[30.0, 10.0, 20.0, 40.0]])
    with pytest.raises(ValueError, match="mask resolution d"):
        BoxTargets(image, [[10.0, 10.0, 20.0, 40.0]], d=0)
    w = BoxTargets(image, [[10.0, 10.0, 30.0, 40.0], [30.0, 12.0, 50.0, 30.0]], d=16)
    assert w.window == [0.0, 0.0, 80.0, 64.0] and w.get_state()["_esm"] == BT_PATH.read_text()
    # the targets of what is drawn: two boxes sharing an edge -> their union, one part each
    t = w.targets()
    assert t.shape == (5, 16, 16)
    cells = (80 / 16) * (64 / 16)
    assert float(t[0].sum()) == pytest.approx((20 * 30 + 20 * 18) / cells, abs=1e-4)
    w.boxes = [[0.0, 0.0, 80.0, 64.0]]
    assert torch.all(w.targets()[0] == 1)


def test_masks_painted_in_the_browser_arrive_in_python():
    """What the front end sends after a stroke (a comm update of ``masks`` as JSON lists, plus the
    browser's boxes) lands in ``painter.masks`` through the trait's deserializer."""
    p, gt = _painter()
    painted = np.zeros((5, 24, 24))
    painted[:, 2:8, 3:9] = 0.75
    p.set_state({"masks": painted.tolist(), "boxes": [[1.0, 2.0, 3.0, 4.0]], "scores": [0.5]})
    assert isinstance(p.masks, np.ndarray) and np.array_equal(p.masks, painted)
    assert p.boxes == [[1.0, 2.0, 3.0, 4.0]] and p.scores == [0.5]      # the browser's, kept
    b, _ = p.reference()
    assert len(b) >= 1 and float(b[0, 0]) < 9 * 4 and float(b[0, 2]) > 3 * 4   # on the block
