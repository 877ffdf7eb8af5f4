"""Two detectors side by side on stored detections (book chapter 10): a figure and a widget.

The detections come from the JSON files of ``dnnod/studies/results`` written by :mod:`dnnod.studies.baselines`
(boxes ``Tensor[N, 4]`` xyxy in continuous pixel coordinates).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from torchvision.ops import box_iou

from .._validate import as_boxes
from . import plot
from .widgets import Panel

__all__ = ["detections_from_json", "found_objects", "side_by_side_figure", "compare_widget"]


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
