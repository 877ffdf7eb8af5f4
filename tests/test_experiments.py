"""Tests of dnnod.studies.experiments (ablation switches, error analysis, CLI) and dnnod.viz.explore (widgets).

References are hand-worked numbers, dnnod.evaluate's own counts and detect()'s own switches —
never the functions' outputs fed back to themselves.
"""
import json

import numpy as np
import pytest
import torch

from dnnod.viz import explore
from dnnod.checkpoint import save_checkpoint
from dnnod.detect import detect
from dnnod.evaluate import evaluate_detections
from dnnod.studies.experiments import (FullMaskOnly, classify_detections, main, merge_update, run_variants,
                               worst_errors)
from dnnod.localize import box_scores
from dnnod.net import DetectorNet
from dnnod.predict import GroundTruthPredictor


# ----------------------------------------------------------------------------- ablation switch
def test_full_mask_only_reduces_eq3_to_its_full_term():
    # d = 4 cells of 1 px over the region (0, 0, 4, 4); one object (1, 1, 3, 3).
    gt = GroundTruthPredictor([[1.0, 1.0, 3.0, 3.0]], [1], d=4)
    win = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    m5 = gt(None, win)[0, 0]
    m1 = FullMaskOnly(gt)(None, win)[0, 0]
    assert torch.equal(m1[0], m5[0]) and float(m1[1:].abs().sum()) == 0.0
    boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0],      # the object
                          [1.0, 1.0, 2.0, 3.0]])     # its left half
    # Hand-worked (surround 1.5): object: full term 1 - 0 = 1, each half term 1 - 0 -> 5.
    # Left half: S(bb) = 1; surround (0.75, 0.5, 2.25, 3.5) has frame area 2.5 holding mass 0.5
    # -> full term 0.8; top +1, bottom +1, left 1 - 1 = 0, right 0 - 0 = 0 -> 2.8.
    s5 = box_scores(m5, boxes, (0, 0, 4, 4))
    s1 = box_scores(m1, boxes, (0, 0, 4, 4))
    assert s5.tolist() == pytest.approx([5.0, 2.8])
    assert s1.tolist() == pytest.approx([1.0, 0.8])


def test_full_mask_only_keeps_predictor_attributes():
    gt = GroundTruthPredictor([[1.0, 1.0, 3.0, 3.0]], [2], num_classes=3, d=6, aspect_ratios=[1.0])
    f = FullMaskOnly(gt)
    assert (f.num_classes, f.d, f.aspect_ratios) == (3, 6, [1.0])
    with pytest.raises(ValueError):
        FullMaskOnly("not a predictor")


# ----------------------------------------------------------------------------- error analysis
def _example():
    gts = [{"boxes": torch.tensor([[0., 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]]),
            "labels": torch.tensor([1, 1, 2])}]
    dets = [{"boxes": torch.tensor([[0., 0, 10, 10],     # tp
                                    [0., 0, 10, 9],      # duplicate (IoU 0.9 with a claimed box)
                                    [20., 0, 24, 10],    # mislocalised (IoU 0.4)
                                    [50., 50, 60, 60],   # background
                                    [0., 20, 10, 30]]),  # class 1 on the class-2 object
             "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
             "labels": torch.tensor([1, 1, 1, 1, 1])}]
    return dets, gts


def test_classify_detections_hand_example():
    dets, gts = _example()
    kinds = [r["kind"] for r in sorted(classify_detections(dets, gts), key=lambda r: r["index"])]
    assert kinds == ["tp", "duplicate", "mislocalised", "background", "confusion"]
    # agrees with the VOC evaluator's TP / FP counts
    ev = evaluate_detections(dets, gts, labels=[1, 2])
    assert ev["tp"][1] == kinds.count("tp") and ev["fp"][1] == len(kinds) - kinds.count("tp")


