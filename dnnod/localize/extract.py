"""Boxes from masks (paper Sec. 5.2): Eq. 2 threshold, Eq. 3 ranking, classifier, NMS, top-k.

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .._validate import BoxesLike, RectLike, as_boxes, as_rect, serial
from .lattice import DEFAULT_SIZES, Lattice, _score_lattice, make_lattice
from .nms import _accepted, nms
from .scores import DEFAULT_SURROUND, _FULL, _as_masks5, box_scores, mask_score

#: Candidates kept for NMS after the Eq. 2 threshold, best Eq. 3 first (ours; bounds NMS cost).
DEFAULT_PRE_NMS = 4000


@serial
def _finish(boxes: torch.Tensor, eq3: torch.Tensor, *, classifier, nms_iou: float, nms_mode: str,
            top_k: Optional[int], pre_nms: Optional[int], return_all: bool,
            masks: Optional[torch.Tensor] = None, region=None):
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
            accept=classifier, masks=masks, region=region)
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
    lat_region = as_rect(region, "region")
    out = []
    for (idx, _eq2, eq3), c, m in zip(per, cls, masks):
        if pre_nms is not None and len(eq3) > pre_nms:
            # Only the best pre_nms survive to NMS: select them before materialising boxes.
            eq3, top = torch.topk(eq3, pre_nms)
            idx = idx[top]
        out.append(_finish(lat.boxes(idx), eq3, classifier=c, nms_iou=nms_iou, nms_mode=nms_mode,
                           top_k=top_k, pre_nms=pre_nms, return_all=return_all,
                           masks=m, region=lat_region))
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
       crowd the top 5; ``"iou"``: torchvision's NMS; ``"explain"`` (ours): a box is removed
       when the kept boxes explain more than ``nms_iou`` of its mask support
       (:func:`dnnod.localize.nms.explained_fraction`).

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
                   top_k=top_k, pre_nms=pre_nms, return_all=return_all, masks=masks, region=r)
