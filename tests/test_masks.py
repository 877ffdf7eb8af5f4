"""Eq. 1 mask targets against independent references (paper Sec. 3; the book's appendix A)."""
from fractions import Fraction as F

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dnnod.masks import MASK_TYPES, mask_targets, mask_targets_batch


def parts_np(b):
    x1, y1, x2, y2 = b
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    return {"full": (x1, y1, x2, y2), "top": (x1, y1, x2, ym), "bottom": (x1, ym, x2, y2),
            "left": (x1, y1, xm, y2), "right": (xm, y1, x2, y2)}


def union_area_in_rect(rects, cell):
    """Exact area of (union of rects) ∩ cell by coordinate compression in plain Python —
    an independent reference (no torch, no matmuls)."""
    cx1, cy1, cx2, cy2 = cell
    clipped = []
    for x1, y1, x2, y2 in rects:
        a, b, c, d = max(x1, cx1), max(y1, cy1), min(x2, cx2), min(y2, cy2)
        if c > a and d > b:
            clipped.append((a, b, c, d))
    if not clipped:
        return 0.0
    xs = sorted({v for r in clipped for v in (r[0], r[2])})
    ys = sorted({v for r in clipped for v in (r[1], r[3])})
    total = 0.0
    for xa, xb in zip(xs, xs[1:]):
        for ya, yb in zip(ys, ys[1:]):
            mx, my = (xa + xb) / 2, (ya + yb) / 2
            if any(r[0] <= mx < r[2] and r[1] <= my < r[3] for r in clipped):
                total += (xb - xa) * (yb - ya)
    return total


def reference_targets(boxes, window, d):
    wx1, wy1, wx2, wy2 = window
    cw, ch = (wx2 - wx1) / d, (wy2 - wy1) / d
    out = np.zeros((5, d, d))
    for t, name in enumerate(MASK_TYPES):
        rects = [parts_np(b)[name] for b in boxes]
        for i in range(d):
            for j in range(d):
                cell = (wx1 + j * cw, wy1 + i * ch, wx1 + (j + 1) * cw, wy1 + (i + 1) * ch)
                out[t, i, j] = union_area_in_rect(rects, cell) / (cw * ch)
    return out


def test_paper_worked_example():
    """The worked example of chapter 3 (paper Sec. 3): W=12, H=8, d=4, box (2,1,8,6), by hand."""
    m = mask_targets([[2, 1, 8, 6]], (0, 0, 12, 8), d=4).double().numpy()
    z = 0
    expected = {
        "full": [[F(1, 6), F(1, 2), F(1, 3), z], [F(1, 3), 1, F(2, 3), z], [F(1, 3), 1, F(2, 3), z], [z] * 4],
        "top": [[F(1, 6), F(1, 2), F(1, 3), z], [F(1, 4), F(3, 4), F(1, 2), z], [z] * 4, [z] * 4],
        "bottom": [[z] * 4, [F(1, 12), F(1, 4), F(1, 6), z], [F(1, 3), 1, F(2, 3), z], [z] * 4],
        "left": [[F(1, 6), F(1, 3), z, z], [F(1, 3), F(2, 3), z, z], [F(1, 3), F(2, 3), z, z], [z] * 4],
        "right": [[z, F(1, 6), F(1, 3), z], [z, F(1, 3), F(2, 3), z], [z, F(1, 3), F(2, 3), z], [z] * 4],
    }
    for t, name in enumerate(MASK_TYPES):
        np.testing.assert_allclose(m[t], np.array(expected[name], dtype=float), atol=1e-6, err_msg=name)
    assert m[0].sum() * 6 == pytest.approx(30)
    for t in range(1, 5):
        assert m[t].sum() * 6 == pytest.approx(15)


def test_shape_dtype_and_empty():
    m = mask_targets(torch.zeros(0, 4), (0, 0, 10, 10), d=24)
    assert m.shape == (5, 24, 24) and m.dtype == torch.float32 and m.abs().sum() == 0


def test_box_outside_window_is_zero_and_partial_is_clipped():
    m = mask_targets([[20, 20, 30, 30]], (0, 0, 10, 10), d=5)
    assert m.abs().sum() == 0
    # Half of this box lies in the window: covers x in [5, 10] of a 10-wide window.
    m = mask_targets([[5, 0, 15, 10]], (0, 0, 10, 10), d=2)
    np.testing.assert_allclose(m[0].numpy(), [[0, 1], [0, 1]])
    # Its left half [5, 10] is fully inside, its right half [10, 15] fully outside.
    np.testing.assert_allclose(m[3].numpy(), [[0, 1], [0, 1]])
    assert m[4].abs().sum() == 0


