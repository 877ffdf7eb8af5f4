"""Suppression by explained mask support (ours, ``nms_mode="explain"``): a box is removed when the
boxes kept before it explain more than the overlap of its mask support. Checked against a
pixel-level brute force and a hand-worked adult-and-child scene."""
from __future__ import annotations

import pytest
import torch

from dnnod.localize import nms
from dnnod.localize.nms import explained_fraction
from dnnod.masks import mask_targets

S, D = 96, 24            # a 96 x 96 px region, 24 x 24 cells of 4 px
CELL = S // D


def _parts_px(b):
    """The five parts of a box (even integer coordinates, so the halves fall on pixels) as
    binary pixel maps [5, S, S], written out independently of dnnod.masks.box_parts."""
    x1, y1, x2, y2 = [int(v) for v in b]
    xm, ym = (x1 + x2) // 2, (y1 + y2) // 2
    out = torch.zeros(5, S, S, dtype=torch.float64)
    for h, (a, b_, c, d) in enumerate([(x1, y1, x2, y2), (x1, y1, x2, ym), (x1, ym, x2, y2),
                                       (x1, y1, xm, y2), (xm, y1, x2, y2)]):
        out[h, b_:d, a:c] = 1
    return out


def brute_explained(masks, kept, boxes):
    """Σ_h Σ_px m^h R^h [px in bb(h)] / Σ_h Σ_px m^h [px in bb(h)], masks upsampled to pixels."""
    m = masks.double().repeat_interleave(CELL, -2).repeat_interleave(CELL, -1)
    R = torch.zeros(5, S, S, dtype=torch.float64)
    for k in kept:
        R = torch.maximum(R, _parts_px(k))
    out = []
    for b in boxes:
        p = _parts_px(b)
        sup = (m * p).sum()
        out.append(float((m * R * p).sum() / sup) if sup > 0 else 1.0)
    return torch.tensor(out, dtype=torch.float64)


