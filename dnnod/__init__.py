"""dnnod — DetectorNet (Szegedy, Toshev, Erhan, "Deep Neural Networks for Object Detection",
NeurIPS 2013, pp. 2553–2561): object detection as regression to object masks.

Data flows one way: image → windows → network → masks → boxes → refined boxes → evaluation.
Box convention everywhere: ``Tensor[N, 4]`` xyxy in continuous pixel coordinates.
"""
from .masks import MASK_TYPES, mask_targets, mask_targets_batch
from .net import DetectorNet
from .loss import mask_loss

__version__ = "0.1.0"
__all__ = ["MASK_TYPES", "mask_targets", "mask_targets_batch", "DetectorNet", "mask_loss"]
from .checkpoint import load_pretrained
from .detect import detect
from .predict import GroundTruthPredictor, NetPredictor
