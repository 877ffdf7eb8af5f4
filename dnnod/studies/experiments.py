"""The measurements behind the book's chapters 7–9: refinement gain, AP with PR curves, error
analysis and ablations (paper Sec. 5.2, 5.3, 6; Table 1's protocol, book appendix A).

    python -m dnnod.studies.experiments refine-gain --out dnnod/studies/results/ch08_refine_gain.json
    python -m dnnod.studies.experiments pr-curves   --out dnnod/studies/results/ch09_pr_curves.json
    python -m dnnod.studies.experiments ablations   --out dnnod/studies/results/ch09_ablations.json
    python -m dnnod.studies.experiments lambda      --out dnnod/studies/results/ch09_ablation_lambda.json

Each command evaluates the shipped weights (:func:`dnnod.checkpoint.load_pretrained`) on the
test splits — generated shapes (the first ``--shapes-images`` of the 200-image test split) and
the fixed 50-image Penn-Fudan test split — with :func:`dnnod.evaluate.evaluate_detections`
(VOC2007 11-point AP at IoU ≥ 0.5; all-point AP beside it) and writes one JSON file with the
numbers, the exact command, the wall time and the library versions.

Ablations (all through the public pipeline :func:`dnnod.detect.detect`):

* ``full``: 3 scales + refinement (the paper's system);
* ``no_refine``: the same run's stage-1 detections, with the final NMS (``detect(refine=False)``
  gives exactly this: refinement does not change stage 1);
* ``single_scale``: ``scales=1`` (the whole image only), with refinement;
* ``no_half_masks``: Eq. 3 with the full mask only — the predictor's four half masks are set to
  zero (:class:`FullMaskOnly`), which removes exactly their terms from Eq. 3 (each half term is
  linear in its own mask); the Eq. 2 threshold uses the full mask anyway, refinement scores with
  the full mask only too;
* ``paper_top5``: the paper's 5 boxes per scale and class before refinement, where ``detect``
  keeps 10 by default (:data:`dnnod.detect.DETECT_TOP_K`);
* λ of the loss (Sec. 4): short trainings with ``dnnod.train`` at λ ∈ {0.01, 0.1, 1} and one small,
  equal budget, evaluated the same way (``lambda`` command; a short budget, stated in the JSON).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

from ..detect import as_predictor, detect
from ..evaluate import evaluate_detections
from ..refine import final_nms

__all__ = ["FullMaskOnly", "VARIANTS", "load_split", "run_variants", "ap_summary",
           "classify_detections", "worst_errors", "refine_gain", "pr_curves", "ablations",
           "lambda_sweep", "main"]

#: The pipeline variants the ablations compare (module doc).
VARIANTS: Tuple[str, ...] = ("full", "no_refine", "single_scale", "no_half_masks", "paper_top5")
#: Shipped weights evaluated on each dataset.
WEIGHTS = {"shapes": "shapes-tiny", "pennfudan": "pennfudan-tiny"}


class FullMaskOnly:
    """A mask predictor wrapper that zeroes the four half masks (top, bottom, left, right).

    Eq. 3 is a sum of one term per mask type, each linear in its own mask, so with the half
    masks at zero it reduces to its full-mask term ``S(bb, m_full) − S(surround, m_full)``: the
    "without half masks" ablation, measured through the unchanged pipeline.
    """

    def __init__(self, predictor) -> None:
        self.inner = as_predictor(predictor)
        self.num_classes = self.inner.num_classes
        self.d = self.inner.d
        self.aspect_ratios = getattr(self.inner, "aspect_ratios", None)
        self.class_names = getattr(self.inner, "class_names", None)

    def __call__(self, image, windows) -> torch.Tensor:
        m = self.inner(image, windows).clone()
        m[:, :, 1:] = 0                      # MASK_TYPES = (full, top, bottom, left, right)
        return m


# ----------------------------------------------------------------------------- data and runs
def load_split(name: str, limit: Optional[int] = None):
    """The test split of ``"shapes"`` (first ``limit`` images) or ``"pennfudan"`` (50 images)."""
    from ..data import PennFudanDataset, ShapesDataset
    if name == "shapes":
        ds = ShapesDataset("test")
    elif name == "pennfudan":
        ds = PennFudanDataset(split="test")
    else:
        raise ValueError(f"dataset must be 'shapes' or 'pennfudan'; got {name!r}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1; got {limit!r}")
        ds = torch.utils.data.Subset(ds, list(range(min(limit, len(ds)))))
    return ds


def _dets(d: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: d[k].detach().cpu() for k in ("boxes", "scores", "labels")}


def run_variants(model, dataset, variants: Sequence[str] = VARIANTS, *, progress: bool = False,
                 device=None, **detect_kwargs) -> Dict[str, Any]:
    """Detections of each variant (module doc) on every image of ``dataset``.

    Returns ``{"detections": {variant: [per-image dict]}, "ground_truths": [...],
    "seconds": {variant: wall seconds}}``; ``full`` and ``no_refine`` share one ``detect`` call.
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; choose from {VARIANTS}")
    from tqdm.auto import tqdm
    pred = as_predictor(model, device)
    full_only = FullMaskOnly(pred) if "no_half_masks" in variants else None
    dets: Dict[str, List[Dict[str, torch.Tensor]]] = {v: [] for v in variants}
    secs = {v: 0.0 for v in variants}
    gts = []
    for i in tqdm(range(len(dataset)), disable=not progress, desc="images"):
        img, t = dataset[i]
        gts.append(t)
        if "full" in variants or "no_refine" in variants:
            t0 = time.perf_counter()
            r = detect(pred, img, return_intermediates=True, **detect_kwargs)
            dt = time.perf_counter() - t0
            if "full" in variants:
                dets["full"].append(_dets(r))
                secs["full"] += dt
            if "no_refine" in variants:
                b, s, lab = r["boxes_before_refine"], r["scores_before_refine"], r["labels_before_refine"]
                keep = final_nms(b, s, lab, r["final_nms_iou"], detect_kwargs.get("nms_mode", "dpm"))
                dets["no_refine"].append({"boxes": b[keep].float(), "scores": s[keep].float(),
                                          "labels": lab[keep].long()})
                secs["no_refine"] += dt       # an upper bound: includes the refinement pass
        if "single_scale" in variants:
            t0 = time.perf_counter()
            dets["single_scale"].append(_dets(detect(pred, img, scales=1, **detect_kwargs)))
            secs["single_scale"] += time.perf_counter() - t0
        if "no_half_masks" in variants:
            t0 = time.perf_counter()
            dets["no_half_masks"].append(_dets(detect(full_only, img, **detect_kwargs)))
            secs["no_half_masks"] += time.perf_counter() - t0
        if "paper_top5" in variants:
            t0 = time.perf_counter()
            dets["paper_top5"].append(_dets(detect(pred, img, **{**detect_kwargs, "top_k": 5})))
            secs["paper_top5"] += time.perf_counter() - t0
    return {"detections": dets, "ground_truths": gts, "seconds": secs}


