"""Interactive widgets of the book, built from ipywidgets 8 core controls only (they work in
Jupyter, in Colab and — showing their initial state — in the static HTML, with no extra package).

Every builder returns a :class:`Panel` (an ``ipywidgets.VBox``) whose ``controls`` dict, ``image``
(an ``ipywidgets.Image`` holding a PNG drawn by :mod:`dnnod.viz.plot`) and ``info`` (an
``ipywidgets.HTML``) are attributes, so a test can set a control and check that the picture and
the numbers changed — no browser needed. Drawing happens in :mod:`dnnod.viz.plot`; the numbers come
from the package (``dnnod.masks``, ``dnnod.loss``) and ``torchvision.ops``, never recomputed here.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import ipywidgets as W
import torch
from torchvision.ops import box_iou

from . import plot
from .._validate import as_boxes, check_d
from ..masks import MASK_TYPES, mask_targets

_SLIDER_LAYOUT = dict(width="300px")
_SLIDER_STYLE = {"description_width": "70px"}


class Panel(W.VBox):
    """A widget = controls + one picture + one line of numbers, redrawn on every change."""

    def __init__(self, controls: Mapping[str, W.Widget], render: Callable[[], Tuple[bytes, str]],
                 layout_controls: Optional[W.Widget] = None, title: str = "") -> None:
        self.controls: Dict[str, W.Widget] = dict(controls)
        self._render = render
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.info = W.HTML()
        self.renders = 0
        #: set while several controls are changed together, so the picture is drawn once
        self.hold = False
        box = layout_controls if layout_controls is not None else W.VBox(list(self.controls.values()))
        children = ([W.HTML(f"<b>{title}</b>")] if title else []) + [box, self.info, self.image]
        super().__init__(children=children)
        for c in self.controls.values():
            c.observe(self._on_change, names="value")
        self.refresh()

    def _on_change(self, _change=None) -> None:
        if not self.hold:
            self.refresh()

    def snapshot(self):
        """The current picture as a static ``IPython.display.Image``: the figure beside a widget
        that GitHub and the HTML page show even where widgets do not run."""
        from IPython.display import Image

        return Image(data=self.image.value, format="png")

    def refresh(self) -> None:
        """Redraw the picture and the numbers from the controls' current values."""
        png, html = self._render()
        # Show the picture at its own size (pages may stretch images to their full width);
        # a PNG stores its width in bytes 16-20 of the IHDR chunk.
        self.image.width = str(int.from_bytes(png[16:20], "big"))
        self.image.value = png
        self.info.value = html
        self.renders += 1


def _slider(desc: str, value: float, lo: float, hi: float, step: float = 1) -> W.IntSlider:
    return W.IntSlider(value=int(round(value)), min=int(lo), max=int(hi), step=int(step),
                       description=desc, continuous_update=False, layout=W.Layout(**_SLIDER_LAYOUT),
                       style=_SLIDER_STYLE)


def _box_sliders(prefix: str, box, width: int, height: int) -> Dict[str, W.IntSlider]:
    x1, y1, x2, y2 = [float(v) for v in box]
    return {
        f"{prefix}x": _slider(f"{prefix} left", x1, 0, width - 1),
        f"{prefix}y": _slider(f"{prefix} top", y1, 0, height - 1),
        f"{prefix}w": _slider(f"{prefix} width", x2 - x1, 1, width),
        f"{prefix}h": _slider(f"{prefix} height", y2 - y1, 1, height),
    }


def _box_from(c: Mapping[str, W.Widget], prefix: str, width: int, height: int) -> Tuple[float, ...]:
    """The box a group of sliders describes, clipped to the image (a box never leaves it)."""
    x1, y1 = float(c[f"{prefix}x"].value), float(c[f"{prefix}y"].value)
    x2 = min(float(width), x1 + float(c[f"{prefix}w"].value))
    y2 = min(float(height), y1 + float(c[f"{prefix}h"].value))
    return (x1, y1, x2, y2)


