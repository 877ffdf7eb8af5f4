"""Checkpoints: atomic save, safe load (``torch.load(weights_only=True)``), shipped weights.

A checkpoint is a plain dict (tensors, numbers, strings, lists only, so ``weights_only=True``
loads it without running pickled code)::

    {"format": "dnnod", "version": 1, "kind": "localizer" | "classifier",
     "config": model.config(), "class_names": [...], "aspect_ratios": [...] (k-means, paper Sec. 5.2),
     "state_dict": {...}, "meta": {...},
     # training checkpoints only (for --resume):
     "optimizer": ..., "scaler": ..., "step": int, "rng": {...}}
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ._validate import default_device
from .net import DetectorNet

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "load_weights_into",
           "load_pretrained", "pretrained_names", "kmeans_aspect_ratios", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
FORMAT, VERSION = "dnnod", 1
PathLike = Union[str, os.PathLike]


def save_checkpoint(obj: Dict[str, Any], path: PathLike) -> Path:
    """Write ``obj`` atomically: to a temporary file in the same folder, fsync, then
    ``os.replace`` — a killed process leaves the old checkpoint or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint dict safely; missing / corrupt / foreign files raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise ValueError(f"cannot read checkpoint {path}: corrupt, truncated or not a dnnod "
                         f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "state_dict" not in ck:
        raise ValueError(f"{path} is not a dnnod checkpoint (no 'format': 'dnnod' / 'state_dict')")
    if ck.get("version", 0) > VERSION:
        raise ValueError(f"{path} has checkpoint version {ck['version']}; this dnnod reads <= {VERSION}")
    if ck.get("kind", "localizer") == "localizer" and isinstance(ck.get("config"), dict):
        # Checkpoints written before DetectorNet had ``head_norm`` have the head without it.
        ck["config"].setdefault("head_norm", "none")
    return ck


def _describe(cfg: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.items()))


def build_model(ck: Dict[str, Any]) -> torch.nn.Module:
    kind = ck.get("kind", "localizer")
    if kind == "localizer":
        return DetectorNet(**ck["config"])
    if kind == "classifier":
        from .classifier import BoxClassifier
        return BoxClassifier(**ck["config"])
    raise ValueError(f"unknown checkpoint kind {kind!r}")


def load_weights_into(model: torch.nn.Module, path: PathLike) -> torch.nn.Module:
    """Load the weights of checkpoint ``path`` into an existing ``model``; a checkpoint of another
    architecture, class count or mask resolution gives a ``ValueError`` saying which."""
    ck = read_checkpoint(path)
    if hasattr(model, "config"):
        want, have = model.config(), ck.get("config", {})
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        if diff:
            raise ValueError(f"checkpoint {path} does not fit this model: "
                             + "; ".join(f"{k}: checkpoint {a!r}, model {b!r}" for k, (a, b) in diff.items()))
    model.load_state_dict(ck["state_dict"])
    _set_attrs(model, ck)
    return model


def _set_attrs(model: torch.nn.Module, ck: Dict[str, Any]) -> None:
    model.class_names = list(ck.get("class_names") or [])
    if ck.get("aspect_ratios") is not None:
        model.aspect_ratios = [float(a) for a in ck["aspect_ratios"]]
    model.meta = dict(ck.get("meta") or {})


def load_checkpoint(path: PathLike, device: Any = None, *, arch: Optional[str] = None,
                    num_classes: Optional[int] = None) -> torch.nn.Module:
    """Rebuild the model stored in ``path`` (eval mode, on ``device``), with ``class_names``,
    ``aspect_ratios`` and ``meta`` attributes. ``arch`` / ``num_classes``, when given, must match."""
    ck = read_checkpoint(path)
    cfg = ck.get("config", {})
    if arch is not None and cfg.get("arch") != arch:
        raise ValueError(f"checkpoint {path} is arch {cfg.get('arch')!r}, not {arch!r}")
    if num_classes is not None and cfg.get("num_classes") != num_classes:
        raise ValueError(f"checkpoint {path} has {cfg.get('num_classes')} classes, not {num_classes}")
    try:
        model = build_model(ck)
        model.load_state_dict(ck["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise ValueError(f"checkpoint {path} ({_describe(cfg)}) does not match its stored "
                         f"config: {str(e).splitlines()[0][:300]}") from e
    _set_attrs(model, ck)
    return model.to(default_device(device)).eval()


def pretrained_names() -> List[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def load_pretrained(name: str = "shapes-tiny", device: Any = None) -> torch.nn.Module:
    """A shipped, trained network: ``"shapes-tiny"`` or ``"pennfudan-tiny"`` (see
    ``dnnod/weights/README.md`` for how each was trained and its measured AP). Returns a
    ``DetectorNet`` in eval mode with ``class_names`` and ``aspect_ratios`` set."""
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"no pretrained weights named {name!r}; available: {pretrained_names()}")
    return load_checkpoint(path, device=device)


def kmeans_aspect_ratios(boxes: torch.Tensor, k: int = 10, seed: int = 0) -> List[float]:
    """k aspect ratios (w/h) from k-means on log(w/h) of training boxes (paper Sec. 5.2), as plain
    floats for the checkpoint; the one implementation is ``dnnod.localize.kmeans_aspect_ratios``."""
    from .localize import kmeans_aspect_ratios as km
    return [float(v) for v in torch.as_tensor(km(boxes, k=k, seed=seed)).flatten().tolist()]
