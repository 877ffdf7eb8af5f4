"""The candidate boxes of Sec. 5.2 and the fast path that scores all of them.

Candidates (:func:`make_lattice`): 9 sizes × 10 aspect ratios (k-means on training boxes,
:func:`kmeans_aspect_ratios`) slid on a stride lattice (paper: 5 px).

Speed (:func:`score_candidates`, used by :func:`dnnod.localize.extract_boxes`). Along one axis the
overlap lengths of the interval [a, b] with the cells are a row vector ``o(a, b)`` (differences of
the integral image's interpolation weights); for all lattice positions of one shape they form
matrices ``Dy [ny, dy]`` and ``Dx [nx, dx]``, and the masses of *all* boxes of that shape are one
matrix product ``Dy · m · Dxᵀ`` — the integral image sampled once per lattice point. Eq. 3 is
linear in the masks, so its four half terms collapse to two products as well::

    Σ_halves = 2/A · [ (Dy_top − Dy_bottom)(m_top − m_bottom) Dx_fullᵀ
                      + Dy_full (m_left − m_right)(Dx_left − Dx_right)ᵀ ]

and everything for a block of shapes is three batched matmuls (Eq. 2, the surround, Eq. 3).

The lattice is *snapped* (ours, :func:`make_lattice`): the region is a whole number of steps of
≈ ``stride`` px and every shape a whole number of steps, so every box edge, half-box line and
(for the default surround 1.5) surround edge lies on one grid of pitch step/4. Then each
``o(a, b)`` is the difference of two rows of one table, the vectors depend on the lattice only
and are built once per lattice (memoised per image size, with the candidate boxes themselves),
and a call is three small matmuls per block of shapes: 5–10 ms for the ≈ 200 k candidates of a
500×375 image on 2 CPU cores (bench/localize.py). Blocks bound the memory (≈ 80 MB peak for a
1000×1000 image). Refinement crops (each its own region, surround clipped to the image) use the
general matmul path.

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .._validate import BoxesLike, RectLike, _check_image_size, as_boxes, as_rect, serial
from .scores import DEFAULT_SURROUND, _BOTTOM, _FULL, _LEFT, _RIGHT, _TOP, _as_masks5

#: Mean box sizes as fractions of the region's mean dimension (W + H) / 2 (paper Sec. 5.2).
DEFAULT_SIZES: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Aspect ratios (w / h) used when none were learnt from training boxes by
#: :func:`kmeans_aspect_ratios` — ours: 10 ratios spaced evenly in log scale between 1/3 and 3
#: (the range holding most VOC boxes); neighbours differ by a factor 3^(2/9) ≈ 1.28.
DEFAULT_ASPECT_RATIOS: Tuple[float, ...] = tuple(3.0 ** (-1 + 2 * i / 9) for i in range(10))
#: Aspect ratios (and candidate shapes) that agree to this relative tolerance are one (ours):
#: they give the same candidates for every practical purpose, at a multiple of the cost.
SAME_SHAPE_RTOL = 1e-3


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
    #: All candidate boxes, built on first use and kept (a memoised lattice serves every image
    #: of its size: building 200 k boxes costs more than scoring them).
    _all: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)

    @property
    def num_shapes(self) -> int:
        return int(self.w.numel())

    @property
    def counts(self) -> torch.Tensor:
        return self.nx * self.ny

    def __len__(self) -> int:
        return int(self.counts.sum())

    def boxes(self, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Candidate boxes ``[K, 4]`` float64 (all, or the given flat candidate indices).

        All boxes are built once per lattice and the same tensor is returned on every later
        call: treat it as read-only (``.clone()`` it before changing it)."""
        if index is None:
            if self._all is None:
                self._all = self._all_boxes()
            return self._all
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
    return make_lattice((0.0, 0.0, W, H), aspect_ratios, sizes=sizes, stride=stride).boxes().clone()


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


@serial
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

    Steady state: for a region seen before (every image of one size) the lattice, its geometry
    and its boxes are memoised, so a call is the scoring alone. ``boxes`` is then the lattice's
    own tensor, shared by every such call: read-only (clone it before changing it).
    """
    masks = _as_masks5(masks)
    lat = make_lattice(region, aspect_ratios, sizes=sizes, stride=stride)
    lead = masks.shape[:-3]
    cl = None if clip is None else as_rect(clip, "clip")
    eq2, eq3 = _score_lattice(masks.reshape(-1, *masks.shape[-3:]), lat, surround=surround,
                              clip=cl)
    return lat.boxes(), eq2.reshape(*lead, -1), eq3.reshape(*lead, -1)
