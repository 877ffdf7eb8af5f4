"""Datasets read from files: any PASCAL VOC folder and Penn-Fudan (the generated shapes are in
:mod:`dnnod.data.shapes`, the data root and downloads in :mod:`dnnod.data.fetch`).

Every dataset returns torchvision-style items::

    (image uint8 [3, H, W], {"boxes": float32 [N, 4] xyxy (continuous pixel coordinates),
                             "labels": int64 [N] (1-based; 0 is background),
                             "difficult": bool [N], "image_id": str})

Bad input policy (applies to every reader here):
  * a missing folder / file -> ``FileNotFoundError`` naming it;
  * a corrupt or truncated image, malformed XML or annotation text -> ``ValueError`` naming the file;
  * a box partly outside the image is **clipped with a warning** (annotation tools routinely
    write x2 = width + 1); a box with x2 <= x1 or y2 <= y1 (before or after clipping) is
    **rejected** with a ``ValueError`` naming the file;
  * an image with no objects is kept (it is a valid negative image for VOC evaluation) but
    ``skip_empty=True`` drops it with a warning.
"""
from __future__ import annotations

import os
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .fetch import data_root

Target = Dict[str, object]
Item = Tuple[torch.Tensor, Target]
PathLike = Union[str, os.PathLike]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------
def read_image(path: PathLike) -> torch.Tensor:
    """Read an image file as RGB ``uint8 [3, H, W]``; corrupt or truncated files raise a
    ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: corrupt or truncated ({e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _clean_boxes(boxes: np.ndarray, width: int, height: int, source: Path) -> np.ndarray:
    """Clip boxes to the image (warning) and reject empty / inverted ones (ValueError)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | ~np.isfinite(boxes).all(1)
    if bad.any():
        raise ValueError(f"{source}: box {boxes[bad][0].tolist()} has x2 <= x1 or y2 <= y1")
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    if (clipped != boxes).any():
        warnings.warn(f"{source}: {int((clipped != boxes).any(1).sum())} box(es) extend outside "
                      f"the {width}x{height} image; clipped to it", stacklevel=3)
        bad = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        if bad.any():
            raise ValueError(f"{source}: box {boxes[bad][0].tolist()} lies entirely outside the "
                             f"{width}x{height} image")
    return clipped


def _target(boxes, labels, difficult, image_id: str) -> Target:
    return {"boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1)),
            "image_id": image_id}


class _Base(torch.utils.data.Dataset):
    class_names: Tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def targets(self) -> List[Target]:
        """All annotations without decoding images (fast; used for k-means and evaluation)."""
        return [self.target(i) for i in range(len(self))]

    def target(self, i: int) -> Target:  # pragma: no cover - overridden
        return self[i][1]


def _write_voc_xml(path: Path, filename: str, width: int, height: int, boxes, names, difficult) -> None:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = filename
    size = ET.SubElement(ann, "size")
    for k, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    for b, name, diff in zip(boxes.tolist(), names, difficult.tolist()):
        o = ET.SubElement(ann, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "difficult").text = str(int(diff))
        bb = ET.SubElement(o, "bndbox")
        # VOC is 1-based and inclusive: continuous [x1, x2] -> pixels x1 + 1 .. x2
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (b[0] + 1, b[1] + 1, b[2], b[3])):
            ET.SubElement(bb, k).text = f"{v:.2f}".rstrip("0").rstrip(".")
    ET.ElementTree(ann).write(path)


