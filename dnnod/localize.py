"""Box extraction from predicted masks — paper Sec. 5.2 (PAPER.md §5).

A mask ``m`` of ``dy × dx`` cells covers a rectangle ``region = (x1, y1, x2, y2)`` (a window, a
refinement crop, or the whole image for merged masks); cell ``T(i, j)`` is row ``i`` (y) and
column ``j`` (x). Agreement of a box with a mask (Eq. 2)::

    S(bb, m) = 1/area(bb) · Σ_ij m(i, j) · area(bb ∩ T(i, j))

and the combined score (Eq. 3)::

    S(bb) = Σ_h  S(bb(h), m^h) − S(bb(h̄), m^h),   h ∈ {full, top, bottom, left, right}

with h̄ the opposite half, and for ``full`` (ours, PAPER.md §10) the *frame* between bb and bb
scaled by ``surround`` = 1.5 about its centre, clipped to the region; that term is 0 when the frame
is empty. So a perfect box scores 5 and every term is in [-1, 1].

Exactness. The mask is piecewise constant, so its integral image
``F(x, y) = ∫∫_{[x1, x]×[y1, y]} m`` is *bilinear inside each cell*: sampling the (d+1)×(d+1)
integral image with bilinear interpolation gives Eq. 2 exactly for boxes that cut through cells —
no upsampling to pixels (:func:`mask_score`, :func:`box_scores`).

Speed (:func:`score_candidates`, used by :func:`extract_boxes`). The candidates are 9 sizes × 10
aspect ratios slid on a stride lattice (paper: 5 px). Along one axis the overlap lengths of the
interval [a, b] with the cells are a row vector ``o(a, b)`` (differences of the integral image's
interpolation weights); for all lattice positions of one shape they form matrices ``Dy [ny, dy]``
and ``Dx [nx, dx]``, and the masses of *all* boxes of that shape are one matrix product
``Dy · m · Dxᵀ`` — the integral image sampled once per lattice point. Eq. 3 is linear in the masks,
so its four half terms collapse to two products as well::

    Σ_halves = 2/A · [ (Dy_top − Dy_bottom)(m_top − m_bottom) Dx_fullᵀ
                      + Dy_full (m_left − m_right)(Dx_left − Dx_right)ᵀ ]

and everything for a block of shapes is three batched matmuls (Eq. 2, the surround, Eq. 3).

The lattice is *snapped* (ours, :func:`make_lattice`): the region is a whole number of steps of
≈ ``stride`` px and every shape a whole number of steps, so every box edge, half-box line and
(for the default surround 1.5) surround edge lies on one grid of pitch step/4. Then each
``o(a, b)`` is the difference of two rows of one table, the vectors depend on the lattice only
and are built once per lattice (memoised per image size), and a call is three small matmuls
per block of shapes: 5–10 ms for the ≈ 200 k candidates of a 500×375 image on 2 CPU cores
(bench/localize.py). Blocks bound the memory (≈ 80 MB peak for a 1000×1000 image). Refinement
crops (each its own region, surround clipped to the image) use the general matmul path.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torchvision

from ._validate import BoxesLike, RectLike, as_boxes, as_rect
from .masks import MASK_TYPES, box_parts

#: Mean box sizes as fractions of the region's mean dimension (W + H) / 2 (paper Sec. 5.2).
DEFAULT_SIZES: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Aspect ratios (w / h) used when none were learnt from training boxes by
#: :func:`kmeans_aspect_ratios` — ours: 10 ratios spaced evenly in log scale between 1/3 and 3
#: (the range holding most VOC boxes); neighbours differ by a factor 3^(2/9) ≈ 1.28.
DEFAULT_ASPECT_RATIOS: Tuple[float, ...] = tuple(3.0 ** (-1 + 2 * i / 9) for i in range(10))
#: Eq. 3's surrounding region for the full mask: bb scaled by this factor about its centre (ours).
DEFAULT_SURROUND = 1.5
#: Candidates kept for NMS after the Eq. 2 threshold, best Eq. 3 first (ours; bounds NMS cost).
DEFAULT_PRE_NMS = 4000
#: Aspect ratios (and candidate shapes) that agree to this relative tolerance are one (ours):
#: they give the same candidates for every practical purpose, at a multiple of the cost.
SAME_SHAPE_RTOL = 1e-3
NMS_MODES = ("iou", "dpm")
_FULL, _TOP, _BOTTOM, _LEFT, _RIGHT = range(5)


def serial(fn):
    """Run ``fn`` with one intra-op thread. Box scoring is many small tensor ops (each well under
    a few MB), whose OpenMP fork/join costs more than it saves — on a busy 2-core machine up to
    100× more. The network forward keeps all threads."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n = torch.get_num_threads()
        if n == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)
    return wrapper


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


def _check_image_size(image_size) -> Tuple[float, float]:
    try:
        h, w = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W); got {image_size!r}") from None
    if not (math.isfinite(h) and math.isfinite(w) and h > 0 and w > 0):
        raise ValueError(f"image_size (H, W) must be positive; got {tuple(image_size)!r}")
    return h, w


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
    centre, clipped to the region (term 0 if that frame is empty) — ours, PAPER.md §10.
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