def test_worst_errors_counts_and_misses():
    dets, gts = _example()
    w = worst_errors(dets, gts, per_kind=2)
    assert w["counts"] == {"tp": 1, "duplicate": 1, "mislocalised": 1, "confusion": 1,
                           "background": 1, "missed": 2}
    missed = {(m["label"], tuple(m["box"])) for m in w["missed"]}
    assert missed == {(1, (20.0, 0.0, 30.0, 10.0)), (2, (0.0, 20.0, 10.0, 30.0))}
    assert [m["best_iou"] for m in w["missed"]] == pytest.approx([0.0, 0.4])


def test_classify_rejects_mismatched_lengths():
    dets, gts = _example()
    with pytest.raises(ValueError):
        classify_detections(dets * 2, gts)


# ----------------------------------------------------------------------------- runs and CLI
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = DetectorNet(3, arch="tiny")
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint({"format": "dnnod", "version": 1, "kind": "localizer", "config": net.config(),
                     "class_names": ["circle", "square", "triangle"], "state_dict": net.state_dict(),
                     "aspect_ratios": [0.5, 1.0, 2.0]}, path)
    return path


def test_no_refine_variant_equals_detect_refine_false():
    from dnnod.data import ShapesDataset
    ds = torch.utils.data.Subset(ShapesDataset("test"), [0])
    img, t = ds[0]
    gt = GroundTruthPredictor(t["boxes"], t["labels"], num_classes=3, d=12)
    run = run_variants(gt, ds, ("no_refine",), stride=8)
    ref = detect(gt, img, refine=False, stride=8)
    got = run["detections"]["no_refine"][0]
    assert len(ref["boxes"]) > 0
    assert torch.allclose(got["boxes"], ref["boxes"]) and torch.allclose(got["scores"], ref["scores"])
    assert torch.equal(got["labels"], ref["labels"])


