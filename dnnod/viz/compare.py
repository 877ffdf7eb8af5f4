"""Two detectors side by side on stored detections (book chapter 10): a figure and a widget.

The detections come from the JSON files of ``dnnod/studies/results`` written by :mod:`dnnod.studies.baselines` and :mod:`dnnod.studies.race`
(boxes ``Tensor[N, 4]`` xyxy in continuous pixel coordinates).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from torchvision.ops import box_iou

from .._validate import as_boxes
from . import plot
from .widgets import Panel

__all__ = ["detections_from_json", "found_objects", "side_by_side_figure", "compare_widget", "race_figure"]


def detections_from_json(dets: Sequence[Mapping[str, Any]]) -> List[Dict[str, torch.Tensor]]:
    """The ``detections`` list of a ``dnnod/studies/results/ch10_*.json`` file as tensors (xyxy boxes)."""
    out = []
    for i, d in enumerate(dets):
        b = torch.tensor(d["boxes"], dtype=torch.float32).reshape(-1, 4)
        s_ = torch.tensor(d["scores"], dtype=torch.float32).reshape(-1)
        l_ = torch.tensor(d["labels"], dtype=torch.int64).reshape(-1)
        if not (len(b) == len(s_) == len(l_)):
            raise ValueError(f"detections[{i}]: {len(b)} boxes, {len(s_)} scores, {len(l_)} labels")
        out.append({"boxes": b, "scores": s_, "labels": l_})
    return out


def found_objects(det: Mapping[str, torch.Tensor], gt_boxes, threshold: float = 0.5,
                  iou: float = 0.5) -> Tuple[int, int]:
    """(kept detections, ground-truth objects covered by some kept detection at IoU >= ``iou``)
    for one image: the numbers the comparison widget prints."""
    keep = det["scores"] >= threshold
    b, g = det["boxes"][keep], as_boxes(gt_boxes, "gt_boxes")
    if len(b) == 0 or len(g) == 0:
        return int(keep.sum()), 0
    return int(keep.sum()), int((box_iou(g, b).max(1).values >= iou).sum())


def _draw_panel(ax, image, det, gt_boxes, threshold: float, title: str) -> None:
    plot.show_image(ax, image, title)
    plot.draw_boxes(ax, gt_boxes, color=plot.GT_COLOR, linestyle="--", linewidth=1.5, text=False)
    keep = det["scores"] >= threshold
    plot.draw_boxes(ax, det["boxes"][keep], scores=det["scores"][keep],
                    color="#d62728", linewidth=2)


def side_by_side_figure(images: Sequence[Any], gts: Sequence[Mapping[str, Any]],
                        results: Mapping[str, Sequence[Mapping[str, torch.Tensor]]],
                        indices: Sequence[int], threshold: float = 0.5):
    """One row per test image, one column per detector: its detections with score >= threshold
    (red, with scores) over the ground truth (dashed green)."""
    names = list(results)
    fig, axes = plt.subplots(len(indices), len(names), figsize=(3.3 * len(names), 2.9 * len(indices)),
                             squeeze=False)
    for r, i in enumerate(indices):
        for c, n in enumerate(names):
            det = results[n][i]
            k, f = found_objects(det, gts[i]["boxes"], threshold)
            _draw_panel(axes[r, c], images[i], det, gts[i]["boxes"], threshold,
                        f"{n}: image {i}\n{k} boxes, {f}/{len(gts[i]['boxes'])} people found")
    fig.tight_layout()
    return fig


def compare_widget(images: Sequence[Any], gts: Sequence[Mapping[str, Any]],
                   results: Mapping[str, Sequence[Mapping[str, torch.Tensor]]], threshold: float = 0.5):
    """Pick a test image and a score threshold; see every detector's boxes side by side."""
    names = list(results)
    if not names or any(len(results[n]) != len(images) for n in names) or len(gts) != len(images):
        raise ValueError("compare_widget needs one detection dict per image for every detector")
    style = {"description_width": "70px"}
    img = W.IntSlider(value=0, min=0, max=len(images) - 1, description="test image",
                      continuous_update=False, style=style, layout=W.Layout(width="360px"))
    thr = W.FloatSlider(value=threshold, min=0.05, max=3.0, step=0.05, description="min score",
                        continuous_update=False, style=style, layout=W.Layout(width="360px"))

    def render():
        i, t = img.value, thr.value
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
        parts = []
        for c, n in enumerate(names):
            k, f = found_objects(results[n][i], gts[i]["boxes"], t)
            _draw_panel(axes[0, c], images[i], results[n][i], gts[i]["boxes"], t, n)
            parts.append(f"<b>{n}</b>: {k} boxes, {f} of {len(gts[i]['boxes'])} people found")
        fig.tight_layout()
        return plot.fig_to_png(fig), " &nbsp;|&nbsp; ".join(parts) + " (IoU ≥ 0.5)"

    return Panel({"image": img, "threshold": thr}, render, title="Two detectors, one test image")


