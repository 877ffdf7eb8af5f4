"""What came next (book chapter 10): torchvision's Faster R-CNN trained from scratch on the same
Penn-Fudan split and the same training budget as DetectorNet, measured with ``dnnod.evaluate``.

The budget is **CPU seconds** of the training process (``time.process_time``, all threads), not
wall time: on a shared machine wall time depends on what else runs, CPU time does not. 1800 CPU s
is 15 minutes on 2 fully used cores. No downloaded weights: ``weights=None, weights_backbone=None``
(the backbone then trains its BatchNorm layers too).

    python -m dnnod.studies.baselines fasterrcnn --budget-cpu-s 1800 --seed 0 --out dnnod/studies/results/ch10_fasterrcnn_s0.json
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data import PennFudanDataset
from ..evaluate import evaluate_detections


def fasterrcnn_from_scratch(num_classes: int = 1, min_size: int = 320, max_size: int = 512):
    """Faster R-CNN with a MobileNetV3-Large FPN backbone and random initialisation (torchvision)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                             num_classes=num_classes + 1,
                                             min_size=min_size, max_size=max_size)


def _flip(img: torch.Tensor, boxes: torch.Tensor):
    w = img.shape[-1]
    b = boxes.clone()
    b[:, 0], b[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return img.flip(-1), b


def _evaluate_fasterrcnn(model, test_ds) -> Dict[str, Any]:
    """Detections on every test image, VOC07 AP (``dnnod.evaluate``) and s/image (wall, this CPU)."""
    was_training = model.training
    model.eval()
    dets, gts = [], []
    t0, c0 = time.time(), time.process_time()
    with torch.no_grad():
        for i in range(len(test_ds)):
            img, t = test_ds[i]
            out = model([img.float() / 255])[0]
            dets.append({k: out[k] for k in ("boxes", "scores", "labels")})
            gts.append(t)
    infer_s = (time.time() - t0) / len(test_ds)
    infer_cpu = (time.process_time() - c0) / len(test_ds)
    res = evaluate_detections(dets, gts, iou_threshold=0.5, use_07_metric=True, labels=[1])
    model.train(was_training)
    return {"ap50_voc07": res["ap"][1], "seconds_per_image": round(infer_s, 3),
            "cpu_seconds_per_image": round(infer_cpu, 3), "dets": dets}


def train_fasterrcnn(budget_cpu_s: float = 1800.0, seed: int = 0, batch_size: int = 4,
                     lr: float = 0.02, root: Optional[str] = None, log_every: int = 10,
                     save_model: Optional[str] = None,
                     eval_at_cpu_s: Sequence[float] = (),
                     on_milestone: Optional[Callable[[Dict[str, Any], Any], None]] = None,
                     min_size: int = 320, max_size: int = 512,
                     test_limit: Optional[int] = None) -> Dict[str, Any]:
    """Train on the Penn-Fudan train split until the CPU budget is spent; evaluate on the test split.

    ``eval_at_cpu_s``: extra evaluations when the training CPU time passes these values (their own
    CPU time is not charged to the training budget), so one run also gives AP at smaller budgets.
    """
    if budget_cpu_s <= 0:
        raise ValueError(f"budget_cpu_s must be > 0; got {budget_cpu_s}")
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    train_ds, test_ds = PennFudanDataset(root, split="train"), PennFudanDataset(root, split="test")
    if test_limit is not None:                       # quick checks only: the book uses all 50
        test_ds = torch.utils.data.Subset(test_ds, list(range(min(int(test_limit), len(test_ds)))))
    train_items = [train_ds[i] for i in range(len(train_ds))]
    model = fasterrcnn_from_scratch(num_classes=1, min_size=min_size, max_size=max_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    losses: List[float] = []
    milestones = sorted(float(m) for m in eval_at_cpu_s if 0 < float(m) < budget_cpu_s)
    curve: List[Dict[str, Any]] = []
    t_cpu0, t_wall0, step = time.process_time(), time.time(), 0
    eval_cpu = 0.0                                   # CPU spent in milestone evaluations (not training)

    def train_cpu() -> float:
        return time.process_time() - t_cpu0 - eval_cpu

    def result(ev: Dict[str, Any], t_train: float, steps: int) -> Dict[str, Any]:
        return {
            "model": "torchvision fasterrcnn_mobilenet_v3_large_fpn, from scratch (no downloaded weights), "
                     f"min_size {min_size}, max_size {max_size}",
            "seed": seed, "budget_cpu_s": budget_cpu_s, "train_cpu_s": round(t_train, 1),
            "train_wall_s": round(time.time() - t_wall0, 1), "steps": steps, "batch_size": batch_size,
            "lr": lr, "loss_first_50": float(np.mean(losses[:50])) if losses else None,
            "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
            "losses": [round(v, 4) for v in losses],
            "ap50_voc07": ev["ap50_voc07"], "curve": list(curve), "test_images": len(test_ds),
            "seconds_per_image": ev["seconds_per_image"],
            "cpu_seconds_per_image": ev["cpu_seconds_per_image"],
            "torch_threads": torch.get_num_threads(),
            "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (CPU)",
            "params": sum(p.numel() for p in model.parameters()),
            "detections": _dets_json(ev["dets"]),
        }

    model.train()
    while train_cpu() < budget_cpu_s:
        idx = torch.randint(len(train_items), (batch_size,), generator=g).tolist()
        imgs, tgts = [], []
        for i in idx:
            img, t = train_items[i]
            img, boxes = img.float() / 255, t["boxes"].float()
            if torch.rand((), generator=g) < 0.5:
                img, boxes = _flip(img, boxes)
            imgs.append(img)
            tgts.append({"boxes": boxes, "labels": t["labels"]})
        warm = min(1.0, (step + 1) / 100)            # linear warm-up: from-scratch training diverges without it
        for group in opt.param_groups:
            group["lr"] = lr * warm
        loss_dict = model(imgs, tgts)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Faster R-CNN loss became {loss.item()} at step {step}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % log_every == 0:
            print(f"step {step}  loss {np.mean(losses[-log_every:]):.3f}  "
                  f"cpu {train_cpu():.0f}/{budget_cpu_s:.0f} s", flush=True)
        while milestones and train_cpu() >= milestones[0]:
            m = milestones.pop(0)
            c0, tc = time.process_time(), train_cpu()
            ev = _evaluate_fasterrcnn(model, test_ds)
            eval_cpu += time.process_time() - c0
            curve.append({"budget_cpu_s": m, "train_cpu_s": round(tc, 1), "steps": step,
                          "ap50_voc07": ev["ap50_voc07"]})
            print(f"milestone {m:.0f} CPU s: step {step}  AP {ev['ap50_voc07']:.3f}", flush=True)
            if on_milestone is not None:     # a run killed later still leaves this result
                on_milestone(dict(result(ev, tc, step), partial=True), model)
    t_train = train_cpu()
    ev = _evaluate_fasterrcnn(model, test_ds)
    curve.append({"budget_cpu_s": budget_cpu_s, "train_cpu_s": round(t_train, 1), "steps": step,
                  "ap50_voc07": ev["ap50_voc07"]})
    if save_model:
        Path(save_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), save_model)
    return result(ev, t_train, step)


def _dets_json(dets) -> list:
    """Test-set detections as JSON lists so the book draws and re-scores them without re-running
    the model. Boxes at 0.001 px and scores at 7 significant digits (float32): coarser rounding
    can flip a match at IoU 0.5 or a tie in the ranking and change the AP in its third decimal."""
    return [{"boxes": [[round(float(v), 3) for v in b] for b in d["boxes"]],
             "scores": [float(f"{float(v):.7g}") for v in d["scores"]],
             "labels": [int(v) for v in d["labels"]]} for d in dets]


def _cpu_s() -> float:
    return time.process_time()


def compare_heads(steps: int = 100, batch_size: int = 32, seed: int = 0, test_images: int = 20,
                  heads: Sequence[str] = ("fc", "conv"), out_dir: str = "runs/ch10-heads",
                  threads: Optional[int] = None, num_images: Optional[int] = None) -> Dict[str, Any]:
    """Train tiny DetectorNets that differ only in the mask head (``fc``: the paper's fully
    connected regression layer; ``conv``: a fully convolutional head, as in FCN / Mask R-CNN) with
    the project's trainer (same steps, batch, seed, optimiser), then evaluate each with
    ``dnnod.evaluate.evaluate_model`` (default ``detect`` settings) on the first ``test_images``
    shapes test images."""
    from ..data import ShapesDataset
    from ..assess import evaluate_model
    from ..train import TrainConfig, train
    if steps < 1 or batch_size < 1 or test_images < 1:
        raise ValueError(f"steps, batch_size and test_images must be >= 1; got {steps}, {batch_size}, "
                         f"{test_images}")
    test = ShapesDataset(split="test", num_images=test_images)
    rows = []
    for head in heads:
        cfg = TrainConfig(out=str(Path(out_dir) / head), data="shapes", arch="tiny", head=head,
                          epochs=1, steps_per_epoch=steps, batch_size=batch_size, optimizer="adam",
                          lr=1e-3, lr_schedule="cosine", seed=seed, val_images=0, no_progress=True,
                          threads=threads or None,
                          num_images=num_images or None)  # quick checks only (default: 1000 images)
        c0 = _cpu_s()
        summary = train(cfg)
        train_cpu = _cpu_s() - c0
        model = summary["model"].cpu().eval()
        torch.manual_seed(seed)
        res = evaluate_model(model, test, progress=False, device="cpu")
        rows.append({
            "head": head, "params": sum(p.numel() for p in model.parameters()),
            "head_params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("features")),
            "steps": summary["steps"], "final_loss": summary["final_loss"],
            "loss_last_10": float(np.mean([e for e in _step_losses(Path(out_dir) / head)][-10:])),
            "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(summary["wall_time_s"], 1),
            "map": float(res["map"]), "ap": {str(k): float(v) for k, v in res["ap"].items()},
            "class_names": res["class_names"], "seconds_per_image_cpu": round(res["seconds_per_image"], 3),
            "config": model.config(),
        })
    return {"dataset": f"shapes test split, first {test_images} images", "steps": steps,
            "train_images": num_images or 1000,
            "batch_size": batch_size, "seed": seed, "optimizer": "adam 1e-3, cosine",
            "torch_threads": torch.get_num_threads(), "heads": rows}


def _step_losses(run: Path) -> List[float]:
    import csv
    with open(run / "metrics_steps.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _load_detectornet(name: str, weights: Optional[str]) -> torch.nn.Module:
    """The checkpoint file ``weights`` if given, else the shipped ``load_pretrained(name)``."""
    from ..checkpoint import load_checkpoint, load_pretrained
    return load_checkpoint(weights, device="cpu") if weights else load_pretrained(name, device="cpu")


def detectornet_on_pennfudan(name: str = "pennfudan-tiny", root: Optional[str] = None,
                             limit: Optional[int] = None, weights: Optional[str] = None) -> Dict[str, Any]:
    """The shipped DetectorNet (``load_pretrained(name)``, or the checkpoint file ``weights``) on the
    Penn-Fudan test split with the default ``detect`` settings: VOC07 AP, s/image and the
    detections (for the book's figures), and the training command and steps from the checkpoint."""
    from ..assess import evaluate_model
    model = _load_detectornet(name, weights)
    meta = getattr(model, "meta", {}) or {}
    test = PennFudanDataset(root, split="test")
    torch.manual_seed(0)
    c0 = time.process_time()
    res = evaluate_model(model, test, progress=False, limit=limit, device="cpu", return_detections=True)
    cpu = (time.process_time() - c0) / max(res["images"], 1)
    return {"model": f"DetectorNet {weights}" if weights else f"DetectorNet load_pretrained({name!r})",
            "config": model.config(), "train_command": meta.get("command"),
            "train_steps": meta.get("step"), "train_hardware": meta.get("hardware"),
            "params": sum(p.numel() for p in model.parameters()),
            "ap50_voc07": float(res["ap"][1]), "test_images": res["images"],
            "seconds_per_image": round(res["seconds_per_image"], 3), "cpu_seconds_per_image": round(cpu, 3),
            "torch_threads": torch.get_num_threads(), "detections": _dets_json(res["detections"])}


def detectornet_train_cost(name: str = "pennfudan-tiny", short: int = 5, long: int = 25,
                           out_dir: str = "runs/ch10-cost", threads: Optional[int] = None,
                           weights: Optional[str] = None) -> Dict[str, Any]:
    """CPU seconds per training step of the shipped network's own training command (read from its
    checkpoint), measured as the difference of a ``long``-step and a ``short``-step run (so data
    loading and set-up cancel; after one untimed warm-up step), and the whole run's budget =
    steps x that. The checkpoint records
    only wall time, which on a shared machine says little about the work done. ``threads``
    replaces the command's ``--threads`` (on an overloaded machine 2 threads mostly wait on each
    other). ``weights``: a checkpoint file instead of the shipped ``name``. Sampling runs in the
    measuring process (``--workers 0``) on the CPU, so all of a step's work is counted."""
    import shlex
    from ..train import TrainConfig, train
    if not 0 < short < long:
        raise ValueError(f"need 0 < short < long; got {short}, {long}")
    meta = _load_detectornet(name, weights).meta
    if not meta.get("command"):
        raise ValueError(f"checkpoint {weights or name} records no training command")
    argv = shlex.split(meta["command"])
    argv = argv[2:] if argv[:2] == ["dnnod", "train"] else argv
    drop_flag = {"--resume", "--no-progress"}
    keep, i = [], 0
    while i < len(argv):                       # drop --out X and flags that do not apply here
        if argv[i] == "--out":
            i += 2
            continue
        if argv[i] == "--threads" and threads:
            i += 2
            continue
        if argv[i] == "--workers":           # sample in this process, so its CPU time counts
            i += 2
            continue
        if argv[i] not in drop_flag:
            keep.append(argv[i])
        i += 1
    if threads:
        keep += ["--threads", str(threads)]
    keep += ["--workers", "0", "--device", "cpu"]
    # One untimed step first: the first run in a process also pays one-time costs (oneDNN builds
    # its convolution kernels for the layout and shapes on first use), which would otherwise land
    # in the short run only and can make the difference of the two runs negative.
    base = TrainConfig.from_argv(keep + ["--out", str(Path(out_dir) / "warmup")])
    train(base, stop_after=1, no_progress=True)
    cpu = {}
    for k in (short, long):
        c0 = time.process_time()
        train(base, out=str(Path(out_dir) / f"steps{k}"), stop_after=k, no_progress=True)
        cpu[k] = time.process_time() - c0
    per_step = (cpu[long] - cpu[short]) / (long - short)
    return {"model": weights or name, "train_command": meta["command"], "steps": int(meta["step"]),
            "train_hardware": meta.get("hardware"),
            "wall_time_s": round(float(meta["wall_time_s"]), 1),
            "cpu_s_per_step": round(per_step, 3),
            "cpu_s_estimate": round(per_step * int(meta["step"]), 1),
            "measured_cpu_s": {f"{k} steps": round(v, 1) for k, v in cpu.items()},
            "measured_with": keep, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dnnod.studies.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fasterrcnn", help="train and evaluate Faster R-CNN from scratch on Penn-Fudan")
    f.add_argument("--budget-cpu-s", type=float, default=1800.0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--lr", type=float, default=0.02)
    f.add_argument("--root", default=None, help="Penn-Fudan folder (default: $DNNOD_DATA/PennFudanPed)")
    f.add_argument("--out", required=True)
    f.add_argument("--save-model", default=None, help="also save the trained state_dict here")
    f.add_argument("--eval-at-cpu-s", default="", help="comma-separated extra evaluation budgets")
    f.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    f.add_argument("--min-size", type=int, default=320, help="shorter image side inside the model")
    f.add_argument("--max-size", type=int, default=512)
    f.add_argument("--test-limit", type=int, default=None, help="quick check: first N test images")
    h = sub.add_parser("heads", help="tiny DetectorNet, fc vs conv mask head, equal budget, shapes")
    h.add_argument("--steps", type=int, default=100)
    h.add_argument("--batch-size", type=int, default=32)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--test-images", type=int, default=20)
    h.add_argument("--runs", default="runs/ch10-heads", help="folder for the two training runs")
    h.add_argument("--threads", type=int, default=None)
    h.add_argument("--num-images", type=int, default=None, help="shapes training images (default 1000)")
    h.add_argument("--out", required=True)
    c = sub.add_parser("detectornet-cost", help="CPU s per step of the shipped network's training command")
    c.add_argument("--name", default="pennfudan-tiny")
    c.add_argument("--weights", default=None, help="a checkpoint file instead of the shipped --name")
    c.add_argument("--short", type=int, default=5)
    c.add_argument("--long", type=int, default=25)
    c.add_argument("--runs", default="runs/ch10-cost")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--out", required=True)
    d = sub.add_parser("detectornet", help="the shipped DetectorNet on the Penn-Fudan test split")
    d.add_argument("--name", default="pennfudan-tiny")
    d.add_argument("--weights", default=None, help="a checkpoint file instead of the shipped --name")
    d.add_argument("--root", default=None)
    d.add_argument("--limit", type=int, default=None)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--out", required=True)
    a = p.parse_args(argv)
    command = "python -m dnnod.studies.baselines " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.cmd != "fasterrcnn":
        if a.threads:
            torch.set_num_threads(a.threads)
        if a.cmd == "detectornet-cost":
            res = detectornet_train_cost(a.name, a.short, a.long, a.runs, threads=a.threads,
                                         weights=a.weights)
        elif a.cmd == "heads":
            res = compare_heads(a.steps, a.batch_size, a.seed, a.test_images, out_dir=a.runs,
                                num_images=a.num_images)
        else:
            res = detectornet_on_pennfudan(a.name, a.root, a.limit, weights=a.weights)
        res["command"] = command
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2))
        print(json.dumps({k: v for k, v in res.items() if k != "detections"}, indent=2))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def partial(res, model):                 # a long run that gets killed still leaves a result
        out.with_suffix(".partial.json").write_text(json.dumps(dict(res, command=command), indent=2))
        if a.save_model:
            Path(a.save_model).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), Path(a.save_model).with_suffix(".partial.pt"))

    res = train_fasterrcnn(a.budget_cpu_s, a.seed, a.batch_size, a.lr, a.root, save_model=a.save_model,
                           eval_at_cpu_s=[float(v) for v in a.eval_at_cpu_s.split(",") if v.strip()],
                           on_milestone=partial, min_size=a.min_size, max_size=a.max_size,
                           test_limit=a.test_limit)
    res["command"] = command
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k not in ("detections", "losses")}, indent=2))


if __name__ == "__main__":
    main()
