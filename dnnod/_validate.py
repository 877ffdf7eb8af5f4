"""Input checks shared by every stage: bad input gets a clear ``ValueError`` here, never a
traceback from deep inside torch.

Box convention (whole package): ``Tensor[N, 4]`` as ``(x1, y1, x2, y2)`` in continuous pixel
coordinates (pixel edges, x to the right, y down); aspect ratio = width / height.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence, Tuple, Union

import torch

BoxesLike = Union[torch.Tensor, Sequence[Sequence[float]]]
RectLike = Union[torch.Tensor, Sequence[float]]


def as_boxes(boxes: BoxesLike, name: str = "boxes", *, allow_empty_area: bool = True,
             dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Return ``boxes`` as a float ``[N, 4]`` tensor after checking shape, finiteness and order."""
    t = torch.as_tensor(boxes, dtype=dtype, device=device) if not isinstance(boxes, torch.Tensor) \
        else boxes.to(dtype=dtype, device=device if device is not None else boxes.device)
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{name} must be shaped [N, 4] as (x1, y1, x2, y2); got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or inf: {t[~torch.isfinite(t).all(1)][:3].tolist()}")
    bad = (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])
    if bad.any():
        raise ValueError(f"{name} need x2 >= x1 and y2 >= y1 (xyxy convention); offending boxes: "
                         f"{t[bad][:3].tolist()}")
    if not allow_empty_area:
        empty = (t[:, 2] <= t[:, 0]) | (t[:, 3] <= t[:, 1])
        if empty.any():
            raise ValueError(f"{name} contain empty boxes (zero width or height): {t[empty][:3].tolist()}")
    return t


def as_rect(rect: RectLike, name: str = "window", *, dtype: torch.dtype = torch.float64,
            device=None) -> torch.Tensor:
    """Return a non-empty rectangle ``(x1, y1, x2, y2)`` as a float tensor ``[4]``."""
    t = torch.as_tensor(rect, dtype=dtype, device=device) if not isinstance(rect, torch.Tensor) \
        else rect.detach().to(dtype=dtype, device=device if device is not None else rect.device)
    if t.shape != (4,):
        raise ValueError(f"{name} must be 4 numbers (x1, y1, x2, y2); got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf: {t.tolist()}")
    if not (t[2] > t[0] and t[3] > t[1]):
        raise ValueError(f"{name} must have x2 > x1 and y2 > y1 (non-empty, not inverted); got {t.tolist()}")
    return t


def check_d(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"mask resolution d must be an integer >= 1; got {d!r}")
    return d


def default_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_image_size(image_size) -> Tuple[float, float]:
    try:
        h, w = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W); got {image_size!r}") from None
    if not (math.isfinite(h) and math.isfinite(w) and h > 0 and w > 0):
        raise ValueError(f"image_size (H, W) must be positive; got {tuple(image_size)!r}")
    return h, w


def serial(fn):
    """Run ``fn`` with one intra-op thread. Box scoring is many small tensor ops (each well under
    a few MB), whose OpenMP fork/join costs more than it saves — on a busy 2-core machine up to
    100× more. The network forward keeps all threads."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n = torch.get_num_threads()
        if n == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)
    return wrapper
