"""PASCAL VOC evaluation — the protocol of the paper's Table 1 (VOC2007 test, AP at IoU >= 0.5).

Semantics follow the VOC devkit (``VOCevaldet.m`` / ``voc_eval.py``):

* per class, all detections of all images are sorted by score (descending, stable);
* a detection matches the ground-truth box of that class with the highest IoU in its image;
  if that IoU >= ``iou_threshold``: a ``difficult`` box makes it neither TP nor FP (ignored),
  an unclaimed box makes it a TP (the box is claimed), an already claimed box makes it a
  **duplicate = FP**; below the threshold it is a FP;
* recall = TP / #non-difficult boxes; AP = 11-point interpolated (VOC2007, ``use_07_metric``)
  or the area under the monotone precision envelope (VOC2010+ "all points").

IoU uses continuous coordinates (``torchvision.ops.box_iou``); the devkit's ``+1`` pixel
convention belongs to its 1-based inclusive integer boxes, which our loaders already turned into
continuous edges.

This module is model-free: it scores given detections and imports nothing of inference.
Running a detector over a dataset and scoring it is :func:`dnnod.assess.evaluate_model`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["evaluate_detections", "voc_ap", "format_ap_table"]


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a PR curve: VOC2007 11-point interpolation, or the all-point area."""
    rec, prec = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0, 1, 11):
            p = prec[rec >= t].max() if (rec >= t).any() else 0.0
            ap += p / 11
        return float(ap)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]          # precision envelope
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _as_dict_list(x: Sequence[Mapping[str, Any]], name: str, need_scores: bool) -> List[Dict[str, torch.Tensor]]:
    if isinstance(x, Mapping) or not isinstance(x, Sequence):
        raise ValueError(f"{name} must be a list with one dict per image; got {type(x).__name__}")
    out = []
    for i, d in enumerate(x):
        if not isinstance(d, Mapping) or "boxes" not in d or "labels" not in d:
            raise ValueError(f"{name}[{i}] must be a dict with 'boxes' and 'labels'")
        b = torch.as_tensor(d["boxes"], dtype=torch.float64).detach().cpu().reshape(-1, 4) \
            if len(d["boxes"]) else torch.zeros(0, 4, dtype=torch.float64)
        lab = torch.as_tensor(d["labels"]).detach().cpu().reshape(-1).long()
        if len(lab) != len(b):
            raise ValueError(f"{name}[{i}]: {len(b)} boxes but {len(lab)} labels")
        if len(b) and ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
            raise ValueError(f"{name}[{i}]: boxes must be xyxy with x2 >= x1 and y2 >= y1")
        e = {"boxes": b, "labels": lab}
        if need_scores:
            if "scores" not in d:
                raise ValueError(f"{name}[{i}] has no 'scores'")
            s = torch.as_tensor(d["scores"], dtype=torch.float64).detach().cpu().reshape(-1)
            if len(s) != len(b):
                raise ValueError(f"{name}[{i}]: {len(b)} boxes but {len(s)} scores")
            e["scores"] = s
        else:
            diff = d.get("difficult")
            e["difficult"] = torch.zeros(len(b), dtype=torch.bool) if diff is None \
                else torch.as_tensor(diff).detach().cpu().reshape(-1).bool()
            if len(e["difficult"]) != len(b):
                raise ValueError(f"{name}[{i}]: {len(b)} boxes but {len(e['difficult'])} difficult flags")
        out.append(e)
    return out


