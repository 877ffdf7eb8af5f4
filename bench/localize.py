"""Benchmark of box scoring (paper Sec. 5.2): `python bench/localize.py [--threads N]`.

For a 500×375 image (VOC size) at stride 5 and a 1000×1000 image: candidates per image, Eq. 2 /
Eq. 3 throughput in box-mask scores per second for
  * the lattice fast path (`score_candidates`, what `extract_boxes` uses) on the snapped lattice,
    for an image of a new size (lattice and its geometry built in the call) and for the next
    image of the same size (lattice memoised — the case of all scales and classes of an image,
    and of a dataset of equal-sized images),
  * the separable matmul path on the same lattice (exact for any geometry; refinement uses it),
  * "+ all K boxes": `score_candidates` as a whole, which also returns every candidate box
    ([K, 4] float64; memoised with the lattice, so for the next image of a size it is free),
  * "plain gather Eq.2 x5": the textbook way, for reference — each mask upsampled to the image's
    pixels, its integral image, and Eq. 2 of every box (corners rounded to pixels) as four
    gathers per box and mask, for all 5 masks; the line "ratio" compares it with
    `score_candidates` as a whole (boxes included), timed in the same run (target >= 10x),
  * the integral-image path for arbitrary boxes (`mask_score` / `box_scores`),
  * a brute-force reference (per-cell rectangle intersection, vectorised numpy, on a subsample),
and peak extra memory (tracemalloc does not see torch's allocator, so we report the growth of
the process's RSS, sampled by a thread in a fresh subprocess per case). CUDA rows when present.

A "box-mask score" is one box scored against one mask: Eq. 2 on the full mask counts 1 per box,
Eq. 3 counts 5 per box (it scores each box against all 5 masks).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from dnnod.localize import (box_scores, candidate_boxes, extract_boxes,  # noqa: E402
                            make_lattice, mask_score, score_candidates)
from dnnod.localize.lattice import _lattice_cached, _score_lattice  # noqa: E402
from dnnod.masks import mask_targets  # noqa: E402


def brute_eq2(mask: np.ndarray, boxes: np.ndarray, region) -> np.ndarray:
    """Eq. 2 by explicit per-cell intersection areas (numpy, vectorised over cells)."""
    dy, dx = mask.shape
    x0, y0, x1, y1 = region
    ex = x0 + (x1 - x0) / dx * np.arange(dx + 1)
    ey = y0 + (y1 - y0) / dy * np.arange(dy + 1)
    ox = np.clip(np.minimum(boxes[:, 2:3], ex[None, 1:]) - np.maximum(boxes[:, 0:1], ex[None, :-1]), 0, None)
    oy = np.clip(np.minimum(boxes[:, 3:4], ey[None, 1:]) - np.maximum(boxes[:, 1:2], ey[None, :-1]), 0, None)
    mass = np.einsum("ki,ij,kj->k", oy, mask, ox)
    return mass / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def plain_gather_eq2(masks: torch.Tensor, boxes: torch.Tensor, W: int, H: int) -> torch.Tensor:
    """Eq. 2 of every box against each of the 5 masks by pixel integral images: ``[5, K]``."""
    up = torch.nn.functional.interpolate(masks[None].double(), size=(H, W), mode="nearest")[0]
    integral = torch.nn.functional.pad(up.cumsum(-1).cumsum(-2), (1, 0, 1, 0)).reshape(len(masks), -1)
    x1, y1, x2, y2 = boxes.round().long().unbind(1)
    row = W + 1
    mass = (integral[:, y2 * row + x2] - integral[:, y1 * row + x2]
            - integral[:, y2 * row + x1] + integral[:, y1 * row + x1])
    return mass / ((x2 - x1) * (y2 - y1)).clamp(min=1)


def best_of(f, n=3) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return min(ts)


def peak_rss_case(W: int, H: int, threads: int):
    """Peak extra memory (MB) of score_candidates in a fresh process: RSS sampled every 0.5 ms
    by a thread (/proc/self/statm), minus the RSS before the call."""
    code = f"""
