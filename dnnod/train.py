"""Training — paper Sec. 4 (localizer: weighted L2 on Eq. 1 mask targets) and Sec. 5.2 (the box
classifier that prunes detections).

The recipe is a :class:`TrainConfig` (a dataclass; ``dnnod train --data shapes|voc|pennfudan ...``
fills it from the command line, :func:`build_parser`). :func:`train` runs it in named steps that
chapter 5 shows one by one: :func:`load_data` (datasets, the Sec. 4 window sampler, k-means
aspect ratios), :func:`build_model`, :func:`train_step` (one SGD step of the weighted L2 loss),
:func:`validate` (per-epoch loss and AP) and :func:`make_checkpoint`. Design notes:

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
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .data import make_dataset
from .classifier import BoxClassifier, make_box_classifier  # noqa: F401 (re-exported)
from .loss import DEFAULT_LAMBDA, mask_loss
from .net import HEAD_NORMS, HEADS, DetectorNet
from .data.sampler import BLUR_MAX, SCALE_DISTS, ClassifierSampler, ImageBank, LocalizerSampler

__all__ = ["TrainConfig", "build_parser", "train", "main", "load_data", "build_model", "train_step",
           "validate", "make_checkpoint", "BoxClassifier", "make_box_classifier"]


# --------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are the command-line options
    (``steps_per_epoch`` is ``--steps-per-epoch``); defaults are the command's defaults.

    The paper's recipe (Sec. 4) is the localizer on 225×225 windows (``arch="paper"``), AdaGrad,
    the weighted L2 loss with λ (``lam``) and crops whose width is uniform in [min_scale, 1] of
    the image; ``dnnod/weights/README.md`` records the recipes of the shipped networks.
    """
    out: str = ""                       #: run folder (checkpoints, metrics); required
    data: str = "shapes"                #: shapes | voc | pennfudan
    root: Optional[str] = None          #: data folder (VOC layout for voc)
    train_split: str = "train"
    val_split: Optional[str] = None     #: default: shapes val, pennfudan none, voc none
    task: str = "localizer"             #: localizer (Sec. 4) | classifier (Sec. 5.2)
    arch: str = "tiny"                  #: tiny | paper
    activation: str = "linear"          #: linear | sigmoid output
    head: str = "fc"                    #: fc (paper) | conv | skip (ours, ch. 10)
    head_norm: str = "none"             #: batch norm in the conv / skip head (ours)
    d: int = 24                         #: mask resolution (paper: 24)
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: Optional[float] = None          #: default: adagrad 0.01, adam 1e-3, sgd 0.01
    lr_schedule: str = "constant"       #: constant | cosine
    optimizer: str = "adagrad"          #: adagrad | adam | sgd
    weight_decay: float = 0.0
    lam: float = DEFAULT_LAMBDA         #: λ of the weighted L2 loss (Sec. 4)
    min_scale: float = 0.1              #: smallest crop width / image width
    crop_scale: str = "uniform"         #: uniform (the paper) | log-uniform (ours)
    pos_fraction: float = 0.4
    color_jitter: float = 0.0           #: brightness/contrast/saturation jitter strength (ours)
    blur: float = 0.0                   #: largest Gaussian blur sigma, network-input px (ours)
    no_flip: bool = False
    seed: int = 0                       #: initialisation and batches (and shapes images)
    data_seed: Optional[int] = None     #: shapes: generator seed of the images (default: seed)
    resume: bool = False                #: continue from out/last.pt if present
    workers: int = 0                    #: DataLoader worker processes preparing batches
    threads: Optional[int] = None       #: torch CPU threads
    num_images: Optional[int] = None    #: shapes: training images (default 1000)
    image_size: int = 192               #: shapes: image side
    max_side: Optional[int] = None      #: downsize training photos to this longest side once
    val_images: int = 16                #: images for the per-epoch AP (0: skip AP)
    val_batches: int = 4                #: fixed batches for the per-epoch validation loss
    stop_after: Optional[int] = None    #: stop (as if killed) after this many steps
    budget_s: Optional[float] = None    #: train for this many seconds of steps (wall; validation
                                        #: and checkpoints not counted); the cosine follows time
    ckpt_every: Optional[int] = None    #: also checkpoint every N steps
    device: Optional[str] = None
    no_progress: bool = False

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> "TrainConfig":
        """The config of a ``dnnod train`` command line (without the ``dnnod train`` words)."""
        return cls.from_namespace(build_parser().parse_args(list(argv)))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(ns).items() if k in names})

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed; an unknown name is a ``ValueError``."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Refuse a config that cannot run, with a message naming the option."""
        if not self.out:
            raise ValueError("out (--out): the run folder is required")
        choices = {"data": ("shapes", "voc", "pennfudan"), "task": ("localizer", "classifier"),
                   "arch": ("tiny", "paper"), "activation": ("linear", "sigmoid"), "head": HEADS,
                   "head_norm": HEAD_NORMS, "lr_schedule": ("constant", "cosine"),
                   "optimizer": ("adagrad", "adam", "sgd"), "crop_scale": SCALE_DISTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {tuple(allowed)}; "
                                 f"got {getattr(self, name)!r}")
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.lam < 0:
            raise ValueError(f"--lam must be >= 0; got {self.lam}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"--color-jitter must be in [0, 1); got {self.color_jitter}")
        if not 0 <= self.blur <= BLUR_MAX:
            raise ValueError(f"--blur must be in [0, {BLUR_MAX:g}] (network-input pixels); got {self.blur}")
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise ValueError(f"--budget-s must be a positive number of seconds; got {self.budget_s}")
        if self.data_seed is not None and self.data != "shapes":
            # a real dataset's images are fixed files: the option would be silently ignored
            raise ValueError(f"--data-seed seeds the generated shapes images only; got --data {self.data}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else _default_lr(self.optimizer)

    def lr_at(self, step: int, elapsed_s: Optional[float] = None) -> float:
        """The learning rate of a step: constant, or cosine decay to 0 over the run. With a time
        budget (``budget_s``) the cosine runs over the training seconds ``elapsed_s`` instead of
        the steps, so a run ends at learning rate 0 however fast the machine is."""
        if self.lr_schedule == "cosine":
            if self.budget_s is not None and elapsed_s is not None:
                frac = min(max(elapsed_s / self.budget_s, 0.0), 1.0)
            else:
                frac = step / self.total_steps
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * frac))
        return self.learning_rate

    def val_split_name(self) -> Optional[str]:
        if self.val_split is not None:
            return None if self.val_split in ("", "none") else self.val_split
        return {"shapes": "val", "pennfudan": None, "voc": None}[self.data]


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
    a("--color-jitter", type=float, default=0.0,
      help="ours: brightness, contrast and saturation of each training crop scaled by factors "
           "uniform in [1-J, 1+J] (0: off, the default)")
    a("--blur", type=float, default=0.0,
      help="ours: each training crop blurred by a Gaussian of sigma uniform in [0, B] pixels of "
           "the network input, as if the photo had fewer pixels (0: off, the default)")
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
    a("--budget-s", type=float, default=None,
      help="train for this many seconds (wall clock of the training steps; validation and "
           "checkpoints not counted), at most epochs x steps-per-epoch steps; with --lr-schedule "
           "cosine the decay follows the elapsed time")
    a("--device", default=None)
    a("--no-progress", action="store_true")
    # One source of defaults: the dataclass (the defaults written above are the same).
    p.set_defaults(**{f.name: f.default for f in dataclasses.fields(TrainConfig)
                      if f.name != "out"})
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



