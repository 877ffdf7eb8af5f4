"""A detector measured on a dataset: run :func:`dnnod.detect.detect` on every image and score
the detections with the VOC protocol of :mod:`dnnod.evaluate` (paper Sec. 7, Table 1).

This is the one place where inference and evaluation meet; :mod:`dnnod.evaluate` itself scores
given detections only. Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from tqdm.auto import tqdm

from .detect import detect
from .evaluate import evaluate_detections

__all__ = ["evaluate_model"]


def evaluate_model(model_or_predictor, dataset, *, progress: bool = True, limit: Optional[int] = None,
                   iou_threshold: float = 0.5, use_07_metric: bool = True,
                   return_detections: bool = False, **detect_kwargs) -> Dict[str, Any]:
    """Run ``dnnod.detect.detect`` on every image of ``dataset`` (torchvision-style items) and
    evaluate with :func:`evaluate_detections`. ``detect_kwargs`` go to ``detect`` (scales,
    refine, threshold, device, ...). Adds ``"class_names"``, ``"images"`` and ``"seconds_per_image"``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    dets, gts = [], []
    t0 = time.time()
    for i in tqdm(range(n), disable=not progress, desc="evaluate"):
        img, t = dataset[i]
        d = detect(model_or_predictor, img, **detect_kwargs)
        dets.append({k: d[k].detach().cpu() for k in ("boxes", "scores", "labels")})
        gts.append(t)
    secs = (time.time() - t0) / max(n, 1)
    names = getattr(dataset, "class_names", None)
    if names is None and hasattr(dataset, "dataset"):
        names = getattr(dataset.dataset, "class_names", None)
    num_classes = getattr(model_or_predictor, "num_classes", None)
    labels = list(range(1, num_classes + 1)) if num_classes else None
    res = evaluate_detections(dets, gts, iou_threshold=iou_threshold, use_07_metric=use_07_metric,
                              labels=labels)
    res.update(class_names=list(names) if names else None, images=n, seconds_per_image=secs)
    if return_detections:
        res["detections"] = dets
    return res
