"""Mask targets — paper Sec. 3, Eq. 1.

A window (crop) is split into a d×d grid of cells T(i, j) (row i along y, column j along x).
For mask type h the target of cell (i, j) is the fraction of the cell covered by U_h, the
union over all objects in the window of their part h (the whole box, or its top / bottom /
left / right half)::

    m^h(i, j) = area(T(i, j) ∩ U_h) / area(T(i, j))            (Eq. 1)

Union, not sum: two overlapping objects never give more than 1 (book appendix A, departures, ours).

Boxes follow the package convention: ``Tensor[N, 4]`` as ``(x1, y1, x2, y2)`` in continuous
pixel coordinates (pixel edges, x right, y down).

The computation is exact (no supersampling). The union of axis-aligned rectangles is constant
on the grid of "elementary" rectangles cut by every box edge and every cell edge, so we sort
those edges per axis, decide for each elementary rectangle whether any box covers it (one
batched matmul of per-axis indicator matrices), and sum the elementary areas into their cells
(two more matmuls with per-axis one-hot matrices). No Python loop over cells, boxes or images.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._validate import BoxesLike, RectLike, as_boxes, as_rect, check_d

MASK_TYPES = ("full", "top", "bottom", "left", "right")
#: index of the opposite half of each mask type (``full`` maps to itself; see localize).
OPPOSITE = {"full": "full", "top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def box_parts(boxes: torch.Tensor) -> torch.Tensor:
    """The five parts bb(h) of each box, in ``MASK_TYPES`` order: ``[N, 4] -> [5, N, 4]``.

    top/bottom split the height at its middle, left/right split the width (paper Sec. 3).
    Works on any leading batch shape ``[..., 4] -> [5, ..., 4]``.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    return torch.stack([
        boxes,
        torch.stack([x1, y1, x2, ym], -1),
        torch.stack([x1, ym, x2, y2], -1),
        torch.stack([x1, y1, xm, y2], -1),
        torch.stack([xm, y1, x2, y2], -1),
    ])


def _axis_bins(lo: torch.Tensor, hi: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, d: int):
    """Elementary intervals along one axis.

    lo, hi: ``[B, M]`` clipped rectangle edges; w0, w1: ``[B]`` window edges.
    Returns (mid ``[B, K]``, length ``[B, K]``, one-hot-times-length ``[B, d, K]``).
    Duplicated edges give zero-length intervals, which weigh nothing: no ``unique`` needed,
    so every image of a batch has the same number of intervals.
    """
    frac = torch.arange(d + 1, dtype=lo.dtype, device=lo.device) / d
    cell_edges = w0[:, None] + (w1 - w0)[:, None] * frac          # [B, d+1]
    edges, _ = torch.sort(torch.cat([cell_edges, lo, hi], dim=1), dim=1)
    mid = (edges[:, 1:] + edges[:, :-1]) / 2
    length = edges[:, 1:] - edges[:, :-1]
    cell = ((mid - w0[:, None]) / (w1 - w0)[:, None] * d).floor().clamp_(0, d - 1).long()
    onehot = torch.zeros(lo.shape[0], d, mid.shape[1], dtype=lo.dtype, device=lo.device)
    onehot.scatter_(1, cell[:, None, :], length[:, None, :])
    return mid, onehot


def union_coverage(rects: torch.Tensor, windows: torch.Tensor, d: int) -> torch.Tensor:
    """Exact fraction of each cell covered by the union of rectangles.

    rects: ``[B, T, N, 4]`` (T independent unions per image, e.g. the 5 mask types; zero-area
    rectangles are padding); windows: ``[B, 4]``. Returns ``[B, T, d, d]`` in float64.
    """
    B, T, N, _ = rects.shape
    wx0, wy0, wx1, wy1 = windows.unbind(-1)
    x0 = torch.maximum(rects[..., 0], wx0[:, None, None]).minimum(wx1[:, None, None])
    x1 = torch.maximum(rects[..., 2], wx0[:, None, None]).minimum(wx1[:, None, None])
    y0 = torch.maximum(rects[..., 1], wy0[:, None, None]).minimum(wy1[:, None, None])
    y1 = torch.maximum(rects[..., 3], wy0[:, None, None]).minimum(wy1[:, None, None])
    mx, ax = _axis_bins(x0.reshape(B, -1), x1.reshape(B, -1), wx0, wx1, d)   # [B,Kx], [B,d,Kx]
    my, ay = _axis_bins(y0.reshape(B, -1), y1.reshape(B, -1), wy0, wy1, d)
    # inside[b, t, n, k]: elementary interval k lies inside rectangle n (edges are in the grid,
    # so testing the midpoint is exact).
    in_x = ((x0[..., None] <= mx[:, None, None]) & (mx[:, None, None] < x1[..., None])).to(rects.dtype)
    in_y = ((y0[..., None] <= my[:, None, None]) & (my[:, None, None] < y1[..., None])).to(rects.dtype)
    covered = (in_y.transpose(-1, -2) @ in_x > 0).to(rects.dtype)             # [B, T, Ky, Kx]
    area = ay[:, None] @ covered @ ax[:, None].transpose(-1, -2)               # [B, T, d, d]
    cell_area = ((wx1 - wx0) * (wy1 - wy0) / (d * d))[:, None, None, None]
    return (area / cell_area).clamp_(0.0, 1.0)


def mask_targets(boxes: BoxesLike, window: RectLike, d: int = 24) -> torch.Tensor:
    """Eq. 1 targets of all objects in ``window``: ``Tensor[5, d, d]`` float32, types in ``MASK_TYPES``.

    boxes: ``[N, 4]`` xyxy in image pixel coordinates (N = 0 gives zeros); parts outside the
    window are clipped. window: ``(x1, y1, x2, y2)`` of the crop in the same coordinates.
    """
    d = check_d(d)
    w = as_rect(window, "window")
    b = as_boxes(boxes, "boxes", device=w.device)
    parts = box_parts(b)                                           # [5, N, 4]
    return union_coverage(parts[None], w[None], d)[0].float()


def mask_targets_batch(list_of_boxes: Sequence[BoxesLike], windows, d: int = 24) -> torch.Tensor:
    """Batched Eq. 1 for the training loop: B images' boxes and B windows -> ``[B, 5, d, d]``.

    Images with fewer boxes are padded with zero-area boxes, so the whole batch is one
    vectorised computation.
    """
    d = check_d(d)
    w = torch.as_tensor(windows, dtype=torch.float64)
    if w.dim() != 2 or w.shape[1] != 4:
        raise ValueError(f"windows must be shaped [B, 4]; got {tuple(w.shape)}")
    if len(list_of_boxes) != w.shape[0]:
        raise ValueError(f"got {len(list_of_boxes)} box sets for {w.shape[0]} windows")
    ws = torch.stack([as_rect(r, f"windows[{i}]") for i, r in enumerate(w)]) if len(w) else w
    bs = [as_boxes(b, f"boxes[{i}]") for i, b in enumerate(list_of_boxes)]
    if not bs:
        return torch.zeros(0, 5, d, d)
    n = max(1, max(b.shape[0] for b in bs))
    padded = torch.zeros(len(bs), n, 4, dtype=torch.float64)
    for i, b in enumerate(bs):          # loop over images only to pad; the maths is batched
        padded[i, : b.shape[0]] = b
    parts = box_parts(padded).transpose(0, 1)                      # [B, 5, N, 4]
    return union_coverage(parts, ws, d).float()