def _make_optimizer(name: str, params, lr: float, wd: float) -> torch.optim.Optimizer:
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


@dataclass
class TrainData:
    """What :func:`load_data` prepares: the training images in memory (:class:`ImageBank`),
    their classes and the k-means aspect ratios of their boxes (Sec. 5.2), and the validation
    set (``None`` where there is none; the validation loss then uses training images)."""
    train_set: Any
    bank: ImageBank
    class_names: List[str]
    aspect_ratios: torch.Tensor
    val_set: Any
    val_bank: ImageBank


def load_data(cfg: TrainConfig) -> TrainData:
    """Step 1: the datasets and the image bank that the window samplers draw from."""
    ds_kw: Dict[str, Any] = {}
    if cfg.data == "shapes":
        # The shapes images follow --seed unless --data-seed fixes them: a seed study that changes
        # only the initialisation and batches needs the same training and validation images.
        data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
        ds_kw = {"image_size": cfg.image_size, "seed": data_seed}
        if cfg.num_images:
            ds_kw["num_images"] = cfg.num_images
    train_ds = make_dataset(cfg.data, cfg.train_split, cfg.root, **ds_kw)
    bank = ImageBank(train_ds, max_side=cfg.max_side)
    all_boxes = torch.cat([b[l > 0] for b, l in zip(bank.boxes, bank.labels)])
    aspect_ratios = ckpt.kmeans_aspect_ratios(all_boxes, k=10, seed=0)
    val_name = cfg.val_split_name()
    val_ds = make_dataset(cfg.data, val_name, cfg.root, **ds_kw) if val_name else None
    vbank = ImageBank(val_ds, max_side=cfg.max_side) if val_ds is not None else bank
    return TrainData(train_ds, bank, list(train_ds.class_names), aspect_ratios, val_ds, vbank)


