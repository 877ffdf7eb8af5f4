"""The box classifier that prunes detections — paper Sec. 5.2 (book appendix A, filter 2).

The paper trains a separate AlexNet that labels a warped box as background or one of the
classes, and keeps a localizer's box only when the classifier assigns it to the detector's class.
:class:`BoxClassifier` is that network scaled down (``dnnod train --task classifier`` trains it
on the Sec. 5.2 samples of :class:`dnnod.data.sampler.ClassifierSampler`), and
:func:`make_box_classifier` turns it into the ``keep(boxes, label)`` callback that
``dnnod.detect.detect`` and ``dnnod.localize.extract_boxes`` take.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

__all__ = ["BoxClassifier", "make_box_classifier"]


class BoxClassifier(nn.Module):
    """A small CNN that labels a warped box crop as background (0) or one of ``num_classes``
    classes (1-based) — the paper's AlexNet classifier, scaled down. Input ``[B, 3, S, S]`` in [0, 1]."""

    def __init__(self, num_classes: int = 1, input_size: int = 64, width: int = 32) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
        if input_size % 8 or input_size < 16:
            raise ValueError(f"input_size must be a multiple of 8, >= 16; got {input_size}")
        self.num_classes, self.input_size, self.width = num_classes, input_size, width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        w = width
        self.features = nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w),
                                      nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, num_classes + 1))
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def config(self) -> Dict[str, Any]:
        return {"num_classes": self.num_classes, "input_size": self.input_size, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"BoxClassifier expects [B, 3, {s}, {s}] floats in [0, 1]; got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        return self.head(self.features((x - self.mean) / self.std))


def make_box_classifier(model: BoxClassifier, image: torch.Tensor, label: Optional[int] = None,
                        device: Any = None) -> Callable[..., torch.Tensor]:
    """The pruning classifier callback (paper Sec. 5.2, filter 2) for one image: returns
    ``keep(boxes [N, 4], label=label) -> bool [N]`` that warps each box of ``image`` (uint8
    ``[3, H, W]``) to the classifier input and keeps it when the arg-max class is ``label``
    (1-based). Matches ``dnnod.detect.detect(..., classifier=keep)`` (called as
    ``keep(boxes, label)``) and, with ``label`` fixed here, ``extract_boxes(classifier=keep)``."""
    from torchvision.ops import roi_align
    from ._validate import as_boxes
    dev = next(model.parameters()).device if device is None else torch.device(device)
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be uint8 [3, H, W]; got {getattr(image, 'shape', type(image))}")

    def check(lab) -> int:
        if lab is None or not 1 <= int(lab) <= model.num_classes:
            raise ValueError(f"label must be in 1..{model.num_classes}; got {lab}")
        return int(lab)
    default = check(label) if label is not None else None
    img = image.to(dev).float().div(255)[None]

    def keep(boxes: torch.Tensor, label: Optional[int] = None) -> torch.Tensor:
        lab = check(label if label is not None else default)
        out_dev = boxes.device if torch.is_tensor(boxes) else torch.device("cpu")
        b = as_boxes(boxes, dtype=torch.float32, device=dev)
        if len(b) == 0:
            return torch.zeros(0, dtype=torch.bool, device=out_dev)
        rois = torch.cat([torch.zeros(len(b), 1, device=dev), b], 1)
        crops = roi_align(img, rois, (model.input_size,) * 2, 1.0, -1, True).clamp(0, 1)
        was = model.training
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(c) for c in crops.split(256)]).argmax(1) == lab
        model.train(was)
        return out.to(out_dev)
    return keep
