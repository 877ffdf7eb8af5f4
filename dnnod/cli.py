"""The ``dnnod`` command: ``train``, ``detect``, ``evaluate``.

    dnnod train --data shapes --out runs/shapes ...           (see ``dnnod train -h``)
    dnnod detect IMG|DIR... --weights shapes-tiny --out DIR     (boxes drawn + detections.json)
    dnnod evaluate --data pennfudan --split test --weights pennfudan-tiny   (per-class AP table)

``--weights`` takes a checkpoint path or the name of shipped weights (``shapes-tiny``,
``pennfudan-tiny``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]


def _load(weights: str, device=None):
    from .checkpoint import WEIGHTS_DIR, load_checkpoint, load_pretrained, pretrained_names
    p = Path(weights)
    if p.is_file():
        return load_checkpoint(p, device=device)
    if weights in pretrained_names():
        return load_pretrained(weights, device=device)
    raise FileNotFoundError(f"--weights {weights!r}: no such file and no shipped weights of that name "
                            f"(shipped: {pretrained_names()})")


def _load_classifier(a, localizer):
    """``--classifier``: the Sec. 5.2 box classifier, checked against the localizer's classes."""
    if not a.classifier:
        return None
    from .classifier import BoxClassifier
    cls = _load(a.classifier, a.device)
    if not isinstance(cls, BoxClassifier):
        raise ValueError(f"--classifier {a.classifier!r} is a {type(cls).__name__} checkpoint, "
                         "not a box classifier (train one with dnnod train --task classifier)")
    names, cnames = list(getattr(localizer, "class_names", []) or []), list(cls.class_names)
    if cls.num_classes != localizer.num_classes or (names and cnames and names != cnames):
        raise ValueError(f"--classifier {a.classifier!r} classifies {cnames or cls.num_classes}, "
                         f"the localizer detects {names or localizer.num_classes}")
    return cls


def _detect_kwargs(a, localizer) -> dict:
    return {"scales": a.scales, "refine": not a.no_refine, "threshold": a.threshold,
            "nms_iou": a.nms_iou, "final_nms_iou": a.final_nms_iou, "top_k": a.top_k,
            "device": a.device,
            "classifier": _load_classifier(a, localizer)}


def _add_detect_opts(p: argparse.ArgumentParser) -> None:
    from .detect import DETECT_TOP_K, FINAL_NMS_IOU
    p.add_argument("--weights", required=True, help="checkpoint file or shipped name")
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--nms-iou", type=float, default=0.5, help="per-scale NMS overlap")
    p.add_argument("--final-nms-iou", type=float, default=FINAL_NMS_IOU,
                   help="overlap of the final NMS over all scales")
    p.add_argument("--top-k", type=int, default=DETECT_TOP_K,
                   help=f"boxes kept per scale and class (default {DETECT_TOP_K}; the paper: 5)")
    p.add_argument("--classifier", default=None,
                   help="box classifier checkpoint (dnnod train --task classifier) that prunes "
                        "candidates, paper Sec. 5.2")
    p.add_argument("--device", default=None)


#: Long side (px) of the drawings ``dnnod detect`` writes: a larger photo is drawn on a reduced copy.
DRAW_LONG_SIDE = 2048
#: Files a folder given to ``dnnod detect`` contributes (by extension, case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")


def _draw(image, det, class_names, path: Path, min_score: float, scale=(1.0, 1.0)) -> None:
    """Draw boxes with PIL (kept dependency-free; the book uses dnnod.viz.plot). ``image`` may be a
    reduced copy of the detected one, ``scale = (sy, sx)`` its size relative to it."""
    from PIL import Image, ImageDraw
    im = Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy())
    dr = ImageDraw.Draw(im)
    colors = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
    sy, sx = scale
    for b, s, l in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        if s < min_score:
            continue
        c = colors[(l - 1) % len(colors)]
        b = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
        dr.rectangle(b, outline=c, width=max(2, round(max(im.size) / 250)))
        name = class_names[l - 1] if class_names and 0 < l <= len(class_names) else str(l)
        dr.text((b[0] + 3, b[1] + 2), f"{name} {s:.2f}", fill=c)
    im.save(path)


