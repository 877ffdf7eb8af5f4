"""The race of book chapter 10: DetectorNet and torchvision's Faster R-CNN, both from scratch (no
downloaded weights), trained on the Penn-Fudan train split for the **same wall-clock budget on the
same cores**, each with a recipe suited to it, and both measured with :mod:`dnnod.evaluate` (VOC07
AP@0.5) on the 50 test images.

One run = one detector, one budget, one seed, in its own process, on an otherwise idle machine
(the load average before and after is recorded so a disturbed run shows). Each run adds its row to
one JSON file (replacing an older row of the same detector, budget and seed)::

    python -m dnnod.studies.race run --detector fasterrcnn --budget-min 15 --seed 0 --threads 2 \\
        --results dnnod/studies/results/ch10_race.json
    python -m dnnod.studies.race run --detector detectornet --budget-min 15 --seed 0 --threads 2 \\
        --results dnnod/studies/results/ch10_race.json --runs runs/race

The budget counts training steps only (their data included), not start-up or evaluation; both
detectors' learning rates decay on a cosine over the elapsed budget, so each run ends at rate 0
however fast the machine is.

**Faster R-CNN recipe** (``fasterrcnn_mobilenet_v3_large_fpn``, ``min_size=320, max_size=512``):
AdamW, lr 1e-3, weight decay 1e-4, linear warm-up over 20 iterations then cosine decay to 0 over
the budget, gradient clipping at norm 10, batch 2, horizontal flips (p = 0.5), images preloaded.
**DetectorNet recipe**: the shipped ``pennfudan-tiny`` command (``dnnod/weights/README.md``) with
``--budget-s`` in place of its step count.

Recipe trials (``dnnod/weights/README.md``) use the same command on the ``fit``/``val`` split of the
training images, with a name and the training options that change, e.g.::

    python -m dnnod.studies.race run --detector detectornet --budget-min 45 --seed 0 --threads 2 \\
        --train-split fit --eval-split val --variant jitter03 --train-args "--color-jitter 0.3" \\
        --results runs/trials/pennfudan_val.json

and are compared with ``python -m dnnod.studies.race trials --results runs/trials/pennfudan_val.json``
(every row scored again from its stored detections: VOC07 and all-point AP, people found, false
positives). ``python -m dnnod.studies.race rescore --results FILE`` evaluates every DetectorNet row
again from its saved checkpoint (rows whose run evaluated the in-memory network before it carried
its checkpoint's aspect ratios; the first numbers stay in the row).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..data import PennFudanDataset
from ._records import git_commit
from .baselines import _dets_json, _evaluate_fasterrcnn, _flip, fasterrcnn_from_scratch

DETECTORS = ("detectornet", "fasterrcnn")

#: The shipped pennfudan-tiny command (dnnod/weights/README.md) without its step count: the
#: budget decides the steps. ``--epochs x --steps-per-epoch`` only caps them.
DETECTORNET_ARGS = ("--data pennfudan --arch tiny --head conv --head-norm batch --batch-size 32 "
                    "--lr-schedule cosine --max-side 400 --optimizer adam --lr 1e-3 "
                    "--epochs 1000 --steps-per-epoch 500 --val-images 0 --no-progress").split()


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def fasterrcnn_lr(t: float, budget_s: float, step: int, lr: float = 1e-3, warmup: int = 20) -> float:
    """The Faster R-CNN recipe's learning rate at training time ``t`` of ``budget_s`` seconds and
    iteration ``step`` (0-based): linear warm-up over ``warmup`` iterations, times a cosine decay
    from ``lr`` to 0 over the budget."""
    frac = min(max(t / budget_s, 0.0), 1.0)
    return lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))


def train_fasterrcnn_budget(budget_s: float, seed: int = 0, root: Optional[str] = None,
                            train_split: str = "train", eval_split: str = "test",
                            lr: float = 1e-3, weight_decay: float = 1e-4, warmup: int = 20,
                            batch_size: int = 2, clip: float = 10.0, min_size: int = 320,
                            max_size: int = 512, log_every: int = 25,
                            eval_limit: Optional[int] = None) -> Dict[str, Any]:
    """Train Faster R-CNN from scratch for ``budget_s`` wall seconds of training iterations with the
    module's recipe, then evaluate on ``eval_split``. Returns the run's row (without command)."""
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a positive number of seconds; got {budget_s}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    train_ds = PennFudanDataset(root, split=train_split)
    test_ds = PennFudanDataset(root, split=eval_split)
    if eval_limit is not None:                        # quick checks only
        test_ds = torch.utils.data.Subset(test_ds, list(range(min(int(eval_limit), len(test_ds)))))
    items = [train_ds[i] for i in range(len(train_ds))]     # preloaded, uint8
    model = fasterrcnn_from_scratch(num_classes=1, min_size=min_size, max_size=max_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    losses: List[float] = []
    model.train()
    step, t_train, c0 = 0, 0.0, time.process_time()
    while t_train < budget_s:
        t_it = time.time()
        idx = torch.randint(len(items), (batch_size,), generator=g).tolist()
        imgs, tgts = [], []
        for i in idx:
            img, t = items[i]
            img, boxes = img.float() / 255, t["boxes"].float()
            if torch.rand((), generator=g) < 0.5:
                img, boxes = _flip(img, boxes)
            imgs.append(img)
            tgts.append({"boxes": boxes, "labels": t["labels"]})
        for group in opt.param_groups:
            group["lr"] = fasterrcnn_lr(t_train, budget_s, step, lr, warmup)
        loss = sum(model(imgs, tgts).values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Faster R-CNN loss became {loss.item()} at iteration {step}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        t_train += time.time() - t_it
        if step % log_every == 0:
            print(f"iteration {step}  loss {np.mean(losses[-log_every:]):.3f}  "
                  f"{t_train:.0f}/{budget_s:.0f} s", flush=True)
    train_cpu = time.process_time() - c0
    ev = _evaluate_fasterrcnn(model, test_ds)
    return {"steps": step, "train_s": round(t_train, 1), "train_cpu_s": round(train_cpu, 1),
            "batch_size": batch_size, "ap50_voc07": float(ev["ap50_voc07"]),
            "eval_images": len(test_ds), "eval_split": eval_split,
            "test_images_per_s": round(1 / ev["seconds_per_image"], 2),
            "params": sum(p.numel() for p in model.parameters()),
            "loss_first_25": float(np.mean(losses[:25])), "loss_last_25": float(np.mean(losses[-25:])),
            "recipe": {"model": "fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, "
                                f"num_classes=2, min_size={min_size}, max_size={max_size})",
                       "optimizer": f"AdamW lr {lr} weight decay {weight_decay}",
                       "schedule": f"linear warm-up over {warmup} iterations, cosine to 0 over the budget",
                       "clip_grad_norm": clip, "batch_size": batch_size, "flip": 0.5},
            "detections": _dets_json(ev["dets"])}


def train_detectornet_budget(budget_s: float, seed: int = 0, root: Optional[str] = None,
                             train_split: str = "train", eval_split: str = "test",
                             runs: str = "runs/race", extra: Optional[List[str]] = None,
                             eval_limit: Optional[int] = None, variant: str = "") -> Dict[str, Any]:
    """Train DetectorNet with :data:`DETECTORNET_ARGS`, ``extra`` training options and
    ``--budget-s budget_s`` (``dnnod.train``), then evaluate the saved ``model.pt`` (with the
    k-means aspect ratios it carries) on ``eval_split`` (:func:`evaluate_detectornet`). The run
    folder is named by variant, split, budget and seed, so trials do not overwrite one another."""
    from ..train import TrainConfig, train
    tag = "".join(f"{v}_" for v in (variant, "" if train_split == "train" else train_split) if v)
    out = Path(runs) / f"detectornet_{tag}{budget_s:g}s_s{seed}"
    argv = list(DETECTORNET_ARGS) + list(extra or []) + ["--budget-s", f"{budget_s:g}", "--seed", str(seed),
                                                         "--train-split", train_split]
    if root:
        argv += ["--root", root]
    argv += ["--out", str(out)]
    cfg = TrainConfig.from_argv(argv)
    c0 = time.process_time()
    summary = train(cfg, threads=torch.get_num_threads())
    train_cpu = time.process_time() - c0
    # evaluate the file a user gets (its k-means candidate shapes included), not the live object
    model = load_checkpoint(out / "model.pt", device="cpu")
    return {"steps": summary["steps"], "train_s": round(summary["train_s"], 1),
            "train_cpu_s": round(train_cpu, 1), "batch_size": cfg.batch_size,
            **evaluate_detectornet(model, root, eval_split, eval_limit),
            "params": sum(p.numel() for p in model.parameters()),
            "recipe": {"train_args": " ".join(argv[:-2] if argv[-2] == "--out" else argv)},
            "checkpoint": str(out / "model.pt")}


def evaluate_detectornet(model, root: Optional[str] = None, eval_split: str = "test",
                         eval_limit: Optional[int] = None) -> Dict[str, Any]:
    """A trained DetectorNet on ``eval_split`` with ``detect``'s defaults
    (``dnnod.assess.evaluate_model``): AP@0.5 (VOC07), images, images/s and the detections."""
    from ..assess import evaluate_model
    test_ds = PennFudanDataset(root, split=eval_split)
    if eval_limit is not None:
        test_ds = torch.utils.data.Subset(test_ds, list(range(min(int(eval_limit), len(test_ds)))))
    torch.manual_seed(0)
    res = evaluate_model(model, test_ds, progress=False, device="cpu", return_detections=True)
    return {"ap50_voc07": float(res["ap"][1]), "eval_images": res["images"], "eval_split": eval_split,
            "test_images_per_s": round(1 / res["seconds_per_image"], 2),
            "detections": _dets_json(res["detections"])}


def rescore(results: Path, root: Optional[str] = None, command: str = "") -> List[Dict[str, Any]]:
    """Evaluate every DetectorNet row of ``results`` again from its saved checkpoint (on the
    row's split and images) and rewrite its AP, detections and images/s in place; the numbers the
    run itself recorded stay in the row under ``first_evaluation``. For rows whose run evaluated
    the in-memory network before ``train`` gave it its checkpoint's aspect ratios (it then
    searched the generic default candidate shapes, not the file's k-means ones)."""
    data = json.loads(results.read_text())
    changed = []
    for r in data["runs"]:
        if r["detector"] != "detectornet":
            continue
        ck = Path(r["checkpoint"])
        if not ck.is_file():
            raise SystemExit(f"error: row {r.get('variant', '')!r} seed {r['seed']}: no checkpoint {ck}")
        model = load_checkpoint(ck, device="cpu")
        limit = int(r["eval_images"])
        first = r.get("first_evaluation") or {k: r[k] for k in ("ap50_voc07", "test_images_per_s", "commit")}
        r.update(evaluate_detectornet(model, root, r.get("eval_split", "test"), limit))
        r["first_evaluation"] = first
        r["evaluation"] = {"command": command, "commit": git_commit(),
                           "date": _dt.date.today().isoformat(),
                           "why": "evaluated again from the checkpoint, with its k-means aspect ratios "
                                  "(the run's own evaluation searched the default ones)"}
        changed.append(r)
        print(f"{r.get('variant', '') or 'plain':14s} {r['budget_min']:g} min seed {r['seed']}: AP "
              f"{first['ap50_voc07']:.3f} -> {r['ap50_voc07']:.3f}", flush=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, results)
    return changed


def run(detector: str, budget_min: float, seed: int = 0, threads: Optional[int] = 2,
        root: Optional[str] = None, runs: str = "runs/race", eval_limit: Optional[int] = None,
        train_split: str = "train", eval_split: str = "test", variant: str = "",
        train_args: Optional[List[str]] = None) -> Dict[str, Any]:
    """One race run: ``detector`` trained for ``budget_min`` minutes with ``threads`` torch
    threads, then evaluated. Returns its row (with hardware, date, commit and load averages).
    ``train_args``: DetectorNet training options added to its recipe (a trial, named ``variant``)."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}; got {detector!r}")
    if train_args and detector != "detectornet":
        raise ValueError("train_args change the DetectorNet recipe; Faster R-CNN's is fixed")
    if train_args and not variant:
        raise ValueError("a run with train_args needs a variant name, so its row and run folder "
                         "are not taken for the plain recipe's")
    if not (math.isfinite(budget_min) and budget_min > 0):
        raise ValueError(f"budget_min must be > 0; got {budget_min}")
    if threads:
        torch.set_num_threads(threads)
    # The code that runs is the code at the start: read the commit and the time now, not after
    # a 45-minute run during which the repository may have moved on.
    started, commit = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), git_commit()
    load0, t0 = _loadavg(), time.time()
    kw = dict(seed=seed, root=root, train_split=train_split, eval_split=eval_split, eval_limit=eval_limit)
    res = (train_fasterrcnn_budget(budget_min * 60, **kw) if detector == "fasterrcnn"
           else train_detectornet_budget(budget_min * 60, runs=runs, variant=variant,
                                         extra=list(train_args or []), **kw))
    return dict({"detector": detector, "budget_min": budget_min, "seed": seed,
                 **({"variant": variant} if variant else {}),
                 "torch_threads": torch.get_num_threads(),
                 "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
                             f"{torch.get_num_threads()} torch threads (CPU)",
                 "torch": torch.__version__, "started": started, "date": started[:10], "commit": commit,
                 "wall_s": round(time.time() - t0, 1), "load_before": load0, "load_after": _loadavg()}, **res)


def add_row(results: Path, row: Dict[str, Any]) -> Dict[str, Any]:
    """Add ``row`` to the JSON file ``results`` (created if absent), replacing a row of the same
    detector, variant, budget and seed; rows stay sorted by detector, variant, budget, seed."""
    key = lambda r: (r["detector"], r.get("variant", ""), float(r["budget_min"]), int(r["seed"]))  # noqa: E731
    data = json.loads(results.read_text()) if results.exists() else {"runs": []}
    data["runs"] = sorted([r for r in data["runs"] if key(r) != key(row)] + [row], key=key)
    data["about"] = __doc__.split("\n\n")[0].replace("\n", " ")
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, results)
    return data


def summary(data: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per (detector, variant, budget): AP mean, min and max over seeds, seeds, mean
    steps, training CPU s and test images/s, and the parameters."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in data["runs"]:
        groups.setdefault((r["detector"], r.get("variant", ""), float(r["budget_min"])), []).append(r)
    out = []
    for (det, var, b), rs in sorted(groups.items()):
        ap = [r["ap50_voc07"] for r in rs]
        out.append({"detector": det, "variant": var, "budget_min": b,
                    "seeds": sorted(int(r["seed"]) for r in rs),
                    "ap_mean": float(np.mean(ap)), "ap_min": float(min(ap)), "ap_max": float(max(ap)),
                    "steps": float(np.mean([r["steps"] for r in rs])),
                    "train_cpu_s": float(np.mean([r["train_cpu_s"] for r in rs])),
                    "test_images_per_s": float(np.mean([r["test_images_per_s"] for r in rs])),
                    "params": int(rs[0]["params"])})
    return out


NAMES = {"detectornet": "DetectorNet (tiny, conv mask head)",
         "fasterrcnn": "Faster R-CNN (MobileNetV3-Large FPN)"}


def markdown_table(data: Dict[str, Any]) -> str:
    """The race as a Markdown table: one row per detector and budget (see :func:`summary`)."""
    head = ("| detector | budget | AP@0.5 mean (min–max) | seeds | parameters | training iterations "
            "| training CPU s | test images / s |\n|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in summary(data):
        batch = {"detectornet": "32 windows", "fasterrcnn": "2 images"}.get(r["detector"], "")
        name = NAMES.get(r["detector"], r["detector"]) + (f", {r['variant']}" if r["variant"] else "")
        rows.append(f"| {name} | {r['budget_min']:g} min "
                    f"| **{r['ap_mean']:.3f}** ({r['ap_min']:.3f}–{r['ap_max']:.3f}) "
                    f"| {', '.join(map(str, r['seeds']))} | {r['params'] / 1e6:.2f} M "
                    f"| {r['steps']:.0f} × {batch} | {r['train_cpu_s']:.0f} | {r['test_images_per_s']:.1f} |")
    return head + "\n".join(rows)


def ground_truths(data: Dict[str, Any], root=None) -> Dict[str, List[Dict[str, Any]]]:
    """The Penn-Fudan targets of every split the rows of ``data`` were evaluated on, for
    :func:`trial_scores`."""
    out = {}
    for split in sorted({r.get("eval_split", "test") for r in data["runs"]}):
        ds = PennFudanDataset(root, split=split)
        out[split] = [ds.target(i) for i in range(len(ds))]
    return out


def trial_scores(data: Dict[str, Any], truths: Dict[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Every row's stored detections scored again against the ground truth of the split it was
    evaluated on (``truths[split]``, one dict per image): the recorded AP@0.5 (VOC07
    11-point), the all-point AP (every recall step counts: finer than 11 points when a choice
    turns on one or two people), the people found (true positives over all detections), the people
    and the false positives. Recipe trials are compared on these (dnnod/weights/README.md)."""
    from ..evaluate import evaluate_detections
    from ..viz.compare import detections_from_json
    out = []
    for r in data["runs"]:
        split = r.get("eval_split", "test")
        if split not in truths:
            raise ValueError(f"no ground truth given for split {split!r} (row {r['detector']}, "
                             f"{r.get('variant', '')!r}, seed {r['seed']})")
        gts = truths[split][: int(r.get("eval_images", len(truths[split])))]  # --eval-limit: the first N
        dets = detections_from_json(r["detections"])
        if len(dets) != len(gts):
            raise ValueError(f"row {r.get('variant', '')!r} seed {r['seed']}: detections for "
                             f"{len(dets)} images, {split} has {len(gts)}")
        e07 = evaluate_detections(dets, gts, labels=[1])
        eall = evaluate_detections(dets, gts, labels=[1], use_07_metric=False)
        out.append({"detector": r["detector"], "variant": r.get("variant", ""),
                    "budget_min": float(r["budget_min"]), "seed": int(r["seed"]), "split": split,
                    "steps": int(r["steps"]), "recorded": float(r["ap50_voc07"]),
                    "ap_voc07": float(e07["ap"][1]), "ap_all": float(eall["ap"][1]),
                    "found": int(e07["tp"][1]), "people": int(e07["npos"][1]), "fp": int(e07["fp"][1])})
    return out


def trials_table(scores: List[Dict[str, Any]]) -> str:
    """The rows of :func:`trial_scores` as a Markdown table, a row per run and, for variants with
    two seeds or more, their mean."""
    head = ("| variant | budget | seed | steps | AP@0.5 VOC07 | AP@0.5 all-point | found / people "
            "| false positives |\n|---|---|---|---|---|---|---|---|\n")
    rows, groups = [], {}
    for s in sorted(scores, key=lambda s: (s["variant"], s["budget_min"], s["seed"])):
        rows.append(f"| {s['variant'] or '(recipe)'} | {s['budget_min']:g} min | {s['seed']} | {s['steps']} "
                    f"| {s['ap_voc07']:.3f} | {s['ap_all']:.3f} | {s['found']} / {s['people']} | {s['fp']} |")
        groups.setdefault((s["variant"], s["budget_min"]), []).append(s)
    for (var, b), g in sorted(groups.items()):
        if len(g) > 1:
            mean = lambda k: float(np.mean([s[k] for s in g]))  # noqa: E731
            rows.append(f"| {var or '(recipe)'}, mean | {b:g} min | {len(g)} seeds | {mean('steps'):.0f} "
                        f"| {mean('ap_voc07'):.3f} | {mean('ap_all'):.3f} "
                        f"| {mean('found'):.1f} / {g[0]['people']} | {mean('fp'):.1f} |")
    return head + "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dnnod.studies.race", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one detector for one budget and seed, evaluate, record")
    r.add_argument("--detector", choices=DETECTORS, required=True)
    r.add_argument("--budget-min", type=float, required=True, help="training budget, wall minutes")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--root", default=None, help="Penn-Fudan folder (default: $DNNOD_DATA/PennFudanPed)")
    r.add_argument("--runs", default="runs/race", help="DetectorNet run folders")
    r.add_argument("--train-split", default="train", help="train (120 images) or fit (100)")
    r.add_argument("--eval-split", default="test", help="test (50 images) or val (20, from train)")
    r.add_argument("--eval-limit", type=int, default=None, help="quick check: first N eval images")
    r.add_argument("--variant", default="", help="name of a recipe trial (its rows and run folder)")
    r.add_argument("--train-args", default="",
                   help='DetectorNet training options added to the recipe, e.g. "--color-jitter 0.3"')
    r.add_argument("--results", required=True, help="JSON file the row is added to")
    e = sub.add_parser("rescore", help="evaluate every DetectorNet row again from its checkpoint")
    e.add_argument("--results", required=True, help="the JSON file of rows, rewritten in place")
    e.add_argument("--root", default=None, help="Penn-Fudan folder (default: $DNNOD_DATA/PennFudanPed)")
    e.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("trials", help="score every row's stored detections again: VOC07 and "
                                      "all-point AP, people found, false positives")
    t.add_argument("--results", required=True, help="a JSON file of rows (e.g. runs/trials/pennfudan_val.json)")
    t.add_argument("--root", default=None, help="Penn-Fudan folder (default: $DNNOD_DATA/PennFudanPed)")
    a = p.parse_args(argv)
    if a.cmd == "rescore":
        path = Path(a.results)
        if not path.is_file():
            raise SystemExit(f"error: no results file {path}")
        torch.set_num_threads(a.threads)
        rescore(path, a.root, "python -m dnnod.studies.race " + shlex.join(argv if argv is not None else sys.argv[1:]))
        return
    if a.cmd == "trials":
        path = Path(a.results)
        if not path.is_file():
            raise SystemExit(f"error: no results file {path}")
        data = json.loads(path.read_text())
        print(trials_table(trial_scores(data, ground_truths(data, a.root))))
        return
    # shlex.join: a --train-args value keeps its quotes, so the recorded command runs as typed
    command = "python -m dnnod.studies.race " + shlex.join(argv if argv is not None else sys.argv[1:])
    row = run(a.detector, a.budget_min, a.seed, a.threads, a.root, a.runs, a.eval_limit,
              a.train_split, a.eval_split, a.variant, shlex.split(a.train_args))
    row["command"] = command
    add_row(Path(a.results), row)
    print(json.dumps({k: v for k, v in row.items() if k != "detections"}, indent=1))


if __name__ == "__main__":
    main()
