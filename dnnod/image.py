"""Image loading and conversion: the first stage of image → windows → network → masks → boxes.

Every stage takes images as ``uint8`` tensors ``[3, H, W]`` (RGB, row y down, column x right).
:func:`load_image` turns whatever a user has — a path, a PIL image, a numpy array or a tensor —
into that form, converting grayscale and RGBA, and fails with a clear error naming the file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Tuple, Union

import numpy as np
import torch

try:  # PIL is a hard dependency (pyproject), imported lazily only to keep import time low.
    from PIL import Image, UnidentifiedImageError
except ImportError:  # pragma: no cover
    Image = None  # type: ignore
    UnidentifiedImageError = OSError  # type: ignore

ImageLike = Union[torch.Tensor, np.ndarray, "Image.Image", str, os.PathLike]


def _from_pil(img: "Image.Image", name: str = "image") -> torch.Tensor:
    if img.width == 0 or img.height == 0:
        raise ValueError(f"{name} has zero size ({img.width}x{img.height})")
    # convert("RGB") handles L, LA, P (palette), RGBA (alpha dropped), CMYK, I;16 and 1-bit images.
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _from_array(t: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Tensor in CHW (C in 1, 3, 4) or HW layout -> uint8 [3, H, W]."""
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"{name} must be a tensor [3, H, W] (or [1, H, W], [4, H, W] RGBA, [H, W] "
                         f"grayscale); got shape {tuple(t.shape)}")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"{name} has zero size: shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        out = t
    elif t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in
                                          (torch.int16, torch.int32, torch.int64, torch.int8)):
        raise ValueError(f"{name} has unsupported dtype {t.dtype}; use uint8 (0-255) or float (0-1)")
    elif t.is_floating_point():
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0 or hi > 1:
            # A float image in 0-255 would otherwise be silently saturated to white.
            raise ValueError(f"float {name} must have values in [0, 1]; got range [{lo:g}, {hi:g}] "
                             "(pass uint8 for 0-255 data)")
        out = (t * 255).round().to(torch.uint8)
    else:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer {name} must have values in [0, 255]; got [{lo}, {hi}]")
        out = t.to(torch.uint8)
    if out.shape[0] == 1:            # grayscale: replicate into the three channels
        out = out.expand(3, -1, -1)
    elif out.shape[0] == 4:          # RGBA: drop alpha, as PIL's convert("RGB") does
        out = out[:3]
    return out.contiguous()


def load_image(x: ImageLike) -> torch.Tensor:
    """Any image -> ``uint8`` tensor ``[3, H, W]`` RGB.

    Accepts a path (``str`` / ``PathLike``), a PIL image, a numpy array ``[H, W]``, ``[H, W, 3]``
    or ``[H, W, 4]`` (HWC, as PIL/numpy store images) or a tensor ``[3, H, W]`` / ``[1, H, W]`` /
    ``[4, H, W]`` / ``[H, W]`` (CHW, as torchvision stores them). Float data must lie in [0, 1].
    Raises ``FileNotFoundError`` naming a missing file, ``ValueError`` naming a file that is not a
    readable image or declares more than :func:`max_pixels` pixels, and ``ValueError`` for a
    zero-size image or an unsupported layout.
    """
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        try:
            with _open_checked(path, f"image {str(path)!r}") as img:
                img.load()      # decode now, so a truncated file fails here and not later
                return _from_pil(img, f"image {str(path)!r}")
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"cannot read image file {str(path)!r}: {e}") from e
    if Image is not None and isinstance(x, Image.Image):
        return _from_pil(x)
    if isinstance(x, np.ndarray):
        if x.ndim == 3 and x.shape[2] in (1, 3, 4):
            x = np.moveaxis(x, 2, 0)            # numpy images are HWC (PIL's layout) -> CHW
        return _from_array(torch.from_numpy(np.array(x)), "image")
    if isinstance(x, torch.Tensor):
        return _from_array(x.detach().cpu(), "image")
    raise ValueError(f"cannot interpret {type(x).__name__} as an image; pass a path, a PIL image, "
                     "a numpy array or a uint8 tensor [3, H, W]")


