"""Data: datasets, the training-window sampler, the fixed splits and the downloads.

- :mod:`~dnnod.data.shapes` — generated shapes scenes, the default dataset (offline);
- :mod:`~dnnod.data.datasets` — PASCAL VOC folders and Penn-Fudan read from disk;
- :mod:`~dnnod.data.sampler` — the training windows and their mask targets (paper Sec. 4);
- :mod:`~dnnod.data.fetch` — the data root (``$DNNOD_DATA``) and resumable downloads;
- ``splits/`` — the Penn-Fudan train / test split used throughout the book.

Every dataset yields ``(image uint8 [3, H, W], target)`` with ``target["boxes"]`` a
``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
"""
from __future__ import annotations


from .datasets import VOC_CLASSES, PennFudanDataset, VOCDataset, _Base, pennfudan_split, read_image
from .fetch import DATASETS, data_root, download
from .sampler import ClassifierSampler, ImageBank, LocalizerSampler
from .shapes import SHAPE_CLASSES, ShapesDataset

__all__ = ["ClassifierSampler", "DATASETS", "ImageBank", "LocalizerSampler", "PennFudanDataset",
           "SHAPE_CLASSES", "ShapesDataset", "VOCDataset", "VOC_CLASSES", "data_root", "download",
           "make_dataset", "pennfudan_split", "read_image"]


def make_dataset(name: str, split: str, root=None, **kw) -> _Base:
    """Dataset by name for the CLI/trainer: ``shapes`` (split train/val/test), ``pennfudan``
    (train/test; val = test is not used for training), ``voc`` (root + image set name)."""
    if name == "shapes":
        return ShapesDataset(split=split, **kw)
    if name == "pennfudan":
        return PennFudanDataset(root=root, split=split)
    if name == "voc":
        if root is None:
            raise ValueError("--data voc needs --root pointing at a VOC-layout folder")
        return VOCDataset(root, image_set=split, **kw)
    raise ValueError(f"unknown dataset {name!r}; choose shapes, voc or pennfudan")
