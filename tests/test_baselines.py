"""dnnod.studies.baselines (book chapter 10): the mask-head command on a tiny budget,
and the helpers the chapter draws with. References are written here (hand-worked boxes, brute
force IoU), never the module's own output."""
from __future__ import annotations

import json

import pytest
import torch

from dnnod.studies import baselines
from dnnod.viz import compare


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _brute_found(boxes, scores, gt, thr, iou_thr=0.5):
    """Reference: count objects with some kept box at IoU >= iou_thr, by explicit loops."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / ua if ua > 0 else 0.0
    kept = [b for b, s in zip(boxes, scores) if s >= thr]
    return len(kept), sum(any(iou(g, b) >= iou_thr for b in kept) for g in gt)


def test_found_objects_hand_example():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]])
    det = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 5.0],     # IoU 0.5 with gt 0 -> counts
                                  [20.0, 20.0, 30.0, 40.0],  # exact gt 1, but low score
                                  [50.0, 50.0, 60.0, 60.0]]),
           "scores": torch.tensor([0.9, 0.3, 0.8]), "labels": torch.ones(3, dtype=torch.long)}
    assert compare.found_objects(det, gt, threshold=0.5) == (2, 1)
    assert compare.found_objects(det, gt, threshold=0.2) == (3, 2)
    assert compare.found_objects(det, gt, threshold=0.95) == (0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_found_objects_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(12, 2, generator=g) * 50
    wh = torch.rand(12, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    gt = boxes[:4] + (torch.rand(4, 2, generator=g) * 6).repeat(1, 2)   # shifted copies: some match
    scores = torch.rand(12, generator=g)
    det = {"boxes": boxes, "scores": scores, "labels": torch.ones(12, dtype=torch.long)}
    for thr in (0.1, 0.5, 0.9):
        assert compare.found_objects(det, gt, thr) == _brute_found(boxes.tolist(), scores.tolist(),
                                                                      gt.tolist(), thr)


def test_detections_json_roundtrip_and_errors():
    dets = [{"boxes": torch.tensor([[1.0404, 2.0, 3.0, 4.2626]], dtype=torch.float64),
             "scores": torch.tensor([0.123456789], dtype=torch.float64), "labels": torch.tensor([1])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    stored = json.loads(json.dumps(baselines._dets_json(dets)))
    assert stored[0]["boxes"] == [[1.04, 2.0, 3.0, 4.263]]        # 0.001 px
    assert stored[0]["scores"] == [0.1234568]                     # 7 significant digits
    back = compare.detections_from_json(stored)
    assert torch.allclose(back[0]["boxes"].double(), torch.tensor([[1.04, 2.0, 3.0, 4.263]], dtype=torch.float64))
    assert back[1]["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="boxes"):
        compare.detections_from_json([{"boxes": [[0, 0, 1, 1]], "scores": [], "labels": [1]}])


def _toy(n=3):
    images = [torch.full((3, 40, 50), 60 * i, dtype=torch.uint8) for i in range(n)]
    gts = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 35.0]]), "labels": torch.tensor([1])} for _ in range(n)]
    a = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 35.0]]), "scores": torch.tensor([0.9]),
          "labels": torch.tensor([1])} for _ in range(n)]
    b = [{"boxes": torch.tensor([[30.0, 2.0, 45.0, 20.0]]), "scores": torch.tensor([0.4 + 0.2 * i]),
          "labels": torch.tensor([1])} for i in range(n)]
    return images, gts, {"A": a, "B": b}


def test_compare_widget_reacts_to_controls():
    images, gts, res = _toy()
    panel = compare.compare_widget(images, gts, res, threshold=0.5)
    png0, info0 = panel.image.value, panel.info.value
    assert png0[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<b>A</b>: 1 boxes, 1 of 1" in info0 and "<b>B</b>: 0 boxes, 0 of 1" in info0
    panel.controls["threshold"].value = 0.3          # B's 0.4 box now shown, still misses
    assert "<b>B</b>: 1 boxes, 0 of 1" in panel.info.value
    panel.controls["image"].value = 2
    assert panel.image.value != png0
    with pytest.raises(ValueError, match="one detection dict"):
        compare.compare_widget(images[:2], gts, res)


def test_side_by_side_figure_layout():
    import matplotlib
    matplotlib.use("Agg")
    images, gts, res = _toy()
    fig = compare.side_by_side_figure(images, gts, res, indices=[0, 2])
    assert len(fig.axes) == 4
    assert "1/1 people found" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# the commands, on tiny budgets
# ---------------------------------------------------------------------------------------------
def test_heads_command_tiny(tmp_path):
    out = tmp_path / "heads.json"
    baselines.main(["heads", "--steps", "2", "--batch-size", "2", "--test-images", "1",
                    "--num-images", "8", "--threads", "1", "--runs", str(tmp_path / "runs"),
                    "--out", str(out)])
    r = json.loads(out.read_text())
    rows = {h["head"]: h for h in r["heads"]}
    assert set(rows) == {"fc", "conv"}
    assert rows["fc"]["steps"] == rows["conv"]["steps"] == 2
    # the parameter counts are those of freshly built networks of each head
    from dnnod import DetectorNet
    for head in ("fc", "conv"):
        ref = DetectorNet(3, arch="tiny", head=head)
        assert rows[head]["params"] == sum(p.numel() for p in ref.parameters())
        assert rows[head]["config"]["head"] == head
        assert 0.0 <= rows[head]["map"] <= 1.0
    assert rows["conv"]["params"] < rows["fc"]["params"]
    # dnnod.train --head reaches the checkpoint: reloading builds the conv head
    from dnnod.checkpoint import load_checkpoint
    m = load_checkpoint(tmp_path / "runs" / "conv" / "model.pt", device="cpu")
    assert m.head == "conv"