def image_size(image: torch.Tensor) -> Tuple[int, int]:
    """``(H, W)`` of a ``[3, H, W]`` image tensor."""
    return int(image.shape[-2]), int(image.shape[-1])


# ----------------------------------------------------------------------------- large images
#: Largest image dnnod decodes, in pixels (width × height): by default the size at which PIL
#: itself refuses a file as a decompression bomb (2 × ``PIL.Image.MAX_IMAGE_PIXELS`` ≈ 179 MP).
#: The limit is checked on the size a file *declares* before anything is decoded. Raise it for a
#: trusted file with the environment variable ``DNNOD_MAX_PIXELS`` or ``dnnod detect --max-pixels``.
MAX_PIXELS = 2 * 89_478_485


#: Images whose short side is at most this many px (all of VOC, COCO, Penn-Fudan) and that need
#: no reduction are used as they are, one plain level (ours): windows are cut from the whole
#: image as floats, exactly as for any image before pyramids existed.
PLAIN_SHORT_SIDE = 1024


def max_pixels() -> int:
    """The pixel limit in force: ``DNNOD_MAX_PIXELS`` when set, else :data:`MAX_PIXELS`."""
    env = os.environ.get("DNNOD_MAX_PIXELS")
    if env:
        try:
            v = int(float(env))
        except ValueError:
            raise ValueError(f"DNNOD_MAX_PIXELS must be a number of pixels; got {env!r}") from None
        if v < 1:
            raise ValueError(f"DNNOD_MAX_PIXELS must be >= 1; got {env!r}")
        return v
    return int(MAX_PIXELS)


def _too_large(name: str, w: int, h: int, limit: int, what: str = "dnnod's limit") -> ValueError:
    return ValueError(
        f"{name} declares {w}x{h} = {w * h / 1e6:.1f} MP, over {what} of {limit / 1e6:.1f} MP "
        f"({limit} px, a guard against decompression bombs); if the file is trusted, raise it "
        f"with --max-pixels N or DNNOD_MAX_PIXELS=N")


def _open_checked(path: Path, name: str) -> "Image.Image":
    """``Image.open`` (header only) with the declared size checked against :func:`max_pixels`.
    PIL's own bomb check is replaced by that one (same default, one clear message)."""
    import warnings
    limit = max_pixels()
    old = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            img = Image.open(path)
    except Image.DecompressionBombError as e:       # pragma: no cover (PIL's check is off)
        raise ValueError(f"{name}: {e}; raise the limit with --max-pixels N or "
                         "DNNOD_MAX_PIXELS=N") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old
    w, h = img.size
    if w * h > limit:
        img.close()
        raise _too_large(name, w, h, limit)
    return img


def _pil_to_tensor(img: "Image.Image") -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] (a channels-last view of one copy of the pixels)."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


class ImagePyramid:
    """An image held at the resolutions the network needs (ours, for large photos).

    ``levels[0]`` is the image at a fraction ``scale`` <= 1 of its ``size = (H, W)`` (1 unless it
    was decoded reduced, see :func:`load_pyramid`), each further level half the previous one
    (2×2 box filter, PIL's ``reduce``), down to a short side below ``2 · top`` px. Coordinates are
    always those of the original image; :meth:`level_for` picks, per region, the coarsest level
    on which it still spans ``target`` pixels. uint8 ``[3, h, w]`` tensors (possibly
    channels-last views).
    """

    def __init__(self, levels, size: Tuple[int, int]) -> None:
        if not levels:
            raise ValueError("an ImagePyramid needs at least one level")
        self.levels = list(levels)
        self.size = (int(size[0]), int(size[1]))
        H, W = self.size
        #: per level (sy, sx): level pixels per original pixel
        self.scales = [(lv.shape[-2] / H, lv.shape[-1] / W) for lv in self.levels]

    @property
    def is_plain(self) -> bool:
        """One level at full resolution: the image itself."""
        return len(self.levels) == 1 and tuple(self.levels[0].shape[-2:]) == self.size

    def level_for(self, boxes: torch.Tensor, target: float) -> torch.Tensor:
        """Per box ``[K, 4]`` (original px): the coarsest level on which its short side is still
        >= ``target`` px, else level 0 (the finest held)."""
        b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        lvl = torch.zeros(len(b), dtype=torch.long)
        for k, (sy, sx) in enumerate(self.scales):
            ok = torch.minimum(bw * sx, bh * sy) >= target
            lvl[ok] = k
        return lvl

    def finest_within(self, long_side: int) -> Tuple[torch.Tensor, Tuple[float, float]]:
        """The finest level whose long side is <= ``long_side`` (else the coarsest) and its
        (sy, sx) — e.g. for drawing a preview."""
        for lv, s in zip(self.levels, self.scales):
            if max(lv.shape[-2:]) <= long_side:
                return lv, s
        return self.levels[-1], self.scales[-1]

    @classmethod
    def from_pil(cls, img: "Image.Image", size: Tuple[int, int], top: int) -> "ImagePyramid":
        if img.mode != "RGB":
            img = img.convert("RGB")
        levels = [_pil_to_tensor(img)]
        cur = img
        while min(cur.size) >= 2 * top:
            cur = cur.reduce(2)
            levels.append(_pil_to_tensor(cur))
        return cls(levels, size)