# ----------------------------------------------------------------------------- aspect ratios
@serial
def kmeans_aspect_ratios(boxes: BoxesLike, k: int = 10, seed: int = 0, *, iters: int = 100,
                         n_init: int = 4) -> torch.Tensor:
    """The candidate aspect ratios (w / h): k-means on ``log(w / h)`` of training boxes (Sec. 5.2).

    Deterministic for a given ``seed``: the first run starts from the k quantiles, the other
    ``n_init - 1`` from seeded k-means++; the run with the lowest inertia wins. Returns the sorted
    ratios ``[k]`` (float64); if there are fewer than k distinct ratios, exactly those (fewer than k),
    and centres that agree to 0.1% are merged (e.g. data whose boxes are all square gives [1.0]).
    """
    b = as_boxes(boxes, "boxes", allow_empty_area=False)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if b.shape[0] == 0:
        raise ValueError("kmeans_aspect_ratios needs at least one box")
    x = torch.log((b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1]))
    distinct = torch.unique(x)
    if distinct.numel() <= k:
        return torch.exp(distinct)
    gen = torch.Generator().manual_seed(int(seed))
    xs = torch.sort(x).values
    best, best_inertia = None, math.inf
    for run in range(max(1, n_init)):
        if run == 0:
            c = torch.quantile(xs, (torch.arange(k, dtype=xs.dtype) + 0.5) / k)
        else:                                    # k-means++ seeding
            c = xs[torch.randint(len(xs), (1,), generator=gen)]
            for _ in range(k - 1):
                dist = ((xs[:, None] - c[None]) ** 2).min(1).values
                p = dist / dist.sum() if dist.sum() > 0 else torch.full_like(dist, 1 / len(dist))
                c = torch.cat([c, xs[torch.multinomial(p, 1, generator=gen)]])
        for _ in range(iters):
            assign = (xs[:, None] - c[None]).abs().argmin(1)
            sums = torch.zeros(k, dtype=xs.dtype).index_add_(0, assign, xs)
            cnt = torch.zeros(k, dtype=xs.dtype).index_add_(0, assign, torch.ones_like(xs))
            # An empty cluster keeps its centre (rare in 1-D with distinct data).
            new = torch.where(cnt > 0, sums / cnt.clamp(min=1), c)
            if torch.allclose(new, c, atol=1e-12, rtol=0):
                break
            c = new
        inertia = float(((xs[:, None] - c[None]) ** 2).min(1).values.sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = c, inertia
    c = torch.sort(best).values
    keep = torch.ones(len(c), dtype=torch.bool)
    last = c[0]
    for i in range(1, len(c)):          # k <= ~10 centres: a loop is fine
        if float(c[i] - last) < SAME_SHAPE_RTOL:      # log-ratios: a relative tolerance
            keep[i] = False
        else:
            last = c[i]
    return torch.exp(c[keep])


# ----------------------------------------------------------------------------- candidates
@dataclass
class Lattice:
    """Candidate boxes of a region: shapes ``(w[s], h[s])`` slid with strides ``(sx, sy)`` px.

    Shape s has ``nx[s] × ny[s]`` positions; x1 = ``x0[s] + i·sx`` (i < nx[s]), y1 likewise.
    Candidate order: shape-major, then y, then x (the order of :meth:`boxes`).

    A lattice of :func:`make_lattice` is *snapped*: the region is ``NX × NY`` strides and every
    shape is ``a[s] × b[s]`` strides, so all box corners, half-box lines and (for the default
    surround) surround edges lie on one grid of pitch stride/4 — the fast path of
    :func:`_score_lattice`. Grouped lattices (:func:`concat_lattices`) have ``a = None``.
    """
    region: torch.Tensor                 # [4] float64
    w: torch.Tensor                      # [S]
    h: torch.Tensor
    x0: torch.Tensor                     # first x1 of each shape
    y0: torch.Tensor
    nx: torch.Tensor                     # [S] int64
    ny: torch.Tensor
    sx: Union[float, torch.Tensor]       # a number, or one per shape ([S]) for grouped lattices
    sy: Union[float, torch.Tensor]
    #: Grouped lattices (:func:`concat_lattices`): the mask set / region index of each shape
    #: ``[S]`` and each shape's region ``[S, 4]``; None for a single region.
    group: Optional[torch.Tensor] = None
    shape_region: Optional[torch.Tensor] = None
    #: Snapped lattices: shape sizes in strides ``[S]`` int64 and the region's size in strides.
    a: Optional[torch.Tensor] = None
    b: Optional[torch.Tensor] = None
    NX: int = 0
    NY: int = 0
    #: Lattice-only precomputations of the fast path (see :func:`_snapped_geometry`).
    _cache: Dict[tuple, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_shapes(self) -> int:
        return int(self.w.numel())

    @property
    def counts(self) -> torch.Tensor:
        return self.nx * self.ny

    def __len__(self) -> int:
        return int(self.counts.sum())

    def boxes(self, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Candidate boxes ``[K, 4]`` float64 (all, or the given flat candidate indices)."""
        if index is None:
            return self._all_boxes()
        counts = self.counts
        start = torch.cumsum(counts, 0) - counts
        index = index.long()
        s = torch.searchsorted(torch.cumsum(counts, 0), index, right=True)
        r = index - start[s]
        q, p = r // self.nx[s], r % self.nx[s]
        sx = self.sx[s] if isinstance(self.sx, torch.Tensor) else self.sx
        sy = self.sy[s] if isinstance(self.sy, torch.Tensor) else self.sy
        x1 = self.x0[s] + p.double() * sx
        y1 = self.y0[s] + q.double() * sy
        return torch.stack([x1, y1, x1 + self.w[s], y1 + self.h[s]], -1)

    def _all_boxes(self) -> torch.Tensor:
        # Shape by shape (a loop over ~100 shapes, each a broadcast block): no per-box index
        # arithmetic, written straight into the output.
        out = torch.empty(len(self), 4, dtype=torch.float64)
        k = 0
        nx, ny = self.nx.tolist(), self.ny.tolist()
        for s in range(self.num_shapes):
            sx = float(self.sx[s]) if isinstance(self.sx, torch.Tensor) else self.sx
            sy = float(self.sy[s]) if isinstance(self.sy, torch.Tensor) else self.sy
            blk = out[k:k + nx[s] * ny[s]].view(ny[s], nx[s], 4)
            xs = float(self.x0[s]) + torch.arange(nx[s], dtype=torch.float64) * sx
            ys = float(self.y0[s]) + torch.arange(ny[s], dtype=torch.float64) * sy
            blk[..., 0] = xs
            blk[..., 2] = xs + float(self.w[s])
            blk[..., 1] = ys[:, None]
            blk[..., 3] = ys[:, None] + float(self.h[s])
            k += nx[s] * ny[s]
        return out


def make_lattice(region: RectLike, aspect_ratios: Optional[Sequence[float]] = None, *,
                 sizes: Sequence[float] = DEFAULT_SIZES, stride: float = 5,
                 snap: bool = True, cache: bool = True) -> Lattice:
    """The candidate shapes of Sec. 5.2 for ``region`` and their stride lattices.

    Mean dimension (w + h)/2 = size × (W + H)/2 of the region, w/h = aspect ratio (paper). Ours,
    so that every shape is a shifted slice of one sampled integral image (module doc): the
    region is cut into ``NX = round(W / stride)`` × ``NY = round(H / stride)`` equal steps (so the
    strides ``sx = W / NX``, ``sy = H / NY`` are within a few % of ``stride`` and tile the region
    exactly), each shape's width and height are rounded to whole steps (at least 1, at most the
    region: larger shapes are clipped to it, which keeps full-height / full-width candidates),
    shapes that coincide after rounding are dropped, and the positions run over the whole
    lattice from the region's corner. Box sizes change by at most half a step (2.5 px).

    ``snap=False`` keeps the exact shapes instead (w, h from size and ratio; duplicates within
    :data:`SAME_SHAPE_RTOL` dropped) on a ``stride`` lattice centred in the region, so the
    margins left over on both sides are equal — what refinement uses (:mod:`dnnod.refine`: its
    crops are scored by the general path anyway, and small crops want exact shapes).

    With ``cache`` (default) the lattice is memoised (the last few regions): images of one size
    share it, and with it the fast path's precomputed geometry (:func:`_snapped_geometry`).
    Lattices are read-only; pass ``cache=False`` for one-off regions (refinement crops).
    """
    r = as_rect(region, "region")
    ar = torch.as_tensor(DEFAULT_ASPECT_RATIOS if aspect_ratios is None else aspect_ratios,
                         dtype=torch.float64).reshape(-1)
    sz = torch.as_tensor(sizes, dtype=torch.float64).reshape(-1)
    if ar.numel() == 0 or not torch.isfinite(ar).all() or (ar <= 0).any():
        raise ValueError(f"aspect_ratios must be positive finite numbers; got {ar.tolist()}")
    if sz.numel() == 0 or not torch.isfinite(sz).all() or (sz <= 0).any():
        raise ValueError(f"sizes must be positive finite numbers; got {sz.tolist()}")
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not math.isfinite(stride) \
            or stride <= 0:
        raise ValueError(f"stride must be a positive number (pixels); got {stride!r}")
    key = (tuple(r.tolist()), tuple(ar.tolist()), tuple(sz.tolist()), float(stride), bool(snap))
    return _lattice_cached(key) if cache else _build_lattice(*key)


@functools.lru_cache(maxsize=4)
def _lattice_cached(key) -> Lattice:
    return _build_lattice(*key)


def _build_lattice(region: Tuple[float, ...], ar: Tuple[float, ...], sz: Tuple[float, ...],
                   stride: float, snap: bool = True) -> Lattice:
    r = torch.tensor(region, dtype=torch.float64)
    ar = torch.tensor(ar, dtype=torch.float64)
    sz = torch.tensor(sz, dtype=torch.float64)
    W, H = float(r[2] - r[0]), float(r[3] - r[1])
    if not snap:
        return _free_lattice(r, ar, sz, stride)
    NX, NY = max(1, int(math.floor(W / stride + 0.5))), max(1, int(math.floor(H / stride + 0.5)))
    sx, sy = W / NX, H / NY
    mean_dim = sz[:, None] * (W + H) / 2                         # [n_sizes, 1]
    h = (2 * mean_dim / (1 + ar[None])).reshape(-1)              # from w + h = 2m, w = a·h
    w = (2 * mean_dim * ar[None] / (1 + ar[None])).reshape(-1)
    a = torch.floor(w / sx + 0.5).long().clamp(1, NX)
    b = torch.floor(h / sy + 0.5).long().clamp(1, NY)
    # Drop duplicates (created by rounding and clipping), keeping the first occurrence
    # (sizes-major order).
    key = a * (NY + 1) + b
    keep = torch.ones(len(key), dtype=torch.bool)
    if len(key) > 1:
        keep = ~torch.tril(key[:, None] == key[None], -1).any(1)
    a, b = a[keep], b[keep]
    S = len(a)
    return Lattice(r, a.double() * sx, b.double() * sy, r[0].repeat(S), r[1].repeat(S),
                   NX - a + 1, NY - b + 1, sx, sy, a=a, b=b, NX=NX, NY=NY)


def _free_lattice(r: torch.Tensor, ar: torch.Tensor, sz: torch.Tensor, stride: float) -> Lattice:
    """make_lattice(snap=False): exact shapes on a centred ``stride`` lattice."""
    W, H = float(r[2] - r[0]), float(r[3] - r[1])
    mean_dim = sz[:, None] * (W + H) / 2                         # [n_sizes, 1]
    h = (2 * mean_dim / (1 + ar[None])).clamp(max=H).reshape(-1)  # from w + h = 2m, w = a·h
    w = (2 * mean_dim * ar[None] / (1 + ar[None])).clamp(max=W).reshape(-1)
    # Drop duplicates — created by clipping, or by aspect ratios within SAME_SHAPE_RTOL (k-means
    # on data whose boxes all share one shape) — keeping the first occurrence (sizes-major order).
    key = torch.stack([w, h], 1)
    keep = torch.ones(len(w), dtype=torch.bool)
    if len(w) > 1:
        diff = (key[:, None] - key[None]).abs()
        same = (diff <= SAME_SHAPE_RTOL * torch.maximum(key[:, None], key[None])).all(-1)
        keep = ~torch.tril(same, -1).any(1)
    w, h = w[keep], h[keep]
    eps = 1e-9
    nx = torch.floor((W - w) / stride + eps).long() + 1
    ny = torch.floor((H - h) / stride + eps).long() + 1
    x0 = r[0] + ((W - w) - (nx - 1).double() * stride).clamp(min=0) / 2
    y0 = r[1] + ((H - h) - (ny - 1).double() * stride).clamp(min=0) / 2
    return Lattice(r, w, h, x0, y0, nx, ny, float(stride), float(stride))


def concat_lattices(lats: Sequence[Lattice]) -> Lattice:
    """One grouped lattice from the lattices of G regions (e.g. the refinement crops), so that
    G mask sets ``[G, 5, dy, dx]`` are scored in one vectorised pass; group g = ``lats[g]``."""
    cat = lambda f: torch.cat([getattr(l, f) for l in lats])
    group = torch.cat([torch.full((l.num_shapes,), g, dtype=torch.long) for g, l in enumerate(lats)])
    per = lambda f: torch.cat([torch.as_tensor(getattr(l, f), dtype=torch.float64).expand(
        l.num_shapes) for l in lats])
    regions = torch.stack([l.region for l in lats])
    return Lattice(regions[0], cat("w"), cat("h"), cat("x0"), cat("y0"), cat("nx"), cat("ny"),
                   per("sx"), per("sy"), group, regions[group])


def candidate_boxes(image_size: Tuple[float, float], aspect_ratios: Optional[Sequence[float]] = None,
                    sizes: Sequence[float] = DEFAULT_SIZES, stride: float = 5) -> torch.Tensor:
    """All candidate boxes of Sec. 5.2 for an image of ``image_size = (H, W)`` (torch order):
    ``len(sizes) × len(aspect_ratios)`` shapes slid with ``stride`` px, inside the image.

    Returns ``[K, 4]`` float64 xyxy, in the order :func:`score_candidates` scores them.
    """
    H, W = _check_image_size(image_size)
    return make_lattice((0.0, 0.0, W, H), aspect_ratios, sizes=sizes, stride=stride).boxes()


# ----------------------------------------------------------------------------- fast path
def _overlaps(a: torch.Tensor, b: torch.Tensor, cell: torch.Tensor, n: int,
              open_ends: bool = False) -> torch.Tensor:
    """Overlap length of intervals [a, b] (``[S, P]``) with the n cells of one axis: ``[S, P, n]``.

    Row k is the difference of the integral image's interpolation weights at b and at a, so
    ``Dy · m · Dxᵀ`` samples the integral image at the lattice points (exact, see module doc)."""
    edges = cell[:, None].to(a.dtype) * torch.arange(n + 1, dtype=a.dtype)     # [S, n+1]
    if open_ends:             # border cells replicated outwards (see box_scores' clip)
        edges[:, 0], edges[:, -1] = -math.inf, math.inf
    lo = torch.maximum(a[..., None], edges[:, None, :-1])
    hi = torch.minimum(b[..., None], edges[:, None, 1:])
    return (hi - lo).clamp_(min=0)


def _axis(start: torch.Tensor, n: torch.Tensor, size: torch.Tensor, stride, lo: torch.Tensor,
          hi: torch.Tensor, cells: int, surround: float, dtype: torch.dtype,
          c_lo: torch.Tensor, c_hi: torch.Tensor):
    """Overlap matrices of all shapes along one axis, padded to the longest lattice:
    (full, first half, second half, surround) each ``[S, P, cells]``, surround lengths ``[S, P]``.

    Positions are taken relative to the region's edge ``lo`` before rounding to ``dtype``, so
    float32 keeps ~1e-4 px accuracy for any image size."""
    P = int(n.max())
    k = torch.arange(P, dtype=torch.float64)
    st = stride[:, None] if isinstance(stride, torch.Tensor) else stride
    a = (start - lo)[:, None] + k[None] * st                       # [S, P], relative to lo
    valid = k[None] < n[:, None]
    a = torch.where(valid, a, torch.zeros_like(a))
    b = torch.where(valid, a + size[:, None], a)                   # padding -> empty interval
    m = (a + b) / 2
    half = (b - a) * (surround / 2)
    ea = torch.maximum(m - half, (c_lo - lo)[:, None])
    eb = torch.minimum(m + half, (c_hi - lo)[:, None])
    ea, eb = torch.minimum(ea, a), torch.maximum(eb, b)   # a clip inside the region: no frame
    cell = (hi - lo) / cells                                       # [S]
    ov = [_overlaps(u.to(dtype), v.to(dtype), cell, cells, open_ends=(i == 3))
          for i, (u, v) in enumerate(((a, b), (a, m), (m, b), (ea, eb)))]
    return ov, (eb - ea).to(dtype)


def _pack_shapes(lat: Lattice, order: Sequence[int], budget: int, slack: float) -> List[List[int]]:
    """Split the shapes, taken in ``order``, into groups whose lattices padded to one
    ``[n, Q, P]`` block waste at most ``slack`` of the work and hold at most ``budget`` positions
    (or one shape)."""
    nx, ny = lat.nx.tolist(), lat.ny.tolist()
    chunks: List[List[int]] = []
    cur: List[int] = []
    qmax = pmax = act = 0
    for s in order:
        q2, p2, a2 = max(qmax, ny[s]), max(pmax, nx[s]), act + nx[s] * ny[s]
        pad = (len(cur) + 1) * q2 * p2
        if cur and (pad > slack * a2 or pad > budget):
            chunks.append(cur)
            cur, q2, p2, a2 = [], ny[s], nx[s], nx[s] * ny[s]
        cur.append(s)
        qmax, pmax, act = q2, p2, a2
    if cur:
        chunks.append(cur)
    return chunks


def _lattice_chunks(lat: Lattice, budget: int, slack: float = 3.0) -> List[torch.Tensor]:
    """Groups of shapes with similar lattice sizes (largest first), for the matmul path."""
    nx, ny = lat.nx.tolist(), lat.ny.tolist()
    order = sorted(range(len(nx)), key=lambda s: (ny[s], nx[s]), reverse=True)
    return [torch.tensor(c, dtype=torch.long) for c in _pack_shapes(lat, order, budget, slack)]


def _eq3_matrix(M: torch.Tensor) -> torch.Tensor:
    """``N = [[m_full, m_left − m_right], [m_top − m_bottom, 0]]`` ``[B, 2dy, 2dx]`` of masks
    ``[B, 5, dy, dx]``: Eq. 3's numerator is ``Y3 · N · V3ᵀ`` (module doc)."""
    B, _, dy, dx = M.shape
    N = M.new_zeros(B, 2 * dy, 2 * dx)
    N[:, :dy, :dx] = M[:, _FULL]
    N[:, :dy, dx:] = M[:, _LEFT] - M[:, _RIGHT]
    N[:, dy:, :dx] = M[:, _TOP] - M[:, _BOTTOM]
    return N


#: Pitch of the snapped fast path's grid, in lattice steps: 1/4 puts the half-box lines (a/2 steps)
#: and the default surround's edges ((1.5 − 1)/2 · a steps) on the grid.
_FINE = 4
#: Candidate positions per block of the snapped path (bounds its memory: ~1 MB per mask set).
_BLOCK_POSITIONS = 1 << 16


def _score_lattice(masks: torch.Tensor, lat: Lattice, *, surround: float,
                   threshold: Optional[float] = None, clip: Optional[torch.Tensor] = None,
                   method: str = "auto"):
    """Eq. 2 (full mask) and Eq. 3 of the lattice candidates for a batch of mask sets.

    masks: ``[B, 5, dy, dx]``. Without threshold returns ``(eq2 [B, K], eq3 [B, K])`` for every
    candidate; with one, a list over B of ``(candidate indices, eq2, eq3)`` of the candidates whose
    eq2 > threshold.

    ``method="auto"`` takes the snapped path (:func:`_score_snapped`: overlap vectors built once
    per lattice, three matmuls per block of shapes) when the lattice is snapped, the
    surround's edges fall on the grid and the surround is clipped to the region; otherwise
    (grouped refinement lattices, a clip beyond the region) the separable matmul path
    (:func:`_score_matmul`, exact for any geometry). ``"snapped"`` / ``"matmul"`` force one.
    """
    if method not in ("auto", "snapped", "matmul"):
        raise ValueError(f"method must be 'auto', 'snapped' or 'matmul'; got {method!r}")
    margins = _snap_margins(lat, surround)
    same_clip = clip is None or torch.equal(torch.as_tensor(clip, dtype=torch.float64).reshape(-1),
                                            lat.region)
    if method == "snapped" or (method == "auto" and margins is not None and same_clip):
        if margins is None or not same_clip:
            raise ValueError("the snapped path needs a lattice of make_lattice, a surround whose "
                             "edges fall on its grid and no clip beyond the region")
        return _score_snapped(masks, lat, margins, threshold)
    return _score_matmul(masks, lat, surround=surround, threshold=threshold, clip=clip)


def _snap_margins(lat: Lattice, surround: float) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Surround margins ``(surround − 1)/2 · (w, h)`` in grid units ``[S]``, or None when the
    lattice is not snapped or a margin is off the grid."""
    if lat.a is None or lat.group is not None:
        return None
    out = []
    for n in (lat.a, lat.b):
        e = (surround - 1) / 2 * _FINE * n.double()
        if (e - e.round()).abs().max() > 1e-9:
            return None
        out.append(e.round().long())
    return out[0], out[1]


def _snapped_chunks(lat: Lattice, budget: int, slack: float = 3.0) -> List[Tuple[int, int]]:
    """Runs ``[s0, s1)`` of consecutive shapes (so blocks land in candidate order), packed as
    :func:`_pack_shapes` packs them."""
    return [(c[0], c[-1] + 1) for c in _pack_shapes(lat, range(lat.num_shapes), budget, slack)]


def _snapped_geometry(lat: Lattice, margins: Tuple[torch.Tensor, torch.Tensor], dy: int, dx: int,
                      dtype: torch.dtype, budget: int) -> Dict[str, object]:
    """Everything of the snapped path that depends on the lattice only (not on the masks):
    the y overlap vectors (left factors before the masks), the x overlap vectors (right
    factors), the surround weights and the blocks. Cached on the lattice, so the scales and
    classes of an image (which share one lattice) pay for it once."""
    key = ("snapped", dy, dx, dtype, budget, tuple(margins[0].tolist()), tuple(margins[1].tolist()))
    if key in lat._cache:
        return lat._cache[key]
    NXf, NYf = _FINE * lat.NX, _FINE * lat.NY
    a4, b4 = _FINE * lat.a, _FINE * lat.b                  # shape sizes in grid units [S]
    ex, ey = margins
    cu = (dx / NXf) * (dy / NYf)                           # one grid cell, in mask cells

    def axis(n_pos: torch.Tensor, size: torch.Tensor, margin: torch.Tensor, top: int, d: int):
        """Overlap vectors along one axis for all shapes' positions, padded to the longest
        lattice (padding repeats a shape's last position): full ``[S, L, d]``, the full one next
        to 2·(first half − second half) ``[S, L, 2d]``, surround ``[S, L, d]``, and the
        surround's length over the box's ``[S, L]``. Row g of E is the overlap of [0, g] (grid
        units) with each of the d cells, in cells: exact, so the differences are too."""
        u = torch.arange(top + 1, dtype=torch.float64) * (d / top)            # grid line, in cells
        E = (u[:, None] - torch.arange(d, dtype=torch.float64)).clamp(0, 1).to(dtype)
        g = _FINE * torch.arange(int(n_pos.max()))
        g1 = torch.minimum(g[None], _FINE * (n_pos[:, None] - 1))
        g2 = g1 + size[:, None]
        ga, gb = (g1 - margin[:, None]).clamp(min=0), (g2 + margin[:, None]).clamp(max=top)
        S, L = g1.shape
        rows = lambda g: E.index_select(0, g.reshape(-1)).view(S, L, d)   # E[g], faster
        e1, e2 = rows(g1), rows(g2)
        both = torch.empty(S, L, 2 * d, dtype=dtype)
        full = torch.sub(e2, e1, out=both[..., :d])
        half = both[..., d:]
        torch.mul(rows(g1 + size[:, None] // 2), 4, out=half)
        half -= 2 * e1
        half -= 2 * e2
        return full, both, rows(gb) - rows(ga), (gb - ga).to(dtype) / size[:, None].to(dtype)

    yf, y3, ys, ur = axis(lat.ny, b4, ey, NYf, dy)
    xf, x3, xs, vr = axis(lat.nx, a4, ex, NXf, dx)
    # Scale: left factors by 1/b, right ones by 1/(a·cell), so the matmuls give mass / area(bb).
    inv_b = (1.0 / b4.to(dtype))[:, None, None]
    inv_a = (1.0 / (a4.to(dtype) * cu))[:, None, None]
    nyl, nxl = lat.ny.tolist(), lat.nx.tolist()
    blocks = []
    for s0, s1 in _snapped_chunks(lat, budget):
        Q, P = max(nyl[s0:s1]), max(nxl[s0:s1])
        u = ur[s0:s1, :Q, None] * vr[s0:s1, None, :P]      # area(surround ∪ bb) / area(bb)
        # frame = (sur − full) / frame area = (sur/A − eq2) · w, w = A / frame area (0: no frame)
        w = torch.where(u > 1 + 1e-9, 1.0 / (u - 1).clamp(min=1e-9), torch.zeros((), dtype=dtype))
        pos = None
        if any(nyl[k] != Q or nxl[k] != P for k in range(s0, s1)):
            valid = ((torch.arange(Q)[None, :, None] < lat.ny[s0:s1, None, None])
                     & (torch.arange(P)[None, None, :] < lat.nx[s0:s1, None, None])).reshape(-1)
            pos = torch.nonzero(valid).squeeze(1)
        blocks.append((s0, s1, Q, P, w, pos))
    geo = {"yf": yf * inv_b, "y3": y3 * inv_b, "ys": ys * inv_b,
           "xf": (xf * inv_a).transpose(1, 2).contiguous(),
           "x3": (x3 * inv_a).transpose(1, 2).contiguous(),
           "xs": (xs * inv_a).transpose(1, 2).contiguous(), "blocks": blocks,
           "starts": (torch.cumsum(lat.counts, 0) - lat.counts).tolist()}
    lat._cache.clear()                                   # one geometry per lattice is enough
    lat._cache[key] = geo
    return geo


def _score_snapped(masks: torch.Tensor, lat: Lattice,
                   margins: Tuple[torch.Tensor, torch.Tensor], threshold: Optional[float]):
    """The fast path of :func:`_score_lattice` for a snapped lattice (issue #4's hint: sample the
    integral image once per lattice point; then every shape is a shifted slice).

    On the grid of pitch step/_FINE every box edge, half-box line and surround edge is a grid
    line, so the overlap vector of any such interval with the mask cells is a difference of two
    rows of one table — the integral image's sampling weights, exact. Those vectors depend on
    the lattice only (:func:`_snapped_geometry`, cached). Per call: the masks enter the left
    factors as one matmul each, then a block of consecutive shapes, padded to ``Q × P``
    positions, takes three batched matmuls — ``Dy_full·m_full·Dx_fullᵀ`` (Eq. 2), the surround's,
    and ``Y3·N·V3ᵀ`` (the full and all four half terms of Eq. 3; module doc) — for all mask sets
    at once; the padding is cut away and the blocks land in candidate order.
    """
    B, _, dy, dx = masks.shape
    dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    geo = _snapped_geometry(lat, margins, dy, dx, dtype, _BLOCK_POSITIONS)
    M = masks.to(dtype)
    N = _eq3_matrix(M)[:, None]                                               # [B, 1, 2dy, 2dx]
    Mf = M[:, None, _FULL]                                                     # [B, 1, dy, dx]
    Zf, Zs, Z3 = geo["yf"] @ Mf, geo["ys"] @ Mf, geo["y3"] @ N                 # [B, S, Q, ·]
    xf, xs, x3 = geo["xf"], geo["xs"], geo["x3"]
    starts = geo["starts"]
    K = len(lat)
    dense = threshold is None
    if dense:
        out2 = torch.empty(B, K, dtype=dtype)
        out3 = torch.empty(B, K, dtype=dtype)
    kept: List[List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in range(B)]
    for s0, s1, Q, P, w, pos in geo["blocks"]:
        eq2 = Zf[:, s0:s1, :Q] @ xf[s0:s1, :, :P]                            # [B, n, Q, P]
        sur = Zs[:, s0:s1, :Q] @ xs[s0:s1, :, :P]
        eq3 = Z3[:, s0:s1, :Q] @ x3[s0:s1, :, :P]
        eq3 -= (sur - eq2) * w
        eq2, eq3 = eq2.reshape(B, -1), eq3.reshape(B, -1)
        if pos is not None:                            # cut the padding away
            eq2, eq3 = eq2.index_select(1, pos), eq3.index_select(1, pos)
        k0 = starts[s0]
        if dense:
            out2[:, k0:k0 + eq2.shape[1]] = eq2
            out3[:, k0:k0 + eq3.shape[1]] = eq3
        else:
            for bi in range(B):                       # a loop over mask sets (classes)
                hit = torch.nonzero(eq2[bi] > threshold).squeeze(1)
                if hit.numel():
                    kept[bi].append((hit + k0, eq2[bi, hit], eq3[bi, hit]))
    if dense:
        return out2, out3
    return [tuple(torch.cat(c) for c in zip(*kb)) if kb else
            (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=dtype),
             torch.zeros(0, dtype=dtype)) for kb in kept]


@serial
def _score_matmul(masks: torch.Tensor, lat: Lattice, *, surround: float,
                  threshold: Optional[float] = None, budget: int = 1_500_000,
                  clip: Optional[torch.Tensor] = None):
    """The separable matmul path of :func:`_score_lattice`, exact for any lattice geometry.

    Eq. 2 is one batched matmul per chunk of shapes; Eq. 3 is then evaluated only where needed
    — as dense matmuls when most candidates of a chunk pass, else as dot products of the
    gathered rows — so memory holds at most one chunk of dense scores.
    """
    B, _, dy, dx = masks.shape
    dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    M = masks.to(dtype)
    S = lat.num_shapes
    R = lat.shape_region if lat.shape_region is not None else lat.region[None].expand(S, 4)
    if clip is None:
        CL = R
    else:
        clip = torch.as_tensor(clip, dtype=torch.float64)
        # one rectangle for all shapes, or one per group of a grouped lattice
        CL = clip[None].expand(S, 4) if clip.dim() == 1 else clip[lat.group]
    (xf, xl, xr, xe), ew = _axis(lat.x0, lat.nx, lat.w, lat.sx, R[:, 0], R[:, 2], dx,
                                 surround, dtype, CL[:, 0], CL[:, 2])
    (yf, yt, yb, ye), eh = _axis(lat.y0, lat.ny, lat.h, lat.sy, R[:, 1], R[:, 3], dy,
                                 surround, dtype, CL[:, 1], CL[:, 3])
    # Left factors for all shapes at once ([B, S, Q, ·]); Eq. 3's numerator is Y3 · N · V3ᵀ with
    # N = [[m_full, m_left − m_right], [m_top − m_bottom, 0]], Y3 = [Dy_full, 2(Dy_top − Dy_bottom)]
    # and V3 = [Dx_full, 2(Dx_left − Dx_right)] (the four half terms, collapsed by linearity).
    N = _eq3_matrix(M)
    Y3 = torch.cat([yf, 2 * (yt - yb)], -1)
    if lat.group is not None:
        # Grouped lattice: shape s uses mask set group[s] only -> one "batch" of S own masks.
        Mf, Ns = M[lat.group, _FULL], N[lat.group]
        Zf, Ze, Z3 = (yf @ Mf)[None], (ye @ Mf)[None], (Y3 @ Ns)[None]
        B = 1
    else:
        Zf = yf[None] @ M[:, None, _FULL]                               # [B, S, Q, dx]
        Ze = ye[None] @ M[:, None, _FULL]
        Z3 = Y3[None] @ N[:, None]                                      # [B, S, Q, 2dx]
    V3 = torch.cat([xf, 2 * (xl - xr)], -1)                              # [S, P, 2dx]
    A = (lat.w * lat.h).to(dtype)                                        # [S]
    counts = lat.counts
    starts = torch.cumsum(counts, 0) - counts
    dense = threshold is None
    K = int(counts.sum())
    if dense:
        out2 = torch.empty(B, K, dtype=dtype)
        out3 = torch.empty(B, K, dtype=dtype)
    kept: List[List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in range(B)]
    for idx in _lattice_chunks(lat, budget):
        ns = len(idx)
        Q, P = int(lat.ny[idx].max()), int(lat.nx[idx].max())
        full = Zf[:, idx, :Q] @ xf[idx, :P][None].transpose(-1, -2)      # [B, s, Q, P] masses
        Ac = A[idx][:, None, None]                                       # [s, 1, 1]
        valid = (torch.arange(Q)[None, :, None] < lat.ny[idx][:, None, None]) \
            & (torch.arange(P)[None, None, :] < lat.nx[idx][:, None, None])  # [s, Q, P]
        if dense:
            lin = torch.nonzero(valid.reshape(-1)).squeeze(1)
            if B > 1:
                lin = (torch.arange(B)[:, None] * (ns * Q * P) + lin[None]).reshape(-1)
        else:
            hit = (full > threshold * Ac) & valid
            lin = torch.nonzero(hit.reshape(-1)).squeeze(1)
        n_hit = lin.numel()
        if n_hit == 0:
            continue
        # Decompose the flat padded index into (mask set, shape, row, column).
        b_i, r = lin // (ns * Q * P), lin % (ns * Q * P)
        s_i, r = r // (Q * P), r % (Q * P)
        q_i, p_i = r // P, r % P
        S_c = idx[s_i]                                                   # global shape index
        f_mass = full.reshape(-1)[lin]
        if n_hit > 0.25 * B * int(counts[idx].sum()):
            # Most of the chunk is needed: dense matmuls, then gather.
            e_mass = (Ze[:, idx, :Q] @ xe[idx, :P][None].transpose(-1, -2)).reshape(-1)[lin]
            num3 = (Z3[:, idx, :Q] @ V3[idx, :P][None].transpose(-1, -2)).reshape(-1)[lin]
        else:
            # Few hits: gather their rows and take dot products.
            e_mass = (Ze[b_i, S_c, q_i] * xe[S_c, p_i]).sum(-1)
            num3 = (Z3[b_i, S_c, q_i] * V3[S_c, p_i]).sum(-1)
        a = A[S_c]
        fa = eh.reshape(-1)[S_c * eh.shape[1] + q_i] * ew.reshape(-1)[S_c * ew.shape[1] + p_i] - a
        ok = fa > 1e-9 * a
        frame = torch.where(ok, (e_mass - f_mass) / torch.where(ok, fa, torch.ones_like(fa)),
                            torch.zeros((), dtype=dtype))
        eq2 = f_mass / a
        eq3 = num3 / a - frame
        flat = starts[S_c] + q_i * lat.nx[S_c] + p_i                    # candidate index
        if dense:
            out2[b_i, flat] = eq2
            out3[b_i, flat] = eq3
        elif B == 1:
            kept[0].append((flat, eq2, eq3))
        else:
            for bi in range(B):       # split the hits by mask set (a loop over classes, not boxes)
                sel = b_i == bi
                if sel.any():
                    kept[bi].append((flat[sel], eq2[sel], eq3[sel]))
    if dense:
        return out2, out3
    out = []
    for bi in range(B):
        if kept[bi]:
            out.append(tuple(torch.cat(c) for c in zip(*kept[bi])))
        else:
            out.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=dtype),
                        torch.zeros(0, dtype=dtype)))
    return out


def score_candidates(masks: torch.Tensor, region: RectLike,
                     aspect_ratios: Optional[Sequence[float]] = None, *,
                     sizes: Sequence[float] = DEFAULT_SIZES, stride: float = 5,
                     surround: float = DEFAULT_SURROUND, clip: Optional[RectLike] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast path: Eq. 2 (full mask) and Eq. 3 of *every* lattice candidate of ``region``.

    masks: ``[..., 5, dy, dx]``. Returns ``(boxes [K, 4], eq2 [..., K], eq3 [..., K])`` — the same
    numbers as :func:`mask_score` / :func:`box_scores` on :func:`candidate_boxes`, computed as
    batched matrix products over the stride lattice (module docstring).
    """
    masks = _as_masks5(masks)
    lat = make_lattice(region, aspect_ratios, sizes=sizes, stride=stride)
    lead = masks.shape[:-3]
    cl = None if clip is None else as_rect(clip, "clip")
    eq2, eq3 = _score_lattice(masks.reshape(-1, *masks.shape[-3:]), lat, surround=surround,
                              clip=cl)
    return lat.boxes(), eq2.reshape(*lead, -1), eq3.reshape(*lead, -1)


# ----------------------------------------------------------------------------- NMS and extraction
def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5, mode: str = "iou",
        max_keep: Optional[int] = None,
        accept: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        chunk: int = 64) -> torch.Tensor:
    """Greedy NMS; indices of kept boxes, best first.

    ``mode="iou"``: torchvision's NMS (intersection over union). ``mode="dpm"``: Felzenszwalb et
    al.'s variant that the paper cites — overlap is intersection over the *suppressed* box's area,
    so boxes nested inside a better one are removed too.

    ``accept(boxes [n, 4]) -> bool [n]`` (e.g. the paper's box classifier, Sec. 5.2): the result
    is that of NMS over the accepted boxes only, but ``accept`` is asked lazily, ``chunk`` boxes
    at a time (doubling up to 1024 while it keeps being needed), and only about boxes that no
    kept box has suppressed yet (ours: with a ``max_keep`` of 10 it usually sees tens of boxes
    instead of thousands). A rejected box suppresses nothing.
    """
    if mode not in NMS_MODES:
        raise ValueError(f"nms mode must be one of {NMS_MODES}; got {mode!r}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    if mode == "iou" and accept is None:
        keep = torchvision.ops.nms(boxes.float(), scores.float(), float(overlap))
        return keep if max_keep is None else keep[:max_keep]
    order = torch.argsort(scores, descending=True)
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
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
        iw = (torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0])).clamp(min=0)
        ih = (torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1])).clamp(min=0)
        inter = iw * ih
        ov = inter / area if mode == "dpm" else inter / (area[i] + area - inter)
        alive &= ~(ov > overlap)
    return order[torch.tensor(keep, dtype=torch.long)]


