"""What union masks cannot separate: the perfect-mask pipeline on two objects of one class.

    python book/_tools/union_masks.py --scenes 40 --out dnnod/studies/results/ch09_union.json

Three kinds of generated scenes, each with two square objects of one class on a 192 × 192 image:
``apart`` (the boxes do not touch), ``overlapping`` (the second box covers a corner of the first)
and ``nested`` (the second box lies wholly inside the first). Every scene is run through
``dnnod.detect.detect`` (the book's defaults: 3 scales, refinement, final NMS) with the perfect
network, ``dnnod.predict.GroundTruthPredictor``, which answers every window with the exact Eq. 1
targets — the union of the two boxes in each of the five masks. The VOC2007 AP of each kind is
what the masks themselves allow: the network cannot do better than its targets. Chapter 9 reads
the file (its figure draws one scene of each kind live).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

KINDS = ("apart", "overlapping", "nested")
SIZE = 192


def scenes(kind: str, n: int, seed: int = 0, size: int = SIZE) -> List[torch.Tensor]:
    """``n`` box pairs ``[2, 4]`` (xyxy) of one kind; the first box is the larger one."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    g = torch.Generator().manual_seed(seed)

    def r(a: float, b: float) -> float:
        return float(a + (b - a) * torch.rand((), generator=g))

    out = []
    for _ in range(n):
        w1 = r(60, 110)
        x1, y1 = r(5, size - w1 - 5), r(5, size - w1 - 5)
        big = [x1, y1, x1 + w1, y1 + w1]
        if kind == "apart":
            w2 = r(30, 60)
            for tries in range(10_000):        # anywhere the two boxes keep a 4 px gap
                if tries and tries % 100 == 0:
                    w2 *= 0.9                   # no room for this size: a smaller second box
                x2, y2 = r(2, size - w2 - 2), r(2, size - w2 - 2)
                if (x2 > big[2] + 4 or x2 + w2 < big[0] - 4 or y2 > big[3] + 4
                        or y2 + w2 < big[1] - 4):
                    break
        elif kind == "overlapping":           # over the bottom-right corner, 30-60 % of its side in
            w2 = r(30, 60)
            x2 = min(big[2] - r(0.3, 0.6) * w2, size - w2 - 1)
            y2 = min(big[3] - r(0.3, 0.6) * w2, size - w2 - 1)
        else:                                 # nested: wholly inside, 2 px from its edges
            w2 = r(20, 0.5 * w1)
            x2, y2 = r(big[0] + 2, big[2] - w2 - 2), r(big[1] + 2, big[3] - w2 - 2)
        out.append(torch.tensor([big, [x2, y2, x2 + w2, y2 + w2]]))
    return out


def run_kind(kind: str, n: int, seed: int = 0, detect_kwargs: Optional[Dict] = None) -> Dict:
    from dnnod.detect import detect
    from dnnod.evaluate import evaluate_detections
    from dnnod.predict import GroundTruthPredictor

    image = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)   # the perfect network never looks at it
    gts = [{"boxes": b, "labels": torch.tensor([1, 1])} for b in scenes(kind, n, seed)]
    dets = []
    for gt in gts:
        res = detect(GroundTruthPredictor(gt["boxes"], gt["labels"], num_classes=1), image,
                     **(detect_kwargs or {}))
        dets.append({k: res[k] for k in ("boxes", "scores", "labels")})
    ev07 = evaluate_detections(dets, gts, labels=[1], use_07_metric=True)
    evall = evaluate_detections(dets, gts, labels=[1], use_07_metric=False)
    rec = ev07["pr"][1][0]
    return {"scenes": n, "objects": 2 * n, "ap_07": float(ev07["ap"][1]),
            "ap_all": float(evall["ap"][1]),
            "max_recall": float(rec[-1]) if len(rec) else 0.0,
            "detections": sum(len(d["boxes"]) for d in dets)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=50, help="scenes per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="dnnod/studies/results/ch09_union.json")
    ap.add_argument("--detect-args", default="{}",
                    help="detect keyword arguments as JSON, e.g. '{\"nms_mode\": \"explain\"}'")
    args = ap.parse_args(argv)
    kw = json.loads(args.detect_args)
    if not isinstance(kw, dict):
        raise SystemExit(f"--detect-args: expected a JSON object, got {args.detect_args!r}")
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    results = {}
    for kind in KINDS:
        results[kind] = run_kind(kind, args.scenes, args.seed, kw)
        print(kind, {k: round(v, 3) if isinstance(v, float) else v for k, v in results[kind].items()},
              flush=True)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"experiment": "union masks: the perfect-mask pipeline on two objects of one class",
           "kinds": {"apart": "the two boxes keep a gap of at least 4 px",
                     "overlapping": "the second box covers the first one's bottom-right corner",
                     "nested": "the second box lies wholly inside the first"},
           "results": results, "image_size": SIZE, "seed": args.seed,
           "command": ("python book/_tools/union_masks.py --scenes "
                       f"{args.scenes} --seed {args.seed} --threads {args.threads} --out {args.out}"
                       + (f" --detect-args '{args.detect_args}'" if kw else "")),
           "detect_kwargs": kw,
           "wall_time_s": round(time.perf_counter() - t0, 1),
           "cpu_time_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1),
           "torch": torch.__version__, "torch_threads": args.threads,
           "protocol": "VOC2007: IoU >= 0.5, 11-point AP (ap_07); all-point AP beside it (ap_all)"}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