def test_union_not_sum():
    m = mask_targets([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 10, 10]], (0, 0, 10, 10), d=4)
    assert m.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(m[0].numpy(), np.ones((4, 4)), atol=1e-6)


def test_window_offset_and_subcell_box():
    # A 1x1 box inside one 4x4 cell of a window that does not start at the origin.
    m = mask_targets([[101.5, 51.5, 102.5, 52.5]], (100, 50, 116, 66), d=4)
    assert m[0, 0, 0] == pytest.approx(1 / 16)
    assert m[0].sum() == pytest.approx(1 / 16)


boxes_strategy = st.lists(
    st.tuples(st.floats(-5, 25), st.floats(-5, 25), st.floats(0, 15), st.floats(0, 15)).map(
        lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])),
    min_size=0, max_size=5)


@settings(max_examples=60, deadline=None)
@given(boxes=boxes_strategy, d=st.integers(1, 6),
       win=st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(4, 22), st.floats(4, 22)))
def test_against_bruteforce(boxes, d, win):
    window = (win[0], win[1], win[0] + win[2], win[1] + win[3])
    got = mask_targets(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), window, d=d).double().numpy()
    ref = reference_targets(boxes, window, d)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert got.min() >= 0 and got.max() <= 1 + 1e-6


@settings(max_examples=40, deadline=None)
@given(boxes=boxes_strategy.filter(lambda b: len(b) > 0))
def test_halves_tile_full_for_a_lone_box(boxes):
    """For one box, top ∪ bottom = full and left ∪ right = full with disjoint halves, so the areas add."""
    box = boxes[:1]
    m = mask_targets(box, (-5, -5, 40, 40), d=9).double()
    np.testing.assert_allclose((m[1] + m[2]).numpy(), m[0].numpy(), atol=1e-6)
    np.testing.assert_allclose((m[3] + m[4]).numpy(), m[0].numpy(), atol=1e-6)
    cell_area = (45 / 9) ** 2
    x1, y1, x2, y2 = box[0]
    assert m[0].sum().item() * cell_area == pytest.approx((x2 - x1) * (y2 - y1), abs=1e-4)


@settings(max_examples=30, deadline=None)
@given(boxes=boxes_strategy)
def test_full_is_union_of_halves_for_many_boxes(boxes):
    """Cell-wise as area: full covers at least each half, and at most top + bottom (and left + right)."""
    m = mask_targets(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), (0, 0, 20, 20), d=5).double()
    for a, b in ((1, 2), (3, 4)):
        assert torch.all(m[0] + 1e-6 >= torch.maximum(m[a], m[b]))
        assert torch.all(m[0] <= m[a] + m[b] + 1e-6)


def test_batch_matches_single():
    rng = np.random.default_rng(0)
    sets, windows = [], []
    for k in range(7):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 50, (n, 2))
        wh = rng.uniform(1, 30, (n, 2))
        sets.append(np.concatenate([xy, xy + wh], 1))
        w0 = rng.uniform(-10, 20, 2)
        windows.append([w0[0], w0[1], w0[0] + rng.uniform(10, 60), w0[1] + rng.uniform(10, 60)])
    batch = mask_targets_batch(sets, windows, d=6)
    assert batch.shape == (7, 5, 6, 6)
    for k in range(7):
        ref = reference_targets([tuple(b) for b in sets[k]], windows[k], 6)
        np.testing.assert_allclose(batch[k].double().numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("boxes,window,d,msg", [
    ([[0, 0, 1]], (0, 0, 1, 1), 4, r"\[N, 4\]"),
    ([[5, 0, 1, 1]], (0, 0, 1, 1), 4, "x2 >= x1"),
    ([[0, 5, 1, 1]], (0, 0, 1, 1), 4, "y2 >= y1"),
    ([[0, 0, float("nan"), 1]], (0, 0, 1, 1), 4, "NaN"),
    ([[0, 0, float("inf"), 1]], (0, 0, 1, 1), 4, "inf"),
    ([[0, 0, 1, 1]], (0, 0, 0, 1), 4, "non-empty"),
    ([[0, 0, 1, 1]], (5, 0, 1, 1), 4, "inverted"),
    ([[0, 0, 1, 1]], (0, 0, 1), 4, "4 numbers"),
    ([[0, 0, 1, 1]], (0, 0, 1, 1), 0, "d must"),
    ([[0, 0, 1, 1]], (0, 0, 1, 1), 2.5, "d must"),
])
def test_bad_input(boxes, window, d, msg):
    with pytest.raises(ValueError, match=msg):
        mask_targets(boxes, window, d=d)