def _accepted(classifier: Callable[[torch.Tensor], torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    keep = torch.as_tensor(classifier(boxes.float()))
    if keep.shape != (len(boxes),) or keep.dtype != torch.bool:
        raise ValueError(f"classifier(boxes [N, 4]) must return a bool tensor [N]; got "
                         f"{tuple(keep.shape)} {keep.dtype}")
    return keep.cpu()


@serial
def _finish(boxes: torch.Tensor, eq3: torch.Tensor, *, classifier, nms_iou: float, nms_mode: str,
            top_k: Optional[int], pre_nms: Optional[int], return_all: bool):
    order = torch.argsort(eq3, descending=True)
    if pre_nms is not None:
        order = order[:pre_nms]
    boxes, eq3 = boxes[order], eq3[order]
    if classifier is not None and return_all and len(boxes):
        # the intermediates list every candidate the classifier keeps: ask about all of them
        keep = _accepted(classifier, boxes)
        boxes, eq3, classifier = boxes[keep], eq3[keep], None
    # else the classifier is asked lazily inside NMS: the same boxes as filtering first
    k = nms(boxes, eq3, nms_iou, nms_mode, max_keep=None if return_all else top_k,
            accept=classifier)
    out_b, out_s = boxes[k[:top_k]].float(), eq3[k[:top_k]].float()
    if not return_all:
        return out_b, out_s
    return out_b, out_s, {"candidates": boxes.float(), "candidate_scores": eq3.float(),
                          "candidates_nms": boxes[k].float(), "candidate_scores_nms": eq3[k].float()}


def _check_extract_args(threshold, nms_iou, top_k):
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number; got {threshold!r}")
    if not isinstance(nms_iou, (int, float)) or not (0 <= nms_iou <= 1):
        raise ValueError(f"nms_iou must be in [0, 1]; got {nms_iou!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None; got {top_k!r}")


def extract_boxes_batch(masks: torch.Tensor, region: RectLike,
                        aspect_ratios: Optional[Sequence[float]] = None, *, threshold: float = 0.5,
                        nms_iou: float = 0.5, top_k: Optional[int] = 5,
                        classifiers: Optional[Sequence[Optional[Callable]]] = None,
                        stride: float = 5, sizes: Sequence[float] = DEFAULT_SIZES,
                        surround: float = DEFAULT_SURROUND, nms_mode: str = "dpm",
                        pre_nms: Optional[int] = DEFAULT_PRE_NMS, return_all: bool = False,
                        lattice: Optional[Lattice] = None) -> list:
    """:func:`extract_boxes` for B mask sets ``[B, 5, dy, dx]`` over the same region (e.g. the
    classes of one merged mask): the lattice is scored once for all of them. Returns a list of B
    results, each as :func:`extract_boxes` returns it."""
    masks = _as_masks5(masks)
    if masks.dim() != 4:
        raise ValueError(f"masks must be shaped [B, 5, d, d]; got {tuple(masks.shape)}")
    _check_extract_args(threshold, nms_iou, top_k)
    lat = lattice if lattice is not None else make_lattice(region, aspect_ratios, sizes=sizes,
                                                           stride=stride)
    # Eq. 2 is a weighted mean of the full mask, so a mask set whose maximum does not exceed the
    # threshold has no candidate: skip it (exact; most classes of an image are such).
    active = torch.nonzero(masks[:, _FULL].amax((-2, -1)) > threshold).squeeze(1)
    empty = (torch.zeros(0, dtype=torch.long), masks.new_zeros(0), masks.new_zeros(0))
    per = [empty] * masks.shape[0]
    if active.numel():
        for a, r in zip(active.tolist(), _score_lattice(masks[active], lat, surround=surround,
                                                        threshold=float(threshold))):
            per[a] = r
    cls = list(classifiers) if classifiers is not None else [None] * masks.shape[0]
    out = []
    for (idx, _eq2, eq3), c in zip(per, cls):
        if pre_nms is not None and len(eq3) > pre_nms:
            # Only the best pre_nms survive to NMS: select them before materialising boxes.
            eq3, top = torch.topk(eq3, pre_nms)
            idx = idx[top]
        out.append(_finish(lat.boxes(idx), eq3, classifier=c, nms_iou=nms_iou, nms_mode=nms_mode,
                           top_k=top_k, pre_nms=pre_nms, return_all=return_all))
    return out


def extract_boxes(masks: torch.Tensor, region: RectLike, aspect_ratios: Optional[Sequence[float]] = None,
                  *, threshold: float = 0.5, nms_iou: float = 0.5, top_k: Optional[int] = 5,
                  classifier: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  candidates: Optional[BoxesLike] = None, stride: float = 5,
                  sizes: Sequence[float] = DEFAULT_SIZES, surround: float = DEFAULT_SURROUND,
                  nms_mode: str = "dpm", pre_nms: Optional[int] = DEFAULT_PRE_NMS,
                  return_all: bool = False):
    """Boxes from one mask set (paper Sec. 5.2): ``masks [5, dy, dx]`` covering ``region``.

    1. candidates: the lattice of :func:`make_lattice` (9 sizes × aspect ratios, ``stride`` px),
       or the given ``candidates [K, 4]``;
    2. keep those whose Eq. 2 score on the full mask exceeds ``threshold`` (paper: "e.g. 0.5");
    3. rank by Eq. 3; keep the best ``pre_nms`` (ours, bounds the NMS cost);
    4. optional ``classifier(boxes [N, 4]) -> bool [N]`` keeps boxes of the detector's class;
    5. greedy NMS at ``nms_iou``, *then* the top ``top_k`` (ours: else the top 5 are
       near-duplicates). ``nms_mode="dpm"`` (default; the paper cites DPM's NMS): overlap is
       measured over the suppressed box's area, which also removes the boxes nested inside a
       better one — parts of an object score high on Eq. 3 (up to 4 of 5) and would otherwise
       crowd the top 5; ``"iou"``: torchvision's NMS.

    Returns ``(boxes [k, 4], scores [k])`` with scores = Eq. 3, best first. With ``return_all``
    a third item: dict with ``candidates``/``candidate_scores`` (after steps 2–4) and
    ``candidates_nms``/``candidate_scores_nms`` (after NMS, before the top-k cut).
    """
    masks = _as_masks5(masks)
    if masks.dim() != 3:
        raise ValueError(f"masks must be shaped [5, d, d] (one class); got {tuple(masks.shape)}")
    if candidates is None:
        return extract_boxes_batch(masks[None], region, aspect_ratios, threshold=threshold,
                                   nms_iou=nms_iou, top_k=top_k, classifiers=[classifier],
                                   stride=stride, sizes=sizes, surround=surround,
                                   nms_mode=nms_mode, pre_nms=pre_nms, return_all=return_all)[0]
    _check_extract_args(threshold, nms_iou, top_k)
    r = as_rect(region, "region")
    cand = as_boxes(candidates, "candidates", allow_empty_area=False)
    eq2 = mask_score(masks[_FULL], cand, r)
    sel = eq2 > threshold
    cand = cand[sel]
    eq3 = box_scores(masks, cand, r, surround=surround) if len(cand) else eq2[:0]
    return _finish(cand, eq3, classifier=classifier, nms_iou=nms_iou, nms_mode=nms_mode,
                   top_k=top_k, pre_nms=pre_nms, return_all=return_all)