#: Colours of the race figure, one per detector.
RACE_COLORS = {"detectornet": "#1f77b4", "fasterrcnn": "#d62728"}
RACE_LABELS = {"detectornet": "DetectorNet (tiny, conv head)",
               "fasterrcnn": "Faster R-CNN (MobileNetV3-FPN)"}


def race_figure(runs: Sequence[Mapping[str, Any]], shipped: Optional[Mapping[str, Any]] = None,
                figsize=(5.6, 3.6)):
    """AP against the training budget (minutes), one dot per run (seed) and a line through each
    detector's mean over seeds; ``runs`` are the rows of ``ch10_race.json``. ``shipped``
    (``{"minutes", "ap", "label"}``) adds one marker for a network trained outside the race."""
    fig, ax = plt.subplots(figsize=figsize)
    dets = sorted({r["detector"] for r in runs})
    budgets = sorted({float(r["budget_min"]) for r in runs})
    offset = {d: (i - (len(dets) - 1) / 2) * 1.5 for i, d in enumerate(dets)}   # minutes, to unstack
    for d in dets:
        rs = [r for r in runs if r["detector"] == d]
        color = RACE_COLORS.get(d, "0.3")
        ax.plot([float(r["budget_min"]) + offset[d] for r in rs], [r["ap50_voc07"] for r in rs], "o",
                ms=8, alpha=0.8, color=color, markerfacecolor="none", mew=1.8)
        means = [(b, float(torch.tensor([r["ap50_voc07"] for r in rs if float(r["budget_min"]) == b]).mean()))
                 for b in budgets if any(float(r["budget_min"]) == b for r in rs)]
        ax.plot([b + offset[d] for b, _ in means], [m for _, m in means], "-_", color=color, ms=18, mew=2.5,
                label=f"{RACE_LABELS.get(d, d)}: each seed (○), mean (—)")
    if shipped:
        ax.plot([shipped["minutes"]], [shipped["ap"]], "*", ms=13, color=RACE_COLORS["detectornet"],
                label=shipped.get("label", "shipped network"))
    hi = max([r["budget_min"] for r in runs] + ([shipped["minutes"]] if shipped else []))
    ax.set_xlim(0, hi * 1.2 + 2)
    ax.set_xticks(sorted(set(budgets) | ({float(shipped["minutes"])} if shipped else set())))
    aps = [r["ap50_voc07"] for r in runs] + ([shipped["ap"]] if shipped else [])
    # The seeds differ by hundredths: a 0-1 axis would stack them into one dot. The axis is cut
    # to the data (in steps of 0.1) and says so in its label.
    lo, hi_ap = max(0.0, math.floor((min(aps) - 0.05) * 10) / 10), min(1.0, math.ceil((max(aps) + 0.05) * 10) / 10)
    ax.set_ylim(lo, hi_ap)
    ax.set_xlabel("training budget (wall-clock minutes, 2 CPU cores)")
    ax.set_ylabel("AP@0.5 (VOC07), 50 test images" + (f"\n(axis from {lo:.1f})" if lo > 0 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig
