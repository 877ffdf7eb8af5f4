"""Training-window samplers — paper Sec. 4 (localizer) and Sec. 5.2 (classifier).

Localizer (book appendix A): windows drawn per image, **60% negative** (touching no object of the
class) and **40% positive** (containing at least **80% of the area** of some object of the
class); crop width uniform in ``[min_scale · W, W]``, crop shape = the image's aspect ratio
[ours] (``scale_dist="log"``, ours: log-uniform widths instead, as many crops between 1/4 and
1/2 of the image as between 1/2 and 1 — the window sizes of the three detection scales). A
sample is the crop resized to the network input plus its Eq. 1 mask targets for every class.
Horizontal flips [ours] flip the crop and the targets (columns reversed, left <-> right swapped),
which equals computing the targets after flipping. Colour jitter [ours, off by default]
(``jitter``, :func:`color_jitter`) varies brightness, contrast and saturation per crop, and
blur [ours, off by default] (``blur``, :func:`gaussian_blur`) softens each crop by a random amount,
as if the photo had had fewer pixels: a window cut from a small photo is upsampled to the network
input (soft), the same window from a phone photo is downsampled (sharp).

Classifier (paper Sec. 5.2): boxes with IoU < 0.2 with every object are background (label 0),
boxes with IoU >= 0.6 with some object take that object's label; the same 60/40 split.

Everything is batched: candidate windows are drawn as tensors, tested against padded
ground-truth boxes in one go (rejection sampling), and cropped with ``torchvision.ops.roi_align``
(bilinear with adaptive supersampling, i.e. anti-aliased downscaling), so the trainer is not
data-bound. Each batch is a pure function of a ``torch.Generator``, which makes resuming exact.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_align

from ..masks import MASK_TYPES, mask_targets_batch

__all__ = ["ImageBank", "LocalizerSampler", "ClassifierSampler", "flip_targets", "color_jitter",
           "gaussian_blur"]

_LEFT, _RIGHT = MASK_TYPES.index("left"), MASK_TYPES.index("right")


class ImageBank:
    """All training images in one zero-padded ``uint8 [N, 3, Hmax, Wmax]`` tensor (so roi_align
    can crop any of them in one call) plus padded boxes ``[N, M, 4]`` / labels ``[N, M]``
    (label 0 = padding). ``max_side`` downsizes large photos once, up front (the network sees
    at most 96-225 px anyway)."""

    def __init__(self, dataset, max_side: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> None:
        idx = list(range(len(dataset))) if indices is None else list(indices)
        if not idx:
            raise ValueError("ImageBank needs at least one image")
        imgs, boxes, labels = [], [], []
        for i in idx:
            img, t = dataset[i]
            b = t["boxes"].float()
            keep = ~t["difficult"].bool() if "difficult" in t else torch.ones(len(b), dtype=torch.bool)
            b, lab = b[keep], t["labels"][keep]
            if max_side is not None and max(img.shape[1:]) > max_side:
                s = max_side / max(img.shape[1:])
                H0, W0 = img.shape[1:]
                h, w = max(1, round(H0 * s)), max(1, round(W0 * s))
                img = torch.nn.functional.interpolate(img[None].float(), size=(h, w), mode="bilinear",
                                                      antialias=True, align_corners=False)[0]
                img = img.round().clamp(0, 255).to(torch.uint8)
                b = b * torch.tensor([w / W0, h / H0, w / W0, h / H0])
            imgs.append(img)
            boxes.append(b)
            labels.append(lab)
        self.sizes = torch.tensor([[im.shape[2], im.shape[1]] for im in imgs], dtype=torch.float32)  # (W, H)
        H = max(im.shape[1] for im in imgs)
        W = max(im.shape[2] for im in imgs)
        self.images = torch.zeros(len(imgs), 3, H, W, dtype=torch.uint8)
        for k, im in enumerate(imgs):
            self.images[k, :, : im.shape[1], : im.shape[2]] = im
        M = max(1, max(len(b) for b in boxes))
        self.boxes = torch.zeros(len(imgs), M, 4)
        self.labels = torch.zeros(len(imgs), M, dtype=torch.long)
        for k, (b, lab) in enumerate(zip(boxes, labels)):
            self.boxes[k, : len(b)] = b
            self.labels[k, : len(b)] = lab

    def __len__(self) -> int:
        return self.images.shape[0]

    def crop(self, img_idx: torch.Tensor, windows: torch.Tensor, out_w: int, out_h: Optional[int] = None) -> torch.Tensor:
        """Crops ``windows [B, 4]`` (xyxy, pixels) of images ``img_idx [B]`` resized to
        ``[B, 3, out_h, out_w]`` float in [0, 1]."""
        out_h = out_w if out_h is None else out_h
        uniq, inv = torch.unique(img_idx, return_inverse=True)
        src = self.images[uniq].float().div_(255)
        rois = torch.cat([inv[:, None].float(), windows.float()], 1)
        # aligned=True: pixel edges are continuous coordinates, as in our box convention
        out = roi_align(src, rois, (out_h, out_w), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return out.clamp_(0, 1)


def flip_targets(targets: torch.Tensor) -> torch.Tensor:
    """Targets of the mirrored window: ``[..., 5, d, d]`` columns reversed, left <-> right."""
    f = targets.flip(-1)
    idx = list(range(len(MASK_TYPES)))
    idx[_LEFT], idx[_RIGHT] = _RIGHT, _LEFT
    return f[..., idx, :, :]


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` of RGB ``x [B, 3, H, W]`` (torchvision's rgb_to_grayscale)."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _check_jitter(strength: float) -> None:
    if not 0 <= strength < 1:
        raise ValueError(f"jitter (colour jitter strength) must be in [0, 1); got {strength}")


def color_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Photometric augmentation (ours; the paper names none): per crop, brightness, contrast and
    saturation factors drawn uniformly from ``[1 - strength, 1 + strength]`` and applied in that
    order, as torchvision's ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation``
    do (blend with black, with the mean grey level, with the grey image; clamped to [0, 1]).
    ``x [B, 3, H, W]`` floats in [0, 1]; the targets do not change. One batched pass; the draws
    come from ``g`` so a seeded run repeats."""
    _check_jitter(strength)
    B = x.shape[0]
    f = 1 + strength * (2 * torch.rand(B, 3, generator=g) - 1)          # [B, 3] factors
    f = f.to(x.dtype).view(B, 3, 1, 1, 1).unbind(1)
    x = (x * f[0]).clamp(0, 1)
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (f[1] * x + (1 - f[1]) * m).clamp(0, 1)
    x = (f[2] * x + (1 - f[2]) * _gray(x)).clamp(0, 1)
    return x


