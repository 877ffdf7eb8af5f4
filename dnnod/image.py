"""Image loading and conversion: the first stage of image → windows → network → masks → boxes.

Every stage takes images as ``uint8`` tensors ``[3, H, W]`` (RGB, row y down, column x right).
:func:`load_image` turns whatever a user has — a path, a PIL image, a numpy array or a tensor —
into that form, converting grayscale and RGBA, and fails with a clear error naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

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
    readable image, and ``ValueError`` for a zero-size image or an unsupported layout.
    """
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        try:
            with Image.open(path) as img:
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
