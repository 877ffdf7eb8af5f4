"""Datasets — generated shapes, any PASCAL VOC folder, Penn-Fudan — and the data root.

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

import hashlib
import math
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

Target = Dict[str, object]
Item = Tuple[torch.Tensor, Target]
PathLike = Union[str, os.PathLike]

__all__ = ["data_root", "download", "ShapesDataset", "VOCDataset", "PennFudanDataset",
           "pennfudan_split", "read_image", "DATASETS", "VOC_CLASSES"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


# --------------------------------------------------------------------------------------------
# data root and downloads
# --------------------------------------------------------------------------------------------
def data_root() -> Path:
    """``$DNNOD_DATA`` if set, else a per-user cache folder (``$XDG_CACHE_HOME/dnnod`` on Linux,
    ``~/Library/Caches/dnnod`` on macOS, ``%LOCALAPPDATA%\\dnnod`` on Windows)."""
    env = os.environ.get("DNNOD_DATA")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "dnnod"


#: name -> list of (url, file name, md5, folder the archive unpacks to). md5 values are the
#: ones torchvision publishes for the same archives.
DATASETS: Dict[str, List[Tuple[str, str, Optional[str], str]]] = {
    "voc2007": [
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
         "VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64", "VOCdevkit/VOC2007"),
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
         "VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f", "VOCdevkit/VOC2007"),
    ],
    "voc2012": [
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
         "VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012"),
    ],
    "pennfudan": [
        # No published checksum exists for this archive (and we could not fetch it offline to
        # compute one): md5 None skips the check; the reader then validates every annotation.
        ("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip", "PennFudanPed.zip",
         None, "PennFudanPed"),
    ],
}


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: Optional[str], opener: Optional[Callable] = None,
           progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request,
    then verify the md5 (a mismatch deletes the file and raises)."""
    from tqdm.auto import tqdm
    opener = opener or urllib.request.urlopen
    if dest.exists() and (md5 is None or _md5(dest) == md5):
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = opener(req, timeout=60)
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(
            f"could not download {url} ({e}). Are you offline? Download it by hand into "
            f"{dest.parent} or set DNNOD_DATA to a folder that already holds the data.") from e
    with resp:
        status = getattr(resp, "status", None) or getattr(resp, "code", 200)
        if start and status != 206:       # the server ignored Range: start over
            start = 0
        total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
        total = int(total) + start if total else None
        with open(part, "ab" if start else "wb") as f, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                     disable=not progress) as bar:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    if md5 is not None:
        got = _md5(part)
        if got != md5:
            part.unlink()
            raise ValueError(f"checksum mismatch for {dest.name} from {url}: md5 {got}, expected "
                             f"{md5}; the partial file was deleted, run download() again")
    os.replace(part, dest)
    return dest