def test_cli_writes_valid_json(tmp_path, tiny_ckpt):
    out = tmp_path / "gain.json"
    assert main(["refine-gain", "--datasets", "shapes", "--shapes-images", "3",
                 "--shapes-weights", str(tiny_ckpt), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    d = res["datasets"]["shapes"]
    assert d["images"] == 3 and res["wall_time_s"] >= 0 and res["command"].startswith(
        "python -m dnnod.studies.experiments refine-gain")
    for k in ("refine_false", "refine_true"):
        m = d[k]["map_07"]
        assert m is None or 0.0 <= m <= 1.0
        assert set(d[k]["ap_07"]) == {"circle", "square", "triangle"}
    assert sum(d["refine_true"]["npos"].values()) > 0


def test_update_credits_kept_entries_to_the_run_that_computed_them():
    # three runs by hand: A computes shapes, B pennfudan (--update keeps A's shapes), C pennfudan
    # again (--update keeps the shapes, which are still A's, not B's)
    a = {"datasets": {"shapes": {"v": 1}}, "command": "A", "wall_time_s": 10.0}
    b = merge_update({"datasets": {"pennfudan": {"v": 2}}, "command": "B", "wall_time_s": 20.0,
                      "all_wall_time_s": 25.0}, a)
    assert b["datasets"] == {"shapes": {"v": 1}, "pennfudan": {"v": 2}}
    assert b["kept_from_earlier_run"] == {"datasets": ["shapes"], "command": "A", "wall_time_s": 10.0}
    c = merge_update({"datasets": {"pennfudan": {"v": 3}}, "command": "C", "wall_time_s": 30.0}, b)
    assert c["datasets"] == {"shapes": {"v": 1}, "pennfudan": {"v": 3}}
    assert c["kept_from_earlier_run"] == {"datasets": ["shapes"], "command": "A", "wall_time_s": 10.0}
    # B's own dataset kept by a run of a third dataset: credited to B, A's to A
    d = merge_update({"datasets": {"voc": {"v": 4}}, "command": "D", "wall_time_s": 1.0}, b)
    k = d["kept_from_earlier_run"]
    assert sorted(k["datasets"]) == ["pennfudan", "shapes"] and k["per_dataset"] == {
        "shapes": {"command": "A", "wall_time_s": 10.0}, "pennfudan": {"command": "B", "wall_time_s": 25.0}}
    # nothing to keep: no record
    assert "kept_from_earlier_run" not in merge_update({"datasets": {"shapes": {}}, "command": "E"}, a)


def test_cli_rejects_unknown_dataset(tmp_path):
    with pytest.raises(ValueError):
        main(["pr-curves", "--datasets", "voc", "--out", str(tmp_path / "x.json")])


# ----------------------------------------------------------------------------- widgets
@pytest.fixture(scope="module")
def gt_example():
    from dnnod.data import ShapesDataset
    img, t = ShapesDataset("test")[1]
    gt = GroundTruthPredictor(t["boxes"], t["labels"], num_classes=3, d=12)
    res = detect(gt, img, return_intermediates=True, stride=8)
    return img, t, gt, res


def test_multiscale_widget_follows_its_controls(gt_example):
    img, t, gt, res = gt_example
    p = explore.multiscale_widget({"a": (img, res)}, ["circle", "square", "triangle"])
    png0, n0 = p.image.value, p.renders
    p.controls["window"].value = 3
    assert p.renders == n0 + 1 and p.image.value != png0 and "window 3 of 9" in p.info.value
    p.controls["scale"].value = 0                 # one window at scale 0: the slider is clamped
    assert p.controls["window"].max == 0 and "window 0 of 1" in p.info.value
    p.controls["scale"].value = 2
    assert p.controls["window"].max == 24


def test_multiscale_widget_class_names_follow_the_image(gt_example):
    img, t, gt, res = gt_example
    p = explore.multiscale_widget({"a": (img, res, ["circle", "square", "triangle"]),
                                   "b": (img, res, ["x", "y", "z"])})
    assert [o[0] for o in p.controls["class"].options] == ["circle", "square", "triangle"]
    p.controls["image"].value = "b"
    assert [o[0] for o in p.controls["class"].options] == ["x", "y", "z"]
    p.controls["class"].value = 2
    assert "(y)" in p.info.value


def test_window_boxes_finds_the_object_in_its_window(gt_example):
    img, t, gt, res = gt_example
    # the whole-image window of the perfect predictor: each object's box is found
    for lab in t["labels"].unique().tolist():
        b, s = explore.window_boxes(res, 0, 0, lab)
        from torchvision.ops import box_iou
        tb = t["boxes"][t["labels"] == lab].double()
        assert len(b) and float(box_iou(b[:1].double(), tb).max()) > 0.5


def test_refine_steps_and_widget(gt_example):
    img, t, gt, res = gt_example
    st = explore.refine_steps(gt, img, res)
    n = len(res["boxes_before_refine"])
    assert st["boxes_after"].shape == (n, 4) and st["crop_masks"].shape[0] == n
    assert st["scales"].tolist() == sorted(st["scales"].tolist())
    p = explore.refine_widget(img, st, ["circle", "square", "triangle"], t["boxes"])
    png0 = p.image.value
    p.controls["detection"].value = n - 1
    assert p.image.value != png0 and f"detection {n - 1} of {n}" in p.info.value


def test_pr_widget_and_ap_figure():
    rec = np.array([0.25, 0.5, 0.5, 0.75])
    prec = np.array([1.0, 1.0, 2 / 3, 0.75])
    res = {"toy": {"class_names": ["a"], "pr": {"a": {"recall": rec.tolist(), "precision": prec.tolist()}},
                   "ap_07": {"a": 0.0}, "ap_all": {"a": 0.0}, "npos": {"a": 4}}}
    p = explore.pr_widget(res)
    p.controls["cut"].value = 0
    assert "recall 0.250" in p.info.value and "precision 1.000" in p.info.value
    p.controls["cut"].value = 100
    assert "recall 0.750" in p.info.value and "3 of 4" in p.info.value
    explore.ap_figure(rec, prec)


def test_load_book_data_reads_a_folder_and_names_a_missing_file(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert explore.load_book_data("x.json", folder=tmp_path) == {"a": 1}
    with pytest.raises(FileNotFoundError, match="y.json"):
        explore.load_book_data("y.json", folder=tmp_path)
