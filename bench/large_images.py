"""Large photos: time in ``detect``, decode time and the peak RSS of a whole ``dnnod detect``
process, for one scene at 640x480, 12 MP, 48 MP and 100 MP, as JPEG and PNG (issue 24).

    python bench/large_images.py [--photo PATH] [--weights pennfudan-tiny] [--sizes 640x480,...]

The scene is one Penn-Fudan photo (``$DNNOD_DATA``), resized to 640x480 (box filter) and to each
larger size (bicubic) and written to a temporary folder. Times are the best of ``--repeat``
runs in this process (torch's default threads), wall clock and process CPU time (the latter
is what to compare on a machine shared with other work); decode = :func:`dnnod.image.load_pyramid` (file
-> the image pyramid at the resolution the network needs). Peak RSS: ``VmHWM`` of a fresh
``dnnod detect FILE`` process (model load, decode, detect, drawing, JSON). Bounds (issue 24):
detect <= 1.5x the 640x480 time, peak RSS <= 1.5 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

SIZES = ((640, 480), (4000, 3000), (8000, 6000), (11547, 8660))
# The child's own peak is VmHWM of /proc/self/status (the high-water mark of the memory map that
# exec gave it). Not ru_maxrss: Linux carries into a child's ru_maxrss the peak of the process it
# was forked from, so once this benchmark had decoded a 100 MP photo every later row read >= 1.57 GB
# (a 640x480 PNG "peaked" at 1.57 GB here and at 1.02 GB when measured first). ru_maxrss only
# where /proc is missing.
RSS_SNIPPET = ("import resource, sys; from dnnod.cli import main; rc = main(sys.argv[1:]); "
               "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')] "
               "if sys.platform.startswith('linux') else []; "
               "print('MAXRSS_KB', hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
               "sys.exit(rc)")


def peak_rss_gb(path: Path, weights: str, out: Path) -> float:
    """Peak RSS (GB) of a whole ``dnnod detect`` process on one file."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", RSS_SNIPPET, "detect", str(path), "--weights",
                        weights, "--out", str(out), "--device", "cpu"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"dnnod detect failed on {path}: {r.stderr[-2000:]}")
    kb = [int(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("MAXRSS_KB")][0]
    return kb / 2 ** 20


def main(argv=None) -> int:
    from dnnod.checkpoint import load_pretrained
    from dnnod.data import data_root
    from dnnod.detect import detect
    from dnnod.image import load_pyramid
    from dnnod.multiscale import network_scale
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photo", default=str(data_root() / "PennFudanPed" / "PNGImages" /
                                          "PennPed00010.png"))
    p.add_argument("--weights", default="pennfudan-tiny")
    p.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    p.add_argument("--formats", default="jpg,png")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS measurement")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    model = load_pretrained(a.weights, device="cpu")
    top = int(model.input_size)
    photo = Image.open(a.photo).convert("RGB")
    rows = []
    print(f"{a.photo}, {a.weights}, {torch.get_num_threads()} threads")
    print(f"{'image':>12} {'fmt':>4} {'MP':>6} {'decode s':>9} {'detect s':>9} {'x 640':>6} "
          f"{'detect CPU s':>12} {'x 640':>6} {'peak RSS GB':>12} {'dets':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = None
        for fmt in a.formats.split(","):
            for W, H in sizes:
                f = tmp / f"scene_{W}x{H}.{fmt}"
                resample = Image.BOX if W * H <= 640 * 480 else Image.BICUBIC
                im = photo.resize((W, H), resample)
                im.save(f, quality=92) if fmt == "jpg" else im.save(f, compress_level=1)
                del im
                dec, det_t, cpu_t = [], [], []
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    pyr = load_pyramid(f, lambda hw: network_scale(hw, top), top)
                    dec.append(time.perf_counter() - t)
                    t, c = time.perf_counter(), time.process_time()
                    det = detect(model, pyr)
                    det_t.append(time.perf_counter() - t)
                    cpu_t.append(time.process_time() - c)
                    del pyr
                if (W, H) == sizes[0] and fmt == a.formats.split(",")[0]:
                    base, base_cpu = min(det_t), min(cpu_t)
                rss = float("nan") if a.no_rss else peak_rss_gb(f, a.weights, tmp / "out")
                row = {"image": f"{W}x{H}", "format": fmt, "mp": W * H / 1e6,
                       "decode_s": min(dec), "detect_s": min(det_t),
                       "ratio": min(det_t) / base, "detect_cpu_s": min(cpu_t),
                       "cpu_ratio": min(cpu_t) / base_cpu, "peak_rss_gb": rss,
                       "detections": len(det["boxes"])}
                rows.append(row)
                print(f"{row['image']:>12} {fmt:>4} {row['mp']:6.1f} {row['decode_s']:9.2f} "
                      f"{row['detect_s']:9.2f} {row['ratio']:6.2f} {row['detect_cpu_s']:12.2f} "
                      f"{row['cpu_ratio']:6.2f} {rss:12.2f} "
                      f"{row['detections']:5d}", flush=True)
                f.unlink()
    ok_t = all(min(r["ratio"], r["cpu_ratio"]) <= 1.5 for r in rows)
    ok_m = all(not (r["peak_rss_gb"] > 1.5) for r in rows)
    print(f"bounds: detect <= 1.5x 640x480: {'met' if ok_t else 'NOT met'}; "
          f"peak RSS <= 1.5 GB: {'met' if ok_m else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
