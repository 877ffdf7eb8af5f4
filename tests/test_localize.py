"""Box extraction (paper Sec. 5.2): Eq. 2 / Eq. 3 against independent references.

References are written here, never taken from dnnod: a per-cell rectangle-intersection brute
force in numpy, the worked example of chapter 3 (paper Sec. 3), hand-worked Eq. 3 values, hand counts.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dnnod.localize import (DEFAULT_ASPECT_RATIOS, box_scores, candidate_boxes, extract_boxes,
                            kmeans_aspect_ratios, make_lattice, mask_score, nms,
                            score_candidates)
from dnnod.masks import mask_targets


# ----------------------------------------------------------------------------- references
def brute_mask_score(mask: np.ndarray, boxes: np.ndarray, region) -> np.ndarray:
    """Eq. 2 literally: Σ_ij m(i,j) area(bb ∩ T(i,j)) / area(bb), one cell at a time."""
    dy, dx = mask.shape
    x0, y0, x1, y1 = region
    cw, ch = (x1 - x0) / dx, (y1 - y0) / dy
    out = []
    for b in boxes:
        s = 0.0
        for i in range(dy):
            for j in range(dx):
                ox = max(0.0, min(b[2], x0 + (j + 1) * cw) - max(b[0], x0 + j * cw))
                oy = max(0.0, min(b[3], y0 + (i + 1) * ch) - max(b[1], y0 + i * ch))
                s += mask[i, j] * ox * oy
        out.append(s / ((b[2] - b[0]) * (b[3] - b[1])))
    return np.array(out)


def brute_eq3(masks: np.ndarray, box, region, surround=1.5) -> float:
    """Eq. 3 literally from brute-force Eq. 2 terms; the full term's frame mean is
    (mass(enlarged ∩ region) − mass(bb)) / (area(enlarged ∩ region) − area(bb))."""
    x1, y1, x2, y2 = box
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    S = lambda m, b: brute_mask_score(m, np.array([b]), region)[0]
    full, top, bottom, left, right = masks
    total = S(full, box)
    total += S(top, (x1, y1, x2, ym)) - S(top, (x1, ym, x2, y2))
    total += S(bottom, (x1, ym, x2, y2)) - S(bottom, (x1, y1, x2, ym))
    total += S(left, (x1, y1, xm, y2)) - S(left, (xm, y1, x2, y2))
    total += S(right, (xm, y1, x2, y2)) - S(right, (x1, y1, xm, y2))
    cx, cy, hw, hh = xm, ym, (x2 - x1) * surround / 2, (y2 - y1) * surround / 2
    e = (max(cx - hw, region[0]), max(cy - hh, region[1]), min(cx + hw, region[2]),
         min(cy + hh, region[3]))
    a, ae = (x2 - x1) * (y2 - y1), (e[2] - e[0]) * (e[3] - e[1])
    if ae - a > 1e-9 * a:
        total -= (S(full, e) * ae - S(full, box) * a) / (ae - a)
    return total


# ----------------------------------------------------------------------------- Eq. 2
def test_worked_example_paper_section3():
    """The worked example of chapter 3 (paper Sec. 3): W=12, H=8, d=4, box (2,1,8,6)."""
    region = (0.0, 0.0, 12.0, 8.0)
    # The full and left masks worked by hand (not computed by dnnod).
    full = torch.tensor([[1 / 6, 1 / 2, 1 / 3, 0], [1 / 3, 1, 2 / 3, 0], [1 / 3, 1, 2 / 3, 0],
                         [0, 0, 0, 0]], dtype=torch.float64)
    left = torch.tensor([[1 / 6, 1 / 3, 0, 0], [1 / 3, 2 / 3, 0, 0], [1 / 3, 2 / 3, 0, 0],
                         [0, 0, 0, 0]], dtype=torch.float64)
    assert mask_score(full, [[2, 1, 8, 6]], region).item() == pytest.approx(0.7, abs=1e-12)
    left_right = mask_score(left, [[2, 1, 5, 6], [5, 1, 8, 6]], region)
    assert left_right.tolist() == pytest.approx([1 / 2, 1 / 5], abs=1e-12)
    # A cell-aligned box scores exactly 1 against its own target (cells 3 x 2 px).
    aligned = torch.zeros(4, 4, dtype=torch.float64)
    aligned[1:3, 1:3] = 1
    assert mask_score(aligned, [[3, 2, 9, 6]], region).item() == pytest.approx(1.0, abs=1e-12)
    # and the package's own Eq. 1 targets agree to float32 accuracy
    m = mask_targets([[2, 1, 8, 6]], region, d=4)
    assert mask_score(m[0], [[2, 1, 8, 6]], region).item() == pytest.approx(0.7, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(dy=st.integers(1, 7), dx=st.integers(1, 7), seed=st.integers(0, 2 ** 31 - 1),
       n=st.integers(1, 6))
def test_mask_score_matches_brute_force(dy, dx, seed, n):
    g = torch.Generator().manual_seed(seed)
    region = (-3.0 + 6 * torch.rand(1, generator=g).item(), 2.0, 40.0, 27.5)
    masks = torch.rand(2, dy, dx, generator=g, dtype=torch.float64)
    W, H = region[2] - region[0], region[3] - region[1]
    p = torch.rand(n, 4, generator=g, dtype=torch.float64)
    x = torch.sort(p[:, [0, 2]], 1).values * W + region[0]
    y = torch.sort(p[:, [1, 3]], 1).values * H + region[1]
    boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1] + 1e-3, y[:, 1] + 1e-3], 1).clamp(
        max=torch.tensor([region[2], region[3]] * 2, dtype=torch.float64))
    got = mask_score(masks, boxes, region)
    assert got.shape == (2, n)
    for k in range(2):
        ref = brute_mask_score(masks[k].numpy(), boxes.numpy(), region)
        np.testing.assert_allclose(got[k].numpy(), ref, rtol=1e-8, atol=1e-8)


def test_mask_score_inside_one_cell_on_edges_and_whole_region():
    g = torch.Generator().manual_seed(1)
    m = torch.rand(6, 8, generator=g, dtype=torch.float64)
    region = (0.0, 0.0, 16.0, 12.0)                         # cells 2 x 2 px
    # strictly inside cell (row 2, col 3) -> exactly that cell's value
    assert mask_score(m, [[6.3, 4.2, 7.9, 5.1]], region).item() == pytest.approx(m[2, 3].item())
    # exactly on cell edges: mean of the covered cells
    assert mask_score(m, [[2, 2, 6, 6]], region).item() == pytest.approx(m[1:3, 1:3].mean().item())
    # the whole region: the mean of the mask
    assert mask_score(m, [region], region).item() == pytest.approx(m.mean().item())
    # a 1-cell-wide sliver straddling a vertical edge: half of each neighbour
    assert mask_score(m, [[3, 0, 5, 2]], region).item() == \
        pytest.approx((m[0, 1] + m[0, 2]).item() / 2)


def test_mask_score_float32_large_image_accuracy():
    g = torch.Generator().manual_seed(2)
    m = torch.rand(24, 24, generator=g)
    region = (0.0, 0.0, 1000.0, 800.0)
    boxes = torch.tensor([[1.5, 3.25, 997.0, 799.0], [500.1, 400.2, 500.9, 400.7]])
    ref = brute_mask_score(m.double().numpy(), boxes.double().numpy(), region)
    np.testing.assert_allclose(mask_score(m, boxes, region).numpy(), ref, rtol=1e-5)


# ----------------------------------------------------------------------------- Eq. 3
def test_eq3_hand_worked():
    """Hand-worked on a 2x2 mask over (0,0,4,4), box = the left column (0,0,2,4).

    full = [[1, 0], [1, 0]] (left column on): S(bb) = 1; surround (1.5x, clipped) = x in
    [0, 2.5], y in [0, 4]: frame = x in [2, 2.5] where full = 0 -> 0. Full term = 1.
    top = [[1, 0], [0, 0]]: S(top half (0,0,2,2)) = 1, S(bottom half) = 0 -> +1.
    bottom = [[0, 0], [1, 0]]: +1. left = [[0.5, 0], [0.5, 0]]: S(left half (0,0,1,4)) = 0.5,
    S(right half (1,0,2,4)) = 0.5 -> 0. right = [[0, 1], [0, 1]]: both halves 0 -> 0.
    Total 3.
    """
    masks = torch.tensor([[[1, 0], [1, 0]], [[1, 0], [0, 0]], [[0, 0], [1, 0]],
                          [[0.5, 0], [0.5, 0]], [[0, 1], [0, 1]]], dtype=torch.float64)
    assert box_scores(masks, [[0, 0, 2, 4]], (0, 0, 4, 4)).item() == pytest.approx(3.0)
    # The same box against a full mask that also covers the other column: the frame
    # (x in [2, 2.5]) is fully on -> the full term is 1 - 1 = 0, total 2.
    masks[0] = 1
    assert box_scores(masks, [[0, 0, 2, 4]], (0, 0, 4, 4)).item() == pytest.approx(2.0)
    # A box equal to the region: empty frame -> full term = mean(full) = 1.
    s = box_scores(masks, [[0, 0, 4, 4]], (0, 0, 4, 4)).item()
    # top: S(top half = row 0) = 0.5, S(bottom half) = 0 -> +0.5; bottom: +0.5;
    # left: S(left half = column 0) = 0.5, S(right half) = 0 -> +0.5; right: 1 - 0 -> +1.
    assert s == pytest.approx(1 + 0.5 + 0.5 + 0.5 + 1)


def test_eq3_perfect_box_scores_five_with_exact_masks():
    region = (0.0, 0.0, 24.0, 24.0)
    box = [[4, 6, 16, 18]]                                  # cell aligned (1 px cells)
    m = mask_targets(box, region, d=24).double()
    assert box_scores(m, box, region).item() == pytest.approx(5.0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), d=st.integers(2, 6))
def test_eq3_matches_brute_force(seed, d):
    g = torch.Generator().manual_seed(seed)
    region = (1.0, -2.0, 31.0, 20.0)
    masks = torch.rand(5, d, d, generator=g, dtype=torch.float64)
    p = torch.rand(3, 4, generator=g, dtype=torch.float64)
    x = torch.sort(p[:, [0, 2]], 1).values * 29 + 1.0
    y = torch.sort(p[:, [1, 3]], 1).values * 21 - 2.0
    boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1] + 0.5, y[:, 1] + 0.5], 1)
    got = box_scores(masks, boxes, region)
    ref = [brute_eq3(masks.numpy(), b.tolist(), region) for b in boxes]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-8, atol=1e-8)


def test_fast_path_equals_general_path_and_brute_force():
    """score_candidates (lattice matmuls) == mask_score/box_scores (integral image) == brute."""
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(2, 5, 7, 9, generator=g, dtype=torch.float64)
    region = (3.0, 2.0, 60.0, 40.0)
    boxes, eq2, eq3 = score_candidates(masks, region, [0.5, 1.0, 2.5], sizes=(0.3, 0.6, 0.95),
                                       stride=4)
    assert torch.equal(boxes, make_lattice(region, [0.5, 1.0, 2.5], sizes=(0.3, 0.6, 0.95),
                                           stride=4).boxes())
    np.testing.assert_allclose(eq2.numpy(), mask_score(masks[:, 0], boxes, region).numpy(),
                               atol=1e-10)
    np.testing.assert_allclose(eq3.numpy(), box_scores(masks, boxes, region).numpy(), atol=1e-10)
    idx = torch.randperm(len(boxes), generator=g)[:12]
    np.testing.assert_allclose(eq2[1, idx].numpy(), brute_mask_score(
        masks[1, 0].numpy(), boxes[idx].numpy(), region), atol=1e-10)
    np.testing.assert_allclose(eq3[0, idx[:4]].numpy(), [
        brute_eq3(masks[0].numpy(), b.tolist(), region) for b in boxes[idx[:4]]], atol=1e-10)
    # float32 masks: same numbers to float32 accuracy
    _, e2f, e3f = score_candidates(masks.float(), region, [0.5, 1.0, 2.5],
                                   sizes=(0.3, 0.6, 0.95), stride=4)
    np.testing.assert_allclose(e3f.double().numpy(), eq3.numpy(), atol=2e-5)


def test_clip_surround_replicates_border_cells():
    """With clip beyond the region the surround outside the masks sees the border cells
    continued: check against a brute force on the explicitly padded mask."""
    g = torch.Generator().manual_seed(4)
    masks = torch.rand(5, 4, 4, generator=g, dtype=torch.float64)
    region, clip = (0.0, 0.0, 8.0, 8.0), (-4.0, -2.0, 12.0, 10.0)
    # Padded grid: 2-px cells, 2 extra columns each side, 1 extra row each side (replicated).
    padded = np.pad(masks.numpy(), ((0, 0), (1, 1), (2, 2)), mode="edge")
    boxes, _, eq3 = score_candidates(masks, region, [1.0], sizes=(0.5, 1.0), stride=2, clip=clip)
    ref = []
    for b in boxes.tolist():
        full = brute_eq3(padded, b, clip)       # same surround, clipped to clip, on padded masks
        ref.append(full)
    np.testing.assert_allclose(eq3.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(box_scores(masks, boxes, region, clip=clip).numpy(), ref,
                               atol=1e-10)


# ----------------------------------------------------------------------------- candidates
def test_candidate_counts_hand_count():
    """H=20, W=30, stride 5: the lattice has NX = 6 x NY = 4 steps of exactly 5 px. Mean dim 25;
    size 0.4 -> mean 10. Ratio 1 -> 10x10 box = 2x2 steps: x positions 6-2+1 = 5, y 4-2+1 = 3
    -> 15. Ratio 4 -> w = 16, h = 4, rounded to whole steps: 15 x 5 = 3x1 steps: x 6-3+1 = 4,
    y 4-1+1 = 4 -> 16. Total 31."""
    b = candidate_boxes((20, 30), [1.0, 4.0], sizes=(0.4,), stride=5)
    assert len(b) == 31
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert sorted(set(zip(w.round(decimals=6).tolist(), h.round(decimals=6).tolist()))) == \
        [(10.0, 10.0), (15.0, 5.0)]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 30).all() \
        and (b[:, 3] <= 20).all()
    # the lattice tiles the image: each shape's positions start at 0 and end at the far edge
    for ww in (10.0, 15.0):
        sh = b[(w - ww).abs() < 1e-9]
        assert sh[:, 0].min() == 0 and sh[:, 2].max() == 30
        assert sh[:, 1].min() == 0 and sh[:, 3].max() == 20
    # all corners on the 5 px lattice
    assert torch.equal(b, (b / 5).round() * 5)


def test_lattice_steps_tile_odd_sizes():
    """W = 353 at stride 5: NX = round(70.6) = 71 steps of 353/71 = 4.972 px; every box edge
    and half-box line lies on the quarter-step grid (what the fast path needs)."""
    lat = make_lattice((0.0, 0.0, 353.0, 101.0), [0.5, 1.0, 2.0], sizes=(0.2, 0.5, 0.9),
                       stride=5, cache=False)
    assert lat.NX == 71 and lat.NY == 20
    assert lat.sx == pytest.approx(353 / 71) and lat.sy == pytest.approx(101 / 20)
    b = lat.boxes()
    gx, gy = b[:, [0, 2]] / (lat.sx / 4), b[:, [1, 3]] / (lat.sy / 4)
    assert torch.allclose(gx, gx.round(), atol=1e-9) and torch.allclose(gy, gy.round(), atol=1e-9)
    assert (b[:, 2] <= 353 + 1e-9).all() and (b[:, 3] <= 101 + 1e-9).all()
    assert b[:, 2].max() == pytest.approx(353) and b[:, 3].max() == pytest.approx(101)


def test_candidate_count_voc_sized_image():
    b = candidate_boxes((375, 500))
    assert 150_000 < len(b) < 250_000                        # "~190k" at stride 5
    assert ((b[:, 2] - b[:, 0]) > 0).all()


def test_candidate_shapes_clipped_to_image():
    # size 0.9 of mean dim 15 = 13.5 square would exceed H = 10: clipped to 10 high.
    b = candidate_boxes((10, 20), [1.0], sizes=(0.9,), stride=1)
    assert torch.allclose(b[:, 3] - b[:, 1], torch.tensor(10.0, dtype=torch.float64))


def test_kmeans_aspect_ratios():
    rs = [0.5] * 20 + [1.0] * 30 + [3.0] * 10
    boxes = torch.tensor([[0, 0, 10 * r, 10] for r in rs], dtype=torch.float64)
    ar = kmeans_aspect_ratios(boxes, k=3)
    assert ar.tolist() == pytest.approx([0.5, 1.0, 3.0])
    # fewer distinct ratios than k: those ratios
    assert kmeans_aspect_ratios(boxes[:20], k=10).tolist() == pytest.approx([0.5])
    g = torch.Generator().manual_seed(0)
    wh = torch.rand(200, 2, generator=g, dtype=torch.float64) * 50 + 1
    many = torch.cat([torch.zeros(200, 2, dtype=torch.float64), wh], 1)
    a1, a2 = kmeans_aspect_ratios(many, 10, seed=0), kmeans_aspect_ratios(many, 10, seed=0)
    assert torch.equal(a1, a2) and len(a1) == 10 and (a1[1:] > a1[:-1]).all()
    # within the data range, and a local optimum: each centre is the mean of its cluster
    x = torch.log(wh[:, 0] / wh[:, 1]).double()
    c = torch.log(a1)
    assign = (x[:, None] - c[None]).abs().argmin(1)
    for k in range(10):
        assert c[k].item() == pytest.approx(x[assign == k].mean().item(), abs=1e-9)


# ----------------------------------------------------------------------------- extraction
def test_extract_boxes_finds_exact_box():
    region = (0.0, 0.0, 100.0, 80.0)
    truth = torch.tensor([[20.0, 10.0, 70.0, 60.0]])          # 50 x 50, mean dim 0.5 * 90 = 45
    m = mask_targets(truth, region, d=24)
    # the candidate set contains a box with IoU > 0.8, and it wins
    boxes, scores = extract_boxes(m, region, [1.0], sizes=(0.5, 0.55, 0.6), stride=2)
    from torchvision.ops import box_iou
    assert box_iou(boxes[:1], truth).item() > 0.8
    assert scores[0] == scores.max()
    # given candidates containing the truth exactly: it is the first box
    cands = torch.tensor([[20.0, 10.0, 70.0, 60.0], [25.0, 15.0, 65.0, 55.0], [0, 0, 100, 80]])
    b2, s2 = extract_boxes(m, region, candidates=cands, threshold=0.5)
    assert torch.equal(b2[0], truth[0])


def test_extract_boxes_threshold_classifier_nms_topk():
    region = (0.0, 0.0, 100.0, 100.0)
    truth = torch.tensor([[10.0, 10.0, 40.0, 40.0], [60.0, 55.0, 90.0, 95.0]])
    m = mask_targets(truth, region, d=24)
    b, s, info = extract_boxes(m, region, [0.75, 1.0], stride=2, top_k=5, return_all=True,
                               nms_mode="dpm")
    # the Eq. 2 threshold holds for every candidate kept
    assert (mask_score(m[0], info["candidates"], region) > 0.5 - 1e-6).all()
    assert len(info["candidates_nms"]) <= len(info["candidates"]) and len(b) <= 5
    assert (s[:-1] >= s[1:]).all()
    # DPM NMS: no kept box has more than half its area inside a better kept box
    kb = info["candidates_nms"]
    for i in range(len(kb)):
        for j in range(i):
            iw = (min(kb[i, 2], kb[j, 2]) - max(kb[i, 0], kb[j, 0])).clamp(min=0)
            ih = (min(kb[i, 3], kb[j, 3]) - max(kb[i, 1], kb[j, 1])).clamp(min=0)
            assert iw * ih / ((kb[i, 2] - kb[i, 0]) * (kb[i, 3] - kb[i, 1])) <= 0.5 + 1e-6
    # the two best are the two objects
    from torchvision.ops import box_iou
    assert (box_iou(b[:2], truth).max(1).values > 0.7).all()
    # a classifier that rejects everything left of x = 50 removes the first object
    b3, _ = extract_boxes(m, region, [0.75, 1.0], stride=2,
                          classifier=lambda bx: bx[:, 0] >= 50)
    assert (b3[:, 0] >= 50).all() and len(b3) >= 1
    # an impossible threshold: nothing
    b4, s4 = extract_boxes(m, region, [1.0], threshold=1.01)
    assert b4.shape == (0, 4) and s4.shape == (0,)


def test_nms_modes_against_hand_example():
    boxes = torch.tensor([[0, 0, 10, 10], [2, 2, 6, 6], [0, 0, 10, 9.0], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # IoU: the small box has IoU 0.16 with the first -> kept; the 10x9 box IoU 0.9 -> removed.
    assert nms(boxes, scores, 0.5, "iou").tolist() == [0, 1, 3]
    # DPM: the small box lies entirely inside the first (overlap 1) -> removed too.
    assert nms(boxes, scores, 0.5, "dpm").tolist() == [0, 3]
    assert nms(boxes, scores, 0.5, "dpm", max_keep=1).tolist() == [0]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), mode=st.sampled_from(["iou", "dpm"]),
       overlap=st.sampled_from([0.3, 0.5, 0.7]), max_keep=st.sampled_from([None, 1, 5, 10]),
       chunk=st.sampled_from([1, 7, 64]))
def test_nms_with_lazy_classifier_equals_filter_then_nms(seed, n, mode, overlap, max_keep, chunk):
    """Paper Sec. 5.2 order: classifier filter, then NMS. nms(accept=...) asks the classifier
    lazily; its result must be NMS over the accepted boxes (torchvision's NMS for "iou")."""
    import torchvision
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], 1).double()
    scores = torch.rand(n, generator=g).double()
    verdict = torch.rand(n, generator=g) < 0.6             # the "classifier" accepts 60%
    asked = []

    def accept(b):
        asked.append(len(b))
        # look the boxes up (the classifier sees boxes, not indices)
        idx = torch.cdist(b.double(), boxes).argmin(1)
        return verdict[idx]
    got = nms(boxes, scores, overlap, mode, max_keep=max_keep, accept=accept, chunk=chunk)
    sub = torch.nonzero(verdict).squeeze(1)
    if mode == "iou":
        ref = torchvision.ops.nms(boxes[sub].float(), scores[sub].float(), overlap)
    else:
        ref = nms(boxes[sub], scores[sub], overlap, "dpm")
    ref = sub[ref]
    if max_keep is not None:
        ref = ref[:max_keep]
    assert got.tolist() == ref.tolist()
    assert all(a <= max(chunk, 1024) for a in asked) and sum(asked) <= n
    if max_keep == 1 and n > 2 * chunk:
        assert sum(asked) < n              # lazy: it stopped asking once the box was found


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda: mask_score(torch.zeros(0, 4), [[0, 0, 1, 1]], (0, 0, 4, 4)),        # empty masks
    lambda: mask_score(torch.zeros(4), [[0, 0, 1, 1]], (0, 0, 4, 4)),           # not [..., d, d]
    lambda: mask_score(torch.zeros(4, 4), [[0, 0, 5, 1]], (0, 0, 4, 4)),        # outside region
    lambda: mask_score(torch.zeros(4, 4), [[1, 1, 1, 3]], (0, 0, 4, 4)),        # zero area
    lambda: mask_score(torch.zeros(4, 4), [[0, 0, 1]], (0, 0, 4, 4)),           # not [K, 4]
    lambda: mask_score(torch.zeros(4, 4), [[0, 0, 1, 1]], (0, 0, 0, 4)),        # empty region
    lambda: mask_score(torch.full((4, 4), float("nan")), [[0, 0, 1, 1]], (0, 0, 4, 4)),
    lambda: box_scores(torch.zeros(4, 4, 4), [[0, 0, 1, 1]], (0, 0, 4, 4)),     # not 5 types
    lambda: box_scores(torch.zeros(5, 4, 4), [[0, 0, 1, 1]], (0, 0, 4, 4), surround=0.5),
    lambda: candidate_boxes((0, 10), [1.0]),                                   # zero-size image
    lambda: candidate_boxes((10, 10), [1.0], stride=0),
    lambda: candidate_boxes((10, 10), [-1.0]),
    lambda: candidate_boxes(10, [1.0]),
    lambda: kmeans_aspect_ratios(torch.zeros(0, 4)),
    lambda: kmeans_aspect_ratios([[0, 0, 0, 1]]),
    lambda: kmeans_aspect_ratios([[0, 0, 1, 1]], k=0),
    lambda: extract_boxes(torch.zeros(2, 5, 4, 4), (0, 0, 4, 4)),               # batch, not one
    lambda: extract_boxes(torch.zeros(5, 4, 4), (0, 0, 4, 4), nms_iou=2),
    lambda: extract_boxes(torch.ones(5, 4, 4), (0, 0, 4, 4), [1.0],
                          classifier=lambda b: torch.ones(3)),                 # bad classifier
    lambda: nms(torch.zeros(1, 4), torch.zeros(1), mode="soft"),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_default_aspect_ratios_documented_range():
    ar = torch.tensor(DEFAULT_ASPECT_RATIOS)
    assert len(ar) == 10 and ar[0] == pytest.approx(1 / 3) and ar[-1] == pytest.approx(3)
    assert math.isclose(float(ar[5] * ar[4]), 1.0, rel_tol=1e-12)   # symmetric in log space