def ap_summary(dets, gts, num_classes: int, class_names: Optional[Sequence[str]] = None,
               pr_points: Optional[int] = None) -> Dict[str, Any]:
    """VOC2007 11-point and all-point AP per class and mean; with ``pr_points`` also each class's
    PR curve (recall, precision) thinned to at most that many points (for plotting)."""
    labels = list(range(1, num_classes + 1))
    r07 = evaluate_detections(dets, gts, use_07_metric=True, labels=labels)
    rall = evaluate_detections(dets, gts, use_07_metric=False, labels=labels)
    names = list(class_names) if class_names else [str(c) for c in labels]
    out: Dict[str, Any] = {
        "map_07": r07["map"], "map_all": rall["map"],
        "ap_07": {names[c - 1]: r07["ap"][c] for c in labels},
        "ap_all": {names[c - 1]: rall["ap"][c] for c in labels},
        "npos": {names[c - 1]: r07["npos"][c] for c in labels},
        "tp": {names[c - 1]: r07["tp"][c] for c in labels},
        "fp": {names[c - 1]: r07["fp"][c] for c in labels},
    }
    if pr_points:
        pr = {}
        for c in labels:
            rec, prec = (np.asarray(a, float) for a in r07["pr"][c])
            idx = np.unique(np.linspace(0, len(rec) - 1, min(pr_points, len(rec))).round().astype(int)) \
                if len(rec) else np.zeros(0, int)
            pr[names[c - 1]] = {"recall": [round(float(v), 5) for v in rec[idx]],
                                "precision": [round(float(v), 5) for v in prec[idx]]}
        out["pr"] = pr
    return out


