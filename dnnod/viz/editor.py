"""The mask editor: paint, erase and drag mass on the five masks of one window and watch the boxes
of paper Sec. 5.2 (Eq. 2 threshold, Eq. 3 ranking, NMS) follow — a teaching tool for chapter 6.

:class:`MaskEditor` is the state (pure torch, no widgets): five ``[d, d]`` masks over a region,
an undo history, and the boxes extracted by :func:`dnnod.localize.extract_boxes` from the current
masks. :func:`mask_editor_widget` wraps it in core ipywidgets 8 controls (mask selector, brush
mode, a rectangular brush chosen by row / column range sliders, value, apply / undo / reset), so
it runs in Jupyter, in Colab and shows its initial state in the static HTML.

Cells are addressed like the masks: row ``i`` (y, down) and column ``j`` (x, right). A brush is
a rectangle of cells given as half-open ranges ``rows = (r0, r1)``, ``cols = (c0, c1)``
(``r0 <= i < r1``), the way Python slices work.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .._validate import BoxesLike, RectLike, as_boxes, as_rect
from ..localize import (DEFAULT_SIZES, DEFAULT_SURROUND, box_scores, extract_boxes, mask_score)
from ..masks import MASK_TYPES, box_parts

__all__ = ["MaskEditor", "mask_editor_widget", "eq3_terms", "sampler_widget", "BRUSH_MODES"]

BRUSH_MODES = ("paint", "erase", "drag")
KindLike = Union[str, int, Sequence[Union[str, int]]]
_OPPOSITE = {1: 2, 2: 1, 3: 4, 4: 3}       # top <-> bottom, left <-> right (MASK_TYPES order)


def _as_masks5(masks) -> torch.Tensor:
    m = torch.as_tensor(masks)
    if m.dim() != 3 or m.shape[0] != len(MASK_TYPES) or m.shape[1] < 1 or m.shape[2] < 1:
        raise ValueError(f"masks must be shaped [5, dy, dx] (mask types {MASK_TYPES}); got shape "
                         f"{tuple(m.shape)}")
    m = m.detach().to("cpu", torch.float64).clone()
    if not torch.isfinite(m).all():
        raise ValueError("masks contain NaN or inf")
    # Scoring clamps predictions to [0, 1] (book appendix A, departures); the editor shows what is scored.
    return m.clamp_(0.0, 1.0)


def eq3_terms(masks: torch.Tensor, boxes: BoxesLike, region: RectLike, *,
              surround: float = DEFAULT_SURROUND) -> Dict[str, torch.Tensor]:
    """The terms of Eq. 3 for each box, so a table can show *why* a box wins.

    Returns a dict of ``[K]`` tensors: ``full`` = S(bb, m^full) (Eq. 2), ``top`` … ``right`` =
    S(bb(h), m^h) − S(bb(h̄), m^h), ``surround`` = −(mean of the full mask in the frame around
    bb) and ``total`` = their sum = :func:`dnnod.localize.box_scores` (Eq. 3).
    """
    m = _as_masks5(masks)
    r = as_rect(region, "region")
    b = as_boxes(boxes, "boxes", allow_empty_area=False)
    if b.shape[0] == 0:
        z = torch.zeros(0, dtype=torch.float64)
        return {k: z for k in (*MASK_TYPES, "surround", "total")}
    parts = box_parts(b)                                     # [5, K, 4]: full, top, bottom, left, right
    out: Dict[str, torch.Tensor] = {"full": mask_score(m[0], b, r)}
    for h, o in _OPPOSITE.items():
        # own half minus the opposite half, both scored on mask h (Eq. 3)
        out[MASK_TYPES[h]] = mask_score(m[h], parts[h], r) - mask_score(m[h], parts[o], r)
    total = box_scores(m, b, r, surround=surround)
    out["surround"] = total - sum(out[t] for t in MASK_TYPES)
    out["total"] = total
    return out


class MaskEditor:
    """Five editable masks ``[5, dy, dx]`` over ``region`` and the boxes they give (Sec. 5.2).

    Every edit (:meth:`paint`, :meth:`erase`, :meth:`drag`) pushes the previous masks on an undo
    stack; :meth:`undo` pops it, :meth:`reset` returns to the starting masks (itself undoable).
    :meth:`result` runs :func:`dnnod.localize.extract_boxes` with the editor's settings
    (``threshold`` on Eq. 2 of the full mask, Eq. 3 ranking, NMS at ``nms_iou``, ``top_k``) and
    caches it until the masks or settings change.
    """

    def __init__(self, masks, region: Optional[RectLike] = None,
                 aspect_ratios: Optional[Sequence[float]] = None, *, threshold: float = 0.5,
                 nms_iou: float = 0.5, top_k: Optional[int] = 5, stride: float = 5,
                 sizes: Sequence[float] = DEFAULT_SIZES, surround: float = DEFAULT_SURROUND,
                 nms_mode: str = "dpm", pre_nms: Optional[int] = None,
                 max_history: int = 100) -> None:
        m = _as_masks5(masks)
        self.region = as_rect(region if region is not None else (0, 0, m.shape[2], m.shape[1]),
                              "region")
        if not (self.region[2] > self.region[0] and self.region[3] > self.region[1]):
            raise ValueError(f"region must have positive width and height; got {self.region.tolist()}")
        self.aspect_ratios = None if aspect_ratios is None else [float(a) for a in aspect_ratios]
        self.threshold, self.nms_iou, self.top_k = float(threshold), float(nms_iou), top_k
        self.stride, self.sizes, self.surround, self.nms_mode = stride, tuple(sizes), surround, nms_mode
        # pre_nms None (not extract_boxes' cap): every candidate over the threshold is counted
        # and offered to NMS, so the numbers the editor shows are the whole story.
        self.pre_nms = pre_nms
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 1:
            raise ValueError(f"max_history must be an integer >= 1; got {max_history!r}")
        self.max_history = max_history
        self._start = m
        self._masks = m.clone()
        self._history: List[torch.Tensor] = []
        self._cache: Optional[tuple] = None
        self._cache_key: Optional[tuple] = None
        self.result()                      # fail early on bad settings, not at the first edit

    # ------------------------------------------------------------------ state
    @property
    def masks(self) -> torch.Tensor:
        """The current masks ``[5, dy, dx]`` (a copy, float64 in [0, 1])."""
        return self._masks.clone()

    @property
    def shape(self) -> Tuple[int, int]:
        return int(self._masks.shape[1]), int(self._masks.shape[2])

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def num_edits(self) -> int:
        """How many edits the undo stack holds."""
        return len(self._history)

    def cell_size(self) -> Tuple[float, float]:
        """(width, height) of one cell in region pixels."""
        dy, dx = self.shape
        r = self.region
        return float(r[2] - r[0]) / dx, float(r[3] - r[1]) / dy

    def cells_to_box(self, rows: Tuple[int, int], cols: Tuple[int, int]) -> torch.Tensor:
        """The pixel box ``[4]`` covered by the half-open cell ranges ``rows``, ``cols``."""
        (r0, r1), (c0, c1) = self._check_range(rows, 0, "rows"), self._check_range(cols, 1, "cols")
        cw, ch = self.cell_size()
        x, y = float(self.region[0]), float(self.region[1])
        return torch.tensor([x + c0 * cw, y + r0 * ch, x + c1 * cw, y + r1 * ch], dtype=torch.float64)

    def set_masks(self, masks) -> None:
        """Replace the masks (undoable), e.g. to start from another source."""
        m = _as_masks5(masks)
        if tuple(m.shape) != tuple(self._masks.shape):
            raise ValueError(f"masks must keep the shape {tuple(self._masks.shape)}; got {tuple(m.shape)}")
        self._push()
        self._masks = m

    def restart(self, masks) -> None:
        """Start over from ``masks``: they become the reset target and the history is cleared."""
        m = _as_masks5(masks)
        if tuple(m.shape) != tuple(self._masks.shape):
            raise ValueError(f"masks must keep the shape {tuple(self._masks.shape)}; got {tuple(m.shape)}")
        self._start, self._masks, self._history = m, m.clone(), []

    # ------------------------------------------------------------------ checks
    def _kinds(self, kind: KindLike) -> List[int]:
        items = [kind] if isinstance(kind, (str, int)) else list(kind)
        if not items:
            raise ValueError("kind must name at least one mask type")
        out = []
        for k in items:
            if isinstance(k, str) and k == "all":
                out.extend(range(len(MASK_TYPES)))
            elif isinstance(k, str) and k in MASK_TYPES:
                out.append(MASK_TYPES.index(k))
            elif isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(MASK_TYPES):
                out.append(k)
            else:
                raise ValueError(f"kind must be one of {MASK_TYPES}, 'all' or an index 0-4; got {k!r}")
        return sorted(set(out))

    def _check_range(self, rng, axis: int, name: str) -> Tuple[int, int]:
        n = self.shape[axis]
        try:
            a, b = (int(v) for v in rng)
            ok = all(float(v) == int(v) for v in rng)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a (start, stop) pair of cell indices; got {rng!r}") from None
        if not ok or not (0 <= a < b <= n):
            raise ValueError(f"{name} must satisfy 0 <= start < stop <= {n} (half-open cell range); "
                             f"got {tuple(rng)!r}")
        return a, b

    def _push(self) -> None:
        self._history.append(self._masks.clone())
        if len(self._history) > self.max_history:
            self._history.pop(0)

    # ------------------------------------------------------------------ edits
    def paint(self, kind: KindLike, rows: Tuple[int, int], cols: Tuple[int, int],
              value: float = 1.0) -> None:
        """Set the cells ``rows × cols`` of the mask(s) ``kind`` to ``value`` in [0, 1]."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"value must be a number in [0, 1]; got {value!r}")
        ks = self._kinds(kind)
        (r0, r1), (c0, c1) = self._check_range(rows, 0, "rows"), self._check_range(cols, 1, "cols")
        self._push()
        self._masks[ks, r0:r1, c0:c1] = float(value)

    def erase(self, kind: KindLike, rows: Tuple[int, int], cols: Tuple[int, int]) -> None:
        """Set the cells ``rows × cols`` of the mask(s) ``kind`` to 0."""
        self.paint(kind, rows, cols, 0.0)

    def drag(self, kind: KindLike, rows: Tuple[int, int], cols: Tuple[int, int],
             d_rows: int, d_cols: int) -> None:
        """Move the mass in ``rows × cols`` of the mask(s) ``kind`` by ``(d_rows, d_cols)`` cells.

        The source rectangle is emptied, then the moved values overwrite the destination; what
        would leave the grid is dropped (like dragging a block off the canvas).
        """
        for name, v in (("d_rows", d_rows), ("d_cols", d_cols)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer number of cells; got {v!r}")
        ks = self._kinds(kind)
        (r0, r1), (c0, c1) = self._check_range(rows, 0, "rows"), self._check_range(cols, 1, "cols")
        dy, dx = self.shape
        self._push()
        block = self._masks[ks, r0:r1, c0:c1].clone()
        self._masks[ks, r0:r1, c0:c1] = 0.0
        # destination rectangle clipped to the grid, and the matching part of the block
        t0, t1 = max(0, r0 + d_rows), min(dy, r1 + d_rows)
        u0, u1 = max(0, c0 + d_cols), min(dx, c1 + d_cols)
        if t0 < t1 and u0 < u1:
            self._masks[ks, t0:t1, u0:u1] = block[:, t0 - r0 - d_rows:t1 - r0 - d_rows,
                                                  u0 - c0 - d_cols:u1 - c0 - d_cols]

    def undo(self) -> bool:
        """Undo the last edit; returns False when there is nothing to undo."""
        if not self._history:
            return False
        self._masks = self._history.pop()
        return True

    def reset(self) -> None:
        """Back to the starting masks (undoable)."""
        self._push()
        self._masks = self._start.clone()

    # ------------------------------------------------------------------ boxes
    def _key(self) -> tuple:
        return (self._masks.numpy().tobytes(), self.threshold, self.nms_iou, self.top_k,
                self.stride, self.sizes, self.surround, self.nms_mode, self.pre_nms,
                None if self.aspect_ratios is None else tuple(self.aspect_ratios))

    def result(self) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """``(boxes [k, 4], eq3 scores [k], info)`` of :func:`dnnod.localize.extract_boxes`
        (``return_all=True``) for the current masks; cached until something changes."""
        key = self._key()
        if self._cache is None or key != self._cache_key:
            self._cache = extract_boxes(self._masks, self.region, self.aspect_ratios,
                                        threshold=self.threshold, nms_iou=self.nms_iou,
                                        top_k=self.top_k, stride=self.stride, sizes=self.sizes,
                                        surround=self.surround, nms_mode=self.nms_mode,
                                        pre_nms=self.pre_nms, return_all=True)
            self._cache_key = key
        b, s, info = self._cache
        return b.clone(), s.clone(), dict(info)

    def boxes(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The surviving boxes ``[k, 4]`` and their Eq. 3 scores ``[k]``, best first."""
        b, s, _ = self.result()
        return b, s

    def chosen(self) -> Optional[torch.Tensor]:
        """The best box ``[4]`` (highest Eq. 3 after the threshold and NMS), or None."""
        b, _ = self.boxes()
        return b[0] if len(b) else None

    def table(self) -> List[Dict[str, float]]:
        """One row per surviving box: its Eq. 3 terms (:func:`eq3_terms`) and the box."""
        b, _ = self.boxes()
        if len(b) == 0:
            return []
        t = eq3_terms(self._masks, b.double(), self.region, surround=self.surround)
        return [{"box": [round(float(v), 1) for v in b[i]], **{k: float(v[i]) for k, v in t.items()}}
                for i in range(len(b))]


# ---------------------------------------------------------------------------------- widget
def _table_html(ed: MaskEditor, n_cand: int, n_nms: int) -> str:
    rows = ed.table()
    head = ("<tr><th>#</th><th>box (x1, y1, x2, y2)</th><th>Eq. 2</th>"
            + "".join(f"<th>{t}</th>" for t in MASK_TYPES[1:]) + "<th>surround</th><th>Eq. 3</th></tr>")
    body = "".join(
        f"<tr><td>{i + 1}{' ★' if i == 0 else ''}</td><td>{tuple(r['box'])}</td><td>{r['full']:.2f}</td>"
        + "".join(f"<td>{r[t]:+.2f}</td>" for t in MASK_TYPES[1:])
        + f"<td>{r['surround']:+.2f}</td><td><b>{r['total']:.2f}</b></td></tr>"
        for i, r in enumerate(rows))
    summary = (f"{n_cand} candidates pass Eq. 2 &gt; {ed.threshold:.2f} (full mask); "
               f"{n_nms} survive NMS; showing the top {len(rows)} (★ = chosen box). "
               f"{ed.num_edits} edit(s) to undo.")
    if not rows:
        return summary + " <b>No box</b>: no candidate has enough full-mask mass."
    return (summary + "<table style='font-size:12px;border-collapse:collapse' border='1' "
            "cellpadding='3'>" + head + body + "</table>")


def mask_editor_widget(image, sources: Mapping[str, torch.Tensor], region: Optional[RectLike] = None,
                       aspect_ratios: Optional[Sequence[float]] = None, *, gt_boxes=None,
                       start: Optional[str] = None, brush: Tuple[Tuple[int, int], Tuple[int, int]] = None,
                       threshold: float = 0.5, top_k: int = 5, **editor_kw):
    """The mask editor as a :class:`dnnod.viz.widgets.Panel` (core ipywidgets 8 only).

    ``sources`` maps a name (e.g. ``"network"``, ``"ground truth"``) to masks ``[5, d, d]`` over
    ``region`` (default: the whole image); the "start from" menu restarts the editor from one of
    them. Controls: mask type (or all five), brush mode (paint / erase / drag), the brush's rows
    and columns (inclusive range sliders), the paint value, the drag offset, the Eq. 2 threshold,
    and the buttons apply / undo / reset. The picture shows the image with the surviving boxes
    (the chosen one thick), the brush, and the five masks; the table lists each box's Eq. 3 terms.
    ``panel.editor`` is the :class:`MaskEditor`; ``panel.controls`` holds every control.
    """
    import ipywidgets as W

    from . import plot
    from .widgets import Panel

    if not sources:
        raise ValueError("mask_editor_widget needs at least one mask source")
    src = {str(k): _as_masks5(v) for k, v in sources.items()}
    shapes = {tuple(v.shape) for v in src.values()}
    if len(shapes) != 1:
        raise ValueError(f"all mask sources must have one shape; got {sorted(shapes)}")
    first = start if start is not None else next(iter(src))
    if first not in src:
        raise ValueError(f"start must be one of {list(src)}; got {start!r}")
    arr = plot.to_hwc(image)
    H, W_ = arr.shape[:2]
    reg = as_rect(region if region is not None else (0, 0, W_, H), "region")
    gt = None if gt_boxes is None else as_boxes(gt_boxes, "gt_boxes")
    ed = MaskEditor(src[first], reg, aspect_ratios, threshold=threshold, top_k=top_k, **editor_kw)
    dy, dx = ed.shape
    (r0, r1), (c0, c1) = brush if brush is not None else ((dy // 3, dy // 3 + 4), (dx // 3, dx // 3 + 4))
    r1, c1 = min(r1, dy), min(c1, dx)
    style = {"description_width": "80px"}
    lay = W.Layout(width="330px")
    c = {
        "source": W.Dropdown(options=list(src), value=first, description="start from", style=style,
                             layout=W.Layout(width="260px")),
        "mask": W.ToggleButtons(options=list(MASK_TYPES) + ["all"], value="full", description="mask",
                                style={"description_width": "80px", "button_width": "68px"}),
        "mode": W.ToggleButtons(options=list(BRUSH_MODES), value="paint", description="brush",
                                style={"description_width": "80px", "button_width": "68px"}),
        "rows": W.IntRangeSlider(value=(r0, r1 - 1), min=0, max=dy - 1, description="rows",
                                 continuous_update=False, style=style, layout=lay),
        "cols": W.IntRangeSlider(value=(c0, c1 - 1), min=0, max=dx - 1, description="columns",
                                 continuous_update=False, style=style, layout=lay),
        "value": W.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="paint value",
                               continuous_update=False, style=style, layout=lay),
        "d_rows": W.IntSlider(value=0, min=-(dy - 1), max=dy - 1, description="drag ↓ rows",
                              continuous_update=False, style=style, layout=lay),
        "d_cols": W.IntSlider(value=2, min=-(dx - 1), max=dx - 1, description="drag → cols",
                              continuous_update=False, style=style, layout=lay),
        "threshold": W.FloatSlider(value=float(threshold), min=0.0, max=1.0, step=0.05,
                                   description="Eq. 2 thr.", continuous_update=False, style=style,
                                   layout=lay),
    }
    buttons = {
        "apply": W.Button(description="apply", button_style="primary"),
        "undo": W.Button(description="undo"),
        "reset": W.Button(description="reset"),
    }

    def brush_cells():
        (a, b), (u, v) = c["rows"].value, c["cols"].value
        return (int(a), int(b) + 1), (int(u), int(v) + 1)     # inclusive sliders -> half-open

    def render():
        import matplotlib.pyplot as plt

        ed.threshold = float(c["threshold"].value)
        boxes, scores, info = ed.result()
        m = ed.masks
        rows, cols = brush_cells()
        kinds = ed._kinds(c["mask"].value)
        brush_box = ed.cells_to_box(rows, cols)[None]
        fig = plt.figure(figsize=(13.5, 3.2))
        gs = fig.add_gridspec(1, 6, width_ratios=[1.7, 1, 1, 1, 1, 1], wspace=0.08)
        ax0 = fig.add_subplot(gs[0])
        plot.show_image(ax0, arr, title="boxes (thick = chosen ★)")
        if gt is not None and len(gt):
            plot.draw_boxes(ax0, gt, color=plot.GT_COLOR, linewidth=1, linestyle="--", text=False)
        if len(boxes) > 1:
            plot.draw_boxes(ax0, boxes[1:], scores=scores[1:], color=plot.color_for(2), linewidth=1.2)
        if len(boxes):
            plot.draw_boxes(ax0, boxes[:1], scores=scores[:1], color=plot.color_for(4), linewidth=3)
        plot.draw_boxes(ax0, brush_box, color="#ffd600", linestyle=":", linewidth=1.5, text=False)
        win = tuple(float(v) for v in reg)
        for k in range(5):
            ax = fig.add_subplot(gs[k + 1])
            plot.draw_mask(ax, m[k], window=win, title=MASK_TYPES[k] + (" ✎" if k in kinds else ""))
            ax.set_xticks([])
            ax.set_yticks([])
            if len(boxes):
                plot.draw_boxes(ax, boxes[:1], color=plot.color_for(4), linewidth=1.5, text=False)
            if k in kinds:
                plot.draw_boxes(ax, brush_box, color="#ffd600", linestyle=":", linewidth=1.5, text=False)
                if c["mode"].value == "drag":
                    cw, ch = ed.cell_size()
                    shift = torch.tensor([cw, ch, cw, ch], dtype=torch.float64) * torch.tensor(
                        [c["d_cols"].value, c["d_rows"].value] * 2, dtype=torch.float64)
                    plot.draw_boxes(ax, brush_box + shift, color="#00e5ff", linestyle="--",
                                    linewidth=1.2, text=False)
        html = _table_html(ed, len(info["candidates"]), len(info["candidates_nms"]))
        return plot.fig_to_png(fig), html

    layout = W.VBox([
        W.HBox([c["source"], c["threshold"]]),
        c["mask"], c["mode"],
        W.HBox([W.VBox([c["rows"], c["cols"]]), W.VBox([c["value"], c["d_rows"], c["d_cols"]])]),
        W.HBox(list(buttons.values())),
    ])
    panel = Panel(c, render, layout, title="Mask editor: paint, erase, drag mass; watch the boxes")
    panel.editor = ed

    def on_apply(_b=None):
        rows, cols = brush_cells()
        kind = c["mask"].value
        mode = c["mode"].value
        if mode == "paint":
            ed.paint(kind, rows, cols, float(c["value"].value))
        elif mode == "erase":
            ed.erase(kind, rows, cols)
        else:
            ed.drag(kind, rows, cols, int(c["d_rows"].value), int(c["d_cols"].value))
            # the brush follows the dragged block, so a second click drags it further
            panel.hold = True
            (a, b), (u, v) = c["rows"].value, c["cols"].value
            dr, dc = int(c["d_rows"].value), int(c["d_cols"].value)
            if 0 <= a + dr and b + dr <= dy - 1 and 0 <= u + dc and v + dc <= dx - 1:
                c["rows"].value, c["cols"].value = (a + dr, b + dr), (u + dc, v + dc)
            panel.hold = False
        panel.refresh()

    def on_undo(_b=None):
        ed.undo()
        panel.refresh()

    def on_reset(_b=None):
        ed.reset()
        panel.refresh()

    def on_source(change):
        ed.restart(src[change["new"]])
        panel.refresh()

    buttons["apply"].on_click(on_apply)
    buttons["undo"].on_click(on_undo)
    buttons["reset"].on_click(on_reset)
    # the Panel redraws on "value" changes; a new source must restart the editor first
    c["source"].unobserve(panel._on_change, names="value")
    c["source"].observe(on_source, names="value")
    panel.controls.update(buttons)
    panel.apply, panel.undo, panel.reset = on_apply, on_undo, on_reset
    return panel


# ---------------------------------------------------------------------------------- chapter 5
def sampler_widget(sampler, pool: int = 240, seed: int = 0, class_names: Optional[Sequence[str]] = None):
    """Explore the paper's localizer sampler (Sec. 4, :class:`dnnod.data.sampler.LocalizerSampler`):
    pick an image, positive or negative, a sample and a class ("auto": the class with the most
    target mass); see the window on the image, the
    crop the network gets and its five Eq. 1 targets for that class.

    ``pool`` windows are drawn once with ``sampler.windows`` (seeded), exactly as training draws
    them; the controls browse that pool. (Lives here, beside the mask editor, so that chapters 5
    and 6 share one module of their own; drawing goes through :mod:`dnnod.viz.plot`.)
    """
    import ipywidgets as W

    from . import plot
    from .widgets import Panel

    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 2:
        raise ValueError(f"pool must be an integer >= 2; got {pool!r}")
    bank = sampler.bank
    C = int(sampler.C)
    names = list(class_names) if class_names is not None else [str(c + 1) for c in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names has {len(names)} names for {C} classes")
    img_idx, wins, positive = sampler.windows(pool, torch.Generator().manual_seed(int(seed)))
    images = sorted(set(img_idx.tolist()))
    style = {"description_width": "60px"}
    c = {
        "image": W.Dropdown(options=[(f"image {i}", i) for i in images], value=images[0],
                            description="image", style=style, layout=W.Layout(width="200px")),
        "kind": W.ToggleButtons(options=["positive", "negative"], value="positive",
                                description="window", style={"description_width": "60px",
                                                             "button_width": "80px"}),
        "sample": W.IntSlider(value=0, min=0, max=0, description="sample", continuous_update=False,
                              style=style, layout=W.Layout(width="300px")),
        "cls": W.ToggleButtons(options=[("auto", -1)] + [(n, k) for k, n in enumerate(names)], value=-1,
                               description="class", style={"description_width": "60px",
                                                           "button_width": "80px"}),
    }

    def matches() -> torch.Tensor:
        want = c["kind"].value == "positive"
        return torch.nonzero((img_idx == c["image"].value) & (positive == want)).flatten()

    def render():
        import matplotlib.pyplot as plt

        sel = matches()
        W_, H_ = (int(v) for v in bank.sizes[c["image"].value].tolist())
        img = bank.images[c["image"].value, :, :H_, :W_]
        lab = bank.labels[c["image"].value]
        gt = bank.boxes[c["image"].value][lab > 0]
        gl = lab[lab > 0]
        fig = plt.figure(figsize=(12.5, 2.7))
        gs = fig.add_gridspec(1, 7, width_ratios=[1.2, 1, 1, 1, 1, 1, 1], wspace=0.1)
        ax0 = fig.add_subplot(gs[0])
        plot.show_image(ax0, img, title=f"image {c['image'].value}: {len(sel)} {c['kind'].value}")
        plot.draw_boxes(ax0, gt, labels=gl.tolist(), class_names=names, linewidth=1, text=False)
        if len(sel) == 0:
            for k in range(6):
                fig.add_subplot(gs[k + 1]).axis("off")
            return plot.fig_to_png(fig), (f"No {c['kind'].value} window of this image in the pool "
                                          f"of {pool}: pick another image.")
        i = int(sel[min(c["sample"].value, len(sel) - 1)])
        w = wins[i]
        plot.draw_boxes(ax0, wins[sel], color="white", linewidth=0.6, alpha=0.5, text=False)
        plot.draw_boxes(ax0, w[None], color="#ffd600" if positive[i] else "#d62728", linewidth=2.5,
                        text=False)
        crop = bank.crop(img_idx[i:i + 1], w[None], sampler.S)[0]
        every = sampler.targets(img_idx[i:i + 1], w[None])[0]                     # [C, 5, d, d]
        # "auto": the class with the most target mass (a positive's class; the sampler draws
        # the class internally and a window is negative *for that class* only)
        cls = int(every[:, 0].sum((1, 2)).argmax()) if c["cls"].value < 0 else int(c["cls"].value)
        tgt = every[cls]
        plot.show_image(fig.add_subplot(gs[1]), crop, title=f"crop → {sampler.S}×{sampler.S}")
        for k in range(5):
            plot.draw_mask(fig.add_subplot(gs[k + 2]), tgt[k], title=f"{names[cls]}: {MASK_TYPES[k]}")
        # how much of each object of the image the window holds (the 80 % rule)
        lt = torch.maximum(w[:2], gt[:, :2])
        rb = torch.minimum(w[2:], gt[:, 2:])
        cover = (rb - lt).clamp(min=0).prod(1) / (gt[:, 2:] - gt[:, :2]).prod(1)
        held = ", ".join(f"{names[int(l) - 1]} {100 * float(v):.0f}%" for l, v in zip(gl, cover)
                         if v > 0) or "nothing"
        html = (f"window ({', '.join(f'{float(v):.0f}' for v in w)}), {float(w[2] - w[0]):.0f} px wide "
                f"of {W_}; it holds: {held}. Mass of the {names[cls]} full target: "
                f"{float(tgt[0].sum()):.1f} cells.")
        return plot.fig_to_png(fig), html

    def on_filter(_change=None):
        panel.hold = True
        n = len(matches())
        c["sample"].max = max(0, n - 1)
        c["sample"].value = min(c["sample"].value, max(0, n - 1))
        panel.hold = False
        panel.refresh()

    layout = W.VBox([W.HBox([c["image"], c["sample"]]), c["kind"], c["cls"]])
    panel = Panel(c, render, layout, title="The localizer's training windows")
    for k in ("image", "kind"):
        c[k].unobserve(panel._on_change, names="value")
        c[k].observe(on_filter, names="value")
    on_filter()
    panel.pool = {"img_idx": img_idx, "windows": wins, "positive": positive}
    return panel
