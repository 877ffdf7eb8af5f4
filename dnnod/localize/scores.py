"""Eq. 2 and Eq. 3 on any boxes — paper Sec. 5.2 (book appendix "The paper at a glance").

A mask ``m`` of ``dy × dx`` cells covers a rectangle ``region = (x1, y1, x2, y2)`` (a window, a
refinement crop, or the whole image for merged masks); cell ``T(i, j)`` is row ``i`` (y) and
column ``j`` (x). Agreement of a box with a mask (Eq. 2)::

    S(bb, m) = 1/area(bb) · Σ_ij m(i, j) · area(bb ∩ T(i, j))

and the combined score (Eq. 3)::

    S(bb) = Σ_h  S(bb(h), m^h) − S(bb(h̄), m^h),   h ∈ {full, top, bottom, left, right}

with h̄ the opposite half, and for ``full`` (ours: the paper leaves the region unspecified) the
*frame* between bb and bb scaled by ``surround`` = 1.5 about its centre, clipped to the region;
that term is 0 when the frame is empty. So a perfect box scores 5 and every term is in [-1, 1].

Exactness. The mask is piecewise constant, so its integral image
``F(x, y) = ∫∫_{[x1, x]×[y1, y]} m`` is *bilinear inside each cell*: sampling the (d+1)×(d+1)
integral image with bilinear interpolation gives Eq. 2 exactly for boxes that cut through cells —
no upsampling to pixels (:func:`mask_score`, :func:`box_scores`).

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
This module also holds the input checks and :func:`serial` shared by the other localize modules.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._validate import BoxesLike, RectLike, as_boxes, as_rect, serial
from ..masks import MASK_TYPES, box_parts

#: Eq. 3's surrounding region for the full mask: bb scaled by this factor about its centre (ours).
DEFAULT_SURROUND = 1.5
_FULL, _TOP, _BOTTOM, _LEFT, _RIGHT = range(5)

# ----------------------------------------------------------------------------- input checks
def _as_masks(masks, name: str = "masks", min_dim: int = 2) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        masks = torch.as_tensor(masks)
    if masks.dim() < min_dim:
        want = "[..., d, d]" if min_dim == 2 else "[..., 5, d, d]"
        raise ValueError(f"{name} must be shaped {want}; got shape {tuple(masks.shape)}")
    if masks.numel() == 0 or masks.shape[-1] == 0 or masks.shape[-2] == 0:
        raise ValueError(f"{name} are empty: shape {tuple(masks.shape)}")
    if not masks.is_floating_point():
        masks = masks.float()
    if not torch.isfinite(masks).all():
        raise ValueError(f"{name} contain NaN or inf")
    return masks


def _as_masks5(masks, name: str = "masks") -> torch.Tensor:
    masks = _as_masks(masks, name, 3)
    if masks.shape[-3] != len(MASK_TYPES):
        raise ValueError(f"{name} must be shaped [..., 5, d, d] (mask types {MASK_TYPES}); got shape "
                         f"{tuple(masks.shape)}")
    return masks


def _check_inside(boxes: torch.Tensor, region: torch.Tensor, name: str = "boxes") -> None:
    # Tolerance: boxes computed in float32 may overshoot the region edge by rounding.
    tol = 1e-4 * float(max(region[2] - region[0], region[3] - region[1], 1.0))
    out = (boxes[:, 0] < region[0] - tol) | (boxes[:, 1] < region[1] - tol) \
        | (boxes[:, 2] > region[2] + tol) | (boxes[:, 3] > region[3] + tol)
    if out.any():
        raise ValueError(f"{name} must lie inside the region {region.tolist()} the masks cover; "
                         f"outside: {boxes[out][:3].tolist()}")


# ----------------------------------------------------------------------------- Eq. 2, general path
def _integral(masks: torch.Tensor) -> torch.Tensor:
    """Integral image ``[..., dy+1, dx+1]`` in float64 (cell units: a full cell weighs 1)."""
    g = masks.to(torch.float64).cumsum(-1).cumsum(-2)
    return torch.nn.functional.pad(g, (1, 0, 1, 0))


def _mass(G: torch.Tensor, boxes_c: torch.Tensor) -> torch.Tensor:
    """Mask mass (cell units) inside boxes given in cell coordinates ``[K, 4]`` -> ``[..., K]``.

    F is bilinear inside a cell, so bilinear interpolation of the integral image G is exact.
    Boxes reaching outside the grid see its border cells replicated outwards.
    """
    dy, dx = G.shape[-2] - 1, G.shape[-1] - 1
    flat = G.reshape(*G.shape[:-2], -1)

    def corner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Outside [0, d] the border cell's bilinear formula is extrapolated, which is the integral
        # of the mask with its border cells replicated outwards (used for the Eq. 3 surround).
        iu = u.floor().clamp(0, dx - 1).long()
        iv = v.floor().clamp(0, dy - 1).long()
        fu, fv = u - iu, v - iv
        i00 = iv * (dx + 1) + iu
        g00, g01 = flat[..., i00], flat[..., i00 + 1]
        g10, g11 = flat[..., i00 + dx + 1], flat[..., i00 + dx + 2]
        return (1 - fv) * ((1 - fu) * g00 + fu * g01) + fv * ((1 - fu) * g10 + fu * g11)

    u1, v1, u2, v2 = boxes_c.unbind(-1)
    return corner(u2, v2) - corner(u1, v2) - corner(u2, v1) + corner(u1, v1)


def _to_cells(boxes: torch.Tensor, region: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    sx = dx / (region[2] - region[0])
    sy = dy / (region[3] - region[1])
    return torch.stack([(boxes[:, 0] - region[0]) * sx, (boxes[:, 1] - region[1]) * sy,
                        (boxes[:, 2] - region[0]) * sx, (boxes[:, 3] - region[1]) * sy], -1)


@serial
def mask_score(masks: torch.Tensor, boxes: BoxesLike, region: RectLike) -> torch.Tensor:
    """Eq. 2, ``S(bb, m)``: mean mask value inside each box, exact for boxes cutting cells.

    masks: ``[..., dy, dx]`` covering ``region`` (x1, y1, x2, y2) (square ``d × d`` in the paper;
    the merged image-level masks of :mod:`dnnod.multiscale` may be rectangular grids);
    boxes: ``[K, 4]`` xyxy with positive area, inside ``region``. Returns ``[..., K]`` in the masks'
    dtype. A box equal to the region scores the mean of the mask.
    """
    masks = _as_masks(masks)
    r = as_rect(region, "region")
    b = as_boxes(boxes, "boxes", allow_empty_area=False)
    _check_inside(b, r)
    dy, dx = masks.shape[-2:]
    bc = _to_cells(b, r, dy, dx)
    mass = _mass(_integral(masks), bc)
    area = (bc[:, 2] - bc[:, 0]) * (bc[:, 3] - bc[:, 1])
    return (mass / area).to(masks.dtype)


def _scale_about_centre(boxes: torch.Tensor, factor: float) -> torch.Tensor:
    c = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) * (factor / 2)
    return torch.cat([c - half, c + half], -1)


@serial
def box_scores(masks: torch.Tensor, boxes: BoxesLike, region: RectLike, *,
               surround: float = DEFAULT_SURROUND, clip: Optional[RectLike] = None) -> torch.Tensor:
    """Eq. 3, ``S(bb) = Σ_h S(bb(h), m^h) − S(bb(h̄), m^h)`` for arbitrary boxes.

    masks: ``[..., 5, dy, dx]`` (types in ``MASK_TYPES`` order) covering ``region``; boxes ``[K, 4]``
    inside it. For ``full``, h̄ is the frame between bb and bb scaled by ``surround`` about its
    centre, clipped to the region (term 0 if that frame is empty) — ours, book appendix A, departures.
    Returns ``[..., K]``; a perfect box scores 5.

    ``clip`` (default: the region) is the rectangle the surround is clipped to — the image, when
    the masks cover only a crop of it (refinement). Where the clipped surround leaves the region,
    the mask's border cells are taken to continue outwards (ours): an object cut by the crop
    edge then still penalises a box that stops at that edge.
    """
    masks = _as_masks5(masks)
    r = as_rect(region, "region")
    b = as_boxes(boxes, "boxes", allow_empty_area=False)
    _check_inside(b, r)
    if not (isinstance(surround, (int, float)) and math.isfinite(surround) and surround >= 1):
        raise ValueError(f"surround must be a number >= 1; got {surround!r}")
    dy, dx = masks.shape[-2:]
    G = _integral(masks)                                  # [..., 5, dy+1, dx+1]
    bc = _to_cells(b, r, dy, dx)
    parts = box_parts(bc)                                 # [5, K, 4] in cell units
    area = (bc[:, 2] - bc[:, 0]) * (bc[:, 3] - bc[:, 1])
    # Halves: own half minus opposite half, both of area A/2.
    opp = {_TOP: _BOTTOM, _BOTTOM: _TOP, _LEFT: _RIGHT, _RIGHT: _LEFT}
    total = _mass(G[..., _FULL, :, :], bc) / area
    for t, o in opp.items():
        total = total + (_mass(G[..., t, :, :], parts[t]) - _mass(G[..., t, :, :], parts[o])) / (area / 2)
    # Full: minus the mean of the full mask over the surrounding frame.
    cl = r if clip is None else as_rect(clip, "clip")
    rc = _to_cells(cl[None], r, dy, dx)[0]
    enl = _scale_about_centre(bc, surround)
    enl = torch.maximum(torch.minimum(enl, rc[[2, 3, 2, 3]]), rc[[0, 1, 0, 1]])
    area_e = (enl[:, 2] - enl[:, 0]) * (enl[:, 3] - enl[:, 1])
    frame_area = area_e - area
    frame_mass = _mass(G[..., _FULL, :, :], enl) - _mass(G[..., _FULL, :, :], bc)
    ok = frame_area > 1e-9 * area
    frame = torch.where(ok, frame_mass / torch.where(ok, frame_area, torch.ones_like(frame_area)),
                        torch.zeros_like(frame_area))
    return (total - frame).to(masks.dtype)
