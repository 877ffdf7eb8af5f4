"""Multi-scale inference windows and mask merging — paper Sec. 5.3 (book appendix A).

The network sees a whole image only at 225×225, so one 24×24 mask is too coarse for small
objects. The paper runs it on windows at three scales — the whole image, then windows half the
previous size — overlapping by 20% of their area, "usually fewer than 40" in all. Per scale, the
window masks are pasted into one image-level mask per class and mask type and merged by max.

Layout (ours, book appendix A, departures): windows keep the image's aspect ratio; at scale s (0-based) they are
``W/2^s × H/2^s`` and ``n_s`` per axis, evenly spaced from edge to edge with ``n_s`` the smallest
count giving neighbours ≥ ``overlap`` of their area in common: 1 + 9 + 25 = 35 windows.

Merged representation (ours): a grid of cells covering the whole image (region ``(0, 0, W, H)``)
at the resolution of the finest windows' cells — ``d·2^s`` cells per axis at scale s for the
default layout. An output cell takes, from every window containing its centre, the value of that
window's cell containing the centre, and the max over those windows (0 where none covers it).
With the default layout and d divisible by 2^(scales-1) (d = 24 for 3 scales: windows step by
3/4 of their size, 18 cells at the finest scale) every window edge falls on the output grid, so
every output cell lies in exactly one cell of each window covering it and the merge is exact;
otherwise the centre sampling is a nearest-cell approximation. The result is an ordinary
mask ``[C, 5, Dy, Dx]`` over the image, so :func:`dnnod.localize.mask_score` (Eq. 2) and the
candidate scoring apply to it unchanged with ``region = (0, 0, W, H)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ._validate import _check_image_size, as_boxes, serial


def windows_per_axis(scale: int, overlap: float = 0.2) -> int:
    """Windows per axis at 0-based ``scale``: smallest n with neighbours overlapping ≥ ``overlap``."""
    if scale == 0:
        return 1
    f = 0.5 ** scale                     # window size / image size
    # step = (1 - f) / (n - 1) must be <= f (1 - overlap)
    return max(2, math.ceil((1 - f) / (f * (1 - overlap)) + 1 - 1e-9))


def scale_windows(image_size: Tuple[float, float], scales: int = 3,
                  overlap: float = 0.2) -> List[torch.Tensor]:
    """The windows of each scale for an image of ``image_size = (H, W)``: a list of ``scales``
    float tensors ``[K_s, 4]`` (xyxy, row-major: y then x). 1 + 9 + 25 = 35 for 3 scales."""
    H, W = _check_image_size(image_size)
    if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
        raise ValueError(f"scales must be an integer >= 1; got {scales!r}")
    if not isinstance(overlap, (int, float)) or not (0 <= overlap < 1):
        raise ValueError(f"overlap must be in [0, 1); got {overlap!r}")
    out = []
    for s in range(scales):
        n = windows_per_axis(s, overlap)
        w, h = W / 2 ** s, H / 2 ** s
        t = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        xs, ys = t * (W - w), t * (H - h)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        out.append(torch.stack([x, y, x + w, y + h], -1).float())
    return out


def merged_grid_size(windows: torch.Tensor, image_size: Tuple[float, float], d: int) -> Tuple[int, int]:
    """``(Dy, Dx)`` of the merged grid: the image at the finest windows' cell size."""
    H, W = _check_image_size(image_size)
    cw = float((windows[:, 2] - windows[:, 0]).min()) / d
    ch = float((windows[:, 3] - windows[:, 1]).min()) / d
    # Round, but never below the exact ratio by more than float noise (ceil after a tolerance).
    return max(1, math.ceil(H / ch - 1e-6)), max(1, math.ceil(W / cw - 1e-6))