def build_model(cfg: TrainConfig, data: TrainData):
    """Step 2: the network (Sec. 3) or the box classifier (Sec. 5.2) and the samplers of its
    training and validation windows (not flipped, jittered or blurred). Returns ``(model, sampler, val_sampler)``."""
    C = len(data.class_names)
    if cfg.task == "localizer":
        model = DetectorNet(C, arch=cfg.arch, d=cfg.d, activation=cfg.activation, head=cfg.head,
                            head_norm=cfg.head_norm)

        def sampler(bank, training):
            return LocalizerSampler(bank, C, model.input_size, d=cfg.d, min_scale=cfg.min_scale,
                                    scale_dist=cfg.crop_scale, pos_fraction=cfg.pos_fraction,
                                    flip=training and not cfg.no_flip,
                                    jitter=cfg.color_jitter if training else 0.0,
                                    blur=cfg.blur if training else 0.0)
    else:
        model = BoxClassifier(C, input_size=64 if cfg.arch == "tiny" else 128)

        def sampler(bank, training):
            return ClassifierSampler(bank, model.input_size, pos_fraction=cfg.pos_fraction,
                                     flip=training and not cfg.no_flip,
                                     jitter=cfg.color_jitter if training else 0.0,
                                     blur=cfg.blur if training else 0.0)
    # What the checkpoint will carry, on the model itself: the per-epoch AP and a caller of
    # train() then run detect with the k-means candidate shapes (Sec. 5.2), as a model loaded
    # from model.pt does, not with the generic DEFAULT_ASPECT_RATIOS.
    model.class_names = list(data.class_names)
    model.aspect_ratios = [float(a) for a in data.aspect_ratios]
    # validation windows are neither flipped, jittered nor blurred: the same batches at every epoch
    return model, sampler(data.bank, True), sampler(data.val_bank, False)


