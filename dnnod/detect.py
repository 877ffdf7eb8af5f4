"""The whole inference pipeline — paper Sec. 5–6 (book appendix A), Algorithm 1:

image → windows of 3 scales → network (all windows in one batch) → masks merged by max per scale
→ boxes per scale and class (Eq. 2 threshold, Eq. 3 ranking, optional classifier, NMS, top k —
the paper 5, ours 10) → refinement of those 15 (30) per class → per-class NMS over all scales
(ours, at :data:`FINAL_NMS_IOU`) → ``{"boxes", "scores", "labels"}``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from .classifier import make_box_classifier
from .image import ImageLike, ImagePyramid, load_image, load_pyramid
from .localize import (box_scores, DEFAULT_ASPECT_RATIOS, DEFAULT_SURROUND,
                       extract_boxes_batch, make_lattice)
from .localize.nms import DETECT_NMS_MODES, EXPLAIN
from .multiscale import combine_scales, merge_masks, network_scale, scale_windows, working_stride
from .predict import NetPredictor
from .refine import MIN_IOU, final_nms, refine_boxes


#: Candidate mean sizes for the whole pipeline (ours): the paper's nine (0.1, ..., 0.9 of the mean
#: image dimension) plus 0.05 and 0.15. The paper's linear grid doubles the size from 0.1 to 0.2,
#: so an object of mean size 0.14 overlaps its best candidate with IoU about 0.5; refinement
#: enlarges that too-small box by only 1.2, its crop cuts the object and cannot recover it.
#: With the perfect network on the 50 test scenes of tests/test_detect.py the paper's sizes give
#: AP 0.91 / 0.91 (two classes), these give 1.0 / 1.0.
DETECT_SIZES: Tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Boxes kept per scale and class before refinement (the paper: 5, so 15 detections per class).
#: Ours: 10. An image may hold more objects of one class than 5 (up to 6 in the shapes scenes, 8
#: people in a Penn-Fudan photo), and a scale's best boxes include near-duplicates and parts, so
#: 5 per scale missed objects; 10 costs 15 more refinement crops per class that has detections.
#: Chapter 9's ablation ``paper_top5`` measures the difference.
DETECT_TOP_K = 10
#: Overlap of the final per-class NMS over all scales' (refined) boxes (ours; the paper gives no
#: final NMS). The stage-1 NMS at ``nms_iou`` runs per scale; across scales and after refinement,
#: near-duplicates and parts of one object are left (at 0.5, on 200 shapes validation images, 13
#: duplicates and 21 boxes with IoU 0.1–0.5 on a triangle ranked above 90 % triangle recall).
#: With the DPM overlap (intersection over the suppressed box's area) at 0.35, the shipped
#: shapes network went from val mAP 0.899 to 0.904 (200 images; stage-1 boxes alone 0.831 ->
#: 0.879), on a plateau from 0.25 to 0.45 (0.903–0.904); 0.5 and 0.6 are worse (0.899, 0.878).
#: Chosen on the shapes validation split only (dnnod/weights/README.md).
FINAL_NMS_IOU = 0.35
RESCORE_MODES = ("image", "crop")


def as_predictor(predictor_or_model, device=None):
    """A mask predictor as is; an ``nn.Module`` (a DetectorNet) wrapped in :class:`NetPredictor`."""
    if isinstance(predictor_or_model, torch.nn.Module):
        return NetPredictor(predictor_or_model, device=device)
    if not callable(predictor_or_model) or not hasattr(predictor_or_model, "num_classes") \
            or not hasattr(predictor_or_model, "d"):
        raise ValueError("detect needs a DetectorNet or a mask predictor: a callable "
                         "(image, windows) -> [K, C, 5, d, d] with .num_classes and .d; got "
                         f"{type(predictor_or_model).__name__}")
    return predictor_or_model


def _as_pyramid(image, pred, scales: int) -> ImagePyramid:
    """The image at the resolution the predictor needs (:func:`dnnod.multiscale.network_scale`)
    when it has an ``input_size`` (a network), else at full resolution. A path to a large JPEG
    is decoded reduced (:func:`dnnod.image.load_pyramid`)."""
    if isinstance(image, ImagePyramid):
        return image
    top = getattr(pred, "input_size", None)
    if top is None:
        t = load_image(image)
        return ImagePyramid([t], (int(t.shape[-2]), int(t.shape[-1])))
    return load_pyramid(image, lambda hw: network_scale(hw, int(top), scales), int(top))


def _pyramid_classifier(model, pyr: ImagePyramid):
    """make_box_classifier on the image, or on a <= 2048 px level of a large one (its input is
    64 px: nothing finer is needed), with the boxes scaled to that level."""
    if pyr.is_plain:
        return make_box_classifier(model, pyr.levels[0])
    lv, (sy, sx) = pyr.finest_within(2048)
    keep = make_box_classifier(model, lv.contiguous())
    sc = torch.tensor([sx, sy, sx, sy])
    return lambda boxes, label=None: keep(boxes * sc.to(boxes.dtype), label)


def detect(predictor_or_model, image: ImageLike, *, scales: int = 3, refine: bool = True,
           aspect_ratios: Optional[Sequence[float]] = None, threshold: float = 0.5,
           nms_iou: float = 0.5, top_k: int = DETECT_TOP_K,
           final_nms_iou: Optional[float] = FINAL_NMS_IOU,
           classifier: Optional[Union[torch.nn.Module, Callable[[torch.Tensor, int], torch.Tensor]]] = None,
           device=None, return_intermediates: bool = False, stride: float = 5,
           sizes: Sequence[float] = DETECT_SIZES, surround: float = DEFAULT_SURROUND,
           overlap: float = 0.2, refine_factor: float = 1.2, nms_mode: str = "dpm",
           rescore: str = "image", crop_aspect: Optional[str] = "image",
           refine_min_iou: float = MIN_IOU) -> Dict:
    """Detect objects in one image (paper Sec. 5–6).

    predictor_or_model: a mask predictor (:mod:`dnnod.predict`) or a ``DetectorNet`` (wrapped
    in :class:`~dnnod.predict.NetPredictor` on ``device``). image: tensor / PIL / path, or an
    :class:`~dnnod.image.ImagePyramid`. Large images (ours): a network is given the image only
    as fine as its windows and refinement crops can use (:func:`dnnod.multiscale.network_scale`;
    a path to a large JPEG is decoded reduced, :func:`dnnod.image.load_pyramid`), and the box
    search runs at a working resolution: ``stride`` px on images up to
    :data:`dnnod.multiscale.WORK_LONG_SIDE` px on the long side, proportionally more on larger
    ones (:func:`dnnod.multiscale.working_stride`). Boxes are in the original pixels either way.
    aspect_ratios: candidate shapes; default the predictor's ``aspect_ratios`` (set by the
    checkpoint loader), else :data:`dnnod.localize.DEFAULT_ASPECT_RATIOS`.
    classifier: the paper's pruning classifier (Sec. 5.2, filter 2): a trained
    :class:`dnnod.classifier.BoxClassifier` (``dnnod train --task classifier``), or any
    ``classifier(boxes [N, 4], label) -> bool [N]`` keeping the boxes it assigns to class
    ``label`` (1-based). It filters each scale's candidates before NMS and the top-k cut.
    sizes: candidate mean sizes (fractions of the mean image dimension), default
    :data:`DETECT_SIZES` (ours, the paper's nine plus two small ones).
    top_k: boxes kept per scale and class before refinement, default :data:`DETECT_TOP_K`
    (the paper: 5).
    nms_iou: overlap of the per-scale NMS (Sec. 5.2). final_nms_iou: overlap of the final
    per-class NMS over all scales (ours), default :data:`FINAL_NMS_IOU`; None: ``nms_iou``.
    nms_mode: ``"dpm"`` (default), ``"iou"``, or ``"explain"`` (ours): a box is suppressed when
    the kept boxes explain more than the overlap of its mask support
    (:func:`dnnod.localize.nms.explained_fraction`), measured per scale on that scale's merged
    masks and, in the final suppression, on all scales' masks (:func:`dnnod.multiscale.combine_scales`).
    rescore: the final score of a refined box (ours, the paper gives none): ``"image"`` (default)
    the mean of its Eq. 3 score on the refinement crop's masks and on the image-level merged
    masks of the scale that proposed it; ``"crop"`` the crop's Eq. 3 score alone.
    crop_aspect: refinement crops grown to the image's aspect ratio (``"image"``, default, ours)
    or the plain ``refine_factor`` enlargement (``None``); see :func:`dnnod.refine.match_aspect`.

    Returns ``{"boxes" [N, 4] float, "scores" [N] (Eq. 3), "labels" [N] int64 1-based}`` in image
    pixels, best first. With ``return_intermediates`` also ``image_size`` (H, W), per scale
    ``windows``, ``window_masks [K_s, C, 5, d, d]``, ``merged_masks [C, 5, Dy, Dx]``, per scale
    and class ``candidates`` / ``candidate_scores`` (past the Eq. 2 threshold, ranked) and
    ``candidates_nms`` / ``candidate_scores_nms``, and the stage-1 ``boxes_before_refine``,
    ``scores_before_refine``, ``labels_before_refine``, ``top_k``, the ``final_nms_iou`` used
    (and ``refine_crops`` / ``refine_masks`` when refining).
    """
    pred = as_predictor(predictor_or_model, device)
    if nms_mode not in DETECT_NMS_MODES:
        raise ValueError(f"nms_mode must be one of {DETECT_NMS_MODES}; got {nms_mode!r}")
    if rescore not in RESCORE_MODES:
        raise ValueError(f"rescore must be one of {RESCORE_MODES}; got {rescore!r}")
    if final_nms_iou is None:
        final_nms_iou = nms_iou
    if isinstance(final_nms_iou, bool) or not isinstance(final_nms_iou, (int, float)) \
            or not (0 <= final_nms_iou <= 1):
        raise ValueError(f"final_nms_iou must be in [0, 1] or None; got {final_nms_iou!r}")
    pyr = _as_pyramid(image, pred, scales)
    H, W = pyr.size
    img = pyr.levels[0] if pyr.is_plain else pyr          # what the predictor is given
    stride = working_stride((H, W), stride)
    if aspect_ratios is None:
        aspect_ratios = getattr(pred, "aspect_ratios", None)
    if aspect_ratios is None:
        aspect_ratios = DEFAULT_ASPECT_RATIOS
    C = int(pred.num_classes)
    windows = scale_windows((H, W), scales, overlap)
    all_masks = pred(img, torch.cat(windows))                      # one batch for all scales
    if all_masks.dim() != 5 or all_masks.shape[0] != sum(len(w) for w in windows) \
            or all_masks.shape[1] != C or all_masks.shape[2] != 5:
        raise ValueError(f"the predictor returned masks of shape {tuple(all_masks.shape)}; "
                         f"expected [K, {C}, 5, d, d]")
    window_masks = list(torch.split(all_masks, [len(w) for w in windows]))
    region = (0.0, 0.0, float(W), float(H))
    # The candidate lattice depends only on the region, so all scales and classes share it.
    lat = make_lattice(region, aspect_ratios, sizes=sizes, stride=stride)
    if isinstance(classifier, torch.nn.Module):
        if getattr(classifier, "num_classes", None) != C:
            raise ValueError(f"the classifier has {getattr(classifier, 'num_classes', '?')} "
                             f"classes, the localizer {C}")
        classifier = _pyramid_classifier(classifier, pyr)
    classifiers = None if classifier is None else \
        [(lambda boxes, c=c: classifier(boxes, c)) for c in range(1, C + 1)]
    merged, cands, cand_s, cands_nms, cand_nms_s = [], [], [], [], []
    b1, s1, l1 = [], [], []
    scale_idx = []                          # scale of each stage-1 box
    for k, (wm, win) in enumerate(zip(window_masks, windows)):
        m = merge_masks(wm, win, (H, W))
        merged.append(m)
        res = extract_boxes_batch(m, region, threshold=threshold, nms_iou=nms_iou, top_k=top_k,
                                  classifiers=classifiers, surround=surround, nms_mode=nms_mode,
                                  return_all=return_intermediates, lattice=lat)
        per_c, per_cs, per_n, per_ns = [], [], [], []
        for c, r in enumerate(res):
            b1.append(r[0])
            s1.append(r[1])
            l1.append(torch.full((len(r[0]),), c + 1, dtype=torch.long))
            scale_idx.append(torch.full((len(r[0]),), k, dtype=torch.long))
            if return_intermediates:
                per_c.append(r[2]["candidates"])
                per_cs.append(r[2]["candidate_scores"])
                per_n.append(r[2]["candidates_nms"])
                per_ns.append(r[2]["candidate_scores_nms"])
        cands.append(per_c)
        cand_s.append(per_cs)
        cands_nms.append(per_n)
        cand_nms_s.append(per_ns)
    boxes1, scores1, labels1 = torch.cat(b1), torch.cat(s1), torch.cat(l1)
    # Mode "explain" (ours): the final suppression measures support on all scales' masks.
    fin = {"masks": combine_scales(merged), "region": torch.tensor(region, dtype=torch.float64)} \
        if nms_mode == EXPLAIN else {}
    extra: Dict = {}
    if refine and len(boxes1):
        res = refine_boxes(pred, img, boxes1, labels1, aspect_ratios, factor=refine_factor,
                           stride=stride, surround=surround, nms_iou=nms_iou,
                           nms_mode=nms_mode, apply_nms=False, crop_aspect=crop_aspect, min_iou=refine_min_iou,
                           return_all=True)
        rb, rs = res[3]["boxes_refined"], res[3]["scores_refined"]
        if rescore == "image":
            # Ours: a crop that cuts through an object sees a complete object in it (the cut
            # part fills the crop), so its refined box can score near 5 on the crop's masks.
            # The image-level masks of the scale that proposed the box see the whole object
            # and disagree; the final score is the mean of both Eq. 3 scores.
            scale_of = torch.cat(scale_idx)
            lim = torch.tensor([W, H, W, H], dtype=torch.float64)
            img_s = torch.empty_like(rs)
            for k, m in enumerate(merged):
                for c in range(C):
                    sel = (scale_of == k) & (labels1 == c + 1)
                    if sel.any():
                        b = rb[sel].double().clamp(min=0).minimum(lim)
                        img_s[sel] = box_scores(m[c], b, region, surround=surround).to(rs.dtype)
            rs = (rs + img_s) / 2
        keep = final_nms(rb, rs, labels1, final_nms_iou, nms_mode, **fin)
        boxes, scores, labels = rb[keep], rs[keep], labels1[keep]
        if return_intermediates:
            extra = {"refine_crops": res[3]["crops"], "refine_masks": res[3]["crop_masks"]}
    else:
        keep = final_nms(boxes1, scores1, labels1, final_nms_iou, nms_mode, **fin)
        boxes, scores, labels = boxes1[keep], scores1[keep], labels1[keep]
    out = {"boxes": boxes.float().reshape(-1, 4), "scores": scores.float(),
           "labels": labels.long()}
    if return_intermediates:
        out.update({"image_size": (H, W), "windows": windows, "window_masks": window_masks,
                    "merged_masks": merged, "candidates": cands, "candidate_scores": cand_s,
                    "candidates_nms": cands_nms, "candidate_scores_nms": cand_nms_s,
                    "boxes_before_refine": boxes1, "scores_before_refine": scores1,
                    "labels_before_refine": labels1, "top_k": top_k,
                    "final_nms_iou": final_nms_iou,
                    "aspect_ratios": torch.as_tensor(
                        aspect_ratios, dtype=torch.float64)})
        out.update(extra)
    return out