# ----------------------------------------------------------------------------- error analysis
def _classify(dets_all, gts, iou_threshold):
    if len(dets_all) != len(gts):
        raise ValueError(f"got detections for {len(dets_all)} images and ground truth for {len(gts)}")
    recs: List[Dict[str, Any]] = []
    ious = []
    for i, (d, g) in enumerate(zip(dets_all, gts)):
        b = torch.as_tensor(d["boxes"], dtype=torch.float64).reshape(-1, 4)
        gb = torch.as_tensor(g["boxes"], dtype=torch.float64).reshape(-1, 4)
        ious.append(box_iou(b, gb) if len(b) and len(gb) else torch.zeros(len(b), len(gb), dtype=torch.float64))
        for k in range(len(b)):
            recs.append({"image": i, "index": k, "label": int(d["labels"][k]),
                         "score": float(d["scores"][k]), "box": [round(float(v), 2) for v in b[k]]})
    claimed = [torch.zeros(len(g["boxes"]), dtype=torch.bool) for g in gts]
    # Greedy matching in descending score (stable) — the devkit's order; per class is the same
    # as over all classes at once, since a detection only claims boxes of its own class.
    for r in sorted(recs, key=lambda r: -r["score"]):
        g = gts[r["image"]]
        iou = ious[r["image"]][r["index"]]
        glab = torch.as_tensor(g["labels"]).reshape(-1)
        diff = g.get("difficult")
        diff = torch.zeros(len(glab), dtype=torch.bool) if diff is None else torch.as_tensor(diff).reshape(-1).bool()
        same = glab == r["label"]
        best = float(iou[same].max()) if same.any() else 0.0
        r["iou"] = round(best, 4)
        if best >= iou_threshold:
            j = int(torch.nonzero(same)[int(torch.argmax(iou[same]))])
            if diff[j]:
                r["kind"] = "difficult"
            elif not claimed[r["image"]][j]:
                r["kind"] = "tp"
                claimed[r["image"]][j] = True
            else:
                r["kind"] = "duplicate"
        elif best >= 0.1:
            r["kind"] = "mislocalised"
        elif len(iou) and float(iou.max()) >= 0.1:
            r["kind"] = "confusion"
        else:
            r["kind"] = "background"
    return recs, claimed


def classify_detections(dets_all: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]],
                        iou_threshold: float = 0.5) -> List[Dict[str, Any]]:
    """Label every detection of every image as VOC matching does, and say *why* a false
    positive is one (an error analysis in the spirit of Hoiem et al. 2012).

    ``dets_all`` / ``gts``: one dict per image (as :func:`dnnod.evaluate.evaluate_detections`).
    Detections are visited by descending score and matched to the ground-truth box of their class
    with the highest IoU (the devkit's rule). Kinds: ``tp``; ``duplicate`` (IoU ≥ threshold with an
    already claimed box); ``mislocalised`` (0.1 ≤ best IoU < threshold with a box of its class);
    ``confusion`` (IoU ≥ 0.1 only with boxes of other classes); ``background`` (IoU < 0.1 with
    every box); ``difficult`` (ignored). Returns one record per detection: image, index, label,
    score, box, kind, best same-class IoU.
    """
    return _classify(dets_all, gts, iou_threshold)[0]


