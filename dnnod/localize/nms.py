"""Greedy non-maximum suppression (paper Sec. 5.2), in the IoU and the DPM variants, and (ours)
suppression by explained mask support.

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torchvision

from ..masks import box_parts
from .scores import _integral, _mass, _to_cells

NMS_MODES = ("iou", "dpm")
#: Ours: a box is suppressed when the kept boxes already explain more than ``overlap`` of its
#: mask support (:func:`explained_fraction`); needs the masks the boxes were scored on.
EXPLAIN = "explain"
DETECT_NMS_MODES = NMS_MODES + (EXPLAIN,)


def _coverage(parts_c: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Fraction of each cell covered by each rectangle ``[..., 4]`` (cell units) -> ``[..., dy, dx]``
    (the Eq. 1 target of a box part, paper Sec. 3, on a grid of ``dy × dx`` cells)."""
    def axis(lo, hi, d):
        j = torch.arange(d, dtype=lo.dtype, device=lo.device)
        return (torch.minimum(hi[..., None], j + 1) - torch.maximum(lo[..., None], j)).clamp(0, 1)
    return axis(parts_c[..., 1], parts_c[..., 3], dy)[..., :, None] \
        * axis(parts_c[..., 0], parts_c[..., 2], dx)[..., None, :]


class _Explained:
    """The mask support of N boxes ``Σ_h ∫_{bb(h)} m^h`` (h over the five mask types, cell units)
    and the part of it that the kept boxes' own targets ``r^h`` explain, ``Σ_h ∫_{bb(h)} m^h · R^h``
    with ``R^h`` the cell-wise max of the kept boxes' targets (ours)."""

    def __init__(self, masks: torch.Tensor, region: torch.Tensor, boxes: torch.Tensor) -> None:
        if not torch.is_tensor(masks) or masks.dim() != 3 or masks.shape[0] != 5 or min(masks.shape[1:]) < 1:
            # e.g. one mask type [dy, dx], or a class dimension [C, 5, dy, dx] left in
            raise ValueError("explained mask support needs the five masks of one class, [5, dy, dx]; got "
                             f"{tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__}")
        self.m = masks.to(device=boxes.device, dtype=torch.float64).clamp(min=0)   # [5, dy, dx]
        self.dy, self.dx = self.m.shape[-2:]
        self.parts = box_parts(_to_cells(boxes.double(), region.to(boxes.device).double(),
                                         self.dy, self.dx))
        self.support = self._parts_mass(self.m)                         # [N]
        self.R = torch.zeros_like(self.m)

    def _parts_mass(self, m: torch.Tensor) -> torch.Tensor:
        G = _integral(m)                                                # [5, dy+1, dx+1]
        return sum(_mass(G[h], self.parts[h]) for h in range(5))

    def keep(self, i: int) -> torch.Tensor:
        """Add box i to the kept boxes; the explained fraction of every box's support (1 for a
        box with no support)."""
        self.add(i)
        return self.fraction()

    def add(self, i: int) -> None:
        self.R = torch.maximum(self.R, _coverage(self.parts[:, i], self.dy, self.dx))

    def fraction(self) -> torch.Tensor:
        expl = self._parts_mass(self.m * self.R)
        tiny = self.support <= 1e-9
        return torch.where(tiny, torch.ones_like(expl), expl / torch.where(tiny, 1.0, self.support))


