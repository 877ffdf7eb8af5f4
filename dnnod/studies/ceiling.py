"""The perfect-mask ceiling of box extraction on real photos: the AP of :func:`dnnod.detect.detect`
when the network is perfect (:class:`dnnod.predict.GroundTruthPredictor`, the exact Eq. 1 targets
of the true boxes), for named ``detect`` settings, on a Penn-Fudan split.

    python -m dnnod.studies.ceiling --split val --out runs/trials/ceiling_val.json \\
        --setting defaults '{}' --setting no-refinement '{"refine": false}'

What a trained network can reach with a setting is bounded by its ceiling, so a box extraction
that separates overlapping people better raises it. Settings are chosen on the ``val`` split (20
photos carved from the training images) and on synthetic scenes (``book/_tools/union_masks.py``);
the ``test`` split's ceiling is reported, never tuned on. The candidate aspect ratios are k-means
over the boxes of the ``fit`` split (the other 100 training photos; paper Sec. 5.2), so no choice
sees the photos it is scored on. Each file records its command, date, commit and, per setting, the
AP, the detections, the true positives and, per photo, the ground-truth boxes no detection
matches at IoU >= 0.5 (with the largest fraction of their area that another true box covers: how
hidden they were in the union masks).

With ``--weights CKPT`` the same settings are measured with a trained network instead (for
test-time settings: a network trained on ``fit`` only, scored on ``val``):

    python -m dnnod.studies.ceiling --split val --weights runs/trials/NET/model.pt \
        --out runs/trials/settings_val.json --setting defaults '{}' --setting stride-7 '{"stride": 7}'
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torchvision.ops import box_iou

from ..checkpoint import load_checkpoint, load_pretrained
from ..data import PennFudanDataset
from ..detect import detect
from ..evaluate import evaluate_detections
from ..localize import kmeans_aspect_ratios
from ..predict import GroundTruthPredictor
from ._records import git_commit


def perfect_mask_ap(dataset, aspect_ratios: Optional[Sequence[float]] = None,
                    num_classes: int = 1, **detect_kwargs) -> Dict[str, Any]:
    """Run ``detect`` with the perfect network on every item ``(image, target)`` of ``dataset``
    and score it (VOC2007 11-point AP at IoU 0.5, :func:`dnnod.evaluate.evaluate_detections`).
    Returns ``ap`` (mean over classes), ``detections``, ``tp``, ``npos`` and ``missed``: per
    image, ``[(gt index, best IoU with a detection, largest fraction of its area inside another
    true box)]`` for every true box that no detection reaches IoU 0.5 with. (The fraction, not
    the IoU: a child half hidden by an adult has a small IoU with the adult's box.)"""
    def perfect(t):
        return GroundTruthPredictor(t["boxes"], t["labels"], num_classes=num_classes,
                                    aspect_ratios=aspect_ratios)
    return _settings_ap(dataset, perfect, num_classes, detect_kwargs)


def network_ap(model, dataset, num_classes: int = 1, **detect_kwargs) -> Dict[str, Any]:
    """:func:`perfect_mask_ap` with a trained network instead of the perfect one (its
    checkpoint's aspect ratios unless ``detect_kwargs`` bring their own): what a ``detect``
    setting gives a real network, on the same photos and with the same record."""
    return _settings_ap(dataset, lambda t: model, num_classes, detect_kwargs)


def _settings_ap(dataset, predictor_for, num_classes: int, detect_kwargs) -> Dict[str, Any]:
    dets: List[Dict[str, torch.Tensor]] = []
    gts: List[Dict[str, torch.Tensor]] = []
    missed = []
    for i in range(len(dataset)):
        img, t = dataset[i]
        d = detect(predictor_for(t), img, device="cpu", **detect_kwargs)
        dets.append({k: d[k] for k in ("boxes", "scores", "labels")})
        gts.append(t)
        b = t["boxes"].float()
        best = box_iou(b, d["boxes"]).max(1).values if len(d["boxes"]) else torch.zeros(len(b))
        lt = torch.maximum(b[:, None, :2], b[None, :, :2])
        rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inside = (rb - lt).clamp(min=0).prod(-1) / ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None]
        other = inside.fill_diagonal_(0).max(1).values if len(b) > 1 else torch.zeros(len(b))
        missed.append([(j, round(float(best[j]), 3), round(float(other[j]), 3))
                       for j in range(len(b)) if best[j] < 0.5])
    r = evaluate_detections(dets, gts, labels=list(range(1, num_classes + 1)))
    return {"ap": float(r["map"]), "detections": sum(len(d["boxes"]) for d in dets),
            "tp": int(sum(r["tp"].values())), "npos": int(sum(r["npos"].values())),
            "missed": missed}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dnnod.studies.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "fit", "train", "test"))
    p.add_argument("--root", default=None, help="Penn-Fudan folder (default: $DNNOD_DATA/PennFudanPed)")
    p.add_argument("--setting", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                   help="a name and the detect keyword arguments as JSON, e.g. '{\"refine\": false}'")
    p.add_argument("--out", required=True, help="JSON file written")
    p.add_argument("--weights", default=None,
                   help="a checkpoint (path or shipped name): measure the settings with this network "
                        "instead of the perfect one (its own aspect ratios unless a setting brings some)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = {}
    for name, js in a.setting:
        try:
            kw = json.loads(js)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--setting {name}: not JSON ({e}): {js!r}")
        if not isinstance(kw, dict):
            raise SystemExit(f"--setting {name}: expected a JSON object of detect arguments, got {js!r}")
        settings[name] = kw
    model = None
    if a.weights is not None:
        model = (load_checkpoint(a.weights, device="cpu") if a.weights.endswith(".pt")
                 else load_pretrained(a.weights, device="cpu"))
        ar = list(model.aspect_ratios)
    else:
        fit = PennFudanDataset(a.root, split="fit")
        ar = kmeans_aspect_ratios(torch.cat([fit.target(i)["boxes"] for i in range(len(fit))]))
    ds = PennFudanDataset(a.root, split=a.split)
    # shlex.join: the JSON settings keep their quotes, so the recorded command runs as typed
    out = {"command": "python -m dnnod.studies.ceiling " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "date": _dt.date.today().isoformat(), "commit": git_commit(), "split": a.split,
           "images": len(ds), "weights": a.weights,
           "network_command": model.meta.get("command") if model is not None else None,
           "aspect_ratios": [round(float(x), 4) for x in ar], "settings": {}}
    for name, kw in settings.items():
        t0 = time.time()
        rest = {k: v for k, v in kw.items() if k != "aspect_ratios"}
        if model is None:
            r = perfect_mask_ap(ds, kw.get("aspect_ratios", ar), **rest)   # a setting may bring its own
        else:
            r = network_ap(model, ds, **kw)
        r.update(detect_kwargs=kw, seconds=round(time.time() - t0, 1))
        out["settings"][name] = r
        print(f"{name:24s} AP {r['ap']:.3f}  TP {r['tp']}/{r['npos']}  detections {r['detections']}",
              flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