def worst_errors(dets_all, gts, per_kind: int = 4, iou_threshold: float = 0.5) -> Dict[str, Any]:
    """The highest-scoring false positives of each kind (:func:`classify_detections`), the missed
    ground-truth boxes (never claimed; the ``per_kind`` that no detection came near first) and
    the count of every kind."""
    recs, claimed = _classify(dets_all, gts, iou_threshold)
    kinds = ("duplicate", "mislocalised", "confusion", "background")
    out: Dict[str, Any] = {"counts": {k: sum(r["kind"] == k for r in recs) for k in ("tp",) + kinds}}
    for k in kinds:
        out[k] = sorted((r for r in recs if r["kind"] == k), key=lambda r: -r["score"])[:per_kind]
    missed = []
    for i, (d, g) in enumerate(zip(dets_all, gts)):
        gb = torch.as_tensor(g["boxes"], dtype=torch.float64).reshape(-1, 4)
        glab = torch.as_tensor(g["labels"]).reshape(-1)
        diff = g.get("difficult")
        diff = torch.zeros(len(glab), dtype=torch.bool) if diff is None else torch.as_tensor(diff).reshape(-1).bool()
        db = torch.as_tensor(d["boxes"], dtype=torch.float64).reshape(-1, 4)
        dl = torch.as_tensor(d["labels"]).reshape(-1)
        for j in torch.nonzero(~claimed[i] & ~diff).squeeze(1).tolist():
            dm = dl == glab[j]
            best = float(box_iou(db[dm], gb[j:j + 1]).max()) if dm.any() else 0.0
            missed.append({"image": i, "label": int(glab[j]),
                           "box": [round(float(v), 2) for v in gb[j]], "best_iou": round(best, 4)})
    out["counts"]["missed"] = len(missed)
    out["missed"] = sorted(missed, key=lambda m: m["best_iou"])[:per_kind]
    return out


# ----------------------------------------------------------------------------- experiments
def _meta(t0: float, argv: Optional[Sequence[str]]) -> Dict[str, Any]:
    cmd = "python -m dnnod.studies.experiments " + " ".join(shlex.quote(a) for a in (argv or []))
    return {"command": cmd.strip(), "wall_time_s": round(time.perf_counter() - t0, 1),
            "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "protocol": "VOC2007: IoU >= 0.5, 11-point AP (map_07); all-point AP beside it (map_all)"}


def _setup(name: str, limits: Mapping[str, Optional[int]], weights: Optional[Mapping[str, str]],
           device):
    from ..checkpoint import load_pretrained, load_checkpoint
    w = (weights or {}).get(name, WEIGHTS[name])
    model = load_checkpoint(w, device=device) if Path(w).is_file() else load_pretrained(w, device=device)
    ds = load_split(name, limits.get(name))
    return model, ds, w


_CACHE: Dict[Any, Dict[str, Any]] = {}


def _variants_for(name, variants, limits, weights, device, progress):
    """Detections of ``variants`` on dataset ``name``; memoised within one process so that the
    ``all`` command runs each detection once."""
    model, ds, w = _setup(name, limits, weights, device)
    key = (name, limits.get(name), w)
    have = _CACHE.get(key)
    need = [v for v in variants if have is None or v not in have["detections"]]
    if need:
        if "no_refine" in need or "full" in need:
            # one detect call gives both: compute them together
            need = [v for v in need if v not in ("full", "no_refine")] + ["full", "no_refine"]
        run = run_variants(model, ds, need, progress=progress, device=device)
        if have is None:
            have = _CACHE[key] = {"detections": {}, "seconds": {}, "ground_truths": run["ground_truths"]}
        have["detections"].update(run["detections"])
        have["seconds"].update(run["seconds"])
    return model, ds, w, have


def _names(model, ds) -> List[str]:
    n = getattr(model, "class_names", None) or getattr(getattr(ds, "dataset", ds), "class_names", None)
    return list(n) if n else [str(c) for c in range(1, model.num_classes + 1)]


DEFAULT_LIMITS = {"shapes": 50, "pennfudan": None}


def refine_gain(datasets=("shapes", "pennfudan"), limits=DEFAULT_LIMITS, weights=None, device="cpu",
                progress=False, argv=None) -> Dict[str, Any]:
    """AP with and without refinement (paper Sec. 6, Fig. 4) on each test split."""
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"experiment": "refine-gain", "datasets": {}}
    for name in datasets:
        model, ds, w, run = _variants_for(name, ("full", "no_refine"), limits, weights, device, progress)
        names = _names(model, ds)
        res = {}
        for v, key in (("no_refine", "refine_false"), ("full", "refine_true")):
            res[key] = ap_summary(run["detections"][v], run["ground_truths"], model.num_classes,
                                  names, pr_points=60)
        out["datasets"][name] = {
            "weights": w, "images": len(ds), "class_names": names, **res,
            "gain_map_07": res["refine_true"]["map_07"] - res["refine_false"]["map_07"],
            "gain_map_all": res["refine_true"]["map_all"] - res["refine_false"]["map_all"],
            "seconds_per_image": run["seconds"]["full"] / max(len(ds), 1)}
    out.update(_meta(t0, argv))
    return out