def iou_widget(box_a=(30, 30, 130, 110), box_b=(80, 60, 180, 150), size: Tuple[int, int] = (220, 180),
               image=None) -> Panel:
    """Two boxes you move and resize with sliders; shows their intersection, union and IoU
    (``torchvision.ops.box_iou``). ``size`` = (width, height) of the canvas, or ``image`` to draw on.
    """
    if image is not None:
        arr = plot.to_hwc(image)
        size = (arr.shape[1], arr.shape[0])
    width, height = int(size[0]), int(size[1])
    for name, b in (("box_a", box_a), ("box_b", box_b)):
        as_boxes([b], name, allow_empty_area=False)
    controls = {**_box_sliders("A", box_a, width, height), **_box_sliders("B", box_b, width, height)}
    canvas = image if image is not None else torch.full((3, height, width), 245, dtype=torch.uint8)

    def render():
        import matplotlib.pyplot as plt

        a = torch.tensor([_box_from(controls, "A", width, height)], dtype=torch.float64)
        b = torch.tensor([_box_from(controls, "B", width, height)], dtype=torch.float64)
        iou = float(box_iou(a, b)[0, 0])
        lt, rb = torch.maximum(a[0, :2], b[0, :2]), torch.minimum(a[0, 2:], b[0, 2:])
        inter_wh = (rb - lt).clamp(min=0)
        inter = float(inter_wh.prod())
        area_a = float((a[0, 2:] - a[0, :2]).prod())
        area_b = float((b[0, 2:] - b[0, :2]).prod())
        fig, ax = plt.subplots(figsize=(3.6, 3.6 * height / width))
        plot.show_image(ax, canvas)
        plot.draw_boxes(ax, a, labels=[1], class_names=["A", "B"], linewidth=2.5)
        plot.draw_boxes(ax, b, labels=[2], class_names=["A", "B"], linewidth=2.5)
        if inter > 0:
            plot.draw_boxes(ax, torch.cat([lt, rb])[None], color="#9467bd", fill=True, alpha=0.45,
                            text=False)
        ax.set_title(f"IoU = {iou:.3f}", fontsize=11)
        html = (f"intersection {inter:.0f} px² / union {area_a + area_b - inter:.0f} px² = "
                f"<b>IoU {iou:.3f}</b> ({'a match' if iou >= 0.5 else 'not a match'} at the VOC "
                f"threshold 0.5)")
        return plot.fig_to_png(fig), html

    layout = W.HBox([W.VBox([controls[k] for k in ("Ax", "Ay", "Aw", "Ah")]),
                     W.VBox([controls[k] for k in ("Bx", "By", "Bw", "Bh")])])
    return Panel(controls, render, layout, title="IoU of two boxes")


def masks_widget(image, boxes, d: int = 24, window=None) -> Panel:
    """Pick a box, move and resize it with sliders, and see the 5 mask targets of Eq. 1 for all
    the boxes in ``window`` (default: the whole image) change live (``dnnod.mask_targets``)."""
    arr = plot.to_hwc(image)
    height, width = arr.shape[:2]
    b0 = as_boxes(boxes, "boxes", allow_empty_area=False)
    if b0.shape[0] == 0:
        raise ValueError("masks_widget needs at least one box")
    d = check_d(d)
    win = tuple(float(v) for v in (window if window is not None else (0, 0, width, height)))
    current = [list(map(float, b)) for b in b0.tolist()]   # the edited boxes, one list per box
    pick = W.Dropdown(options=[(f"box {i + 1}", i) for i in range(len(current))], value=0,
                      description="edit", layout=W.Layout(width="200px"), style=_SLIDER_STYLE)
    sliders = _box_sliders("", current[0], width, height)
    sliders = {k.strip(): v for k, v in sliders.items()}
    for k, s in sliders.items():
        s.description = {"x": "left", "y": "top", "w": "width", "h": "height"}[k]

    def on_pick(change):
        # Load the picked box into the sliders; draw once, not once per slider.
        panel.hold = True
        x1, y1, x2, y2 = current[change["new"]]
        sliders["x"].value, sliders["y"].value = int(round(x1)), int(round(y1))
        sliders["w"].value, sliders["h"].value = int(round(x2 - x1)), int(round(y2 - y1))
        panel.hold = False
        panel.refresh()

    def render():
        import matplotlib.pyplot as plt

        current[pick.value] = list(_box_from(sliders, "", width, height))
        bx = torch.tensor(current, dtype=torch.float64)
        m = mask_targets(bx, win, d)
        fig = plt.figure(figsize=(10.5, 2.6))
        gs = fig.add_gridspec(1, 6, width_ratios=[1.25, 1, 1, 1, 1, 1], wspace=0.08)
        ax0 = fig.add_subplot(gs[0])
        plot.show_image(ax0, arr, title="image, boxes, grid")
        plot.draw_grid(ax0, win, d, color="white", linewidth=0.3, alpha=0.6)
        plot.draw_boxes(ax0, bx, labels=[1 + (i == pick.value) for i in range(len(current))],
                        text=False)
        for k in range(5):
            ax = fig.add_subplot(gs[k + 1])
            plot.draw_mask(ax, m[k], title=MASK_TYPES[k])
        sums = ", ".join(f"{t} {float(m[k].sum()):.1f}" for k, t in enumerate(MASK_TYPES))
        html = (f"d = {d}: each cell is {(win[2] - win[0]) / d:.1f} × {(win[3] - win[1]) / d:.1f} px. "
                f"Mask sums (cells): {sums}")
        return plot.fig_to_png(fig), html

    controls = {"box": pick, **sliders}
    layout = W.HBox([pick, W.VBox([sliders["x"], sliders["y"]]), W.VBox([sliders["w"], sliders["h"]])])
    panel = Panel({k: v for k, v in controls.items() if k != "box"}, render, layout,
                  title="Eq. 1 mask targets")
    panel.controls["box"] = pick
    pick.observe(on_pick, names="value")
    return panel