def test_grouped_lattice_equals_separate_regions():
    """concat_lattices scores G crops with their own masks in one pass: same numbers as
    scoring each crop alone (which test_fast_path_* ties to the brute force)."""
    from dnnod.localize.lattice import _score_lattice, concat_lattices
    g = torch.Generator().manual_seed(6)
    regions = [(3.0, 2.0, 40.0, 30.0), (10.0, 0.0, 25.0, 45.0), (0.0, 0.0, 9.0, 7.0)]
    masks = torch.rand(3, 5, 6, 6, generator=g, dtype=torch.float64)
    clip = (0.0, 0.0, 50.0, 50.0)
    lats = [make_lattice(r, [0.5, 2.0], sizes=(0.4, 0.9), stride=s)
            for r, s in zip(regions, (3.0, 2.5, 1.0))]
    idx, e2, e3 = _score_lattice(masks, concat_lattices(lats), surround=1.5, threshold=-1e9,
                                 clip=torch.tensor(clip, dtype=torch.float64))[0]
    order = torch.argsort(idx)                     # hits come chunk by chunk
    idx, e2, e3 = idx[order], e2[order], e3[order]
    assert torch.equal(idx, torch.arange(sum(len(l) for l in lats)))
    start = 0
    for k, (r, lat) in enumerate(zip(regions, lats)):
        n = len(lat)
        np.testing.assert_allclose(e3[start:start + n].numpy(),
                                   box_scores(masks[k], lat.boxes(), r, clip=clip).numpy(),
                                   atol=1e-10)
        np.testing.assert_allclose(e2[start:start + n].numpy(),
                                   mask_score(masks[k, 0], lat.boxes(), r).numpy(), atol=1e-10)
        start += n


