"""Training — paper Sec. 4 (localizer: weighted L2 on Eq. 1 mask targets) and Sec. 5.2 (the box
classifier that prunes detections).

``dnnod train --data shapes|voc|pennfudan ...`` (see :func:`build_parser`). Design notes:

* Every batch is a pure function of ``(seed, rank, step)`` (a fresh ``torch.Generator``), so a
  run resumed from a checkpoint sees exactly the batches the uninterrupted run saw; together
  with the saved model / optimizer / scaler state and the torch, numpy and Python RNG states
  (dropout draws from torch's global RNG) ``--resume`` continues bit for bit.
* Checkpoints are written atomically (temporary file + ``os.replace``, :mod:`dnnod.checkpoint`).
* DDP when launched by ``torchrun`` (``WORLD_SIZE > 1``): gloo on CPU, NCCL on CUDA; each rank
  draws its own batches (its rank is in the seed), rank 0 logs and saves.
* Mixed precision (``torch.autocast`` + ``GradScaler``) on CUDA.
* Metrics: ``metrics_steps.csv`` (loss per step), ``metrics_epochs.csv`` and ``metrics.json``
  (per-epoch validation loss and, for localizers, validation AP through ``dnnod.detect`` and
  ``dnnod.evaluate`` on a fixed validation subset).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .data import make_dataset
from .classifier import BoxClassifier, make_box_classifier  # noqa: F401 (re-exported)
from .loss import DEFAULT_LAMBDA, mask_loss
from .net import HEAD_NORMS, HEADS, DetectorNet
from .data.sampler import SCALE_DISTS, ClassifierSampler, ImageBank, LocalizerSampler

__all__ = ["build_parser", "train", "main", "BoxClassifier", "make_box_classifier"]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="dnnod train", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--data", choices=("shapes", "voc", "pennfudan"), default="shapes")
    a("--root", default=None, help="data folder (VOC layout for voc; default data_root()/PennFudanPed)")
    a("--train-split", default="train", help="split / image set to train on (voc: e.g. trainval)")
    a("--val-split", default=None, help="split for per-epoch validation (default: shapes val, "
                                          "pennfudan none, voc val if present)")
    a("--task", choices=("localizer", "classifier"), default="localizer")
    a("--arch", choices=("tiny", "paper"), default="tiny")
    a("--activation", choices=("linear", "sigmoid"), default="linear")
    a("--head", choices=HEADS, default="fc",
      help="mask head: fc (paper), conv or skip (ours, ch. 10)")
    a("--head-norm", choices=HEAD_NORMS, default="none",
      help="batch normalisation in the conv / skip head (ours)")
    a("--d", type=int, default=24, help="mask resolution (paper: 24)")
    a("--out", required=True, help="run folder (checkpoints, metrics)")
    a("--epochs", type=int, default=10)
    a("--steps-per-epoch", type=int, default=100)
    a("--batch-size", type=int, default=64)
    a("--lr", type=float, default=None, help="default: adagrad 0.01, adam 1e-3, sgd 0.01")
    a("--lr-schedule", choices=("constant", "cosine"), default="constant")
    a("--optimizer", choices=("adagrad", "adam", "sgd"), default="adagrad")
    a("--weight-decay", type=float, default=0.0)
    a("--lam", type=float, default=DEFAULT_LAMBDA, help="λ of the weighted L2 loss (paper Eq. in Sec. 4)")
    a("--min-scale", type=float, default=0.1, help="smallest crop width / image width")
    a("--crop-scale", choices=SCALE_DISTS, default="uniform",
      help="crop width distribution in [min-scale, 1]: uniform (the paper) or log-uniform (ours)")
    a("--pos-fraction", type=float, default=0.4)
    a("--no-flip", action="store_true")
    a("--seed", type=int, default=0, help="initialisation and batch sampling (and, unless "
                                          "--data-seed is given, the shapes images)")
    a("--data-seed", type=int, default=None,
      help="shapes: generator seed of the train/val images (default: --seed, as recorded commands "
           "assume); fix it to compare training seeds on the same data")
    a("--resume", action="store_true", help="continue from OUT/last.pt if present")
    a("--workers", type=int, default=0, help="DataLoader worker processes preparing batches")
    a("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a("--num-images", type=int, default=None, help="shapes: training images (default 1000)")
    a("--image-size", type=int, default=192, help="shapes: image side")
    a("--max-side", type=int, default=None, help="downsize training photos to this longest side once")
    a("--val-images", type=int, default=16, help="images for the per-epoch AP (0: skip AP)")
    a("--val-batches", type=int, default=4, help="fixed batches for the per-epoch validation loss")
    a("--stop-after", type=int, default=None, help="stop (as if killed) after this many steps")
    a("--ckpt-every", type=int, default=None, help="also checkpoint every N steps")
    a("--device", default=None)
    a("--no-progress", action="store_true")
    return p


def _default_lr(opt: str) -> float:
    return {"adagrad": 0.01, "adam": 1e-3, "sgd": 0.01}[opt]


class _Batches(torch.utils.data.Dataset):
    """Map-style "dataset" whose item ``step`` is the whole training batch of that step."""

    def __init__(self, sampler, batch_size: int, seed: int, rank: int) -> None:
        self.sampler, self.batch_size, self.seed, self.rank = sampler, batch_size, seed, rank

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int) -> Dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.rank, step))
        b = self.sampler.sample(self.batch_size, g)
        return {"x": b["x"], "y": b["y"]}


def _mix(*xs: int) -> int:
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (int(x) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                    int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _val_split(args, data: str) -> Optional[str]:
    if args.val_split is not None:
        return None if args.val_split in ("", "none") else args.val_split
    return {"shapes": "val", "pennfudan": None, "voc": None}[data]


def train(argv: Optional[Sequence[str]] = None, **overrides) -> Dict[str, Any]:
    """Run training from CLI-style ``argv`` and/or keyword overrides (``out=...``, ``epochs=...``).
    Returns a summary dict (final loss, steps, wall time, paths)."""
    args = build_parser().parse_args(list(argv) if argv is not None else
                                     (["--out", str(overrides["out"])] if "out" in overrides else []))
    for k, v in overrides.items():
        if not hasattr(args, k):
            raise ValueError(f"unknown training option {k!r}")
        setattr(args, k, v)
    return _run(args)


def _make_optimizer(name: str, params, lr: float, wd: float) -> torch.optim.Optimizer:
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


def _run(args) -> Dict[str, Any]:
    for name in ("epochs", "steps_per_epoch", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.lam < 0:
        raise ValueError(f"--lam must be >= 0; got {args.lam}")
    if args.data_seed is not None and args.data != "shapes":
        # a real dataset's images are fixed files: the option would be silently ignored
        raise ValueError(f"--data-seed seeds the generated shapes images only; got --data {args.data}")
    if args.threads:
        torch.set_num_threads(args.threads)
    world, rank, local = _dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        device = torch.device(f"cuda:{local}") if backend == "nccl" else torch.device("cpu")
    else:
        device = torch.device(args.device) if args.device else \
            torch.device("cuda" if torch.cuda.is_available() else "cpu")
    is_main = rank == 0
    out = Path(args.out)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    lr = args.lr if args.lr is not None else _default_lr(args.optimizer)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed % (1 << 32))
    random.seed(args.seed)

    ds_kw: Dict[str, Any] = {}
    if args.data == "shapes":
        # The shapes images follow --seed unless --data-seed fixes them: a seed study that changes
        # only the initialisation and batches needs the same training and validation images.
        data_seed = args.seed if args.data_seed is None else args.data_seed
        ds_kw = {"image_size": args.image_size, "seed": data_seed}
        if args.num_images:
            ds_kw["num_images"] = args.num_images
    train_ds = make_dataset(args.data, args.train_split, args.root, **ds_kw)
    class_names = list(train_ds.class_names)
    C = len(class_names)
    bank = ImageBank(train_ds, max_side=args.max_side)
    all_boxes = torch.cat([b[l > 0] for b, l in zip(bank.boxes, bank.labels)])
    scale_back = None
    aspect_ratios = ckpt.kmeans_aspect_ratios(all_boxes, k=10, seed=0)

    if args.task == "localizer":
        model = DetectorNet(C, arch=args.arch, d=args.d, activation=args.activation, head=args.head,
                            head_norm=args.head_norm)
        sampler = LocalizerSampler(bank, C, model.input_size, d=args.d, min_scale=args.min_scale,
                                   scale_dist=args.crop_scale, pos_fraction=args.pos_fraction,
                                   flip=not args.no_flip)
    else:
        model = BoxClassifier(C, input_size=64 if args.arch == "tiny" else 128)
        sampler = ClassifierSampler(bank, model.input_size, pos_fraction=args.pos_fraction,
                                    flip=not args.no_flip)
    # channels_last (NHWC): oneDNN's and cuDNN's fast convolution layout — a tiny-trunk training
    # step on 2 CPU cores went from 0.32 s to 0.28 s (measured), the same numbers up to rounding.
    model.to(device, memory_format=torch.channels_last)
    opt = _make_optimizer(args.optimizer, model.parameters(), lr, args.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    total = args.epochs * args.steps_per_epoch

    def lr_at(step: int) -> float:
        if args.lr_schedule == "cosine":
            return lr * 0.5 * (1 + math.cos(math.pi * step / total))
        return lr

    step, log_steps, log_epochs = 0, [], []
    wall_before = 0.0
    last = out / "last.pt"
    if args.resume and last.is_file():
        ck = ckpt.read_checkpoint(last, map_location="cpu")
        if ck.get("config") != model.config():
            raise ValueError(f"--resume: {last} was trained with {ck.get('config')}, this run "
                             f"builds {model.config()}")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        step = int(ck["step"])
        log_steps = list(ck.get("log_steps", []))
        log_epochs = list(ck.get("log_epochs", []))
        wall_before = float(ck.get("meta", {}).get("wall_time_s", 0.0))
        rng = ck["rng"]
    else:
        rng = None

    net = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)

    # Fixed validation data: the loss on a few batches drawn with a fixed seed from the val split
    # (or the training images when there is none), and a fixed subset of images for AP.
    val_name = _val_split(args, args.data)
    val_ds = make_dataset(args.data, val_name, args.root, **ds_kw) if val_name else None
    vbank = ImageBank(val_ds, max_side=args.max_side) if val_ds is not None else bank
    vsampler = (LocalizerSampler(vbank, C, model.input_size, d=args.d, min_scale=args.min_scale,
                                 scale_dist=args.crop_scale,
                                 pos_fraction=args.pos_fraction, flip=False)
                if args.task == "localizer" else
                ClassifierSampler(vbank, model.input_size, pos_fraction=args.pos_fraction, flip=False))
    val_batches = [vsampler.sample(args.batch_size, torch.Generator().manual_seed(10_000 + k))
                   for k in range(args.val_batches)] if is_main else []

    loader = torch.utils.data.DataLoader(
        _Batches(sampler, args.batch_size, args.seed, rank), batch_size=None,
        sampler=range(step, total), num_workers=args.workers,
        generator=torch.Generator().manual_seed(0),   # keep the global RNG untouched
        persistent_workers=False, prefetch_factor=4 if args.workers else None)
    if rng is not None:
        _set_rng_state(rng)

    meta = {"command": _command_line(),
            "args": {k: v for k, v in vars(args).items()}, "seed": args.seed, "torch": str(torch.__version__),
            "device": str(device), "world_size": world, "train_images": len(train_ds),
            "hardware": _hardware(device)}
    meta = json.loads(json.dumps(meta, default=str))   # plain types only: weights_only=True loads it

    def checkpoint_dict(training: bool) -> Dict[str, Any]:
        d = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "kind": args.task,
             "config": model.config(), "class_names": class_names,
             "aspect_ratios": [float(a) for a in aspect_ratios],
             "state_dict": {k: v.detach().cpu().contiguous().clone()
                            for k, v in model.state_dict().items()},
             "meta": dict(meta, step=step, wall_time_s=wall_before + time.time() - t0,
                          log_epochs=log_epochs)}
        if training:
            d.update(optimizer=opt.state_dict(), scaler=scaler.state_dict() if use_amp else {},
                     step=step, rng=_rng_state(), log_steps=log_steps, log_epochs=log_epochs)
        return d

    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=step, disable=args.no_progress or not is_main, desc=f"train {args.task}",
               dynamic_ncols=True)
    t0 = time.time()
    stopped = False
    model.train()
    for batch in loader:
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step)
        x = batch["x"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = batch["y"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            pred = net(x)
            if args.task == "localizer":
                loss = mask_loss(pred.float(), y, lam=args.lam)
            else:
                loss = nn.functional.cross_entropy(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at step {step}; lower --lr")
        if is_main:
            log_steps.append({"step": step, "epoch": (step - 1) // args.steps_per_epoch + 1,
                              "loss": lv, "lr": lr_at(step - 1),
                              "time_s": round(wall_before + time.time() - t0, 3)})
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.3f}")
        epoch_end = step % args.steps_per_epoch == 0
        saving = epoch_end or bool(args.ckpt_every and step % args.ckpt_every == 0) or step == total
        if distributed and saving:
            _sync_buffers(model, world)
        if is_main and epoch_end:
            row = _validate(model, args, val_batches, val_ds, device, step)
            row["train_loss"] = float(np.mean([r["loss"] for r in log_steps[-args.steps_per_epoch:]]))
            row["time_s"] = round(wall_before + time.time() - t0, 3)
            log_epochs.append(row)
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            model.train()
        if is_main and saving:
            ckpt.save_checkpoint(checkpoint_dict(True), last)
            _write_logs(out, log_steps, log_epochs)
        if args.stop_after is not None and step >= args.stop_after and step < total:
            stopped = True
            break
    bar.close()
    wall = wall_before + time.time() - t0
    if is_main:
        if not stopped:
            ckpt.save_checkpoint(checkpoint_dict(False), out / "model.pt")
        _write_logs(out, log_steps, log_epochs)
    if distributed:
        import torch.distributed as dist
        dist.barrier()
    summary = {"steps": step, "stopped": stopped, "wall_time_s": wall, "out": str(out),
               "final_loss": log_steps[-1]["loss"] if log_steps else None,
               "epochs": log_epochs, "model": model}
    return summary


def _command_line() -> Optional[str]:
    """``dnnod train ...`` as typed, whether launched as ``dnnod train``, ``python -m dnnod.cli
    train`` or ``python -m dnnod.train`` (None when called from Python)."""
    if not sys.argv or "dnnod" not in sys.argv[0]:
        return None
    args = sys.argv[1:]
    if args[:1] == ["train"]:
        args = args[1:]
    return "dnnod train " + " ".join(args)


def _sync_buffers(model: nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over the ranks (DDP keeps parameters identical but
    each rank updates its own running stats), so every rank holds the same model."""
    import torch.distributed as dist
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world)
        else:
            dist.broadcast(b, 0)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