#: Largest blur sigma accepted (network-input pixels; beyond it a 225 px crop is a smear).
BLUR_MAX = 8.0


def _check_blur(sigma_max: float) -> None:
    if not (0 <= sigma_max <= BLUR_MAX):       # also rejects NaN
        raise ValueError(f"blur (largest Gaussian sigma, network-input pixels) must be in [0, {BLUR_MAX:g}]; "
                         f"got {sigma_max}")


def gaussian_blur(x: torch.Tensor, sigma_max: float, g: torch.Generator) -> torch.Tensor:
    """Blur augmentation (ours; the paper names none): each crop of ``x [B, 3, H, W]`` is blurred
    by a Gaussian whose sigma (in pixels of ``x``) is drawn uniformly from ``[0, sigma_max]`` —
    what torchvision's ``gaussian_blur`` does with kernel size ``2·ceil(3·sigma_max) + 1`` and
    reflected borders, but for all crops at once (one grouped separable convolution, a kernel per
    crop). Sigma 0 leaves a crop as it is; the targets do not change. Draws come from ``g``."""
    _check_blur(sigma_max)
    B, Cc, H, W = x.shape
    r = math.ceil(3 * sigma_max)
    if r >= min(H, W):
        raise ValueError(f"blur {sigma_max} needs crops wider than {r} px; got {H}x{W}")
    sigma = sigma_max * torch.rand(B, generator=g)
    if r == 0:
        return x
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-6)[:, None]) ** 2)      # [B, 2r+1]
    k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(Cc, 0)      # a kernel per channel
    y = F.pad(x.reshape(1, B * Cc, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(B * Cc, 1, 1, -1), groups=B * Cc)                    # rows
    y = F.conv2d(y, k.view(B * Cc, 1, -1, 1), groups=B * Cc)                    # columns
    return y.view(B, Cc, H, W)


def _inter_area(windows: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """windows ``[B, K, 4]``, boxes ``[B, M, 4]`` -> intersection areas ``[B, K, M]``."""
    lt = torch.maximum(windows[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(windows[:, :, None, 2:], boxes[:, None, :, 2:])
    return (rb - lt).clamp(min=0).prod(-1)


#: Distributions of the crop width (:class:`LocalizerSampler`'s ``scale_dist``).
SCALE_DISTS = ("uniform", "log")


class LocalizerSampler:
    """Localizer batches (paper Sec. 4): ``(windows [B, 3, S, S] float in [0, 1],
    targets [B, C, 5, d, d])``, with ``pos_fraction`` positives; ``jitter`` > 0 adds
    :func:`color_jitter` of that strength to the crops, ``blur`` > 0 :func:`gaussian_blur` with
    sigmas up to ``blur`` network-input pixels."""

    def __init__(self, bank: ImageBank, num_classes: int, input_size: int, d: int = 24,
                 min_scale: float = 0.1, pos_fraction: float = 0.4, min_cover: float = 0.8,
                 flip: bool = True, candidates: int = 48, scale_dist: str = "uniform",
                 jitter: float = 0.0, blur: float = 0.0) -> None:
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1]; got {min_scale}")
        if scale_dist not in SCALE_DISTS:
            raise ValueError(f"scale_dist must be one of {SCALE_DISTS}; got {scale_dist!r}")
        self.scale_dist = scale_dist
        if not 0 <= pos_fraction <= 1:
            raise ValueError(f"pos_fraction must be in [0, 1]; got {pos_fraction}")
        self.bank, self.C, self.S, self.d = bank, num_classes, input_size, d
        self.min_scale, self.pos_fraction, self.min_cover = min_scale, pos_fraction, min_cover
        self.flip, self.K = flip, candidates
        _check_jitter(jitter)
        _check_blur(blur)
        self.jitter, self.blur = jitter, blur
        has = torch.stack([(bank.labels == c + 1).any(1) for c in range(num_classes)], 1)  # [N, C]
        if not has.any():
            raise ValueError("no training image contains an object of any class")
        self._has = has

    def _random_windows(self, img_idx: torch.Tensor, K: int, g: torch.Generator) -> torch.Tensor:
        """K windows per sample: width in [min_scale W, W] (uniform or log-uniform), image
        aspect ratio."""
        W, H = self.bank.sizes[img_idx].unbind(1)                       # [B]
        B = img_idx.shape[0]
        u = torch.rand(B, K, 3, generator=g)
        frac = self._frac(torch.full_like(u[..., 0], self.min_scale), u[..., 0])   # [B, K]
        w, h = frac * W[:, None], frac * H[:, None]
        x0 = u[..., 1] * (W[:, None] - w)
        y0 = u[..., 2] * (H[:, None] - h)
        return torch.stack([x0, y0, x0 + w, y0 + h], -1)

    def _frac(self, lo: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Crop width / image width in [lo, 1] from uniform u: uniform, or log-uniform."""
        if self.scale_dist == "log":
            return lo ** (1 - u)
        return lo + (1 - lo) * u

    def windows(self, batch_size: int, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``(img_idx [B], windows [B, 4], is_positive [B])`` by batched rejection sampling."""
        B = batch_size
        n_pos = int(round(B * self.pos_fraction))
        want_pos = torch.zeros(B, dtype=torch.bool)
        want_pos[:n_pos] = True
        # a class per sample, then an image containing it (positives) / any image (negatives)
        cls = torch.randint(self.C, (B,), generator=g)
        img_idx = torch.randint(len(self.bank), (B,), generator=g)
        cand_img = self._has[:, cls].T.float()                            # [B, N] images with class
        pick = torch.multinomial(cand_img + 1e-12, 1, generator=g)[:, 0]
        img_idx = torch.where(want_pos, pick, img_idx)
        out = torch.zeros(B, 4)
        found = torch.zeros(B, dtype=torch.bool)
        for _round in range(4):
            todo = (~found).nonzero()[:, 0]
            if len(todo) == 0:
                break
            wins = self._random_windows(img_idx[todo], self.K, g)         # [T, K, 4]
            gt = self.bank.boxes[img_idx[todo]]                           # [T, M, 4]
            of_cls = self.bank.labels[img_idx[todo]] == (cls[todo] + 1)[:, None]  # [T, M]
            inter = _inter_area(wins, gt)                                 # [T, K, M]
            area = ((gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])).clamp(min=1e-9)
            pos = ((inter / area[:, None]) >= self.min_cover) & of_cls[:, None]
            is_pos = pos.any(-1)
            is_neg = ~((inter > 0) & of_cls[:, None]).any(-1)
            ok = torch.where(want_pos[todo, None], is_pos, is_neg)        # [T, K]
            has_ok = ok.any(1)
            first = ok.float().argmax(1)
            sel = todo[has_ok]
            out[sel] = wins[has_ok, first[has_ok]]
            found[sel] = True
            # negatives that failed in a crowded image: try another random image next round
            retry_neg = todo[~has_ok & ~want_pos[todo]]
            img_idx[retry_neg] = torch.randint(len(self.bank), (len(retry_neg),), generator=g)
        todo = (~found).nonzero()[:, 0]
        if len(todo):
            # Fallback for positives (tiny objects are rarely hit at random): the smallest
            # allowed window that contains the object, at a random position around it.
            out[todo] = self._containing_windows(img_idx[todo], cls[todo], g)
        return img_idx, out, want_pos

    def _containing_windows(self, img_idx, cls, g) -> torch.Tensor:
        W, H = self.bank.sizes[img_idx].unbind(1)
        lab = self.bank.labels[img_idx] == (cls + 1)[:, None]
        r = torch.rand(lab.shape, generator=g) * lab
        k = r.argmax(1)
        b = self.bank.boxes[img_idx, k]
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        lo = torch.maximum(torch.maximum(bw / W, bh / H), torch.full_like(W, self.min_scale)).clamp(max=1)
        u = torch.rand(len(img_idx), 3, generator=g)
        frac = self._frac(lo, u[:, 0])
        w, h = frac * W, frac * H
        x0 = (b[:, 2] - w) + u[:, 1] * (w - bw)
        y0 = (b[:, 3] - h) + u[:, 2] * (h - bh)
        x0 = x0.clamp(min=0).minimum(W - w)
        y0 = y0.clamp(min=0).minimum(H - h)
        return torch.stack([x0, y0, x0 + w, y0 + h], 1)

    def targets(self, img_idx: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Eq. 1 targets ``[B, C, 5, d, d]``: for class c, the union of its objects' parts."""
        B = img_idx.shape[0]
        boxes, labels = self.bank.boxes[img_idx], self.bank.labels[img_idx]
        sets = []
        for b in range(B):                      # pads per image; the maths is batched
            for c in range(self.C):
                sets.append(boxes[b][labels[b] == c + 1])
        wins = windows.double().repeat_interleave(self.C, 0)
        t = mask_targets_batch(sets, wins, self.d)
        return t.view(B, self.C, len(MASK_TYPES), self.d, self.d)

    def sample(self, batch_size: int, g: torch.Generator) -> Dict[str, torch.Tensor]:
        img_idx, wins, pos = self.windows(batch_size, g)
        x = self.bank.crop(img_idx, wins, self.S)
        y = self.targets(img_idx, wins)
        if self.flip:
            f = torch.rand(batch_size, generator=g) < 0.5
            x[f] = x[f].flip(-1)
            y[f] = flip_targets(y[f])
        if self.jitter > 0:         # drawn only when asked, so runs without it repeat as before
            x = color_jitter(x, self.jitter, g)
        if self.blur > 0:           # likewise, and after the jitter's draws
            x = gaussian_blur(x, self.blur, g)
        return {"x": x, "y": y, "positive": pos, "img_idx": img_idx, "windows": wins}


class ClassifierSampler:
    """Classifier batches (paper Sec. 5.2): ``x [B, 3, S, S]`` warped boxes, ``y [B]`` labels
    (0 = background: IoU < ``neg_iou`` with every object; else the best-matching object's label
    for IoU >= ``pos_iou``)."""

    def __init__(self, bank: ImageBank, input_size: int, pos_fraction: float = 0.4,
                 pos_iou: float = 0.6, neg_iou: float = 0.2, flip: bool = True, candidates: int = 32,
                 jitter: float = 0.0, blur: float = 0.0) -> None:
        _check_jitter(jitter)
        _check_blur(blur)
        self.jitter, self.blur = jitter, blur
        self.bank, self.S, self.pos_fraction = bank, input_size, pos_fraction
        self.pos_iou, self.neg_iou, self.flip, self.K = pos_iou, neg_iou, flip, candidates
        self.n_obj = (bank.labels > 0).sum(1)
        if self.n_obj.sum() == 0:
            raise ValueError("no training image contains an object")

    def _labels_for(self, img_idx: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Best IoU ``[T, K]`` and its object's label for candidate boxes ``[T, K, 4]``."""
        gt, lab = self.bank.boxes[img_idx], self.bank.labels[img_idx]
        iou = torch.stack([box_iou(bx, g_) for bx, g_ in zip(boxes, gt)])   # [T, K, M]
        iou = iou.masked_fill(lab[:, None, :] == 0, 0)
        best, arg = iou.max(-1)
        return best, torch.gather(lab, 1, arg)

    def sample(self, batch_size: int, g: torch.Generator) -> Dict[str, torch.Tensor]:
        B = batch_size
        n_pos = int(round(B * self.pos_fraction))
        want_pos = torch.zeros(B, dtype=torch.bool)
        want_pos[:n_pos] = True
        w_img = (self.n_obj > 0).float()
        img_idx = torch.multinomial(w_img, B, replacement=True, generator=g)
        img_idx = torch.where(want_pos, img_idx, torch.randint(len(self.bank), (B,), generator=g))
        out = torch.zeros(B, 4)
        y = torch.zeros(B, dtype=torch.long)
        found = torch.zeros(B, dtype=torch.bool)
        for _round in range(6):
            todo = (~found).nonzero()[:, 0]
            if len(todo) == 0:
                break
            T = len(todo)
            W, H = self.bank.sizes[img_idx[todo]].unbind(1)
            # positives: jitter a random object's box; negatives: random boxes of any shape
            lab = self.bank.labels[img_idx[todo]]
            k = (torch.rand(lab.shape, generator=g) * (lab > 0)).argmax(1)
            gt = self.bank.boxes[img_idx[todo], k]                          # [T, 4]
            gw, gh = (gt[:, 2] - gt[:, 0])[:, None], (gt[:, 3] - gt[:, 1])[:, None]
            j = torch.randn(T, self.K, 4, generator=g) * 0.12
            cx = (gt[:, 0] + gt[:, 2])[:, None] / 2 + j[..., 0] * gw
            cy = (gt[:, 1] + gt[:, 3])[:, None] / 2 + j[..., 1] * gh
            bw, bh = gw * j[..., 2].exp(), gh * j[..., 3].exp()
            pos_c = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            u = torch.rand(T, self.K, 4, generator=g)
            nw = (0.05 + 0.9 * u[..., 0]) * W[:, None]
            nh = (0.05 + 0.9 * u[..., 1]) * H[:, None]
            nx = u[..., 2] * (W[:, None] - nw)
            ny = u[..., 3] * (H[:, None] - nh)
            neg_c = torch.stack([nx, ny, nx + nw, ny + nh], -1)
            cand = torch.where(want_pos[todo, None, None], pos_c, neg_c)
            size = torch.stack([W, H, W, H], 1)[:, None]
            cand = torch.minimum(cand.clamp(min=0), size)
            valid = ((cand[..., 2] - cand[..., 0]) > 2) & ((cand[..., 3] - cand[..., 1]) > 2)
            best, blab = self._labels_for(img_idx[todo], cand)
            ok = valid & torch.where(want_pos[todo, None], best >= self.pos_iou, best < self.neg_iou)
            has_ok = ok.any(1)
            first = ok.float().argmax(1)
            sel = todo[has_ok]
            out[sel] = cand[has_ok, first[has_ok]]
            y[sel] = torch.where(want_pos[sel], blab[has_ok, first[has_ok]], torch.zeros_like(y[sel]))
            found[sel] = True
            img_idx[todo[~has_ok & ~want_pos[todo]]] = torch.randint(
                len(self.bank), (int((~has_ok & ~want_pos[todo]).sum()),), generator=g)
        todo = (~found).nonzero()[:, 0]
        if len(todo):   # give up on these: use an exact ground-truth box (a positive)
            lab = self.bank.labels[img_idx[todo]]
            w_ = (lab > 0).float() + 1e-12 * (lab.sum(1, keepdim=True) == 0)
            k = torch.multinomial(w_, 1, generator=g)[:, 0]
            out[todo] = self.bank.boxes[img_idx[todo], k]
            y[todo] = lab[torch.arange(len(todo)), k]
        x = self.bank.crop(img_idx, out, self.S)
        if self.flip:
            f = torch.rand(B, generator=g) < 0.5
            x[f] = x[f].flip(-1)
        if self.jitter > 0:
            x = color_jitter(x, self.jitter, g)
        if self.blur > 0:
            x = gaussian_blur(x, self.blur, g)
        return {"x": x, "y": y, "img_idx": img_idx, "boxes": out}
