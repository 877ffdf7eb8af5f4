"""The GPU session's results as the book's table: `python bench/gpu_runs_to_book.py OUT_DIR`.

OUT_DIR is what `bench/gpu_book_runs.sh` left in $OUT (results.json and logs.tgz). Writes
dnnod/studies/results/ch10_gpu_runs.json: each run's test AP (with and without refinement), steps, wall time,
hardware and per-epoch log, plus its data, arch and head, read off the run names that the session
script gives (`s_*` shapes, `p_*` Penn-Fudan; `paper` in the name: paper arch; `fc`: fc head;
every other run is tiny with the conv head).
"""
from __future__ import annotations

import csv
import io
import json
import sys
import tarfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "dnnod" / "studies" / "results" / "ch10_gpu_runs.json"
KEYS = ("run", "map", "ap", "map_norefine", "steps", "wall_s", "hardware", "s_per_img")


def main(folder: str) -> None:
    d = Path(folder)
    results = json.loads((d / "results.json").read_text())
    with tarfile.open(d / "logs.tgz") as tar:
        def epochs(run: str):
            f = tar.extractfile(f"runs/{run}/metrics_epochs.csv")
            rows = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))
            return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]
        runs = []
        for r in results:
            name = r["run"]
            runs.append({**{k: r[k] for k in KEYS},
                         "data": "shapes" if name.startswith("s_") else "pennfudan",
                         "arch": "paper" if "paper" in name else "tiny",
                         "head": "fc" if "fc" in name else "conv",
                         "epochs": epochs(name)})
    out = {"command": "bash bench/gpu_book_runs.sh (device tool, NVIDIA H200, 2026-11-26), then "
                      "python bench/gpu_runs_to_book.py OUT",
           "note": "test AP by bench/gpu_evalrun.py = dnnod.evaluate.evaluate_model with detect defaults "
                   "(3 scales, refinement) on the GPU machine; Penn-Fudan test images there were JPEG q92 "
                   "re-encodings of the PNGs. Shapes: 100 test images (ShapesDataset test, seed 0, 192 px).",
           "runs": runs}
    OUT.write_text(json.dumps(out, indent=1))
    print(f"wrote {OUT} ({len(runs)} runs)")


if __name__ == "__main__":
    main(sys.argv[1])