@pytest.mark.parametrize("surround", [1.5, 2.0, 1.0])
def test_snapped_path_equals_matmul_path_and_brute_force(surround):
    """The two lattice paths of _score_lattice — the snapped one (overlap vectors read off one
    grid, what score_candidates / extract_boxes use) and the separable matmuls (any geometry) —
    give the same Eq. 2 / Eq. 3 as each other and as the brute force, densely and with a
    threshold, for several mask sets and an odd-sized region (non-integer steps)."""
    from dnnod.localize.lattice import _score_lattice
    g = torch.Generator().manual_seed(11)
    masks = torch.rand(3, 5, 6, 8, generator=g, dtype=torch.float64)
    region = (2.0, 1.0, 59.0, 44.0)
    lat = make_lattice(region, [0.4, 1.0, 2.2], sizes=(0.1, 0.35, 0.7, 1.0), stride=3.3,
                       cache=False)
    e2s, e3s = _score_lattice(masks, lat, surround=surround, method="snapped")
    e2m, e3m = _score_lattice(masks, lat, surround=surround, method="matmul")
    np.testing.assert_allclose(e2s.numpy(), e2m.numpy(), atol=1e-11)
    np.testing.assert_allclose(e3s.numpy(), e3m.numpy(), atol=1e-11)
    boxes = lat.boxes()
    idx = torch.randperm(len(boxes), generator=g)[:6]
    for k in idx.tolist():
        b = boxes[k].tolist()
        assert e3s[2, k].item() == pytest.approx(brute_eq3(masks[2].numpy(), b, region,
                                                           surround=surround), abs=1e-10)
    hits = _score_lattice(masks, lat, surround=surround, threshold=0.5, method="snapped")
    for bi, (k, e2, e3) in enumerate(hits):
        want = torch.nonzero(e2m[bi] > 0.5).squeeze(1)
        assert torch.equal(torch.sort(k).values, want)
        np.testing.assert_allclose(e3.numpy(), e3m[bi, k].numpy(), atol=1e-11)
    # float32 masks: float32 accuracy
    e2f, e3f = _score_lattice(masks.float(), lat, surround=surround, method="snapped")
    np.testing.assert_allclose(e3f.double().numpy(), e3m.numpy(), atol=5e-5)


