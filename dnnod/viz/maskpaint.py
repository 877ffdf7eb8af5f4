"""The mask painter: paint, erase and drag mass on the five masks of one window with the mouse (or a
finger) and watch the boxes of paper Sec. 5.2 follow — in Jupyter, in Colab *and* in the static
HTML book, because the boxes are computed in the browser (chapter 6).

:class:`MaskPainter` is an `anywidget <https://anywidget.dev>`_: its front end is the ES module
``maskpaint.js`` beside this file, stored with the widget's state, so a saved notebook or an HTML
page needs no kernel. After every stroke the browser recomputes the boxes the way
:func:`dnnod.localize.extract_boxes` does: Eq. 2 on the full mask as the threshold, Eq. 3 (with the
surround term) as the ranking, NMS ("dpm", "iou" or our "explain"), the top k — on the candidate
lattice that :func:`dnnod.localize.make_lattice` builds here in Python and passes in the
``lattice`` trait, so the candidates are the same by construction (tests/test_maskpaint_js.py
checks the scores and boxes against Python). :class:`dnnod.viz.editor.MaskEditor` is the pure-Python reference.

With a kernel, ``painter.masks`` is what was painted (``[5, d, d]`` float64 numpy array, values
in [0, 1] rounded to 1e-4) and assigning to it redraws; ``painter.boxes`` / ``painter.scores`` are
the boxes the browser found after the last stroke, and :meth:`MaskPainter.reference` is the same
computation in Python.
"""
from __future__ import annotations

import base64
import io
import pathlib
from typing import Dict, List, Mapping, Optional, Sequence

import anywidget
import numpy as np
import torch
import traitlets

from ..localize import DEFAULT_SIZES, DEFAULT_SURROUND, extract_boxes, make_lattice
from ..localize.nms import DETECT_NMS_MODES
from ..masks import MASK_TYPES

__all__ = ["MaskPainter", "ESM_PATH", "lattice_dict"]

ESM_PATH = pathlib.Path(__file__).with_name("maskpaint.js")
BRUSH_MODES = ("paint", "erase", "drag", "box")
_DECIMALS = 4        # masks are synced as JSON numbers rounded to 1e-4 (small pages, exact round trip)