# --------------------------------------------------------------------------------------------
# PASCAL VOC layout
# --------------------------------------------------------------------------------------------
class VOCDataset(_Base):
    """Any folder in PASCAL VOC layout (Annotations/*.xml, JPEGImages/*, ImageSets/Main/*.txt):
    VOC2007/2012, ``write_voc`` output, or e.g. the raccoon data set.

    ``classes``: class names (label k+1 = classes[k]); default the 20 VOC classes if the folder
    uses them, else every name found in the annotations, sorted. Objects of other classes are
    dropped. ``image_set=None`` lists every XML in Annotations/.
    """

    def __init__(self, root: PathLike, image_set: Optional[str] = "trainval",
                 classes: Optional[Sequence[str]] = None, skip_empty: bool = False,
                 ids: Optional[Sequence[str]] = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC folder not found: {self.root}")
        ann = self.root / "Annotations"
        if not ann.is_dir():
            raise FileNotFoundError(f"not a VOC folder (no Annotations/): {ann}")
        if ids is not None:
            self.ids = [str(i) for i in ids]
        elif image_set is None:
            self.ids = sorted(p.stem for p in ann.glob("*.xml"))
        else:
            f = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
            if not f.is_file():
                avail = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt")) \
                    if (self.root / "ImageSets" / "Main").is_dir() else []
                raise FileNotFoundError(f"image set file not found: {f} (available: {avail}; "
                                        "pass image_set=None for every annotation)")
            self.ids = [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()]
        self._parsed = {i: self._parse(i) for i in self.ids}
        if classes is None:
            names = sorted({n for p in self._parsed.values() for n in p["names"]})
            classes = VOC_CLASSES if names and set(names) <= set(VOC_CLASSES) and len(names) > 3 else names
        self.class_names = tuple(classes)
        if not self.class_names:
            raise ValueError(f"{self.root}: no object classes found")
        if skip_empty:
            keep = [i for i in self.ids if any(n in self.class_names for n in self._parsed[i]["names"])]
            if len(keep) < len(self.ids):
                warnings.warn(f"{self.root}: skipped {len(self.ids) - len(keep)} image(s) without objects")
            self.ids = keep

    def _parse(self, iid: str) -> dict:
        path = self.root / "Annotations" / f"{iid}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        try:
            tree = ET.parse(path).getroot()
            fname = tree.findtext("filename") or f"{iid}.jpg"
            w = int(float(tree.find("size").findtext("width")))
            h = int(float(tree.find("size").findtext("height")))
            names, boxes, diff = [], [], []
            for o in tree.iter("object"):
                bb = o.find("bndbox")
                names.append(o.findtext("name").strip())
                # VOC is 1-based inclusive: pixel xmin..xmax -> continuous [xmin-1, xmax]
                boxes.append([float(bb.findtext("xmin")) - 1, float(bb.findtext("ymin")) - 1,
                              float(bb.findtext("xmax")), float(bb.findtext("ymax"))])
                diff.append(int(float(o.findtext("difficult") or 0)) == 1)
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"malformed VOC annotation {path}: {e}") from e
        boxes_a = _clean_boxes(np.array(boxes).reshape(-1, 4), w, h, path) if boxes else np.zeros((0, 4))
        return {"file": fname, "width": w, "height": h, "names": names, "boxes": boxes_a, "difficult": diff}

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, i: int) -> Target:
        iid = self.ids[i]
        p = self._parsed[iid]
        keep = [k for k, n in enumerate(p["names"]) if n in self.class_names]
        labels = [self.class_names.index(p["names"][k]) + 1 for k in keep]
        return _target(p["boxes"][keep], labels, [p["difficult"][k] for k in keep], iid)

    def image_path(self, i: int) -> Path:
        iid = self.ids[i]
        p = self.root / "JPEGImages" / self._parsed[iid]["file"]
        if not p.is_file():
            cands = list((self.root / "JPEGImages").glob(f"{iid}.*"))
            if cands:
                return cands[0]
        return p

    def __getitem__(self, i: int) -> Item:
        img = read_image(self.image_path(i))
        return img, self.target(i)


# --------------------------------------------------------------------------------------------
# Penn-Fudan
# --------------------------------------------------------------------------------------------
_PF_BOX = re.compile(r"Bounding box for object \d+ .*?:\s*\((\d+),\s*(\d+)\)\s*-\s*\((\d+),\s*(\d+)\)")
_PF_SIZE = re.compile(r"Image size \(X x Y x C\)\s*:\s*(\d+)\s*x\s*(\d+)")
_SPLITS = Path(__file__).with_name("splits")