def test_snapped_path_needs_grid_aligned_surround():
    from dnnod.localize.lattice import _score_lattice, _snap_margins
    lat = make_lattice((0.0, 0.0, 40.0, 30.0), [1.0], sizes=(0.3, 0.5), stride=5, cache=False)
    masks = torch.rand(1, 5, 4, 4, dtype=torch.float64)
    assert _snap_margins(lat, 1.5) is not None
    assert _snap_margins(lat, 1.3) is None          # 0.15·a steps: off the quarter-step grid
    with pytest.raises(ValueError, match="snapped path"):
        _score_lattice(masks, lat, surround=1.3, method="snapped")
    # auto falls back to the matmul path, which still matches box_scores
    e2, e3 = _score_lattice(masks, lat, surround=1.3)
    np.testing.assert_allclose(e3[0].numpy(), box_scores(masks[0], lat.boxes(), lat.region,
                                                         surround=1.3).numpy(), atol=1e-10)


def test_unsnapped_lattice_hand_count():
    """make_lattice(snap=False) (refinement crops): exact shapes on a centred stride lattice.
    H=20, W=30, size 0.4 -> mean 10. Ratio 1: 10x10, x (30-10)/5+1 = 5, y (20-10)/5+1 = 3 -> 15.
    Ratio 4: 16x4, x floor(14/5)+1 = 3, y floor(16/5)+1 = 4 -> 12. Total 27; the 16-wide boxes'
    leftover 4 px is split 2 / 2."""
    lat = make_lattice((0.0, 0.0, 30.0, 20.0), [1.0, 4.0], sizes=(0.4,), stride=5, snap=False,
                       cache=False)
    b = lat.boxes()
    assert len(b) == 27 and lat.a is None
    w = b[:, 2] - b[:, 0]
    wide = b[(w - 16).abs() < 1e-9]
    assert len(wide) == 12 and wide[:, 0].min() == 2 and wide[:, 2].max() == 28


def test_steady_state_returns_the_memoised_boxes():
    """score_candidates on a region seen before returns the lattice's boxes without rebuilding
    them (the same tensor), equal to the candidate boxes; candidate_boxes hands out a copy, so a
    caller that changes it cannot corrupt later calls."""
    m = torch.rand(5, 24, 24, generator=torch.Generator().manual_seed(3))
    region = (0.0, 0.0, 230.0, 170.0)
    b1, e2a, _ = score_candidates(m, region)
    b2, e2b, _ = score_candidates(m, region)
    assert b1 is b2 and torch.equal(e2a, e2b)
    ref = candidate_boxes((170, 230))
    assert torch.equal(ref, b1) and ref.data_ptr() != b1.data_ptr()
    ref += 1.0
    assert torch.equal(score_candidates(m, region)[0], candidate_boxes((170, 230)))