def _as_masks5(masks, name: str = "masks", shape: Optional[tuple] = None) -> np.ndarray:
    """Masks ``[5, dy, dx]`` as float64 numpy, clamped to [0, 1] (what is scored, book appendix A, departures)
    and rounded to 1e-4."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().double().numpy()
    try:
        m = np.asarray(masks, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers shaped [5, d, d]; got "
                         f"{type(masks).__name__}") from None
    if m.ndim != 3 or m.shape[0] != len(MASK_TYPES) or m.shape[1] < 2 or m.shape[2] < 2:
        raise ValueError(f"{name} must be shaped [5, dy, dx] (mask types {MASK_TYPES}); got shape "
                         f"{tuple(m.shape)}")
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} must keep the shape {tuple(shape)}; got {tuple(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contain NaN or inf")
    return np.round(np.clip(m, 0.0, 1.0), _DECIMALS)


def _masks_to_json(value, _widget=None) -> list:
    return [] if value is None else np.asarray(value, dtype=np.float64).tolist()


def _masks_from_json(value, _widget=None):
    return None if value is None or len(value) == 0 else np.asarray(value, dtype=np.float64)


def lattice_dict(region, aspect_ratios: Optional[Sequence[float]] = None, *,
                 sizes: Sequence[float] = DEFAULT_SIZES, stride: float = 5) -> Dict[str, object]:
    """The candidate lattice of :func:`dnnod.localize.make_lattice` (Sec. 5.2: 9 sizes × the aspect
    ratios on a ``stride`` px lattice) as plain numbers for the browser: per shape ``w, h`` (px),
    first corner ``x0, y0`` and positions ``nx, ny``; strides ``sx, sy``. Candidate k of shape s is
    ``(x0 + p·sx, y0 + q·sy, x0 + p·sx + w, y0 + q·sy + h)``, shape-major, then y, then x."""
    lat = make_lattice(region, aspect_ratios, sizes=sizes, stride=stride)
    f = lambda t: [float(v) for v in t.tolist()]
    return {"w": f(lat.w), "h": f(lat.h), "x0": f(lat.x0), "y0": f(lat.y0),
            "nx": [int(v) for v in lat.nx.tolist()], "ny": [int(v) for v in lat.ny.tolist()],
            "sx": float(lat.sx), "sy": float(lat.sy)}


def _png_data_url(image) -> tuple:
    from PIL import Image

    from . import plot

    arr = plot.to_hwc(image)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), arr.shape[:2]


def _cmap_lut(name: str, n: int = 33) -> List[List[int]]:
    import matplotlib

    cm = matplotlib.colormaps[name]
    return [[int(round(255 * c)) for c in cm(i / (n - 1))[:3]] for i in range(n)]


class MaskPainter(anywidget.AnyWidget):
    """Paint on five masks ``[5, d, d]`` over ``region`` of ``image``; the boxes follow (Sec. 5.2).

    ``sources`` maps names (e.g. ``"network"``, ``"ground truth"``) to masks ``[5, d, d]``; the
    painter starts from ``start`` (default: the first) and its "start from" menu switches. The
    controls: brush mode (paint / erase / drag mass / draw a box, which adds the box's Eq. 1
    targets to all five masks), whether a stroke edits the mask painted on or all five, brush size
    (cells) and paint value, undo, reset, and the box settings: Eq. 2 ``threshold``, the NMS
    rule ``nms_mode`` ("dpm", "iou", or "explain": suppression by explained mask support, chapter
    9), its ``nms_iou`` overlap and ``top_k`` (``surround``, ``pre_nms`` as in
    :func:`dnnod.localize.extract_boxes`; ``pre_nms=0`` offers every candidate to NMS, as
    :class:`dnnod.viz.editor.MaskEditor` does). The table lists the kept boxes' Eq. 3 terms.
    """

    _esm = ESM_PATH
    dy = traitlets.Int(24).tag(sync=True)
    dx = traitlets.Int(24).tag(sync=True)
    masks = traitlets.Any(None).tag(sync=True, to_json=_masks_to_json, from_json=_masks_from_json)
    sources = traitlets.Dict().tag(sync=True)
    #: the sources' names in menu order (a JSON object's keys may come back sorted) and the one
    #: the painter started from
    source_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)
    image = traitlets.Unicode("").tag(sync=True)
    region = traitlets.List(traitlets.Float()).tag(sync=True)
    lattice = traitlets.Dict().tag(sync=True)
    gt_boxes = traitlets.List().tag(sync=True)
    cmap = traitlets.List().tag(sync=True)
    cell_px = traitlets.Int(12, min=12, max=40).tag(sync=True)
    threshold = traitlets.Float(0.5, min=0.0, max=1.0).tag(sync=True)
    nms_iou = traitlets.Float(0.5, min=0.0, max=1.0).tag(sync=True)
    top_k = traitlets.Int(5, min=1, max=100).tag(sync=True)
    nms_mode = traitlets.Enum(DETECT_NMS_MODES, "dpm").tag(sync=True)
    surround = traitlets.Float(DEFAULT_SURROUND, min=1.0).tag(sync=True)
    pre_nms = traitlets.Int(0, min=0).tag(sync=True)
    mode = traitlets.Enum(BRUSH_MODES, "paint").tag(sync=True)
    target = traitlets.Enum(("one", "all"), "one").tag(sync=True)
    brush = traitlets.Int(3, min=1, max=12).tag(sync=True)
    value = traitlets.Float(1.0, min=0.0, max=1.0).tag(sync=True)
    #: written by the browser after each stroke: the kept boxes [[x1, y1, x2, y2]] and Eq. 3 scores
    boxes = traitlets.List().tag(sync=True)
    scores = traitlets.List().tag(sync=True)

    def __init__(self, image, sources: Mapping[str, object], region=None,
                 aspect_ratios: Optional[Sequence[float]] = None, *, gt_boxes=None,
                 start: Optional[str] = None, stride: float = 5,
                 sizes: Sequence[float] = DEFAULT_SIZES, cmap: str = "magma", **kwargs) -> None:
        from dnnod._validate import as_boxes, as_rect

        if not sources:
            raise ValueError("MaskPainter needs at least one mask source")
        src = {str(k): _as_masks5(v, f"sources[{k!r}]") for k, v in sources.items()}
        shapes = {v.shape for v in src.values()}
        if len(shapes) != 1:
            raise ValueError(f"all mask sources must have one shape; got {sorted(shapes)}")
        first = start if start is not None else next(iter(src))
        if first not in src:
            raise ValueError(f"start must be one of {list(src)}; got {start!r}")
        url, (H, W) = _png_data_url(image)
        reg = as_rect(region if region is not None else (0, 0, W, H), "region")
        if not (reg[2] > reg[0] and reg[3] > reg[1]):
            raise ValueError(f"region must have positive width and height; got {reg.tolist()}")
        self._aspect = None if aspect_ratios is None else [float(a) for a in aspect_ratios]
        self._stride, self._sizes = float(stride), tuple(float(s) for s in sizes)
        gt = [] if gt_boxes is None else as_boxes(gt_boxes, "gt_boxes").tolist()
        _, dy, dx = next(iter(shapes))
        super().__init__(
            dy=int(dy), dx=int(dx), sources={k: v.tolist() for k, v in src.items()},
            source_names=list(src), source=first,
            masks=src[first].copy(), image=url, region=[float(v) for v in reg],
            lattice=lattice_dict(reg, self._aspect, sizes=self._sizes, stride=self._stride),
            gt_boxes=gt, cmap=_cmap_lut(cmap), **kwargs)
        self._init_boxes()

    @traitlets.validate("masks")
    def _valid_masks(self, proposal):
        shape = None if self.masks is None else self.masks.shape
        return _as_masks5(proposal["value"], "masks", shape)

    @traitlets.observe("masks", "threshold", "nms_iou", "top_k", "nms_mode", "surround", "pre_nms")
    def _on_change(self, _change=None) -> None:
        # Changes made in Python: the boxes traits follow the Python reference (the browser
        # redraws with its own). Changes from the browser (a stroke) bring the browser's boxes
        # along in the same update (ipywidgets' property lock): keep those.
        if getattr(self, "_ready", False) and "boxes" not in self._property_lock:
            self._init_boxes()

    def _init_boxes(self) -> None:
        b, s = self.reference()
        self._ready = True
        self.boxes, self.scores = b.tolist(), s.tolist()

    def reference(self):
        """The boxes of the current masks and settings by :func:`dnnod.localize.extract_boxes`:
        ``(boxes [k, 4], Eq. 3 scores [k])`` — what the browser computes (Sec. 5.2)."""
        region = torch.tensor(self.region, dtype=torch.float64)
        return extract_boxes(torch.as_tensor(self.masks), region,
                             self._aspect, threshold=self.threshold, nms_iou=self.nms_iou,
                             top_k=self.top_k, stride=self._stride, sizes=self._sizes,
                             surround=self.surround, nms_mode=self.nms_mode,
                             pre_nms=self.pre_nms if self.pre_nms > 0 else None)
