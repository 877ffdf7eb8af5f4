"""dnnod — DetectorNet (Szegedy, Toshev, Erhan, "Deep Neural Networks for Object Detection",
NeurIPS 2013, pp. 2553–2561): object detection as regression to object masks.

Data flows one way: image → windows → network → masks → boxes → refined boxes → evaluation.
Box convention everywhere: ``Tensor[N, 4]`` xyxy in continuous pixel coordinates.

Layout (each part imports only from the parts listed before it; ``tests/test_layout.py``):

- the model (paper Sec. 3–4): :mod:`~dnnod.masks`, :mod:`~dnnod.net`, :mod:`~dnnod.loss`,
  :mod:`~dnnod.classifier`;
- inference (Sec. 5–6): :mod:`~dnnod.image`, :mod:`~dnnod.localize` (Eq. 2/3, candidates,
  NMS), :mod:`~dnnod.multiscale`, :mod:`~dnnod.predict`, :mod:`~dnnod.refine`,
  :mod:`~dnnod.detect`, :mod:`~dnnod.checkpoint`;
- :mod:`~dnnod.evaluate` — VOC AP of given detections (model-free);
- :mod:`dnnod.data` — datasets, the training-window sampler, splits, downloads;
- :mod:`~dnnod.assess`, :mod:`~dnnod.train`, :mod:`~dnnod.cli` — the programs;
- :mod:`dnnod.viz` — everything that draws (the only place that imports matplotlib/ipywidgets);
- :mod:`dnnod.studies` — the commands that produce the book's measurements.

``import dnnod`` loads the model and inference only (no plotting, data or training code).
"""
from .masks import MASK_TYPES, mask_targets, mask_targets_batch
from .net import DetectorNet
from .loss import mask_loss
from .checkpoint import load_pretrained
from .detect import detect
from .predict import GroundTruthPredictor, NetPredictor

__version__ = "0.1.0"
__all__ = ["MASK_TYPES", "mask_targets", "mask_targets_batch", "DetectorNet", "mask_loss",
           "load_pretrained", "detect", "GroundTruthPredictor", "NetPredictor"]