def train_step(net: nn.Module, batch: Dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               scaler: "torch.amp.GradScaler", cfg: TrainConfig, device: torch.device) -> float:
    """Step 3: one optimisation step on one batch — the weighted L2 loss of Sec. 4 between the
    predicted and the Eq. 1 target masks (or cross-entropy for the classifier). Returns the loss."""
    use_amp = device.type == "cuda"
    x = batch["x"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = batch["y"].to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, enabled=use_amp):
        pred = net(x)
        if cfg.task == "localizer":
            loss = mask_loss(pred.float(), y, lam=cfg.lam)
        else:
            loss = nn.functional.cross_entropy(pred.float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def make_checkpoint(cfg: TrainConfig, model: nn.Module, data: TrainData, meta: Dict[str, Any],
                    training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Step 5: the checkpoint dict (:mod:`dnnod.checkpoint`): the model with its class names and
    aspect ratios, and — for ``last.pt``, to resume — the ``training`` state (optimizer, scaler,
    step, RNG states, logs)."""
    d = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "kind": cfg.task,
         "config": model.config(), "class_names": data.class_names,
         "aspect_ratios": [float(a) for a in data.aspect_ratios],
         "state_dict": {k: v.detach().cpu().contiguous().clone()
                        for k, v in model.state_dict().items()},
         "meta": meta}
    if training is not None:
        d.update(training)
    return d


def _setup(cfg: TrainConfig):
    """Threads, the process group under torchrun, the device; the run folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world, rank, local = _dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        device = torch.device(f"cuda:{local}") if backend == "nccl" else torch.device("cpu")
    else:
        device = torch.device(cfg.device) if cfg.device else \
            torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if rank == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return device, world, rank, local


def _resume_state(cfg: TrainConfig, model: nn.Module, opt, scaler) -> Optional[Dict[str, Any]]:
    """``--resume``: load ``out/last.pt`` into the model, optimizer and scaler; return its step,
    logs, wall time and RNG states (None when starting afresh)."""
    last = Path(cfg.out) / "last.pt"
    if not (cfg.resume and last.is_file()):
        return None
    ck = ckpt.read_checkpoint(last, map_location="cpu")
    if ck.get("config") != model.config():
        raise ValueError(f"--resume: {last} was trained with {ck.get('config')}, this run "
                         f"builds {model.config()}")
    model.load_state_dict(ck["state_dict"])
    opt.load_state_dict(ck["optimizer"])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    return {"step": int(ck["step"]), "log_steps": list(ck.get("log_steps", [])),
            "log_epochs": list(ck.get("log_epochs", [])),
            "wall": float(ck.get("meta", {}).get("wall_time_s", 0.0)), "rng": ck["rng"],
            "train_s": float(ck.get("train_s", 0.0))}


def train(config: Optional[TrainConfig] = None, **changes) -> Dict[str, Any]:
    """Train a localizer (Sec. 4) or box classifier (Sec. 5.2) as ``config`` says; keywords
    change fields of it (or make the whole config: ``train(out="runs/x", epochs=2)``).

    Returns a summary dict: steps, whether it stopped early, wall time, the run folder, final
    loss, per-epoch validation rows and the trained ``model`` (with the ``class_names`` and
    k-means ``aspect_ratios`` of its checkpoint, as :func:`dnnod.checkpoint.load_checkpoint` sets them).
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"train() takes a TrainConfig (TrainConfig.from_argv(argv) for a command "
                        f"line); got {type(config).__name__}")
    cfg = (config or TrainConfig()).replace(**changes)
    cfg.check()
    device, world, rank, local = _setup(cfg)
    distributed, is_main = world > 1, rank == 0
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (1 << 32))
    random.seed(cfg.seed)

    data = load_data(cfg)                                               # step 1
    model, sampler, val_sampler = build_model(cfg, data)               # step 2
    # channels_last (NHWC): oneDNN's and cuDNN's fast convolution layout — a tiny-trunk training
    # step on 2 CPU cores went from 0.32 s to 0.28 s (measured), the same numbers up to rounding.
    model.to(device, memory_format=torch.channels_last)
    opt = _make_optimizer(cfg.optimizer, model.parameters(), cfg.learning_rate, cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    total = cfg.total_steps

    state = _resume_state(cfg, model, opt, scaler)
    step = state["step"] if state else 0
    log_steps: List[Dict[str, Any]] = state["log_steps"] if state else []
    log_epochs: List[Dict[str, Any]] = state["log_epochs"] if state else []
    wall_before = state["wall"] if state else 0.0
    train_s = state["train_s"] if state else 0.0       # seconds spent in training steps (budget)

    net = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    # Fixed validation data: the loss on a few batches drawn with a fixed seed from the val split
    # (or the training images when there is none), and a fixed subset of images for AP.
    val_batches = [val_sampler.sample(cfg.batch_size, torch.Generator().manual_seed(10_000 + k))
                   for k in range(cfg.val_batches)] if is_main else []
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, cfg.batch_size, cfg.seed, rank), batch_size=None,
        sampler=range(step, total), num_workers=cfg.workers,
        generator=torch.Generator().manual_seed(0),   # keep the global RNG untouched
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    if state is not None:
        _set_rng_state(state["rng"])

    meta = {"command": _command_line(), "args": dataclasses.asdict(cfg), "seed": cfg.seed,
            "torch": str(torch.__version__), "device": str(device), "world_size": world,
            "train_images": len(data.train_set), "hardware": _hardware(device)}
    meta = json.loads(json.dumps(meta, default=str))   # plain types only: weights_only=True loads it

    def checkpoint(training: bool) -> Dict[str, Any]:
        m = dict(meta, step=step, wall_time_s=wall_before + time.time() - t0, log_epochs=log_epochs,
                 train_s=round(train_s, 3))
        st = None
        if training:
            st = dict(optimizer=opt.state_dict(),
                      scaler=scaler.state_dict() if device.type == "cuda" else {},
                      step=step, rng=_rng_state(), log_steps=log_steps, log_epochs=log_epochs,
                      train_s=train_s)
        return make_checkpoint(cfg, model, data, m, st)

    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=step, disable=cfg.no_progress or not is_main,
               desc=f"train {cfg.task}", dynamic_ncols=True)
    t0 = time.time()
    stopped = False
    model.train()
    budget_spent = False
    t_data = time.time()
    for batch in loader:
        lr_now = cfg.lr_at(step, train_s)
        for gr in opt.param_groups:
            gr["lr"] = lr_now
        lv = train_step(net, batch, opt, scaler, cfg, device)             # step 3
        step += 1
        # The budget counts the step and the wait for its batch, not validation or checkpoints.
        train_s += time.time() - t_data
        if cfg.budget_s is not None:
            if distributed:      # every rank stops at the same step: rank 0's clock decides
                flag = torch.tensor([float(train_s >= cfg.budget_s)], device=device)
                import torch.distributed as dist
                dist.broadcast(flag, 0)
                budget_spent = bool(flag.item())
            else:
                budget_spent = train_s >= cfg.budget_s
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at step {step}; lower --lr")
        if is_main:
            log_steps.append({"step": step, "epoch": (step - 1) // cfg.steps_per_epoch + 1,
                              "loss": lv, "lr": lr_now,
                              "time_s": round(wall_before + time.time() - t0, 3)})
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.3f}")
        epoch_end = step % cfg.steps_per_epoch == 0
        final = step == total or budget_spent
        saving = epoch_end or bool(cfg.ckpt_every and step % cfg.ckpt_every == 0) or final
        if distributed and saving:
            _sync_buffers(model, world)
        if is_main and (epoch_end or budget_spent):   # a budget's last step is validated too
            row = validate(model, cfg, val_batches, data.val_set, device, step)   # step 4
            row["train_loss"] = float(np.mean([r["loss"] for r in log_steps[-cfg.steps_per_epoch:]]))
            row["time_s"] = round(wall_before + time.time() - t0, 3)
            log_epochs.append(row)
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            model.train()
        if is_main and saving:
            ckpt.save_checkpoint(checkpoint(True), out / "last.pt")             # step 5
            _write_logs(out, log_steps, log_epochs)
        if budget_spent:
            break
        if cfg.stop_after is not None and step >= cfg.stop_after and step < total:
            stopped = True
            break
        t_data = time.time()
    bar.close()
    wall = wall_before + time.time() - t0
    if is_main:
        if not stopped:
            ckpt.save_checkpoint(checkpoint(False), out / "model.pt")
        _write_logs(out, log_steps, log_epochs)
    if distributed:
        import torch.distributed as dist
        dist.barrier()
    return {"steps": step, "stopped": stopped, "wall_time_s": wall, "train_s": train_s, "out": str(out),
            "final_loss": log_steps[-1]["loss"] if log_steps else None,
            "epochs": log_epochs, "model": model}


def _command_line() -> Optional[str]:
    """``dnnod train ...`` as typed, whether launched as ``dnnod train``, ``python -m dnnod.cli
    train`` or ``python -m dnnod.train`` (None when called from Python, e.g. by a study whose own
    command line is not a training command; ``meta["args"]`` holds the full config either way)."""
    if not sys.argv:
        return None
    prog = Path(sys.argv[0])
    if not (prog.name == "dnnod" or prog.parent.name == "dnnod" and prog.name in
            ("cli.py", "train.py", "__main__.py")):
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
def validate(model: nn.Module, cfg: TrainConfig, val_batches, val_ds, device: torch.device,
             step: int) -> Dict[str, Any]:
    """Step 4, at each epoch's end: the loss on fixed validation batches and, for a localizer,
    the AP of the whole detector on the first ``val_images`` validation images."""
    model.eval()
    row: Dict[str, Any] = {"epoch": step // cfg.steps_per_epoch, "step": step}
    losses, accs = [], []
    for b in val_batches:
        pred = model(b["x"].to(device))
        if cfg.task == "localizer":
            losses.append(float(mask_loss(pred.float(), b["y"].to(device), lam=cfg.lam)))
        else:
            losses.append(float(nn.functional.cross_entropy(pred.float(), b["y"].to(device))))
            accs.append(float((pred.argmax(1).cpu() == b["y"]).float().mean()))
    if losses:
        row["val_loss"] = float(np.mean(losses))
    if accs:
        row["val_acc"] = float(np.mean(accs))
    if cfg.task == "localizer" and cfg.val_images and val_ds is not None:
        try:
            from .assess import evaluate_model
            n = min(cfg.val_images, len(val_ds))
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
    s = train(TrainConfig.from_argv(sys.argv[1:] if argv is None else argv))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in s.items() if k not in ("model", "epochs")}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
