"""Mask predictors: the network stage of image → windows → network → masks (paper Sec. 3, 5.3).

A *mask predictor* is any callable ``(image uint8 [3, H, W], windows [K, 4]) -> masks
[K, C, 5, d, d]`` (float in [0, 1], mask types in ``dnnod.masks.MASK_TYPES`` order) with the
attributes ``num_classes`` and ``d`` and optionally ``aspect_ratios`` and ``class_names``.
The inference pipeline (:func:`dnnod.detect.detect`) only talks to predictors, so a trained
:class:`NetPredictor` and the perfect :class:`GroundTruthPredictor` are interchangeable.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torchvision

from ._validate import BoxesLike, as_boxes, check_d, default_device
from .image import ImageLike, ImagePyramid, load_image
from .masks import box_parts, union_coverage


def _as_windows(windows) -> torch.Tensor:
    w = as_boxes(windows, "windows", allow_empty_area=False)
    if w.shape[0] == 0:
        raise ValueError("windows must hold at least one window [K >= 1, 4]")
    return w


#: Floats per batched roi_align call when windows are cut from an image pyramid (48 MB).
PATCH_BUDGET = 12_000_000


class NetPredictor:
    """Runs a :class:`dnnod.net.DetectorNet` on image windows.

    All windows are cut out and resized to ``model.input_size`` in one batched
    ``torchvision.ops.roi_align`` (``aligned=True``: continuous pixel-edge coordinates, adaptive
    sampling averages several samples per output pixel, so large windows are anti-aliased), then
    run in ``batch_size`` chunks in eval mode without gradients.

    ``aspect_ratios`` / ``class_names`` are taken from the model when it has those attributes
    (the checkpoint loader sets them). ``device``: default CUDA when available; the model is moved
    there.
    """

    def __init__(self, model: torch.nn.Module, device=None, batch_size: int = 64) -> None:
        for attr in ("num_classes", "d", "input_size"):
            if not hasattr(model, attr):
                raise ValueError(f"NetPredictor needs a DetectorNet-like model with .{attr}; "
                                 f"got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        self.device = default_device(device)
        self.model = model.to(self.device)
        self.batch_size = batch_size
        self.num_classes = int(model.num_classes)
        self.d = int(model.d)
        self.input_size = int(model.input_size)
        self.aspect_ratios = getattr(model, "aspect_ratios", None)
        self.class_names = getattr(model, "class_names", None)

    def crops(self, image: ImageLike, windows: BoxesLike) -> torch.Tensor:
        """The network inputs: windows resized to ``[K, 3, S, S]`` floats in [0, 1]."""
        if isinstance(image, ImagePyramid) and not image.is_plain:
            return self._pyramid_crops(image, _as_windows(windows))
        if isinstance(image, ImagePyramid):
            image = image.levels[0]
        x = load_image(image).to(self.device, torch.float32)[None] / 255.0
        return self._crops(x, _as_windows(windows))

    def _crops(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([torch.zeros(len(w), 1, dtype=torch.float32),
                          w.float()], 1).to(self.device)
        s = self.input_size
        return torchvision.ops.roi_align(x, rois, output_size=(s, s), spatial_scale=1.0,
                                         sampling_ratio=-1, aligned=True)

    def _pyramid_crops(self, pyr: ImagePyramid, w: torch.Tensor) -> torch.Tensor:
        """Windows of an :class:`~dnnod.image.ImagePyramid` resized to ``[K, 3, S, S]``: each is
        cut from the coarsest level on which it still spans S px (no window is upsampled that the
        finest level held at >= S px; the levels are box-filtered), as a patch with a 1 px
        margin; the patches of a chunk (at most :data:`PATCH_BUDGET` floats) are padded into one
        tensor and resized in one ``roi_align`` call — the same numbers as ``roi_align`` on the
        whole level, without ever holding a large level as floats."""
        s = self.input_size
        lvl = pyr.level_for(w, s)
        out = torch.empty(len(w), 3, s, s, device=self.device)
        boxes, patches = [], []
        for i in range(len(w)):
            k = int(lvl[i])
            sy, sx = pyr.scales[k]
            lv = pyr.levels[k]
            h, wd = lv.shape[-2:]
            x1, y1, x2, y2 = (float(v) for v in w[i])
            bx = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            px1 = min(max(0, int(bx[0]) - 1), wd - 1)
            py1 = min(max(0, int(bx[1]) - 1), h - 1)
            px2 = max(min(wd, int(bx[2]) + 2), px1 + 1)
            py2 = max(min(h, int(bx[3]) + 2), py1 + 1)
            patches.append(lv[:, py1:py2, px1:px2])
            boxes.append((bx[0] - px1, bx[1] - py1, bx[2] - px1, bx[3] - py1))
        order = list(range(len(w)))
        i0 = 0
        while i0 < len(order):
            # a chunk: as many patches as fit the budget once padded to the largest of them
            ph = pw = 0
            i1 = i0
            while i1 < len(order):
                h2 = max(ph, patches[i1].shape[-2])
                w2 = max(pw, patches[i1].shape[-1])
                if i1 > i0 and (i1 - i0 + 1) * 3 * h2 * w2 > PATCH_BUDGET:
                    break
                ph, pw, i1 = h2, w2, i1 + 1
            x = torch.zeros(i1 - i0, 3, ph + 1, pw + 1, dtype=torch.float32)
            for j in range(i0, i1):
                p = patches[j]
                hh, ww = p.shape[-2:]
                x[j - i0, :, :hh, :ww] = p
                # replicate the last row and column once: bilinear taps at a patch's far edge
                # then see the edge pixel, as roi_align's clamping at an image edge does
                x[j - i0, :, hh, :ww] = x[j - i0, :, hh - 1, :ww]
                x[j - i0, :, :hh + 1, ww] = x[j - i0, :, :hh + 1, ww - 1]
            rois = torch.tensor([(j - i0, *boxes[j]) for j in range(i0, i1)], dtype=torch.float32)
            out[i0:i1] = torchvision.ops.roi_align(
                x.to(self.device), rois.to(self.device), output_size=(s, s), spatial_scale=1.0,
                sampling_ratio=-1, aligned=True) / 255.0
            i0 = i1
        return out

    @torch.no_grad()
    def __call__(self, image: ImageLike, windows: BoxesLike) -> torch.Tensor:
        w = _as_windows(windows)
        pyr = image if isinstance(image, ImagePyramid) and not image.is_plain else None
        if pyr is None:
            img = image.levels[0] if isinstance(image, ImagePyramid) else image
            x = load_image(img).to(self.device, torch.float32)[None] / 255.0
        was_training = self.model.training
        self.model.eval()
        try:
            outs = []
            for i in range(0, len(w), self.batch_size):
                wb = w[i:i + self.batch_size]
                crops = self._crops(x, wb) if pyr is None else self._pyramid_crops(pyr, wb)
                outs.append(self.model(crops).float().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(outs)


class GroundTruthPredictor:
    """The perfect network: for each window, the Eq. 1 targets (:func:`dnnod.masks.mask_targets`)
    of the true boxes of every class — used to test the pipeline without training.

    boxes ``[N, 4]`` in image pixels, labels ``[N]`` 1-based; ``num_classes`` defaults to the
    largest label.
    """

    def __init__(self, boxes: BoxesLike, labels, num_classes: Optional[int] = None, d: int = 24,
                 aspect_ratios: Optional[Sequence[float]] = None,
                 class_names: Optional[Sequence[str]] = None) -> None:
        self.boxes = as_boxes(boxes, "boxes")
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if self.labels.shape[0] != self.boxes.shape[0]:
            raise ValueError(f"got {self.labels.shape[0]} labels for {self.boxes.shape[0]} boxes")
        if self.labels.numel() and int(self.labels.min()) < 1:
            raise ValueError("labels are 1-based (0 is background); got a label < 1")
        top = int(self.labels.max()) if self.labels.numel() else 1
        self.num_classes = top if num_classes is None else int(num_classes)
        if self.num_classes < max(1, top):
            raise ValueError(f"num_classes={num_classes} is smaller than the largest label {top}")
        self.d = check_d(d)
        self.aspect_ratios = aspect_ratios
        self.class_names = class_names

    def __call__(self, image: Optional[ImageLike], windows: BoxesLike) -> torch.Tensor:
        w = _as_windows(windows)
        K, C = w.shape[0], self.num_classes
        counts = torch.bincount(self.labels - 1, minlength=C) if self.labels.numel() \
            else torch.zeros(C, dtype=torch.long)
        n = max(1, int(counts.max()))
        # Boxes of class c in slots [c, :count_c]; zero-area padding counts for nothing.
        per = torch.zeros(C, n, 4, dtype=torch.float64)
        order = torch.argsort(self.labels, stable=True)
        lab = self.labels[order] - 1
        slot = torch.arange(len(lab)) - (torch.cumsum(counts, 0) - counts)[lab]
        per[lab, slot] = self.boxes[order]
        parts = box_parts(per).transpose(0, 1).reshape(C * 5, n, 4)   # [C·5, n, 4]
        rects = parts[None].expand(K, -1, -1, -1)
        out = union_coverage(rects, w, self.d).float()                # [K, C·5, d, d]
        return out.view(K, C, 5, self.d, self.d)