def pr_curves(datasets=("shapes", "pennfudan"), limits=DEFAULT_LIMITS, weights=None, device="cpu",
              progress=False, argv=None, per_kind: int = 4) -> Dict[str, Any]:
    """AP, PR curves, the detections and the worst errors of the full system on each test split."""
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"experiment": "pr-curves", "datasets": {}}
    for name in datasets:
        model, ds, w, run = _variants_for(name, ("full",), limits, weights, device, progress)
        names = _names(model, ds)
        dets, gts = run["detections"]["full"], run["ground_truths"]
        ids = [str(g.get("image_id", i)) for i, g in enumerate(gts)]
        out["datasets"][name] = {
            "weights": w, "images": len(ds), "class_names": names, "image_ids": ids,
            **ap_summary(dets, gts, model.num_classes, names, pr_points=200),
            "errors": worst_errors(dets, gts, per_kind=per_kind),
            "seconds_per_image": run["seconds"]["full"] / max(len(ds), 1)}
    out.update(_meta(t0, argv))
    return out


def ablations(datasets=("shapes", "pennfudan"), limits=DEFAULT_LIMITS, weights=None, device="cpu",
              progress=False, argv=None) -> Dict[str, Any]:
    """mAP of every variant in :data:`VARIANTS` on each test split (module doc)."""
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"experiment": "ablations", "variants": {
        "full": "3 scales + refinement (the paper's system)",
        "no_refine": "stage-1 detections (3 scales), final NMS, no refinement",
        "single_scale": "scales=1 (whole image only), with refinement",
        "no_half_masks": "Eq. 3 with the full mask only (half masks zeroed), 3 scales + refinement",
        "paper_top5": "the paper's top 5 boxes per scale (ours: 10), 3 scales + refinement"},
        "datasets": {}}
    for name in datasets:
        model, ds, w, run = _variants_for(name, VARIANTS, limits, weights, device, progress)
        names = _names(model, ds)
        out["datasets"][name] = {"weights": w, "images": len(ds), "class_names": names, "results": {
            v: {**{k: s for k, s in ap_summary(run["detections"][v], run["ground_truths"],
                                              model.num_classes, names).items()
                   if k in ("map_07", "map_all", "ap_07")},
                "seconds_per_image": run["seconds"][v] / max(len(ds), 1)} for v in VARIANTS}}
    out.update(_meta(t0, argv))
    return out