import threading, time, os, torch, gc
torch.set_num_threads({threads})
from dnnod.localize import score_candidates
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
m = torch.rand(5, 24, 24)
score_candidates(m, (0, 0, 40, 30))          # warm up imports and allocator
gc.collect()
base, peak, done = rss(), [0], [False]
def watch():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=watch); t.start()
b, e2, e3 = score_candidates(m, (0, 0, {W}, {H}))
done[0] = True; t.join()
out = (b.numel() * b.element_size() + e2.numel() * e2.element_size() + e3.numel() * e3.element_size()) / 2**20
print((max(peak[0], rss()) - base) / 2**20, out)
"""
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    extra, outputs = (float(v) for v in r.stdout.split())
    return extra, outputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    g = torch.Generator().manual_seed(0)
    rows = []
    ratios = []
    print(f"torch {torch.__version__}, {args.threads} CPU threads"
          f"{', CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}")
    header = (f"{'image':>10} {'device':>6} {'candidates':>10} {'path':>22} {'time ms':>9} "
              f"{'M scores/s':>10} {'speed-up':>9}")
    print(header)
    print("-" * len(header))
    for W, H in [(500, 375), (1000, 1000)]:
        region = (0.0, 0.0, float(W), float(H))
        masks = torch.rand(5, 24, 24, generator=g)
        boxes = candidate_boxes((H, W))
        K = len(boxes)
        # brute force on a subsample, extrapolated per box
        sub = boxes[torch.randperm(K, generator=g)[:5000]].numpy()
        t_b = best_of(lambda: brute_eq2(masks[0].double().numpy(), sub, region), 2) / len(sub) * K
        for dev in devices:
            m = masks.to(dev)
            if dev == "cuda":     # the lattice path is CPU code (index bookkeeping); masks move
                pass
            def cold():
                _lattice_cached.cache_clear()
                score_candidates(masks, region)
            t_cold = best_of(cold)
            score_candidates(masks, region)
            t_fast = best_of(lambda: score_candidates(masks, region), 7)
            lat = make_lattice(region)
            t_scores = best_of(lambda: _score_lattice(masks[None], lat, surround=1.5), 7)
            t_mm = best_of(lambda: _score_lattice(masks[None], lat, surround=1.5, method="matmul"))
            t_eq2 = best_of(lambda: mask_score(masks[0], boxes, region), 2)
            t_eq3 = best_of(lambda: box_scores(masks, boxes, region), 1)
            # extract_boxes as detect uses it: perfect masks of 3 objects, Eq. 2 > 0.5 first,
            # Eq. 3 only where it passes, then NMS and top 5 (scores counted for all K boxes).
            gt = mask_targets(torch.tensor([[0.1 * W, 0.2 * H, 0.4 * W, 0.7 * H],
                                            [0.5 * W, 0.1 * H, 0.9 * W, 0.5 * H],
                                            [0.6 * W, 0.6 * H, 0.8 * W, 0.95 * H]]), region, 24)
            t_ex = best_of(lambda: extract_boxes(gt, region), 7)
            t_plain = best_of(lambda: plain_gather_eq2(masks, boxes, W, H), 5)
            ratios.append((f"{W}x{H}", dev, t_plain / t_fast))
            for name, t, n in [("brute Eq.2 (numpy)", t_b, K),
                               ("integral Eq.2", t_eq2, K),
                               ("integral Eq.3", t_eq3, 5 * K),
                               ("lattice matmul path", t_mm, 5 * K),
                               ("lattice, new size", t_cold, 5 * K),
                               ("lattice, same size", t_scores, 5 * K),
                               ("+ all K boxes", t_fast, 5 * K),
                               ("extract_boxes (3 obj.)", t_ex, 5 * K),
                               ("plain gather Eq.2 x5", t_plain, 5 * K)]:
                rows.append(dict(image=f"{W}x{H}", device=dev, candidates=K, path=name,
                                 time_ms=t * 1e3, mscores=n / t / 1e6, speedup=t_b / K * n / t))
                r = rows[-1]
                print(f"{r['image']:>10} {dev:>6} {K:>10,} {name:>22} {r['time_ms']:>9.1f} "
                      f"{r['mscores']:>10.1f} {r['speedup']:>8.0f}x")
            if dev == "cuda":
                break
    print("\nratio: plain gather of Eq. 2 over the same boxes and 5 masks / score_candidates "
          "(boxes included), same run (target >= 10x):")
    for img, dev, r in ratios:
        print(f"  {img:>10} {dev:>6}: {r:6.1f}x {'ok' if r >= 10 else 'BELOW TARGET'}")
        rows.append(dict(image=img, device=dev, ratio_plain_over_score_candidates=r))
    print("\npeak extra memory of score_candidates (fresh process, RSS growth):")
    for W, H in [(500, 375), (1000, 1000)]:
        extra, outputs = peak_rss_case(W, H, args.threads)
        print(f"  {W}x{H}: {extra:7.1f} MB (of which outputs boxes+eq2+eq3: {outputs:.1f} MB)")
        rows.append(dict(image=f"{W}x{H}", peak_extra_mb=extra, outputs_mb=outputs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
