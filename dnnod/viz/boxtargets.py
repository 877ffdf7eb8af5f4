"""Box targets: draw, move and resize boxes with the mouse and watch their five mask targets of
Eq. 1 (paper Sec. 3) — live in Jupyter, in Colab and in the static HTML book (chapter 3).

:class:`BoxTargets` is an `anywidget <https://anywidget.dev>`_ whose ES module ``boxtargets.js``
computes the targets in the browser exactly as :func:`dnnod.masks.mask_targets` does (the union of
each part over all boxes, cell by cell; tests/test_maskpaint_js.py compares the two under Node).
With a kernel, ``widget.boxes`` holds the boxes as drawn and :meth:`BoxTargets.targets` their
targets computed in Python.
"""
from __future__ import annotations

import pathlib

import anywidget
import torch
import traitlets

from ..masks import mask_targets

__all__ = ["BoxTargets", "ESM_PATH"]

ESM_PATH = pathlib.Path(__file__).with_name("boxtargets.js")


class BoxTargets(anywidget.AnyWidget):
    """Boxes ``[N, 4]`` (xyxy pixels) on ``window`` of ``image`` and their Eq. 1 targets on a
    ``d × d`` grid (the slider changes d). Drag inside a box to move it, at a corner to resize
    it, elsewhere to draw a new one; "remove" drops the selected box, "reset" restores the start."""

    _esm = ESM_PATH
    image = traitlets.Unicode("").tag(sync=True)
    window = traitlets.List(traitlets.Float()).tag(sync=True)
    boxes = traitlets.List().tag(sync=True)
    start_boxes = traitlets.List().tag(sync=True)
    d = traitlets.Int(24, min=2, max=48).tag(sync=True)
    canvas_px = traitlets.Int(240, min=96, max=600).tag(sync=True)
    cmap = traitlets.List().tag(sync=True)

    def __init__(self, image, boxes, d: int = 24, window=None, *, cmap: str = "magma", **kwargs):
        from dnnod._validate import as_boxes, as_rect, check_d
        from dnnod.viz.maskpaint import _cmap_lut, _png_data_url

        url, (H, W) = _png_data_url(image)
        win = as_rect(window if window is not None else (0, 0, W, H), "window")
        if not (win[2] > win[0] and win[3] > win[1]):
            raise ValueError(f"window must have positive width and height; got {win.tolist()}")
        b = as_boxes(boxes, "boxes", allow_empty_area=False).tolist()
        super().__init__(image=url, window=[float(v) for v in win], boxes=b, start_boxes=b,
                         d=check_d(d), cmap=_cmap_lut(cmap), **kwargs)

    def targets(self) -> torch.Tensor:
        """Eq. 1 targets ``[5, d, d]`` of the current boxes (:func:`dnnod.masks.mask_targets`)."""
        return mask_targets(torch.tensor(self.boxes, dtype=torch.float64).reshape(-1, 4),
                            self.window, d=self.d)
