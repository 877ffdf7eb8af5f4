"""VOC evaluation vs hand-worked cases and an independent, literal port of the devkit loop."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dnnod.evaluate import evaluate_detections, format_ap_table, voc_ap


def _gt(boxes, labels=None, difficult=None):
    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.long),
            "difficult": torch.tensor(difficult if difficult is not None else [False] * n)}


def _det(boxes, scores, labels=None):
    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.long)}


# ---------------------------------------------------------------- hand-worked cases
def test_perfect_detection_ap_is_one():
    r = evaluate_detections([_det([[0, 0, 10, 10]], [0.9])], [_gt([[0, 0, 10, 10]])])
    assert r["ap"][1] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)


def test_hand_worked_two_images():
    # 3 gt boxes; detections by score: TP (0.9), FP (0.8, IoU 0), TP (0.7), duplicate FP (0.6)
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]]), _gt([[0, 0, 10, 10]])]
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 9]], [0.9, 0.8, 0.6]),
            _det([[0, 0, 10, 10]], [0.7])]
    r = evaluate_detections(dets, gts)
    rec, prec = r["pr"][1]
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 1 / 2])
    # 11-point: t=0..0.3 -> max prec with rec>=t = 1 (4 points); t=0.4..0.6 -> 2/3 (3 points);
    # t=0.7..1.0 -> 0 (4 points)
    assert r["ap"][1] == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)
    # all-point: envelope 1 on [0, 1/3], 2/3 on (1/3, 2/3]
    r2 = evaluate_detections(dets, gts, use_07_metric=False)
    assert r2["ap"][1] == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))
    assert r["tp"][1] == 2 and r["fp"][1] == 2 and r["npos"][1] == 3


def test_iou_threshold_boundary():
    # IoU of [0,0,10,10] and [0,0,10,5] = 0.5 exactly: a TP at 0.5, a FP above
    gts, dets = [_gt([[0, 0, 10, 10]])], [_det([[0, 0, 10, 5]], [1.0])]
    assert evaluate_detections(dets, gts, iou_threshold=0.5)["ap"][1] == pytest.approx(1.0)
    assert evaluate_detections(dets, gts, iou_threshold=0.51)["ap"][1] == pytest.approx(0.0)


def test_difficult_is_ignored():
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], difficult=[False, True])]
    # a detection on the difficult box neither helps nor hurts
    dets = [_det([[20, 20, 30, 30], [0, 0, 10, 10]], [0.95, 0.9])]
    r = evaluate_detections(dets, gts)
    assert r["ap"][1] == pytest.approx(1.0) and r["npos"][1] == 1 and r["fp"][1] == 0


def test_classes_are_separate_and_missing_class_is_nan():
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], labels=[1, 2])]
    dets = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], labels=[2, 1])]
    r = evaluate_detections(dets, gts, labels=[1, 2, 3])
    assert r["ap"][1] == pytest.approx(1.0)      # the label-1 detection hits the label-1 box
    assert r["ap"][2] == pytest.approx(0.0)
    assert math.isnan(r["ap"][3])
    assert r["map"] == pytest.approx(0.5)
    assert "mAP" in format_ap_table(r, ["a", "b", "c"])


def test_no_detections_gives_zero():
    r = evaluate_detections([_det([], [])], [_gt([[0, 0, 5, 5]])])
    assert r["ap"][1] == 0.0


@pytest.mark.parametrize("bad", [
    lambda: evaluate_detections({"boxes": []}, []),
    lambda: evaluate_detections([_det([[0, 0, 1, 1]], [1.0])], []),
    lambda: evaluate_detections([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], [_gt([[0, 0, 1, 1]])]),
    lambda: evaluate_detections([_det([[0, 0, 1, 1]], [1.0])], [_gt([[0, 0, 1, 1]])], iou_threshold=0),
    lambda: evaluate_detections([_det([[5, 0, 1, 1]], [1.0])], [_gt([[0, 0, 1, 1]])]),
])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        bad()


def test_voc_ap_known_values():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]), False) == pytest.approx(0.75)


# ---------------------------------------------------------------- independent reference
def _ref_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def _ref_eval(dets, gts, cls, thr, use07):
    """Literal port of the devkit voc_eval loop (plain Python, lists)."""
    R, npos = {}, 0
    for i, g in enumerate(gts):
        sel = [k for k in range(len(g["labels"])) if int(g["labels"][k]) == cls]
        R[i] = {"bb": [g["boxes"][k].tolist() for k in sel],
                "diff": [bool(g["difficult"][k]) for k in sel], "det": [False] * len(sel)}
        npos += sum(1 for k in sel if not bool(g["difficult"][k]))
    D = [(float(d["scores"][k]), i, d["boxes"][k].tolist())
         for i, d in enumerate(dets) for k in range(len(d["labels"])) if int(d["labels"][k]) == cls]
    D.sort(key=lambda t: -t[0])   # Python sort is stable like argsort(stable=True)
    tp, fp = [], []
    for _, i, bb in D:
        r = R[i]
        ovmax, jmax = -1.0, -1
        for j, g in enumerate(r["bb"]):
            o = _ref_iou(bb, g)
            if o > ovmax:
                ovmax, jmax = o, j
        if ovmax >= thr:
            if r["diff"][jmax]:
                continue
            if not r["det"][jmax]:
                r["det"][jmax] = True
                tp.append(1.0); fp.append(0.0)
            else:
                tp.append(0.0); fp.append(1.0)
        else:
            tp.append(0.0); fp.append(1.0)
    if npos == 0:
        return float("nan")
    ctp = np.cumsum(tp) if tp else np.zeros(0)
    cfp = np.cumsum(fp) if fp else np.zeros(0)
    rec = ctp / npos
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    if use07:
        return sum((max([p for r_, p in zip(rec, prec) if r_ >= t], default=0.0)) / 11
                   for t in [k / 10 for k in range(11)])
    # all-point: area under the precision envelope
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    return sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1))


_coord = st.integers(0, 40)


@st.composite
def _scene(draw):
    n_img = draw(st.integers(1, 4))
    gts, dets = [], []
    for _ in range(n_img):
        def boxes(n):
            out = []
            for _ in range(n):
                x, y = draw(_coord), draw(_coord)
                out.append([x, y, x + draw(st.integers(1, 20)), y + draw(st.integers(1, 20))])
            return out
        ng = draw(st.integers(0, 4))
        gts.append(_gt(boxes(ng), [draw(st.integers(1, 2)) for _ in range(ng)],
                       [draw(st.booleans()) and draw(st.booleans()) for _ in range(ng)]))
        nd = draw(st.integers(0, 6))
        # distinct scores: ties are ordered differently by different sorts
        scores = draw(st.lists(st.integers(0, 10_000), min_size=nd, max_size=nd, unique=True))
        dets.append(_det(boxes(nd), [s / 10_000 for s in scores], [draw(st.integers(1, 2)) for _ in range(nd)]))
    return dets, gts


@settings(max_examples=60, deadline=None)
@given(_scene(), st.sampled_from([0.3, 0.5, 0.7]), st.booleans())
def test_matches_reference_devkit(scene, thr, use07):
    dets, gts = scene
    r = evaluate_detections(dets, gts, iou_threshold=thr, use_07_metric=use07, labels=[1, 2])
    for c in (1, 2):
        ref = _ref_eval(dets, gts, c, thr, use07)
        if math.isnan(ref):
            assert math.isnan(r["ap"][c])
        else:
            assert r["ap"][c] == pytest.approx(ref, abs=1e-9)