#: Images of the train split held out for choosing recipes (``"val"``): its last 20, PennPed00027-46,
#: photos of the same source as the test split (PennPed00047-96). ``"fit"`` is the other 100.
PENNFUDAN_VAL_IMAGES = 20


def pennfudan_split(split: str) -> List[str]:
    """Image ids of the fixed split kept in ``dnnod/splits/pennfudan_<split>.txt``: train = the
    first 120 images in sorted file-name order, test = the last 50. ``"fit"`` and ``"val"`` carve
    train into 100 images to train on and 20 to choose settings on (never the test split)."""
    if split not in ("train", "test", "fit", "val"):
        raise ValueError(f"Penn-Fudan split must be 'train', 'fit', 'val', 'test' or 'all'; got {split!r}")
    f = _SPLITS / f"pennfudan_{'test' if split == 'test' else 'train'}.txt"
    ids = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
    if split == "fit":
        return ids[:-PENNFUDAN_VAL_IMAGES]
    if split == "val":
        return ids[-PENNFUDAN_VAL_IMAGES:]
    return ids


class PennFudanDataset(_Base):
    """Penn-Fudan pedestrians in the official layout (PNGImages/, PedMasks/, Annotation/*.txt,
    1-based inclusive pixel boxes), one class ``"person"``.

    ``root`` defaults to ``data_root()/PennFudanPed``; ``ids`` (file stems) or ``split``
    (``"train"`` = ``"fit"`` + ``"val"``, ``"test"`` or ``"all"``) select images.
    """

    class_names = ("person",)

    def __init__(self, root: Optional[PathLike] = None, ids: Optional[Sequence[str]] = None,
                 split: str = "all") -> None:
        self.root = Path(root) if root is not None else data_root() / "PennFudanPed"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Penn-Fudan folder not found: {self.root} (set DNNOD_DATA, pass root=, or call "
                "dnnod.data.download('pennfudan'))")
        for sub in ("PNGImages", "Annotation"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"Penn-Fudan layout needs {self.root / sub}")
        if ids is None:
            ids = sorted(p.stem for p in (self.root / "PNGImages").glob("*.png")) if split == "all" \
                else pennfudan_split(split)
        self.ids = list(ids)
        self._parsed = {i: self._parse(i) for i in self.ids}

    def _parse(self, iid: str) -> dict:
        path = self.root / "Annotation" / f"{iid}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        text = path.read_text(errors="replace")
        size = _PF_SIZE.search(text)
        if size is None:
            raise ValueError(f"malformed Penn-Fudan annotation {path}: no 'Image size' line")
        w, h = int(size.group(1)), int(size.group(2))
        raw = [[float(v) for v in m] for m in _PF_BOX.findall(text)]
        n_decl = re.search(r"Objects with ground truth\s*:\s*(\d+)", text)
        if n_decl is None or int(n_decl.group(1)) != len(raw):
            raise ValueError(f"malformed Penn-Fudan annotation {path}: declared "
                             f"{n_decl.group(1) if n_decl else '?'} objects, found {len(raw)} boxes")
        # 1-based inclusive pixels -> continuous edges
        boxes = np.array([[b[0] - 1, b[1] - 1, b[2], b[3]] for b in raw]).reshape(-1, 4)
        return {"width": w, "height": h, "boxes": _clean_boxes(boxes, w, h, path)}

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, i: int) -> Target:
        p = self._parsed[self.ids[i]]
        n = len(p["boxes"])
        return _target(p["boxes"], [1] * n, [False] * n, self.ids[i])

    def __getitem__(self, i: int) -> Item:
        img = read_image(self.root / "PNGImages" / f"{self.ids[i]}.png")
        t = self.target(i)
        p = self._parsed[self.ids[i]]
        if img.shape[1:] != (p["height"], p["width"]):
            raise ValueError(f"{self.root / 'PNGImages' / (self.ids[i] + '.png')}: image is "
                             f"{img.shape[2]}x{img.shape[1]} but its annotation says {p['width']}x{p['height']}")
        return img, t
