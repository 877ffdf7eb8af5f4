"""What came next (book chapter 10): the pieces of the comparison with torchvision's Faster R-CNN
(built from scratch: ``weights=None, weights_backbone=None``; trained by :mod:`dnnod.studies.race`),
the shipped DetectorNet on the Penn-Fudan test split, and the mask-head comparison.

    python -m dnnod.studies.baselines detectornet --out dnnod/studies/results/ch10_detectornet.json
    python -m dnnod.studies.baselines heads --steps 60 --out dnnod/studies/results/ch10_heads.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dnnod.studies.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("heads", help="tiny DetectorNet, fc vs conv mask head, equal budget, shapes")
    h.add_argument("--steps", type=int, default=100)
    h.add_argument("--batch-size", type=int, default=32)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--test-images", type=int, default=20)
    h.add_argument("--runs", default="runs/ch10-heads", help="folder for the two training runs")
    h.add_argument("--threads", type=int, default=None)
    h.add_argument("--num-images", type=int, default=None, help="shapes training images (default 1000)")
    h.add_argument("--out", required=True)
    d = sub.add_parser("detectornet", help="the shipped DetectorNet on the Penn-Fudan test split")
    d.add_argument("--name", default="pennfudan-tiny")
    d.add_argument("--weights", default=None, help="a checkpoint file instead of the shipped --name")
    d.add_argument("--root", default=None)
    d.add_argument("--limit", type=int, default=None)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--out", required=True)
    a = p.parse_args(argv)
    command = "python -m dnnod.studies.baselines " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.cmd == "heads":
        res = compare_heads(a.steps, a.batch_size, a.seed, a.test_images, out_dir=a.runs,
                            num_images=a.num_images)
    else:
        res = detectornet_on_pennfudan(a.name, a.root, a.limit, weights=a.weights)
    res["command"] = command
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "detections"}, indent=2))


if __name__ == "__main__":
    main()
