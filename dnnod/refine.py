"""Refinement — paper Sec. 6 (book appendix A): the network looks again, closer.

Each detection is enlarged by 1.2 (ours: width and height about the centre, clipped to the image),
cut out and run through the network once more (all crops in one batch); in each crop the single
best box by Eq. 3 is re-extracted from the crop's own masks (the box extraction of Sec. 5.2 on
the crop, with its own stride lattice; its surround term sees past the crop edge, see
:func:`dnnod.localize.box_scores`'s ``clip``). The final confidence is that box's Eq. 3 score on the
refinement masks (book appendix A, departures). The paper applies no further filter; we finish with a per-class
NMS, since two stage-1 boxes on one object usually refine to the same box.

Candidates in a crop (ours): the crop is 1.2× the detection, so the refined box should fill
about 1/1.2 = 0.83 of it — more when the stage-1 box was too small. We therefore scan mean sizes
0.5–1.0 of the crop's mean dimension (:data:`REFINE_SIZES`; the stage-1 range 0.1–0.9 would miss
objects filling the crop and offers small boxes inside the object that only compete with the
right one), with a stride of at most 1/:data:`REFINE_STEPS` of the crop's mean dimension so that
small detections are localised as finely as large ones.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torchvision

from ._validate import BoxesLike, _check_image_size, as_boxes, serial
from .image import ImageLike, ImagePyramid, load_image, image_size as _image_size
from .localize import DEFAULT_SURROUND, box_scores, concat_lattices, make_lattice, nms
from .localize.nms import DETECT_NMS_MODES
from .localize.lattice import _score_lattice


#: Mean box sizes scanned in a refinement crop, as fractions of its mean dimension (ours).
REFINE_SIZES: Tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
#: How far (in mask cells) the Eq. 3 surround may reach past a refinement crop's edge, with the
#: crop's border cells replicated there (ours; None: up to the image edge).
BEYOND_CROP: Optional[float] = 1.0
#: A refined box must overlap the detection it refines with at least this IoU (ours; 0: any box).
MIN_IOU = 0.5
#: The refinement stride is at most the crop's mean dimension / REFINE_STEPS (ours).
REFINE_STEPS = 24
#: Crops scored per vectorised pass (bounds memory: all candidates of a pass are held at once,
#: ~100 MB for 4 large crops; any value gives the same boxes).
REFINE_BATCH = 4


def enlarge(boxes: BoxesLike, factor: float = 1.2,
            image_size: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """Scale boxes ``[N, 4]`` by ``factor`` about their centres (width and height), then clip
    to the image ``image_size = (H, W)`` when given. Returns float64 ``[N, 4]``."""
    b = as_boxes(boxes, "boxes")
    if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"factor must be a positive number; got {factor!r}")
    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) * (factor / 2)
    out = torch.cat([c - half, c + half], 1)
    if image_size is not None:
        H, W = _check_image_size(image_size)
        lim = torch.tensor([W, H, W, H], dtype=out.dtype)
        out = out.clamp(min=0).minimum(lim)
    return out


def match_aspect(crops: BoxesLike, aspect: float, image_size: Tuple[float, float]) -> torch.Tensor:
    """Grow crops ``[N, 4]`` along their short side, about their centres, to width / height =
    ``aspect``, then shift them into the image ``(H, W)`` (clipping only what is larger than the
    image). Ours: DetectorNet is trained on, and runs at every scale on, windows of the image's
    aspect ratio, each resized to a square input; a refinement crop of another shape (a tall
    pedestrian in a landscape photo) would be stretched in a way the network never saw."""
    b = as_boxes(crops, "crops")
    H, W = _check_image_size(image_size)
    if not isinstance(aspect, (int, float)) or not math.isfinite(aspect) or aspect <= 0:
        raise ValueError(f"aspect must be a positive number (width / height); got {aspect!r}")
    c = (b[:, :2] + b[:, 2:]) / 2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    w2 = torch.maximum(w, aspect * h).clamp(max=W)
    h2 = torch.maximum(h, w / aspect).clamp(max=H)
    x1 = (c[:, 0] - w2 / 2).clamp(min=0).minimum(W - w2)
    y1 = (c[:, 1] - h2 / 2).clamp(min=0).minimum(H - h2)
    return torch.stack([x1, y1, x1 + w2, y1 + h2], 1)


@serial
def final_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
              nms_iou: float = 0.5, nms_mode: str = "dpm", masks: Optional[torch.Tensor] = None,
              region=None) -> torch.Tensor:
    """Per-class greedy NMS; indices of kept detections, best first. ``nms_mode="explain"``
    (ours) needs image-level ``masks [C, 5, dy, dx]`` covering ``region`` (boxes inside it)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    if nms_mode == "iou":
        return torchvision.ops.batched_nms(boxes.float(), scores.float(), labels, float(nms_iou))
    keep = [torch.nonzero(labels == c).squeeze(1)[nms(
                boxes[labels == c], scores[labels == c], nms_iou, nms_mode,
                masks=None if masks is None else masks[int(c) - 1], region=region)]
            for c in torch.unique(labels)]
    keep_t = torch.cat(keep)
    return keep_t[torch.argsort(scores[keep_t], descending=True)]


