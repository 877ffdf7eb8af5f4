"""Figures and widgets of the book's chapters 7–9 (multiple scales, refinement, evaluation).

Everything here draws what the package computed — the intermediates of
:func:`dnnod.detect.detect` (``return_intermediates=True``), :func:`dnnod.refine.refine_boxes`,
:func:`dnnod.localize.extract_boxes` and the JSON written by :mod:`dnnod.studies.experiments` — with the
look of :mod:`dnnod.viz.plot`. Widgets are :class:`dnnod.viz.widgets.Panel` s (core ipywidgets 8 only):
builder functions a test can drive by setting a control's value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import ipywidgets as W
import numpy as np
import torch

from . import plot
from ..evaluate import voc_ap
from ..localize import extract_boxes
from ..masks import MASK_TYPES
from ..refine import refine_boxes
from .widgets import Panel, _SLIDER_STYLE

__all__ = ["load_book_data", "crop", "scale_boxes", "windows_figure", "window_gallery", "merged_figure",
           "scale_boxes_figure", "stage1_scales", "window_boxes", "multiscale_widget", "refine_steps",
           "refine_figure", "refine_widget", "ap_figure", "pr_figure", "error_gallery",
           "pr_widget"]

SCALE_NAMES = ("scale 1 (whole image)", "scale 1/2", "scale 1/4")
#: Width (inches) of the six-panel galleries (a crop and its five masks per row): at the book's
#: 100 dpi and a 720 px content column their 10 pt titles show at >= 10 px.
GALLERY_WIDTH_IN = 9.4
#: The book's precomputed results (written by :mod:`dnnod.studies`): package data, installed with
#: ``pip install`` (Colab included), so no chapter reads anything from the network.
BOOK_DATA = Path(__file__).resolve().parents[1] / "studies" / "results"


def load_book_data(name: str, folder=None) -> Dict[str, Any]:
    """A JSON file of the book's results (written by :mod:`dnnod.studies.experiments` and
    :mod:`dnnod.studies.baselines`): from ``folder``, else from the package (:data:`BOOK_DATA`,
    ``dnnod/studies/results``)."""
    import json
    path = Path(folder if folder is not None else BOOK_DATA) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the book's results are written by "
                                f"python -m dnnod.studies.experiments / dnnod.studies.baselines")
    return json.loads(path.read_text())


def _scale_name(s: int) -> str:
    return SCALE_NAMES[s] if s < len(SCALE_NAMES) else f"scale 1/{2 ** s}"


def crop(image, window) -> torch.Tensor:
    """The pixels of ``window`` (xyxy, rounded outwards to whole pixels) as ``uint8 [3, h, w]``."""
    img = torch.as_tensor(image)
    H, W_ = img.shape[-2:]
    x1, y1, x2, y2 = (float(v) for v in torch.as_tensor(window).reshape(4))
    xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    xb, yb = min(W_, int(np.ceil(x2))), min(H, int(np.ceil(y2)))
    if xb <= xa or yb <= ya:
        raise ValueError(f"window {x1, y1, x2, y2} has no pixels inside the {W_}×{H} image")
    return img[..., ya:yb, xa:xb]


def scale_boxes(result: Mapping[str, Any], scale: int, label: int, top_k: Optional[int] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The boxes (the best ``top_k`` after NMS, as ``detect`` keeps them; default the ``top_k``
    of that ``detect`` call) that scale ``scale`` contributed for class ``label`` (1-based) to
    the stage-1 detections, with their Eq. 3 scores."""
    top_k = result.get("top_k", 5) if top_k is None else top_k
    b = result["candidates_nms"][scale][label - 1]
    s = result["candidate_scores_nms"][scale][label - 1]
    return b[:top_k], s[:top_k]