def resolution_widget(image, boxes, d_values: Sequence[int] = (3, 4, 6, 8, 12, 16, 24, 32, 48),
                      d: int = 24, mask_type: str = "full") -> Panel:
    """A slider over the output resolution d: the ``mask_type`` target at each d, overlaid on the
    image. Coarse grids blur neighbouring objects together; fine grids cost d² outputs."""
    arr = plot.to_hwc(image)
    height, width = arr.shape[:2]
    bx = as_boxes(boxes, "boxes", allow_empty_area=False)
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}; got {mask_type!r}")
    vals = [check_d(int(v)) for v in d_values]
    if d not in vals:
        raise ValueError(f"d={d} is not one of d_values {vals}")
    kind = W.ToggleButtons(options=list(MASK_TYPES), value=mask_type, description="mask",
                           style={"description_width": "40px", "button_width": "60px"})
    slider = W.SelectionSlider(options=vals, value=d, description="d", continuous_update=False,
                               layout=W.Layout(width="360px"), style=_SLIDER_STYLE)
    k_of = {t: k for k, t in enumerate(MASK_TYPES)}

    def render():
        import matplotlib.pyplot as plt

        dd = int(slider.value)
        m = mask_targets(bx, (0, 0, width, height), dd)[k_of[kind.value]]
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4 * height / width + 0.3))
        plot.overlay_mask(axes[0], arr, m, title=f"{kind.value} mask over the image, d = {dd}",
                          grid=True)
        plot.draw_boxes(axes[0], bx, color=plot.GT_COLOR, linewidth=1, text=False)
        plot.draw_mask(axes[1], m, title=f"{dd}×{dd} = {dd * dd} outputs")
        fig.tight_layout()
        cells = (m > 0).sum().item()
        html = (f"d = {dd}: a cell is {width / dd:.1f} × {height / dd:.1f} px; {cells} of {dd * dd} "
                f"cells are touched by a box; a {kind.value} network needs {dd * dd} outputs per class")
        return plot.fig_to_png(fig), html

    return Panel({"d": slider, "mask": kind}, render, W.VBox([kind, slider]),
                 title="Output resolution d")


def lambda_widget(results: Mapping[float, Mapping[str, object]], target=None, image=None) -> Panel:
    """A slider over precomputed λ runs (chapter 4's experiment).

    ``results[lam]`` holds ``"masks"`` (``[5, d, d]`` prediction for one test window),
    ``"losses"`` (training loss per step) and optionally ``"lit"`` (fraction of cells > 0.5).
    ``target`` (``[5, d, d]``) and ``image`` of the test window are shown beside the prediction.
    """
    if not results:
        raise ValueError("lambda_widget needs at least one result")
    lams = sorted(float(k) for k in results)
    by = {float(k): v for k, v in results.items()}
    slider = W.SelectionSlider(options=[(f"{v:g}", v) for v in lams], value=lams[len(lams) // 2],
                               description="λ", continuous_update=False,
                               layout=W.Layout(width="360px"), style=_SLIDER_STYLE)

    def render():
        import matplotlib.pyplot as plt

        lam = float(slider.value)
        r = by[lam]
        pred = torch.as_tensor(r["masks"])
        rows = 1 + (target is not None)
        fig = plt.figure(figsize=(12, 2.4 * rows))
        gs = fig.add_gridspec(rows, 7, wspace=0.15, hspace=0.35)
        if image is not None:
            plot.show_image(fig.add_subplot(gs[:, 0]), image, title="test window")
        for k in range(5):
            if target is not None:
                plot.draw_mask(fig.add_subplot(gs[0, k + 1]), torch.as_tensor(target)[k],
                               title=f"target {MASK_TYPES[k]}")
            plot.draw_mask(fig.add_subplot(gs[rows - 1, k + 1]), pred[k],
                           title=f"predicted {MASK_TYPES[k]}")
        ax = fig.add_subplot(gs[:, 6])
        for other in lams:
            ax.plot(torch.as_tensor(by[other]["losses"]).tolist(), lw=2 if other == lam else 0.8,
                    alpha=1 if other == lam else 0.4, label=f"λ={other:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=9)
        ax.set_title("training loss", fontsize=10)
        ax.legend(fontsize=9)
        ax.tick_params(labelsize=7)
        lit = float(r["lit"]) if "lit" in r else float((pred > 0.5).double().mean())
        html = (f"λ = {lam:g}: mean predicted mask value {float(pred.mean()):.3f}, "
                f"<b>{100 * lit:.1f}%</b> of the cells above the 0.5 threshold")
        return plot.fig_to_png(fig), html

    return Panel({"lam": slider}, render, slider, title="λ of the weighted L2 loss")