def test_explained_fraction_matches_pixel_brute_force():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        masks = torch.rand(5, D, D, generator=g)
        # kept boxes on multiples of 8 px: their parts cover whole cells, as the pixel maps do
        k = torch.randint(0, S // 8 + 1, (3, 4), generator=g) * 8
        k = torch.stack([torch.minimum(k[:, 0], k[:, 2]), torch.minimum(k[:, 1], k[:, 3]),
                         torch.maximum(k[:, 0], k[:, 2]) + 8, torch.maximum(k[:, 1], k[:, 3]) + 8], 1)
        k = k.clamp(max=S)
        k[:, :2] = torch.minimum(k[:, :2], k[:, 2:] - 8)
        # tested boxes anywhere on even pixels: they cut through cells
        b = torch.randint(0, S // 2, (10, 4), generator=g) * 2
        b = torch.stack([torch.minimum(b[:, 0], b[:, 2]), torch.minimum(b[:, 1], b[:, 3]),
                         torch.maximum(b[:, 0], b[:, 2]) + 2, torch.maximum(b[:, 1], b[:, 3]) + 2], 1)
        b = b.clamp(max=S)
        b[:, :2] = torch.minimum(b[:, :2], b[:, 2:] - 2)
        got = explained_fraction(masks, (0, 0, S, S), k.double(), b.double())
        want = brute_explained(masks, k.tolist(), b.tolist())
        assert torch.allclose(got, want, atol=1e-9), (trial, got, want)
    # nothing kept: nothing explained
    assert explained_fraction(masks, (0, 0, S, S), torch.zeros(0, 4), b.double()).eq(0).all()


# An adult A and a child B standing in front of A's lower half; P: A's upper half (a part of A);
# Q: A moved 4 px right (a near-duplicate). Perfect masks: the Eq. 1 targets of A and B.
A, B = [16, 8, 56, 88], [28, 56, 52, 88]
P, Q = [16, 8, 56, 48], [20, 8, 60, 88]


def test_hand_worked_adult_and_child():
    masks = mask_targets(torch.tensor([A, B], dtype=torch.float64), (0, 0, S, S), D)
    frac = explained_fraction(masks, (0, 0, S, S), torch.tensor([A], dtype=torch.float64),
                              torch.tensor([B, P, Q], dtype=torch.float64))
    # B, in cells of 16 px^2: support full 48 + top 24 + bottom 24 + left 24 + right 24 = 144;
    # explained by A: full 48, top 0 (B's top half lies in A's bottom half), bottom 24,
    # left 16 (A's left half reaches 8 px into B's 12), right 24 -> 112 / 144.
    # P: every mask value it covers is A's own -> 1. Q: support full 180 + top 90 + bottom 90 +
    # left 88 (A's left half, 80, and the strip x 36-40 of B's left half, 8) + right 80 = 528;
    # all but that strip is explained -> 520 / 528.
    assert frac.tolist() == pytest.approx([112 / 144, 1.0, 520 / 528], abs=1e-12)
    boxes = torch.tensor([A, Q, B, P], dtype=torch.float64)
    scores = torch.tensor([5.0, 4.5, 3.0, 2.5])
    # DPM's rule removes the child as nested in the adult (intersection / its area = 1)
    assert nms(boxes, scores, 0.5, "dpm").tolist() == [0]
    # explained support keeps it (0.78), and still removes the part (1) and the duplicate (0.98)
    assert nms(boxes, scores, 0.9, "explain", masks=masks, region=torch.tensor([0., 0, S, S])).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7, "explain", masks=masks, region=torch.tensor([0., 0, S, S])).tolist() == [0]


def test_explain_mode_needs_masks():
    with pytest.raises(ValueError, match="needs the masks"):
        nms(torch.tensor([A], dtype=torch.float64), torch.ones(1), 0.5, "explain")


def test_detect_finds_the_child_the_dpm_rule_hides():
    """The whole pipeline with the perfect network on one photo-sized scene: DPM's suppression
    keeps the adult only; suppression by explained support finds the child too."""
    from torchvision.ops import box_iou
    from dnnod.detect import detect
    from dnnod.predict import GroundTruthPredictor
    gt = torch.tensor([[60.0, 20, 140, 200], [84, 120, 132, 196]])        # adult, child in front
    image = torch.zeros(3, 240, 320, dtype=torch.uint8)
    pred = GroundTruthPredictor(gt, torch.tensor([1, 1]), num_classes=1)
    found = {}
    for mode, ov in (("dpm", 0.35), ("explain", 0.9)):
        d = detect(pred, image, nms_mode=mode, nms_iou=0.5 if mode == "dpm" else ov,
                   final_nms_iou=ov, device="cpu")
        found[mode] = (box_iou(gt, d["boxes"]).max(1).values >= 0.5).tolist() if len(d["boxes"]) else [False, False]
    assert found["dpm"] == [True, False]
    assert found["explain"] == [True, True]


def test_explained_fraction_refuses_masks_and_boxes_of_the_wrong_shape():
    masks = mask_targets(torch.tensor([A, B], dtype=torch.float64), (0, 0, S, S), D)
    kept, boxes = torch.tensor([A], dtype=torch.float64), torch.tensor([B], dtype=torch.float64)
    for bad in (masks[0], masks[None], masks[:3]):          # one type, a class dim, 3 types
        with pytest.raises(ValueError, match=r"\[5, dy, dx\]"):
            explained_fraction(bad, (0, 0, S, S), kept, boxes)
        with pytest.raises(ValueError, match=r"\[5, dy, dx\]"):
            nms(boxes, torch.ones(1), 0.8, mode="explain", masks=bad, region=torch.tensor([0., 0, S, S]))
    with pytest.raises(ValueError, match=r"kept must be a tensor \[N, 4\]"):
        explained_fraction(masks, (0, 0, S, S), torch.tensor(A, dtype=torch.float64), boxes)
    with pytest.raises(ValueError, match=r"boxes must be a tensor \[N, 4\]"):
        explained_fraction(masks, (0, 0, S, S), kept, [B])