def evaluate_detections(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
                        iou_threshold: float = 0.5, use_07_metric: bool = True,
                        labels: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """VOC AP per class and mAP.

    ``detections`` / ``ground_truths``: one dict per image (same order) with ``boxes [N, 4]``
    xyxy, ``labels [N]`` (1-based), detections also ``scores [N]``, ground truths optionally
    ``difficult [N]``. ``labels``: classes to report (default: every label in the ground truth).
    Returns ``{"ap": {label: AP}, "map": mean AP, "pr": {label: (recall, precision)},
    "npos": {label: #non-difficult boxes}, "tp"/"fp": {label: counts}}``. A class without any
    non-difficult box gets AP ``nan`` and is left out of the mean (as the devkit would divide by 0).
    """
    if not 0 < float(iou_threshold) <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold}")
    dets = _as_dict_list(detections, "detections", True)
    gts = _as_dict_list(ground_truths, "ground_truths", False)
    if len(dets) != len(gts):
        raise ValueError(f"got detections for {len(dets)} images and ground truth for {len(gts)}")
    if labels is None:
        labels = sorted({int(l) for g in gts for l in g["labels"].tolist()})
    res: Dict[str, Any] = {"ap": {}, "pr": {}, "npos": {}, "tp": {}, "fp": {}}
    for c in labels:
        img_ids, scores, ious_list = [], [], []
        npos = 0
        gt_c = []
        for i, (d, g) in enumerate(zip(dets, gts)):
            gm = g["labels"] == c
            gb, gdiff = g["boxes"][gm], g["difficult"][gm]
            npos += int((~gdiff).sum())
            gt_c.append((gb, gdiff))
            dm = d["labels"] == c
            if dm.any():
                db = d["boxes"][dm]
                img_ids.append(torch.full((len(db),), i, dtype=torch.long))
                scores.append(d["scores"][dm])
                ious_list.append((i, box_iou(db, gb) if len(gb) else torch.zeros(len(db), 0, dtype=torch.float64)))
        if scores:
            sc = torch.cat(scores)
            ii = torch.cat(img_ids)
            # per detection: its best IoU and which gt (computed per image, vectorised)
            best_iou = torch.full((len(sc),), -1.0, dtype=torch.float64)
            best_gt = torch.full((len(sc),), -1, dtype=torch.long)
            off = 0
            for i, iou in ious_list:
                n = iou.shape[0]
                if iou.shape[1]:
                    v, a = iou.max(1)
                    best_iou[off: off + n], best_gt[off: off + n] = v, a
                off += n
            order = torch.argsort(-sc, stable=True)
            claimed = [torch.zeros(len(gb), dtype=torch.bool) for gb, _ in gt_c]
            tp = np.zeros(len(sc))
            fp = np.zeros(len(sc))
            for r, k in enumerate(order.tolist()):    # greedy matching is inherently sequential
                i, j = int(ii[k]), int(best_gt[k])
                if best_iou[k] >= iou_threshold:
                    if gt_c[i][1][j]:
                        continue                      # difficult: ignored
                    if not claimed[i][j]:
                        tp[r], claimed[i][j] = 1, True
                    else:
                        fp[r] = 1                     # duplicate detection
                else:
                    fp[r] = 1
            keep = (tp + fp) > 0
            tp, fp = tp[keep], fp[keep]
        else:
            tp = fp = np.zeros(0)
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec = ctp / npos if npos > 0 else np.full(len(ctp), np.nan)
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        ap = voc_ap(rec, prec, use_07_metric) if npos > 0 else float("nan")
        res["ap"][int(c)] = ap
        res["pr"][int(c)] = (rec, prec)
        res["npos"][int(c)] = npos
        res["tp"][int(c)] = int(tp.sum())
        res["fp"][int(c)] = int(fp.sum())
    valid = [v for v in res["ap"].values() if v == v]
    res["map"] = float(np.mean(valid)) if valid else float("nan")
    return res


def format_ap_table(res: Mapping[str, Any], class_names: Optional[Sequence[str]] = None) -> str:
    """A plain-text per-class AP table (what ``dnnod evaluate`` prints)."""
    names = class_names or res.get("class_names") or []
    lines = [f"{'class':<16}{'AP':>8}{'#gt':>7}{'TP':>6}{'FP':>6}"]
    for c, ap in res["ap"].items():
        nm = names[c - 1] if 0 < c <= len(names) else str(c)
        lines.append(f"{nm:<16}{ap:>8.3f}{res['npos'].get(c, 0):>7}{res['tp'].get(c, 0):>6}{res['fp'].get(c, 0):>6}")
    lines.append(f"{'mAP':<16}{res['map']:>8.3f}")
    return "\n".join(lines)