def _reduce_factor(size_hw: Tuple[int, int], scale: float) -> int:
    return max(1, int(math.floor(1.0 / max(scale, 1e-9) + 1e-9)))


def load_pyramid(x: Union[ImageLike, "ImagePyramid"],
                 scale: Union[float, Callable[[Tuple[int, int]], float]] = 1.0,
                 top: int = 225) -> "ImagePyramid":
    """Any image -> :class:`ImagePyramid` whose finest level is at >= ``scale`` of the original
    (a number, or a function of the image's ``(H, W)``, read from a file's header).

    A JPEG file is decoded reduced by PIL's ``draft`` (1/2, 1/4, 1/8 straight from the DCT), other
    files are decoded and then reduced by the largest integer factor that keeps >= ``scale``.
    Further levels halve the previous one down to a short side below ``2 · top``. An image
    whose short side is at most :data:`PLAIN_SHORT_SIDE` at ``scale == 1`` stays one plain level
    (the tensor of :func:`load_image`). Same errors as :func:`load_image`, plus a one-line error for a file
    declaring more than :func:`max_pixels` pixels.
    """
    if isinstance(x, ImagePyramid):
        return x
    scale_of = scale if callable(scale) else (lambda hw: scale)

    def check(s):
        if isinstance(s, bool) or not (isinstance(s, (int, float)) and 0 < s <= 1):
            raise ValueError(f"scale must be in (0, 1]; got {s!r}")
        return float(s)
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        name = f"image {str(path)!r}"
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        try:
            img = _open_checked(path, name)
            with img:
                W, H = img.size
                if W == 0 or H == 0:
                    raise ValueError(f"{name} has zero size ({W}x{H})")
                scale = check(scale_of((H, W)))
                if scale < 1 and img.format == "JPEG":
                    img.draft("RGB", (math.ceil(W * scale), math.ceil(H * scale)))
                img.load()
                k = _reduce_factor((H, W), scale / (img.size[0] / W))
                if k > 1 and img.mode != "RGB":
                    img = img.convert("RGB")      # reduce() takes no palette / 16-bit images
                red = img.reduce(k) if k > 1 else img
                if red is img and min(H, W) <= PLAIN_SHORT_SIDE and img.size == (W, H):
                    return ImagePyramid([_from_pil(img, name)], (H, W))
                return ImagePyramid.from_pil(red, (H, W), top)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"cannot read image file {str(path)!r}: {e}") from e
    t = load_image(x)
    H, W = image_size(t)
    scale = check(scale_of((H, W)))
    k = _reduce_factor((H, W), scale)
    if k == 1 and min(H, W) <= PLAIN_SHORT_SIDE:
        return ImagePyramid([t], (H, W))
    pil = Image.fromarray(t.permute(1, 2, 0).contiguous().numpy())
    if k > 1:
        pil = pil.reduce(k)
        return ImagePyramid.from_pil(pil, (H, W), top)
    pyr = ImagePyramid.from_pil(pil, (H, W), top)
    pyr.levels[0] = t                       # the original tensor, not a copy of it
    return pyr