def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5, mode: str = "iou",
        max_keep: Optional[int] = None,
        accept: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        chunk: int = 64, masks: Optional[torch.Tensor] = None,
        region: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy NMS; indices of kept boxes, best first.

    ``mode="iou"``: torchvision's NMS (intersection over union). ``mode="dpm"``: Felzenszwalb et
    al.'s variant that the paper cites — overlap is intersection over the *suppressed* box's area,
    so boxes nested inside a better one are removed too. ``mode="explain"`` (ours) needs the
    ``masks [5, dy, dx]`` the boxes were scored on and the ``region`` they cover: a box is
    removed when more than ``overlap`` of its mask support is explained by the kept boxes
    (:func:`explained_fraction`). Parts and near-duplicates of a kept box are explained by it; a
    person standing in front of a kept one is not, where its own halves show in the half masks,
    so it survives where DPM's rule would remove it as nested.

    ``accept(boxes [n, 4]) -> bool [n]`` (e.g. the paper's box classifier, Sec. 5.2): the result
    is that of NMS over the accepted boxes only, but ``accept`` is asked lazily, ``chunk`` boxes
    at a time (doubling up to 1024 while it keeps being needed), and only about boxes that no
    kept box has suppressed yet (ours: with a ``max_keep`` of 10 it usually sees tens of boxes
    instead of thousands). A rejected box suppresses nothing.
    """
    if mode not in DETECT_NMS_MODES:
        raise ValueError(f"nms mode must be one of {DETECT_NMS_MODES}; got {mode!r}")
    if mode == EXPLAIN and (masks is None or region is None):
        raise ValueError("nms mode 'explain' needs the masks [5, dy, dx] the boxes were scored on "
                         "and the region they cover")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    if mode == "iou" and accept is None:
        keep = torchvision.ops.nms(boxes.float(), scores.float(), float(overlap))
        return keep if max_keep is None else keep[:max_keep]
    order = torch.argsort(scores, descending=True)
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    expl = _Explained(masks, torch.as_tensor(region), b) if mode == EXPLAIN else None
    alive = torch.ones(len(b), dtype=torch.bool)
    decided = torch.zeros(len(b), dtype=torch.bool)
    ok = torch.ones(len(b), dtype=torch.bool)
    keep: List[int] = []
    limit = len(b) if max_keep is None else max_keep
    i = 0
    # Each step is vectorised over all boxes; the loop runs once per kept (or rejected) box.
    while len(keep) < limit:
        nz = torch.nonzero(alive[i:])
        if nz.numel() == 0:
            break
        i = i + int(nz[0])
        if accept is not None and not decided[i]:
            ask = torch.nonzero(alive & ~decided).squeeze(1)[:chunk]     # starts at i
            ok[ask] = _accepted(accept, boxes[order[ask]])
            decided[ask] = True
            alive[ask[~ok[ask]]] = False            # rejected boxes take no part at all
            chunk = min(2 * chunk, 1024)            # a run of rejections: ask more at once
            if not ok[i]:
                continue
        alive[i] = False
        keep.append(i)
        if expl is not None:
            # The explained fraction only grows as boxes are kept: a removed box stays removed.
            alive &= ~(expl.keep(i) > overlap)
            continue
        iw = (torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0])).clamp(min=0)
        ih = (torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1])).clamp(min=0)
        inter = iw * ih
        ov = inter / area if mode == "dpm" else inter / (area[i] + area - inter)
        alive &= ~(ov > overlap)
    return order[torch.tensor(keep, dtype=torch.long)]


def explained_fraction(masks: torch.Tensor, region, kept: torch.Tensor,
                       boxes: torch.Tensor) -> torch.Tensor:
    """Ours: the fraction of each box's mask support that the ``kept`` boxes explain,
    ``Σ_h ∫_{bb(h)} m^h R^h / Σ_h ∫_{bb(h)} m^h`` with ``R^h`` the cell-wise max of the kept
    boxes' Eq. 1 targets (paper Sec. 3) and h over the five mask types. masks ``[5, dy, dx]``
    covering ``region``; kept ``[K, 4]``, boxes ``[N, 4]`` in pixels. Returns ``[N]`` in [0, 1]
    (1 for a box with no support, once a box is kept)."""
    for name, v in (("kept", kept), ("boxes", boxes)):
        if not torch.is_tensor(v) or v.dim() != 2 or v.shape[1] != 4:
            raise ValueError(f"{name} must be a tensor [N, 4] (xyxy pixels); got "
                             f"{tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}")
    b = torch.cat([kept.double(), boxes.double()])
    ex = _Explained(masks, torch.as_tensor(region), b)
    if not len(kept):
        return torch.zeros(len(boxes), dtype=torch.float64)
    for i in range(len(kept)):
        ex.add(i)
    return ex.fraction()[len(kept):]


def _accepted(classifier: Callable[[torch.Tensor], torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    keep = torch.as_tensor(classifier(boxes.float()))
    if keep.shape != (len(boxes),) or keep.dtype != torch.bool:
        raise ValueError(f"classifier(boxes [N, 4]) must return a bool tensor [N]; got "
                         f"{tuple(keep.shape)} {keep.dtype}")
    return keep.cpu()