def _image_paths(sources: Sequence[str]):
    """The images of ``dnnod detect``'s arguments: files as given, folders' image files sorted."""
    for src in sources:
        p = Path(src)
        if p.is_dir():
            yield from sorted(str(q) for q in p.iterdir()
                              if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        else:
            yield str(src)


class _JsonMap:
    """A JSON object ``{key: value}`` written one entry at a time and valid after each one (the
    closing brace is rewritten after every entry), so an interrupted run keeps its results."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w")
        self.f.write("{")
        self.n, self.end = 0, self.f.tell()
        self.f.write("\n}\n")
        self.f.flush()

    def add(self, key: str, value) -> None:
        self.f.seek(self.end)
        self.f.write(("," if self.n else "") + "\n" + json.dumps(key) + ": " + json.dumps(value))
        self.n += 1
        self.end = self.f.tell()
        self.f.write("\n}\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def run_detect(a, on_image=None) -> int:
    """``dnnod detect``: the images of ``a.images`` (files and folders) one at a time — each
    decoded at the resolution the network needs, detected, drawn, and its entry appended to
    ``detections.json`` — with a progress bar. An unreadable, truncated or over-limit file is
    reported on one line and skipped; the exit status is then 1. ``on_image(i)`` is called after
    the i-th image (tests)."""
    import os
    old_limit = os.environ.get("DNNOD_MAX_PIXELS")
    if getattr(a, "max_pixels", None):
        os.environ["DNNOD_MAX_PIXELS"] = str(int(a.max_pixels))
    try:
        return _run_detect(a, on_image)
    finally:
        if old_limit is None:
            os.environ.pop("DNNOD_MAX_PIXELS", None)
        else:
            os.environ["DNNOD_MAX_PIXELS"] = old_limit


def _run_detect(a, on_image=None) -> int:
    from tqdm.auto import tqdm
    from .detect import detect
    from .image import load_pyramid
    from .multiscale import network_scale
    model = _load(a.weights, a.device)
    kwargs = _detect_kwargs(a, model)
    names = list(getattr(model, "class_names", []) or [])
    top = int(getattr(model, "input_size", 225))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list(_image_paths(a.images))
    if not paths:
        raise ValueError(f"no images in {list(a.images)} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    skipped = []
    js = _JsonMap(out / "detections.json")
    try:
        bar = tqdm(paths, unit="img", desc="dnnod detect", disable=None, file=sys.stderr)
        for i, src in enumerate(bar):
            try:
                pyr = load_pyramid(src, lambda hw: network_scale(hw, top, a.scales), top)
            except (ValueError, FileNotFoundError) as e:
                skipped.append(str(src))
                tqdm.write(f"dnnod detect: skipped {src}: {e}", file=sys.stderr)
                continue
            det = detect(model, pyr, **kwargs)
            stem = Path(src).stem
            if not getattr(a, "no_draw", False):
                preview, scale = pyr.finest_within(DRAW_LONG_SIDE)
                _draw(preview, det, names, out / f"{stem}_boxes.png", a.min_score, scale)
            dets = [{"box": b, "score": s, "label": l,
                     "class": names[l - 1] if 0 < l <= len(names) else str(l)}
                    for b, s, l in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                       det["labels"].tolist())]
            js.add(src, dets)
            tqdm.write(f"{src}: {len(dets)} detections -> {out / (stem + '_boxes.png')}")
            del pyr, det
            if on_image is not None:
                on_image(i)
    finally:
        js.close()
    if skipped:
        print(f"dnnod detect: {len(paths) - len(skipped)} of {len(paths)} images done, "
              f"{len(skipped)} skipped: {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0


def cmd_detect(a) -> int:
    return run_detect(a)


def cmd_evaluate(a) -> int:
    import torch
    from .data import make_dataset
    from .assess import evaluate_model
    from .evaluate import format_ap_table
    model = _load(a.weights, a.device)
    kw = {}
    if a.data == "shapes":
        kw = {"image_size": a.image_size, "seed": a.seed}
        if a.num_images:
            kw["num_images"] = a.num_images
    ds = make_dataset(a.data, a.split, a.root, **kw)
    if a.limit:
        sub = torch.utils.data.Subset(ds, list(range(min(a.limit, len(ds)))))
        sub.class_names = ds.class_names
        ds = sub
    res = evaluate_model(model, ds, use_07_metric=not a.all_points, iou_threshold=a.iou,
                         **_detect_kwargs(a, model))
    print(format_ap_table(res, list(getattr(model, "class_names", []) or ds.class_names)))
    print(f"{res['images']} images, {res['seconds_per_image']:.2f} s/image, AP@{a.iou} "
          f"({'all-point' if a.all_points else 'VOC07 11-point'})")
    if a.json:
        Path(a.json).write_text(json.dumps({"ap": {str(k): v for k, v in res["ap"].items()},
                                            "map": res["map"], "images": res["images"],
                                            "seconds_per_image": res["seconds_per_image"]}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .train import build_parser as train_parser
    p = argparse.ArgumentParser(prog="dnnod", description="DetectorNet (Szegedy et al., NeurIPS 2013)")
    sub = p.add_subparsers(dest="cmd", required=True)
    train_parser(sub.add_parser("train", help="train a localizer or classifier"))
    d = sub.add_parser("detect", help="detect objects in images, write drawings + JSON")
    d.add_argument("images", nargs="+", help="image files and/or folders of images")
    d.add_argument("--out", required=True)
    d.add_argument("--min-score", type=float, default=float("-inf"), help="only draw boxes above this score")
    d.add_argument("--no-draw", action="store_true", help="write detections.json only")
    d.add_argument("--max-pixels", type=float, default=None,
                   help="largest image decoded, in pixels (default: PIL's decompression-bomb "
                        "limit, about 179e6; also DNNOD_MAX_PIXELS)")
    _add_detect_opts(d)
    e = sub.add_parser("evaluate", help="VOC AP of a network on a dataset")
    e.add_argument("--data", choices=("shapes", "voc", "pennfudan"), default="shapes")
    e.add_argument("--root", default=None)
    e.add_argument("--split", default="test", help="shapes/pennfudan split or VOC image set")
    e.add_argument("--num-images", type=int, default=None)
    e.add_argument("--image-size", type=int, default=192)
    e.add_argument("--seed", type=int, default=0, help="shapes generator seed")
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    e.add_argument("--iou", type=float, default=0.5)
    e.add_argument("--all-points", action="store_true", help="all-point AP instead of VOC07 11-point")
    e.add_argument("--json", default=None, help="also write the result here")
    _add_detect_opts(e)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "train":
            from .train import TrainConfig, train
            s = train(TrainConfig.from_namespace(args))
            print(json.dumps({k: v for k, v in s.items() if k not in ("model", "epochs")}))
            return 0
        if args.cmd == "detect":
            return cmd_detect(args)
        return cmd_evaluate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"dnnod {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