def download(name: str, root: Optional[PathLike] = None, *, opener: Optional[Callable] = None,
             progress: bool = True, extract: bool = True) -> Path:
    """Download and unpack ``"voc2007"``, ``"voc2012"`` or ``"pennfudan"`` into ``root``
    (default :func:`data_root`); resumable, md5-verified, with a progress bar. Returns the
    dataset folder. Meant for Colab: nothing else in dnnod calls it."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    root = Path(root) if root is not None else data_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for url, fname, md5, sub in DATASETS[name]:
        path = _fetch(url, root / fname, md5, opener=opener, progress=progress)
        folder = root / sub
        if extract:
            shutil.unpack_archive(str(path), str(root))
    return folder


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


# --------------------------------------------------------------------------------------------
# generated shapes
# --------------------------------------------------------------------------------------------
SHAPE_CLASSES = ("circle", "square", "triangle")
#: Object sides are drawn from [MIN_SIDE, MAX_SIDE] × the image side (log-uniform).
MIN_SIDE, MAX_SIDE = 0.08, 0.9
#: Every object keeps at least this fraction of its own pixels visible (later objects on top).
MIN_VISIBLE = 0.6
#: Distractor dots are at most this wide (× the image side): half the smallest object, so a
#: dot is never a circle of an object's size left without a label.
MAX_DOT = MIN_SIDE / 2
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


class ShapesDataset(_Base):
    """Deterministic generated images of circles, squares and triangles (paper's problems made
    visible: several instances of a class, touching and overlapping objects, objects from 8% to
    90% of the image side, textured clutter and distractor strokes that belong to no class).

    Every labelled object keeps at least ``MIN_VISIBLE`` (60%) of its pixels visible, and
    distractor dots are at most ``MAX_DOT`` (4%) of the side wide, half the smallest object: no
    unlabelled object-sized circle, no labelled sliver.

    Image ``i`` of a split depends only on ``(seed, split, i)``, so any subset is reproducible.
    """

    class_names = SHAPE_CLASSES

    def __init__(self, split: str = "train", num_images: Optional[int] = None,
                 image_size: int = 192, seed: int = 0, min_objects: int = 1,
                 max_objects: int = 6, cache: bool = True) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split must be one of {tuple(_SPLIT_OFFSET)}; got {split!r}")
        if num_images is None:
            num_images = {"train": 1000, "val": 100, "test": 200}[split]
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer; got {num_images!r}")
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an integer >= 32; got {image_size!r}")
        if not 1 <= min_objects <= max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        self.split, self.num_images, self.image_size, self.seed = split, num_images, image_size, seed
        self.min_objects, self.max_objects = min_objects, max_objects
        self._cache: Optional[Dict[int, Item]] = {} if cache else None

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, i: int) -> Item:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        if self._cache is not None and i in self._cache:
            img, t = self._cache[i]
            return img.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in t.items()}
        item = self._render(i)
        if self._cache is not None:
            self._cache[i] = item
            return self.__getitem__(i)
        return item

    def target(self, i: int) -> Target:
        return self[i][1]

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_OFFSET[self.split], i])

    def object_masks(self, i: int) -> torch.Tensor:
        """bool ``[N, S, S]``: the pixels each object of image ``i`` covers when drawn (fill and
        outline, before later objects are drawn over it), in the order of its boxes."""
        n = len(self.target(i)["boxes"])               # validates i
        if n == 0:
            return torch.zeros(0, self.image_size, self.image_size, dtype=torch.bool)
        return torch.from_numpy(np.stack(self._render(i % len(self), masks=True)))

    def _render(self, i: int, masks: bool = False):
        S = self.image_size
        rng = self._rng(i)
        img = _textured_background(rng, S)
        draw = ImageDraw.Draw(img)
        _distractors(rng, draw, S)
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        boxes: List[List[float]] = []
        labels: List[int] = []
        visible: List[Tuple[np.ndarray, int]] = []   # per object: visible pixels, all its pixels
        shapes: List[np.ndarray] = []
        for _ in range(n):
            for _attempt in range(30):
                # log-uniform size: small objects are as frequent as large ones
                side = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE)))) * S
                if n > 2:
                    side = min(side, 0.6 * S)
                # place next to an earlier object one time in three: touching instances
                if boxes and rng.random() < 0.35:
                    ox1, oy1, ox2, oy2 = boxes[int(rng.integers(len(boxes)))]
                    side = min(side, 1.5 * max(ox2 - ox1, 8.0))
                    k = int(rng.integers(4))
                    gap = float(rng.uniform(-0.1, 0.02)) * side
                    if k == 0:
                        x1, y1 = ox2 + gap, rng.uniform(oy1 - side / 2, oy2 - side / 2)
                    elif k == 1:
                        x1, y1 = ox1 - side - gap, rng.uniform(oy1 - side / 2, oy2 - side / 2)
                    elif k == 2:
                        x1, y1 = rng.uniform(ox1 - side / 2, ox2 - side / 2), oy2 + gap
                    else:
                        x1, y1 = rng.uniform(ox1 - side / 2, ox2 - side / 2), oy1 - side - gap
                else:
                    x1, y1 = rng.uniform(0, S - side), rng.uniform(0, S - side)
                box = [float(x1), float(y1), float(x1 + side), float(y1 + side)]
                if box[0] < 0 or box[1] < 0 or box[2] > S or box[3] > S:
                    continue
                if _too_hidden(box, boxes):
                    continue
                cls = int(rng.integers(len(SHAPE_CLASSES)))
                style = _shape_style(rng, cls)
                # The box test above is blind to a triangle's or circle's empty corners, so the
                # shapes' pixels decide too: no earlier object may keep less than
                # MIN_VISIBLE of its pixels visible (a barely visible sliver labelled as an
                # object is label noise no detector can learn from).
                shape = np.asarray(_shape_mask(S, cls, box, style))
                if any((vis & ~shape).sum() < MIN_VISIBLE * full for vis, full in visible):
                    continue
                visible = [(vis & ~shape, full) for vis, full in visible]
                visible.append((shape, int(shape.sum())))
                shapes.append(shape)
                _paint(draw, cls, box, **style)
                boxes.append(box)
                labels.append(cls + 1)
                break
        if masks:
            return shapes
        if rng.random() < 0.5:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.8))))
        arr = np.asarray(img, dtype=np.uint8).copy()
        noise = rng.normal(0, rng.uniform(2, 8), arr.shape)
        arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
        image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return image, _target(boxes, labels, [False] * len(boxes), f"{self.split}_{i:06d}")

    def write_voc(self, root: PathLike, image_set: Optional[str] = None) -> Path:
        """Write this split in PASCAL VOC layout (JPEGImages/*.png, Annotations/*.xml with 1-based
        coordinates, ImageSets/Main/<split>.txt) so any VOC tool (and :class:`VOCDataset`) reads it."""
        root = Path(root)
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ids = []
        for k in range(len(self)):
            img, t = self[k]
            iid = t["image_id"]
            ids.append(iid)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "JPEGImages" / f"{iid}.png")
            _write_voc_xml(root / "Annotations" / f"{iid}.xml", f"{iid}.png", img.shape[2],
                           img.shape[1], t["boxes"], [self.class_names[l - 1] for l in t["labels"]],
                           t["difficult"])
        (root / "ImageSets" / "Main" / f"{image_set or self.split}.txt").write_text("\n".join(ids) + "\n")
        return root


def _too_hidden(box, boxes) -> bool:
    """Reject a placement that would cover more than 40% of an earlier object's box (drawn
    later = on top) or sit more than 60% inside one: overlap yes, invisible objects no. The
    objects' pixels are checked as well (``MIN_VISIBLE`` in ``ShapesDataset._render``)."""
    a = (box[2] - box[0]) * (box[3] - box[1])
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        if inter / ((b[2] - b[0]) * (b[3] - b[1])) > 0.4 or inter / a > 0.6:
            return True
    return False


def _rand_color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> Tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _textured_background(rng: np.random.Generator, S: int) -> Image.Image:
    """Smooth colour gradient + low-frequency noise + stripes or blotches: clutter, not objects."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    c0 = rng.uniform(40, 215, 3)
    c1 = rng.uniform(40, 215, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    arr = c0 * (1 - t) + c1 * t
    # low-frequency noise: upsampled coarse random grid
    g = int(rng.integers(3, 9))
    coarse = rng.normal(0, rng.uniform(5, 25), (g, g, 3)).astype(np.float32)
    low = np.asarray(Image.fromarray(coarse[..., 0]).resize((S, S), Image.BICUBIC))[..., None]
    arr = arr + low * np.array([1.0, 0.8, 1.2])
    if rng.random() < 0.5:
        f = rng.uniform(4, 16)
        ang = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * f * 2 * np.pi)
        arr = arr + stripes[..., None] * rng.uniform(5, 20)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, S: int) -> None:
    """Lines, arcs, crosses and dots that belong to no class (clutter the net must ignore)."""
    for _ in range(int(rng.integers(2, 9))):
        kind = int(rng.integers(4))
        col = _rand_color(rng)
        x, y = rng.uniform(0, S, 2)
        r = rng.uniform(0.03, 0.3) * S
        w = int(rng.integers(1, max(2, S // 48) + 1))
        if kind == 0:
            draw.line([float(x), float(y), *map(float, rng.uniform(0, S, 2))], fill=col, width=w)
        elif kind == 1:
            a0 = float(rng.uniform(0, 360))
            draw.arc([x - r, y - r, x + r, y + r], a0, a0 + float(rng.uniform(60, 200)), fill=col, width=w)
        elif kind == 2:
            draw.line([x - r / 2, y, x + r / 2, y], fill=col, width=w)
            draw.line([x, y - r / 2, x, y + r / 2], fill=col, width=w)
        else:
            # Dots up to MAX_DOT wide. (They were up to 10% of the side, wider than the
            # smallest objects: unlabelled circles the detector was right to find.)
            rr = r / 0.3 * MAX_DOT / 2
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=col)


def _shape_style(rng: np.random.Generator, cls: int) -> Dict[str, Any]:
    """Random colours (and a triangle's apex direction) of one object."""
    fill = _rand_color(rng)
    outline = _rand_color(rng) if rng.random() < 0.5 else None
    apex = int(rng.choice(4)) if cls == 2 else 0   # triangles point up, down, left or right
    return {"fill": fill, "outline": outline, "apex": apex}


def _paint(draw: ImageDraw.ImageDraw, cls: int, box: List[float], fill, outline, apex: int) -> None:
    """Draw shape ``cls`` filling ``box`` (its exact tight box) in ``fill`` / ``outline``."""
    x1, y1, x2, y2 = box
    w = max(1, int(round((x2 - x1) / 25)))
    # PIL fills pixel centres inside the shape: [x1, x2 - 1] covers the continuous box [x1, x2]
    px = [x1, y1, x2 - 1, y2 - 1]
    if cls == 0:
        draw.ellipse(px, fill=fill, outline=outline, width=w)
    elif cls == 1:
        draw.rectangle(px, fill=fill, outline=outline, width=w)
    else:
        if apex == 0:
            pts = [((x1 + x2) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)]
        elif apex == 1:
            pts = [((x1 + x2) / 2, y2 - 1), (x1, y1), (x2 - 1, y1)]
        elif apex == 2:
            pts = [(x1, (y1 + y2) / 2), (x2 - 1, y1), (x2 - 1, y2 - 1)]
        else:
            pts = [(x2 - 1, (y1 + y2) / 2), (x1, y1), (x1, y2 - 1)]
        draw.polygon(pts, fill=fill, outline=outline)


def _shape_mask(S: int, cls: int, box: List[float], style: Dict[str, Any]) -> np.ndarray:
    """bool ``[S, S]``: the pixels the object covers when drawn (fill and outline)."""
    m = Image.new("1", (S, S), 0)
    _paint(ImageDraw.Draw(m), cls, box, fill=1, outline=None if style["outline"] is None else 1,
           apex=style["apex"])
    return np.asarray(m, dtype=bool)


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


def pennfudan_split(split: str) -> List[str]:
    """Image ids of the fixed split kept in ``dnnod/splits/pennfudan_<split>.txt``: train = the
    first 120 images in sorted file-name order, test = the last 50."""
    if split not in ("train", "test"):
        raise ValueError(f"Penn-Fudan split must be 'train', 'test' or 'all'; got {split!r}")
    f = _SPLITS / f"pennfudan_{split}.txt"
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]


class PennFudanDataset(_Base):
    """Penn-Fudan pedestrians in the official layout (PNGImages/, PedMasks/, Annotation/*.txt,
    1-based inclusive pixel boxes), one class ``"person"``.

    ``root`` defaults to ``data_root()/PennFudanPed``; ``ids`` (file stems) or ``split``
    (``"train"``, ``"test"`` or ``"all"``) select images.
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


def make_dataset(name: str, split: str, root: Optional[PathLike] = None, **kw) -> _Base:
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
