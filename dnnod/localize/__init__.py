"""Box extraction from predicted masks — paper Sec. 5.2 (book appendix "The paper at a glance").

Three parts, one module each:

- :mod:`~dnnod.localize.scores` — Eq. 2 (:func:`mask_score`) and Eq. 3 (:func:`box_scores`) on
  any boxes, exact through the integral image;
- :mod:`~dnnod.localize.lattice` — the candidate boxes (:func:`make_lattice`,
  :func:`candidate_boxes`, :func:`kmeans_aspect_ratios`) and the fast path that scores all of
  them at once (:func:`score_candidates`);
- :mod:`~dnnod.localize.nms` and :mod:`~dnnod.localize.extract` — NMS and the whole extraction
  (:func:`extract_boxes`: threshold, rank, classify, suppress, top-k).

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (pixel edges; x right, y down).
"""
from .._validate import serial
from .scores import DEFAULT_SURROUND, box_scores, mask_score
from .lattice import (DEFAULT_ASPECT_RATIOS, DEFAULT_SIZES, SAME_SHAPE_RTOL, Lattice,
                      candidate_boxes, concat_lattices, kmeans_aspect_ratios, make_lattice,
                      score_candidates)
from .nms import NMS_MODES, nms
from .extract import DEFAULT_PRE_NMS, extract_boxes, extract_boxes_batch

__all__ = ["DEFAULT_ASPECT_RATIOS", "DEFAULT_PRE_NMS", "DEFAULT_SIZES", "DEFAULT_SURROUND",
           "Lattice", "NMS_MODES", "SAME_SHAPE_RTOL", "box_scores", "candidate_boxes",
           "concat_lattices", "extract_boxes", "extract_boxes_batch", "kmeans_aspect_ratios",
           "make_lattice", "mask_score", "nms", "score_candidates", "serial"]