def stage1_scales(result: Mapping[str, Any], top_k: Optional[int] = None) -> torch.Tensor:
    """The scale (0-based) each stage-1 detection came from: ``detect`` lists them scale by
    scale, class by class, at most ``top_k`` each (default: that ``detect`` call's)."""
    top_k = result.get("top_k", 5) if top_k is None else top_k
    out = []
    for s, per_c in enumerate(result["candidates_nms"]):
        for c in per_c:
            out += [s] * min(top_k, len(c))
    return torch.tensor(out, dtype=torch.long)


def window_boxes(result: Mapping[str, Any], scale: int, window: int, label: int, *,
                 threshold: float = 0.5, top_k: int = 5):
    """Boxes extracted (Sec. 5.2) from one window's own five masks of class ``label``, in image
    pixels: what that window alone would detect. Returns ``(boxes, scores)``."""
    win = result["windows"][scale][window]
    m = result["window_masks"][scale][window, label - 1]
    return extract_boxes(m, win, result.get("aspect_ratios"), threshold=threshold, top_k=top_k,
                         stride=max(1.0, float(win[2] - win[0]) / 48))


# ----------------------------------------------------------------------------- chapter 7
def windows_figure(image, result, gt_boxes=None):
    """The windows of every scale drawn on the image (paper Sec. 5.3), one panel per scale."""
    import matplotlib.pyplot as plt
    S = len(result["windows"])
    fig, axes = plt.subplots(1, S, figsize=(3.15 * S, 3.15 * image.shape[1] / image.shape[2] + 0.5))
    axes = np.atleast_1d(axes)
    for s, ax in enumerate(axes):
        w = result["windows"][s]
        plot.show_image(ax, image, title=f"{_scale_name(s)}: {len(w)} windows")
        if gt_boxes is not None:
            plot.draw_boxes(ax, gt_boxes, color=plot.GT_COLOR, linewidth=1, text=False)
        for k in range(len(w)):
            plot.draw_boxes(ax, w[k:k + 1], color=plot.PALETTE[k % len(plot.PALETTE)],
                            linewidth=1.2, alpha=0.8, text=False)
    fig.tight_layout()
    return fig


def window_gallery(image, result, picks: Sequence[Tuple[int, int]], label: int = 1):
    """One row per ``(scale, window)`` pick: the crop, then its 5 predicted masks of class
    ``label`` (the network output, ``window_masks``) over the crop."""
    import matplotlib.pyplot as plt
    n = len(picks)
    if n == 0:
        raise ValueError("window_gallery needs at least one (scale, window) pick")
    fig, axes = plt.subplots(n, 6, figsize=(GALLERY_WIDTH_IN, 1.85 * n), squeeze=False)
    for r, (s, k) in enumerate(picks):
        win = result["windows"][s][k]
        c = crop(image, win)
        m = result["window_masks"][s][k, label - 1]
        plot.show_image(axes[r, 0], c, title=f"{_scale_name(s)}\nwindow {k}")
        for t in range(5):
            plot.overlay_mask(axes[r, t + 1], c, m[t], title=MASK_TYPES[t] if r == 0 else None)
    fig.tight_layout()
    return fig