def lambda_sweep(lams=(0.01, 0.1, 1.0), steps: int = 60, batch_size: int = 32, limit: int = 30,
                 runs_dir: str = "runs/ablation-lambda", device="cpu", threads: Optional[int] = None,
                 argv=None, progress=False, reuse: bool = False) -> Dict[str, Any]:
    """Short trainings on shapes with ``dnnod.train`` for each λ (same seed, same budget:
    ``steps`` steps of ``batch_size`` crops, tiny arch with the conv head, Adam 1e-3, cosine —
    close to the shipped recipe but far shorter), each evaluated on the first ``limit`` shapes
    test images (3 scales + refinement).
    Also the mean predicted full-mask value on covered / empty cells of validation crops, which
    shows λ's effect directly (Sec. 4: large λ pushes masks towards zero).

    ``reuse``: a run folder whose ``last.pt`` was trained with exactly these settings is
    evaluated again instead of retrained (training is deterministic for a seed, so only the
    evaluation is redone — e.g. after a change to the box extraction); its recorded training
    time is kept and the JSON says which runs were reused."""
    from ..checkpoint import load_checkpoint
    from ..train import train
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"experiment": "lambda", "budget": {
        "steps": steps, "batch_size": batch_size, "crops_seen": steps * batch_size,
        "optimizer": "adam", "lr": 1e-3, "lr_schedule": "cosine", "arch": "tiny", "head": "conv",
        "data": "shapes",
        "note": "a SHORT budget (the shipped shapes-tiny saw far more crops); compares the λ values "
                "with one equal budget, not their converged quality"},
        "eval_images": limit, "results": {}}
    ds = load_split("shapes", limit)
    for lam in lams:
        run_dir = Path(runs_dir) / f"lam{lam:g}"
        want = dict(data="shapes", arch="tiny", head="conv", epochs=1, steps_per_epoch=steps,
                    batch_size=batch_size, optimizer="adam", lr=1e-3, lr_schedule="cosine",
                    lam=float(lam), seed=0)
        meta = _run_meta(run_dir / "last.pt") if reuse else None
        if meta is not None and all(meta.get("args", {}).get(k) == v for k, v in want.items()) \
                and meta.get("step") == steps:
            train_s = float(meta["wall_time_s"])
            out.setdefault("reused_runs", []).append(f"{lam:g}")
        else:
            t1 = time.perf_counter()
            train(out=str(run_dir), **want, val_images=0, no_progress=not progress,
                  threads=threads, device=device)
            train_s = time.perf_counter() - t1
        model = load_checkpoint(run_dir / "last.pt", device=device)
        run = run_variants(model, ds, ("full",), device=device)
        s = ap_summary(run["detections"]["full"], run["ground_truths"], model.num_classes,
                       _names(model, ds))
        out["results"][f"{lam:g}"] = {"lam": float(lam), "map_07": s["map_07"], "map_all": s["map_all"],
                                      "ap_07": s["ap_07"], "train_seconds": round(train_s, 1),
                                      **_mask_stats(model, run["ground_truths"], ds)}
    out.update(_meta(t0, argv))
    return out


def _run_meta(path: Path) -> Optional[Dict[str, Any]]:
    """The ``meta`` of a training checkpoint, or None if there is none (or it is unreadable)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("meta")
    except Exception:                                   # a half-written or foreign file: retrain
        return None


@torch.no_grad()
def _mask_stats(model, gts, ds) -> Dict[str, float]:
    """Mean predicted full mask on cells covered (target > 0.5) and empty (target 0) over the
    whole-image windows of the evaluation images (Sec. 4's trade-off made visible)."""
    from ..masks import mask_targets
    from ..predict import NetPredictor
    pred = NetPredictor(model, device="cpu")
    cov, emp = [], []
    for i in range(len(ds)):
        img, t = ds[i]
        H, W = img.shape[1:]
        win = torch.tensor([[0.0, 0.0, W, H]])
        m = pred(img, win)[0]                                  # [C, 5, d, d]
        for c in range(model.num_classes):
            b = t["boxes"][t["labels"] == c + 1]
            tgt = mask_targets(b, win[0], model.d)[0] if len(b) else torch.zeros(model.d, model.d)
            cov.append(m[c, 0][tgt > 0.5])
            emp.append(m[c, 0][tgt == 0])
    c, e = torch.cat(cov), torch.cat(emp)
    return {"mean_mask_covered": float(c.mean()) if len(c) else float("nan"),
            "mean_mask_empty": float(e.mean()) if len(e) else float("nan")}


# ----------------------------------------------------------------------------- CLI
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float):
        return None if x != x else round(x, 6)
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    return x


def write_json(obj: Mapping[str, Any], path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_jsonable(obj), indent=1) + "\n")
    return p