def refine_boxes(predictor, image: ImageLike, boxes: BoxesLike, labels,
                 aspect_ratios: Optional[Sequence[float]] = None, *, factor: float = 1.2,
                 stride: float = 5, sizes: Sequence[float] = REFINE_SIZES,
                 surround: float = DEFAULT_SURROUND, threshold: Optional[float] = None,
                 nms_iou: float = 0.5, nms_mode: str = "dpm", apply_nms: bool = True,
                 beyond_crop: Optional[float] = BEYOND_CROP, crop_aspect: Optional[str] = "image",
                 min_iou: float = MIN_IOU,
                 return_all: bool = False):
    """Refine detections (paper Sec. 6): ``(boxes [M, 4], scores [M], labels [M])``.

    predictor: a mask predictor (:mod:`dnnod.predict`); image: as :func:`dnnod.image.load_image`
    takes it, or an :class:`~dnnod.image.ImagePyramid`; boxes ``[N, 4]`` and 1-based ``labels
    [N]`` in image pixels. Each box is enlarged by ``factor``, the predictor runs on all crops at
    once, and in each crop the best candidate by Eq. 3 on that class's masks replaces the box
    (``threshold``: optionally only among candidates with Eq. 2 > threshold; ours, default none,
    so every detection gets refined). Candidate sizes and stride in the crop: module doc.
    Score = Eq. 3 on the refinement masks. Then a per-class NMS (``apply_nms``).
    ``crop_aspect="image"`` (default, ours) grows each enlarged crop to the image's aspect ratio
    (:func:`match_aspect`), the shape of the windows the network was trained on; ``None`` keeps
    the plain enlargement. ``min_iou`` (ours): a refined box keeps at least this IoU with the
    detection it refines. With ``return_all`` a 4th item: dict with the ``crops [N, 4]`` and their
    ``crop_masks [N, 5, d, d]`` (of each detection's class) and the refined boxes before NMS.
    """
    if isinstance(image, ImagePyramid):      # a large image (dnnod.detect): crops cut from it
        img = image.levels[0] if image.is_plain else image
        H, W = image.size
    else:
        img = load_image(image)
        H, W = _image_size(img)
    b = as_boxes(boxes, "boxes", allow_empty_area=False)
    lab = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if lab.shape[0] != b.shape[0]:
        raise ValueError(f"got {lab.shape[0]} labels for {b.shape[0]} boxes")
    C = int(predictor.num_classes)
    if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) > C):
        raise ValueError(f"labels must be in 1..{C} (1-based, predictor.num_classes = {C})")
    if nms_mode not in DETECT_NMS_MODES:
        raise ValueError(f"nms_mode must be one of {DETECT_NMS_MODES}; got {nms_mode!r}")
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    if b.shape[0] == 0:
        return (*empty, {"crops": torch.zeros(0, 4), "crop_masks": torch.zeros(0, 5, 1, 1),
                         "boxes_refined": torch.zeros(0, 4),
                         "scores_refined": torch.zeros(0)}) if return_all else empty
    if crop_aspect not in ("image", None):
        raise ValueError(f"crop_aspect must be 'image' or None; got {crop_aspect!r}")
    enl = enlarge(b, factor, (H, W))
    crops = match_aspect(enlarge(b, factor), W / H, (H, W)) if crop_aspect == "image" else enl
    # Candidate sizes are fractions of the enlarged detection's mean dimension (the crop's own,
    # when crop_aspect is None), so growing the crop to the image's shape does not change them.
    size_scale = (enl[:, 2:] - enl[:, :2]).sum(1) / (crops[:, 2:] - crops[:, :2]).sum(1)
    masks = predictor(img, crops)                                       # [N, C, 5, d, d]
    sel = masks[torch.arange(len(b)), lab - 1]                           # [N, 5, d, d]
    thr = -math.inf if threshold is None else float(threshold)
    # The Eq. 3 surround is clipped to the image, not the crop: where it leaves the crop, the
    # crop's border cells are replicated (localize.box_scores), so a box that stops at a crop
    # edge cutting through the object is penalised.
    img_rect = torch.tensor([0.0, 0.0, W, H], dtype=torch.float64)
    if beyond_crop is not None:
        # Only `beyond_crop` mask cells past the crop edge (the crop's cell size), within the image.
        d = sel.shape[-1]
        cell = (crops[:, 2:] - crops[:, :2]) / d                                 # [N, 2]
        lo = (crops[:, :2] - beyond_crop * cell).clamp(min=0)
        hi = torch.minimum(crops[:, 2:] + beyond_crop * cell, img_rect[2:])
        clips = torch.cat([lo, hi], 1)
    else:
        clips = img_rect[None].expand(len(b), 4)
    # One lattice per crop (each crop has its own geometry and stride), all scored in one
    # vectorised pass over the grouped lattice.
    lats = []
    for i in range(len(b)):
        mean_dim = float(enl[i, 2] - enl[i, 0] + enl[i, 3] - enl[i, 1]) / 2
        lats.append(make_lattice(crops[i], aspect_ratios,
                                 sizes=[float(z) * float(size_scale[i]) for z in sizes],
                                 stride=min(float(stride), mean_dim / REFINE_STEPS),
                                 snap=False, cache=False))
    lat = concat_lattices(lats)
    counts_end = torch.cumsum(lat.counts, 0)

    def pick(idx: torch.Tensor, eq3: torch.Tensor):
        """The best candidate of each crop among (flat lattice index, Eq. 3) pairs: max Eq. 3,
        first index on ties, after the ``min_iou`` filter. Returns (crop, index, Eq. 3)."""
        grp = lat.group[torch.searchsorted(counts_end, idx, right=True)]
        if min_iou > 0 and idx.numel():
            # Ours: refinement corrects a box locally; it may not jump to a neighbouring object
            # that also shows in the crop (two stage-1 boxes on adjacent people would otherwise
            # both refine to the more salient one, and NMS would drop the other person).
            cb = lat.boxes(idx)
            ref = b[grp]
            lt = torch.maximum(cb[:, :2], ref[:, :2])
            rb = torch.minimum(cb[:, 2:], ref[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(1)
            area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
            ok = inter >= min_iou * (area(cb) + area(ref) - inter)
            idx, eq3, grp = idx[ok], eq3[ok], grp[ok]
        if not idx.numel():
            return grp, idx, eq3
        best = torch.full((len(b),), -math.inf, dtype=eq3.dtype).scatter_reduce(
            0, grp, eq3, "amax")
        pos = torch.arange(len(idx))
        is_best = eq3 == best[grp]
        first = torch.full((len(b),), len(idx), dtype=torch.long).scatter_reduce(
            0, grp[is_best], pos[is_best], "amin")
        found = torch.nonzero(first < len(idx)).squeeze(1)
        return found, idx[first[found]], eq3[first[found]]

    # Scored in batches of crops: a grouped lattice pads every shape to its longest one, so one
    # batch of hundreds of crops of mixed sizes would take GBs; each batch is reduced to its
    # crops' best candidates at once (the result is the same for any batch size).
    new_b, new_s = b.clone().double(), torch.full((len(b),), math.nan, dtype=torch.float64)
    offset = 0
    for g0 in range(0, len(b), REFINE_BATCH):
        g1 = min(len(b), g0 + REFINE_BATCH)
        i_g, _e2, e3_g = _score_lattice(sel[g0:g1], concat_lattices(lats[g0:g1]),
                                        surround=surround, threshold=thr, clip=clips[g0:g1])[0]
        crop, idx, eq3 = pick(i_g + offset, e3_g)
        if idx.numel():
            new_b[crop] = lat.boxes(idx)
            new_s[crop] = eq3.double()
        offset += sum(len(l) for l in lats[g0:g1])
    missing = torch.isnan(new_s)
    if missing.any():        # nothing passed the threshold: keep the box, rescored
        for i in torch.nonzero(missing).squeeze(1).tolist():
            new_s[i] = float(box_scores(sel[i], b[i:i + 1], crops[i], surround=surround,
                                        clip=clips[i])[0])
    keep = final_nms(new_b, new_s, lab, nms_iou, nms_mode) if apply_nms \
        else torch.argsort(new_s, descending=True)
    out = (new_b[keep].float(), new_s[keep].float(), lab[keep])
    if not return_all:
        return out
    return (*out, {"crops": crops.float(), "crop_masks": sel, "boxes_refined": new_b.float(),
                   "scores_refined": new_s.float()})
