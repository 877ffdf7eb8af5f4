"""Generated shapes scenes (circles, squares, triangles on textured backgrounds): the default
dataset, made by the package itself so that everything runs offline."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .datasets import Item, PathLike, Target, _Base, _target, _write_voc_xml

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