def merge_update(res: dict, old: dict) -> dict:
    """``--update``: copy into ``res`` the datasets of the earlier file ``old`` that ``res`` lacks,
    and record in ``res["kept_from_earlier_run"]`` the run that computed them. An entry that
    ``old`` had itself kept from a run before it keeps that run's command, so two alternating
    ``--update`` runs never credit one dataset's numbers to the other's command."""
    kept = [n for n in old.get("datasets", {}) if n not in res["datasets"]]
    for n in kept:
        res["datasets"][n] = old["datasets"][n]
    if not kept:
        return res
    own = {"command": old.get("command"),
           "wall_time_s": old.get("all_wall_time_s", old.get("wall_time_s"))}
    prev = old.get("kept_from_earlier_run") or {}

    def source(n: str) -> dict:
        if n not in prev.get("datasets", ()):
            return own
        if "per_dataset" in prev:
            return prev["per_dataset"][n]
        return {k: prev.get(k) for k in ("command", "wall_time_s")}

    sources = [source(n) for n in kept]
    if all(src == sources[0] for src in sources):
        res["kept_from_earlier_run"] = {"datasets": kept, **sources[0]}
    else:  # kept entries from two earlier runs: one record per dataset
        res["kept_from_earlier_run"] = {"datasets": kept, "per_dataset": dict(zip(kept, sources))}
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m dnnod.studies.experiments", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("refine-gain", "pr-curves", "ablations", "lambda", "all"))
    ap.add_argument("--out", help="JSON file to write (for 'all': a folder)")
    ap.add_argument("--datasets", default="shapes,pennfudan")
    ap.add_argument("--shapes-images", type=int, default=DEFAULT_LIMITS["shapes"],
                    help="first N images of the shapes test split")
    ap.add_argument("--pennfudan-images", type=int, default=None, help="first N of the 50 test images")
    ap.add_argument("--shapes-weights", default=WEIGHTS["shapes"], help="shipped name or checkpoint path")
    ap.add_argument("--pennfudan-weights", default=WEIGHTS["pennfudan"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lambda-steps", type=int, default=60)
    ap.add_argument("--lambda-batch", type=int, default=32)
    ap.add_argument("--lambda-images", type=int, default=30)
    ap.add_argument("--lambdas", default="0.01,0.1,1")
    ap.add_argument("--runs-dir", default="runs/ablation-lambda")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="lambda: evaluate existing runs trained with the same settings again")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--update", action="store_true",
                    help="keep the entries of other datasets already in the output file(s)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ds = tuple(x for x in a.datasets.split(",") if x)
    bad = [x for x in ds if x not in WEIGHTS]
    if bad or not ds:
        raise ValueError(f"--datasets must be a comma-separated subset of {tuple(WEIGHTS)}; got {a.datasets!r}")
    kw = dict(datasets=ds, limits={"shapes": a.shapes_images, "pennfudan": a.pennfudan_images},
              weights={"shapes": a.shapes_weights, "pennfudan": a.pennfudan_weights},
              device=a.device, progress=a.progress, argv=argv)
    jobs = {"refine-gain": refine_gain, "pr-curves": pr_curves, "ablations": ablations}
    if a.command == "lambda":
        res = lambda_sweep(tuple(float(x) for x in a.lambdas.split(",")), steps=a.lambda_steps,
                           batch_size=a.lambda_batch, limit=a.lambda_images, runs_dir=a.runs_dir,
                           device=a.device, threads=a.threads, argv=argv, progress=a.progress,
                           reuse=a.reuse_runs)
        outs = {a.out or "dnnod/studies/results/ch09_ablation_lambda.json": res}
    elif a.command == "all":
        folder = Path(a.out or "dnnod/studies/results")
        outs = {}
        t_all = time.perf_counter()
        for cmd, fname in (("pr-curves", "ch09_pr_curves.json"), ("refine-gain", "ch08_refine_gain.json"),
                           ("ablations", "ch09_ablations.json")):
            outs[folder / fname] = jobs[cmd](**kw)
        # detections are shared between the three files: each file's own wall time counts only
        # what it added, so record the whole run's time too
        for res in outs.values():
            res["all_wall_time_s"] = round(time.perf_counter() - t_all, 1)
    else:
        if not a.out:
            ap.error("--out is required")
        outs = {a.out: jobs[a.command](**kw)}
    for p, res in outs.items():
        if a.update and Path(p).is_file() and "datasets" in res:
            merge_update(res, json.loads(Path(p).read_text()))
        print(f"wrote {write_json(res, p)} ({res['wall_time_s']} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
