"""Measure a trained network the way dnnod/weights/README.md records it.

    python dnnod/weights/measure.py NAME CHECKPOINT --data shapes|pennfudan [--images N]

Runs ``dnnod.detect`` (default settings: 3 scales, refinement, threshold 0.5) on the test split,
prints the per-class VOC07 AP table, and merges the result into ``dnnod/weights/eval.json``
(``tests/test_weights.py`` re-measures it on the same whole split).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dnnod.checkpoint import load_checkpoint
from dnnod.data import make_dataset
from dnnod.evaluate import evaluate_detections, format_ap_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, choices=("shapes", "pennfudan"))
    p.add_argument("--images", type=int, default=None, help="test images (shapes: split size)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="quick check: first N images, no record")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from dnnod.detect import detect
    kw = {"num_images": a.images} if a.data == "shapes" and a.images else {}
    ds = make_dataset(a.data, "test", None, **kw)
    model = load_checkpoint(a.checkpoint, device="cpu")
    dets, gts = [], []
    t0 = time.time()
    n = len(ds) if a.limit is None else min(a.limit, len(ds))
    for i in range(n):
        img, t = ds[i]
        d = detect(model, img, device="cpu")
        dets.append({k: d[k].cpu() for k in ("boxes", "scores", "labels")})
        gts.append(t)
    secs = (time.time() - t0) / n
    labels = list(range(1, model.num_classes + 1))
    full = evaluate_detections(dets, gts, labels=labels)
    names = list(model.class_names)
    print(f"== {a.name}: {a.data} test, {n} images, {secs:.2f} s/image")
    print(format_ap_table(full, names))
    if a.limit is not None:
        return
    f = HERE / "eval.json"
    rec = json.loads(f.read_text()) if f.is_file() else {}
    rec[a.name] = {
        "data": a.data, "class_names": names, "detect_kwargs": {},
        "test": {"split": "test", "images": len(ds), "dataset_kwargs": kw,
                 "ap": {names[c - 1]: v for c, v in full["ap"].items()}, "map": full["map"],
                 "seconds_per_image": round(secs, 3)},
        "meta": {k: v for k, v in model.meta.items() if k != "log_epochs"},
    }
    f.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
