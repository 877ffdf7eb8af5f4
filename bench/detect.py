"""Benchmark of the whole inference pipeline: `python bench/detect.py [--threads N] [--classes C]`.

DetectorNet with random weights, arch "paper" (AlexNet, 225×225) and "tiny" (96×96), on a
500×375 image: 3 scales (35 windows) + refinement, all classes in one network. Reports images/s,
seconds per image, network crops per image, and the split between the network and the box
extraction. Random weights give near-empty masks, so few boxes pass the Eq. 2 threshold; the
`threshold=-inf` rows force the worst case — 5 boxes per scale and class, 15·C refinement crops.
CUDA rows when a GPU is present (the box extraction stays on the CPU).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from dnnod import DetectorNet  # noqa: E402
from dnnod.detect import detect  # noqa: E402
from dnnod.predict import NetPredictor  # noqa: E402


class Counting:
    """Wraps a predictor, counting crops and timing the network."""

    def __init__(self, pred):
        self.pred, self.crops, self.seconds = pred, 0, 0.0
        self.num_classes, self.d = pred.num_classes, pred.d
        self.aspect_ratios = None

    def __call__(self, image, windows):
        t = time.perf_counter()
        out = self.pred(image, windows)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.crops += len(windows)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--archs", nargs="+", default=["paper", "tiny"])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, -math.inf])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU threads"
          f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}; image 500x375")
    head = (f"{'arch':>6} {'C':>3} {'device':>6} {'threshold':>9} {'s/image':>8} {'images/s':>8} "
            f"{'crops/img':>9} {'net s':>6} {'boxes s':>7} {'detections':>10}")
    print(head)
    print("-" * len(head))
    for arch in args.archs:
        for C in args.classes:
            for dev in devices:
                net = DetectorNet(num_classes=C, arch=arch).eval()
                pred = NetPredictor(net, device=dev, batch_size=64)
                for thr in args.thresholds:
                    cp = Counting(pred)
                    detect(cp, img, threshold=thr)                 # warm-up
                    runs = []
                    for _ in range(args.repeats):
                        cp.crops, cp.seconds = 0, 0.0
                        t = time.perf_counter()
                        out = detect(cp, img, threshold=thr)
                        runs.append((time.perf_counter() - t, cp.crops, cp.seconds,
                                     len(out["boxes"])))
                    t, crops, net_s, n = min(runs)         # the fastest run, all its figures
                    print(f"{arch:>6} {C:>3} {dev:>6} {thr:>9} {t:>8.2f} {1 / t:>8.2f} "
                          f"{crops:>9} {net_s:>6.2f} {t - net_s:>7.2f} {n:>10}")


if __name__ == "__main__":
    main()