@serial
def merge_masks(window_masks: torch.Tensor, windows, image_size: Tuple[float, float],
                d_out: Optional[Union[int, Tuple[int, int]]] = None) -> torch.Tensor:
    """Merge window masks ``[K, C, 5, d, d]`` by max into image-level masks ``[C, 5, Dy, Dx]``
    over the region ``(0, 0, W, H)`` (``image_size = (H, W)``; see module doc).

    ``d_out``: output grid ``Dy = Dx = d_out``, or ``(Dy, Dx)``; default the finest windows'
    resolution (:func:`merged_grid_size`).
    """
    H, W = _check_image_size(image_size)
    if not isinstance(window_masks, torch.Tensor) or window_masks.dim() != 5 \
            or window_masks.shape[-1] != window_masks.shape[-2] or window_masks.shape[2] != 5:
        shape = tuple(window_masks.shape) if isinstance(window_masks, torch.Tensor) else window_masks
        raise ValueError(f"window_masks must be shaped [K, C, 5, d, d]; got {shape}")
    win = as_boxes(windows, "windows", allow_empty_area=False)
    K, C, _, d, _ = window_masks.shape
    if win.shape[0] != K or K == 0:
        raise ValueError(f"got {K} window masks for {win.shape[0]} windows (need the same, >= 1)")
    if d_out is None:
        Dy, Dx = merged_grid_size(win, (H, W), d)
    elif isinstance(d_out, int) and not isinstance(d_out, bool):
        Dy = Dx = d_out
    else:
        Dy, Dx = (int(v) for v in d_out)
    if Dy < 1 or Dx < 1:
        raise ValueError(f"d_out must be >= 1; got {d_out!r}")
    cy = (torch.arange(Dy, dtype=torch.float64) + 0.5) * (H / Dy)      # output cell centres
    cx = (torch.arange(Dx, dtype=torch.float64) + 0.5) * (W / Dx)
    out = torch.zeros(C, 5, Dy, Dx, dtype=window_masks.dtype, device=window_masks.device)
    # One vectorised paste per window (K <= ~35): the cells whose centres a window contains form
    # a block of the output grid.
    for k in range(K):
        x1, y1, x2, y2 = win[k].tolist()
        rows = torch.nonzero((cy >= y1) & (cy < y2)).squeeze(1)
        cols = torch.nonzero((cx >= x1) & (cx < x2)).squeeze(1)
        if rows.numel() == 0 or cols.numel() == 0:
            continue
        iy = ((cy[rows] - y1) / (y2 - y1) * d).floor().clamp(0, d - 1).long()
        ix = ((cx[cols] - x1) / (x2 - x1) * d).floor().clamp(0, d - 1).long()
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        vals = window_masks[k][:, :, iy.to(out.device)][:, :, :, ix.to(out.device)]
        torch.maximum(out[:, :, r0:r1, c0:c1], vals, out=out[:, :, r0:r1, c0:c1])
    return out


def combine_scales(merged) -> torch.Tensor:
    """The merged masks of all scales ``[C, 5, Dy_s, Dx_s]`` (each covering the whole image) on
    the finest scale's grid, averaged (ours: the image-level masks that the final suppression of
    :func:`dnnod.detect.detect` in mode ``"explain"`` measures support on). A coarser grid is
    resampled with ``interpolate(mode="area")``: each fine cell takes the mean of the coarse cells
    it overlaps."""
    merged = list(merged)
    if not merged:
        raise ValueError("combine_scales needs the merged masks of at least one scale")
    Dy = max(int(m.shape[-2]) for m in merged)
    Dx = max(int(m.shape[-1]) for m in merged)
    up = [m if tuple(m.shape[-2:]) == (Dy, Dx) else
          torch.nn.functional.interpolate(m.float(), size=(Dy, Dx), mode="area").to(m.dtype)
          for m in merged]
    return torch.stack(up).mean(0)


# ----------------------------------------------------------------------------- image size
#: Long side (px) of the working resolution of the box search (ours). The candidate lattice of a
#: larger image is that of the image scaled to this size — the stride grows with the image, so the
#: number of candidates, and the cost, stop growing. Up to 1024 px (every VOC and Penn-Fudan
#: photo) the paper's 5 px stride is kept unchanged, so the book's measurements hold; 1024 px is
#: about 2 steps per cell of the finest merged mask (d·2^(scales-1) = 96 cells per axis for
#: d = 24 and 3 scales).
WORK_LONG_SIDE = 1024
#: Smallest refinement crop relative to the image (ours): the smallest candidate (size 0.05 of the
#: mean image dimension, :data:`dnnod.detect.DETECT_SIZES`) enlarged by 1.2 and grown to the
#: image's aspect ratio spans at least 0.06 of the image's width and height; 0.9 of that allows for
#: the lattice's rounding of box sizes to whole steps.
SMALLEST_CROP = 0.9 * 1.2 * 0.05


def working_stride(image_size: Tuple[float, float], stride: float = 5,
                   work_long_side: float = WORK_LONG_SIDE) -> float:
    """The candidate stride in image pixels: ``stride`` on an image whose long side is at most
    ``work_long_side``, else ``stride`` scaled by long side / ``work_long_side`` (the lattice of
    the image resized to the working resolution, in the original pixel coordinates)."""
    H, W = _check_image_size(image_size)
    return float(stride) * max(1.0, max(H, W) / float(work_long_side))


def network_scale(image_size: Tuple[float, float], input_size: int, scales: int = 3,
                  smallest_crop: float = SMALLEST_CROP) -> float:
    """The coarsest resolution (fraction <= 1 of the image) at which every window and every
    refinement crop of an image ``(H, W)`` still spans ``input_size`` px on both axes: the finest
    windows are ``1/2^(scales-1)`` of the image, the smallest crops ``smallest_crop`` of it. An
    image held at this scale loses nothing a ``input_size`` network input can use."""
    H, W = _check_image_size(image_size)
    short = min(H, W)
    need = max(input_size / (short / 2 ** (scales - 1)), input_size / (smallest_crop * short))
    return min(1.0, need)