def merged_figure(image, result, label: int = 1, types: Sequence[str] = MASK_TYPES):
    """The merged (max over windows) masks of each scale over the image: rows = scales, columns =
    mask types."""
    import matplotlib.pyplot as plt
    S = len(result["merged_masks"])
    fig, axes = plt.subplots(S, len(types), figsize=(1.8 * len(types), 1.8 * S * image.shape[1]
                                                    / image.shape[2] + 0.5), squeeze=False)
    H, W_ = image.shape[1:]
    for s in range(S):
        m = result["merged_masks"][s][label - 1]
        for j, t in enumerate(types):
            ax = axes[s, j]
            mm = m[MASK_TYPES.index(t)]
            plot.show_image(ax, image, title=t if s == 0 else None)
            ax.imshow(mm.detach().cpu().numpy(), extent=(0, W_, H, 0), vmin=0, vmax=1,
                      cmap=plot.MASK_CMAP, alpha=0.6, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(f"{_scale_name(s)}\n{mm.shape[0]}×{mm.shape[1]} cells", fontsize=10)
    fig.tight_layout()
    return fig


def scale_boxes_figure(image, result, class_names: Optional[Sequence[str]] = None, gt_boxes=None,
                       labelled: Optional[int] = None):
    """The stage-1 boxes each scale found (≤ top_k per class), one panel per scale; the best
    ``labelled`` boxes of each class carry their class and score (default: 3 in all, at least one
    per class)."""
    import matplotlib.pyplot as plt
    S = len(result["windows"])
    C = len(result["candidates_nms"][0])
    if labelled is None:
        labelled = max(1, 3 // C)
    fig, axes = plt.subplots(1, S, figsize=(3.15 * S, 3.15 * image.shape[1] / image.shape[2] + 0.5))
    axes = np.atleast_1d(axes)
    for s, ax in enumerate(axes):
        n = 0
        plot.show_image(ax, image)
        if gt_boxes is not None:
            plot.draw_boxes(ax, gt_boxes, color=plot.GT_COLOR, linewidth=1, linestyle="--", text=False)
        for c in range(1, C + 1):
            b, sc = scale_boxes(result, s, c)
            n += len(b)
            if len(b):
                # Every box thin and unlabelled; the best `labelled` per class labelled on top, so
                # that the labels of up to 10 boxes per scale do not pile up on each other.
                order = torch.argsort(torch.as_tensor(sc), descending=True)
                b, sc = b[order], torch.as_tensor(sc)[order]
                plot.draw_boxes(ax, b, labels=[c] * len(b), linewidth=0.8, text=False)
                top = b[:labelled]
                plot.draw_boxes(ax, top, labels=[c] * len(top), scores=sc[:labelled],
                                class_names=class_names, linewidth=2)
        best = f"best {labelled} labelled" if C == 1 else f"best {labelled} per class labelled"
        ax.set_title(f"{_scale_name(s)}: {n} boxes\n({best})", fontsize=11)
    fig.tight_layout()
    return fig


def multiscale_widget(examples: Mapping[str, Tuple], class_names: Optional[Sequence[str]] = None) -> Panel:
    """Pick an image, a scale and a window: see where the window lies, its crop, its 5 masks of
    the chosen class and the boxes extracted from that window's masks alone.

    ``examples``: name -> ``(image, detect(..., return_intermediates=True))`` or
    ``(image, result, class_names)`` (each example may come from a different network).
    """
    if not examples:
        raise ValueError("multiscale_widget needs at least one example")
    names = list(examples)

    def ex(name):
        e = examples[name]
        img, res = e[0], e[1]
        C = len(res["candidates_nms"][0])
        cn = e[2] if len(e) > 2 and e[2] else class_names
        cn = list(cn) if cn else [str(c) for c in range(1, C + 1)]
        return img, res, cn

    cn0 = ex(names[0])[2]
    pick = W.Dropdown(options=names, value=names[0], description="image", style=_SLIDER_STYLE)
    cls = W.Dropdown(options=[(n, i + 1) for i, n in enumerate(cn0)], value=1, description="class",
                     style=_SLIDER_STYLE)
    scale = W.IntSlider(value=1, min=0, max=len(ex(names[0])[1]["windows"]) - 1,
                        description="scale", continuous_update=False, style=_SLIDER_STYLE)
    n1 = len(ex(names[0])[1]["windows"][1])
    window = W.IntSlider(value=n1 // 2, min=0, max=n1 - 1,
                         description="window", continuous_update=False, style=_SLIDER_STYLE)

    def fix_range(_=None):
        # The number of windows depends on the scale: clamp the window slider without a redraw.
        panel.hold = True
        _, res, cn = ex(pick.value)
        opts = [(n, i + 1) for i, n in enumerate(cn)]
        if list(cls.options) != opts:
            cls.options = opts
            cls.value = 1
        scale.max = len(res["windows"]) - 1
        window.max = len(res["windows"][scale.value]) - 1
        panel.hold = False
        panel.refresh()

    def render():
        import matplotlib.pyplot as plt
        img, res, cn = ex(pick.value)
        s, k, c = int(scale.value), int(window.value), int(cls.value)
        k = min(k, len(res["windows"][s]) - 1)
        win = res["windows"][s][k]
        b, sc = window_boxes(res, s, k, c)
        m = res["window_masks"][s][k, c - 1]
        cr = crop(img, win)
        fig = plt.figure(figsize=(13.5, 3.1))
        gs = fig.add_gridspec(1, 7, width_ratios=[1.3, 1, 1, 1, 1, 1, 1], wspace=0.1)
        ax0 = fig.add_subplot(gs[0])
        plot.show_image(ax0, img, title=f"{_scale_name(s)}: window {k}")
        plot.draw_boxes(ax0, res["windows"][s], color="white", linewidth=0.6, alpha=0.5, text=False)
        plot.draw_boxes(ax0, win[None], color="#ffd600", linewidth=2, text=False)
        if len(b):
            plot.draw_boxes(ax0, b, labels=[c] * len(b), text=False, linewidth=1.2)
        ax1 = fig.add_subplot(gs[1])
        plot.show_image(ax1, cr, title="crop + its boxes")
        if len(b):
            off = torch.tensor([float(win[0]), float(win[1])] * 2)
            # boxes in crop pixels (the crop starts at the window's floor)
            off = torch.floor(off)
            plot.draw_boxes(ax1, b - off, labels=[c] * len(b), scores=sc, class_names=cn)
        for t in range(5):
            plot.overlay_mask(fig.add_subplot(gs[t + 2]), cr, m[t], title=MASK_TYPES[t])
        x1, y1, x2, y2 = (float(v) for v in win)
        html = (f"{_scale_name(s)}, window {k} of {len(res['windows'][s])}: "
                f"({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f}), {x2 - x1:.0f}×{y2 - y1:.0f} px "
                f"→ {cr.shape[2]}×{cr.shape[1]} crop, {m.shape[-1]}×{m.shape[-1]} mask cells of "
                f"{(x2 - x1) / m.shape[-1]:.1f} px. Boxes from this window alone ({cn[c - 1]}): {len(b)}"
                + (f", best Eq. 3 = {float(sc[0]):.2f}" if len(b) else ""))
        return plot.fig_to_png(fig), html

    panel = Panel({"image": pick, "class": cls, "scale": scale, "window": window}, render,
                  W.VBox([W.HBox([pick, cls]), W.HBox([scale, window])]),
                  title="One window at one scale")
    for w in (pick, scale):
        w.unobserve(panel._on_change, names="value")
        w.observe(fix_range, names="value")
    return panel


# ----------------------------------------------------------------------------- chapter 8
def refine_steps(predictor, image, result, **kw) -> Dict[str, torch.Tensor]:
    """``predictor``: a DetectorNet or a mask predictor. Every stage-1 detection of ``result`` refined on its own (paper Sec. 6), before the
    final NMS: ``boxes_before``, ``scores_before``, ``labels``, ``crops`` (1.2× enlarged),
    ``crop_masks [N, 5, d, d]``, ``boxes_after``, ``scores_after`` — one row per detection, in
    stage-1 order (:func:`dnnod.refine.refine_boxes` with ``apply_nms=False``)."""
    b, s, lab = result["boxes_before_refine"], result["scores_before_refine"], result["labels_before_refine"]
    if len(b) == 0:
        raise ValueError("this result has no stage-1 detections to refine")
    ar = result.get("aspect_ratios")
    ar = None if ar is None else [float(v) for v in ar]
    from ..detect import as_predictor
    _, _, _, extra = refine_boxes(as_predictor(predictor), image, b, lab, ar, apply_nms=False, return_all=True, **kw)
    return {"boxes_before": b.float(), "scores_before": s.float(), "labels": lab,
            "scales": stage1_scales(result),
            "crops": extra["crops"], "crop_masks": extra["crop_masks"],
            "boxes_after": extra["boxes_refined"], "scores_after": extra["scores_refined"]}


def _refine_row(axes, image, steps, i, class_names=None, gt_boxes=None, titles=True):
    c = steps["crops"][i]
    cr = crop(image, c)
    off = torch.floor(torch.tensor([float(c[0]), float(c[1])] * 2))
    lab = int(steps["labels"][i])
    plot.show_image(axes[0], cr, title=f"detection {i}\ncrop (1.2×)" if titles else None)
    if gt_boxes is not None and len(gt_boxes):
        plot.draw_boxes(axes[0], torch.as_tensor(gt_boxes).double() - off, color=plot.GT_COLOR,
                        linewidth=1, linestyle=":", text=False)
    plot.draw_boxes(axes[0], (steps["boxes_before"][i] - off)[None], color="white",
                    linestyle="--", linewidth=1.5, text=False)
    plot.draw_boxes(axes[0], (steps["boxes_after"][i] - off)[None], labels=[lab],
                    scores=[float(steps["scores_after"][i])], class_names=class_names)
    for t in range(5):
        plot.overlay_mask(axes[t + 1], cr, steps["crop_masks"][i][t],
                          title=MASK_TYPES[t] if titles else None)
        plot.draw_boxes(axes[t + 1], (steps["boxes_after"][i] - off)[None], color="white",
                        linewidth=1, text=False)


def refine_figure(image, steps, indices: Sequence[int], class_names=None, gt_boxes=None):
    """Before (white dashed) and after (class colour) for some detections: the enlarged crop
    and the five masks the network predicts on it."""
    import matplotlib.pyplot as plt
    n = len(indices)
    if n == 0:
        raise ValueError("refine_figure needs at least one detection index")
    fig, axes = plt.subplots(n, 6, figsize=(GALLERY_WIDTH_IN, 1.85 * n), squeeze=False)
    for r, i in enumerate(indices):
        _refine_row(axes[r], image, steps, i, class_names, gt_boxes, titles=(r == 0))
    fig.tight_layout()
    return fig


def refine_widget(image, steps, class_names=None, gt_boxes=None) -> Panel:
    """Step through the stage-1 detections (15 per class: 5 per scale) and see each one's
    enlarged crop, the masks predicted on it, and the box before and after refinement."""
    from torchvision.ops import box_iou
    N = len(steps["boxes_before"])
    slider = W.IntSlider(value=0, min=0, max=N - 1, description="detection",
                         continuous_update=False, style=_SLIDER_STYLE, layout=W.Layout(width="360px"))
    gt = None if gt_boxes is None else torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4)

    def render():
        import matplotlib.pyplot as plt
        i = int(slider.value)
        fig = plt.figure(figsize=(12.5, 2.6))
        gs = fig.add_gridspec(1, 7, width_ratios=[1.4, 1, 1, 1, 1, 1, 1], wspace=0.1)
        ax0 = fig.add_subplot(gs[0])
        plot.show_image(ax0, image, title="image: before / after")
        if gt is not None:
            plot.draw_boxes(ax0, gt, color=plot.GT_COLOR, linewidth=1, linestyle=":", text=False)
        plot.draw_boxes(ax0, steps["crops"][i][None], color="#ffd600", linewidth=1, text=False)
        plot.draw_boxes(ax0, steps["boxes_before"][i][None], color="white", linestyle="--", text=False)
        plot.draw_boxes(ax0, steps["boxes_after"][i][None], labels=[int(steps["labels"][i])], text=False)
        _refine_row([fig.add_subplot(gs[j]) for j in range(1, 7)], image, steps, i, class_names, gt)
        lab = int(steps["labels"][i])
        name = class_names[lab - 1] if class_names else str(lab)
        txt = (f"detection {i} of {N} ({name}, from {_scale_name(int(steps['scales'][i]))}): "
               f"Eq. 3 before {float(steps['scores_before'][i]):.2f} → after "
               f"{float(steps['scores_after'][i]):.2f}")
        if gt is not None and len(gt):
            i0 = float(box_iou(steps["boxes_before"][i][None].double(), gt).max())
            i1 = float(box_iou(steps["boxes_after"][i][None].double(), gt).max())
            txt += f"; best IoU with a true box {i0:.2f} → {i1:.2f}"
        return plot.fig_to_png(fig), txt

    return Panel({"detection": slider}, render, title="Refinement, one detection at a time")


# ----------------------------------------------------------------------------- chapter 9
def ap_figure(recall, precision, title: str = ""):
    """A PR curve with the two VOC summaries: the 11 interpolated points (VOC2007) and the area
    under the precision envelope (VOC2010+), each AP computed by :func:`dnnod.evaluate.voc_ap`."""
    import matplotlib.pyplot as plt
    rec, prec = np.asarray(recall, float), np.asarray(precision, float)
    ap07, apall = voc_ap(rec, prec, True), voc_ap(rec, prec, False)
    mrec = np.concatenate([[0.0], rec, [rec[-1] if len(rec) else 0.0]])
    env = np.maximum.accumulate(np.concatenate([[0.0], prec, [0.0]])[::-1])[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax in axes:
        ax.plot(rec, prec, ".-", color="#888888", lw=1, ms=4, label="precision at each rank")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
    axes[0].set_ylabel("precision")
    ts = np.linspace(0, 1, 11)
    p11 = [prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in ts]
    axes[0].bar(ts, p11, width=0.04, color=plot.PALETTE[0], alpha=0.6, label="max precision at recall ≥ t")
    axes[0].set_title(f"VOC2007 11-point: AP = {ap07:.3f}", fontsize=10)
    axes[1].fill_between(mrec, env, step="post", color=plot.PALETTE[1], alpha=0.35,
                         label="area under the envelope")
    axes[1].step(mrec, env, where="post", color=plot.PALETTE[1])
    axes[1].set_title(f"all-point: AP = {apall:.3f}", fontsize=10)
    for ax in axes:
        ax.legend(fontsize=10, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def pr_figure(results: Mapping[str, Mapping[str, Any]], titles: Optional[Mapping[str, str]] = None):
    """PR curves of every class of every dataset in ``results`` (name -> one dataset entry of
    ``ch09_pr_curves.json``), AP in the legend."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.3 * len(results), 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for k, c in enumerate(r["class_names"]):
            pr = r["pr"][c]
            ax.plot(pr["recall"], pr["precision"], color=plot.PALETTE[k % len(plot.PALETTE)],
                    label=f"{c}: AP {r['ap_07'][c]:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title((titles or {}).get(name, name) + f" (mAP {r['map_07']:.3f})", fontsize=10)
        ax.legend(fontsize=10, loc="lower left")
    fig.tight_layout()
    return fig


ERROR_KINDS = ("missed", "mislocalised", "duplicate", "background", "confusion")


def error_gallery(dataset, errors: Mapping[str, Any], class_names=None,
                  kinds: Sequence[str] = ERROR_KINDS, per_kind: int = 3, context: float = 0.6):
    """The worst errors of each kind (from :func:`dnnod.studies.experiments.worst_errors`): a crop around
    the error (the box enlarged by ``1 + context``) with the ground truth (green) and the error
    box (red); for ``missed`` the box is the ground truth nobody found."""
    import matplotlib.pyplot as plt
    from ..refine import enlarge
    kinds = [k for k in kinds if errors.get(k)]
    if not kinds:
        raise ValueError("no errors to show")
    fig, axes = plt.subplots(len(kinds), per_kind, figsize=(2.3 * per_kind, 2.5 * len(kinds)),
                             squeeze=False)
    for r, k in enumerate(kinds):
        items = errors[k][:per_kind]
        for j in range(per_kind):
            ax = axes[r, j]
            if j >= len(items):
                ax.axis("off")
                continue
            e = items[j]
            img, t = dataset[e["image"]]
            H, W_ = img.shape[1:]
            box = torch.tensor(e["box"], dtype=torch.float64)
            win = enlarge(box[None], 1 + context, (H, W_))[0]
            cr = crop(img, win)
            off = torch.floor(torch.tensor([float(win[0]), float(win[1])] * 2))
            plot.show_image(ax, cr)
            plot.draw_boxes(ax, t["boxes"].double() - off, color=plot.GT_COLOR, linewidth=1.2, text=False)
            lab = e["label"]
            name = class_names[lab - 1] if class_names else str(lab)
            if k == "missed":
                plot.draw_boxes(ax, (box - off)[None], color=plot.GT_COLOR, linewidth=2.5, text=False)
                ax.set_title(f"missed {name}\nbest IoU {e['best_iou']:.2f}", fontsize=9)
            else:
                plot.draw_boxes(ax, (box - off)[None], color="#d62728", linewidth=2, text=False)
                ax.set_title(f"{k} {name} {e['score']:.2f}\nIoU {e['iou']:.2f}", fontsize=9)
        axes[r, 0].set_ylabel(k, fontsize=9)
    fig.tight_layout()
    return fig


def pr_widget(results: Mapping[str, Mapping[str, Any]]) -> Panel:
    """Walk down the ranked detections of one class: a slider over the PR curve's points shows
    the precision and recall at that cut-off and how the two AP summaries read the curve."""
    names = list(results)
    if not names:
        raise ValueError("pr_widget needs at least one dataset")
    ds = W.Dropdown(options=names, value=names[0], description="data", style=_SLIDER_STYLE)
    opts = lambda n: list(results[n]["class_names"])  # noqa: E731
    cls = W.Dropdown(options=opts(names[0]), value=opts(names[0])[0], description="class",
                     style=_SLIDER_STYLE)
    cut = W.IntSlider(value=50, min=0, max=100, description="cut-off %", continuous_update=False,
                      style=_SLIDER_STYLE, layout=W.Layout(width="360px"))

    def on_ds(change):
        panel.hold = True
        cls.options = opts(ds.value)
        cls.value = opts(ds.value)[0]
        panel.hold = False
        panel.refresh()

    def render():
        import matplotlib.pyplot as plt
        r = results[ds.value]
        pr = r["pr"][cls.value]
        rec, prec = np.asarray(pr["recall"], float), np.asarray(pr["precision"], float)
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        if len(rec) == 0:
            ax.text(0.5, 0.5, "no detections", ha="center")
            return plot.fig_to_png(fig), "no detections of this class"
        i = int(round(cut.value / 100 * (len(rec) - 1)))
        env = np.maximum.accumulate(prec[::-1])[::-1]
        ax.plot(rec, prec, color="#888888", lw=1, label="precision")
        ax.step(rec, env, where="post", color=plot.PALETTE[1], lw=1, label="envelope")
        ax.plot([rec[i]], [prec[i]], "o", color="#d62728", ms=8, label="cut-off")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(fontsize=10, loc="lower left")
        ax.set_title(f"{ds.value}, {cls.value}: AP {r['ap_07'][cls.value]:.3f} (11-pt), "
                     f"{r['ap_all'][cls.value]:.3f} (all-pt)", fontsize=9)
        fig.tight_layout()
        n = r["npos"][cls.value]
        html = (f"Keeping the detections down to this rank: recall {rec[i]:.3f} "
                f"(≈ {rec[i] * n:.0f} of {n} objects found), precision {prec[i]:.3f}.")
        return plot.fig_to_png(fig), html

    panel = Panel({"data": ds, "class": cls, "cut": cut}, render,
                  W.VBox([W.HBox([ds, cls]), cut]), title="Reading a PR curve")
    ds.unobserve(panel._on_change, names="value")
    ds.observe(on_ds, names="value")
    return panel