@torch.no_grad()
def _validate(model, args, val_batches, val_ds, device, step) -> Dict[str, Any]:
    model.eval()
    row: Dict[str, Any] = {"epoch": step // args.steps_per_epoch, "step": step}
    losses, accs = [], []
    for b in val_batches:
        pred = model(b["x"].to(device))
        if args.task == "localizer":
            losses.append(float(mask_loss(pred.float(), b["y"].to(device), lam=args.lam)))
        else:
            losses.append(float(nn.functional.cross_entropy(pred.float(), b["y"].to(device))))
            accs.append(float((pred.argmax(1).cpu() == b["y"]).float().mean()))
    if losses:
        row["val_loss"] = float(np.mean(losses))
    if accs:
        row["val_acc"] = float(np.mean(accs))
    if args.task == "localizer" and args.val_images and val_ds is not None:
        try:
            from .assess import evaluate_model
            n = min(args.val_images, len(val_ds))
            sub = torch.utils.data.Subset(val_ds, list(range(n)))
            res = evaluate_model(model, sub, device=device, progress=False)
            row["val_map"] = float(res["map"])
        except Exception as e:      # e.g. dnnod.detect not available yet: keep training
            import warnings
            warnings.warn(f"validation AP skipped at step {step}: {type(e).__name__}: {e}")
    return row


def _write_logs(out: Path, log_steps: List[Dict[str, Any]], log_epochs: List[Dict[str, Any]]) -> None:
    def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
        keys: List[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    write_csv(out / "metrics_steps.csv", log_steps)
    write_csv(out / "metrics_epochs.csv", log_epochs)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps({"steps": log_steps, "epochs": log_epochs}))
    os.replace(tmp, out / "metrics.json")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    s = _run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in s.items() if k not in ("model", "epochs")}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
