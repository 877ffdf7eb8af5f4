"""The race of chapter 10 (dnnod.studies.race) and what it needs from the trainer: the wall-clock
budget of ``dnnod train --budget-s``, the Faster R-CNN learning-rate recipe, the Penn-Fudan
validation split, and the results file. References are hand-worked numbers, never the module's
own output."""
from __future__ import annotations

import json
import math

import pytest
import torch

from realdata import needs_pf
from dnnod.data.datasets import pennfudan_split
from dnnod.studies import race
from dnnod.train import TrainConfig, train

TINY = ["--data", "shapes", "--num-images", "12", "--image-size", "96", "--arch", "tiny",
        "--batch-size", "4", "--val-images", "0", "--val-batches", "1", "--no-progress", "--threads", "1"]


def test_pennfudan_val_split_is_carved_from_train():
    train_ids, fit, val = pennfudan_split("train"), pennfudan_split("fit"), pennfudan_split("val")
    assert len(train_ids) == 120 and len(fit) == 100 and len(val) == 20
    assert fit + val == train_ids                         # disjoint, together the train split
    assert val == [f"PennPed{i:05d}" for i in range(27, 47)]
    assert not set(val) & set(pennfudan_split("test"))
    with pytest.raises(ValueError, match="'fit', 'val'"):
        pennfudan_split("validation")


def test_fasterrcnn_lr_recipe_by_hand():
    lr = 1e-3
    assert race.fasterrcnn_lr(0, 900, 0, lr, 20) == pytest.approx(lr / 20)        # warm-up start
    assert race.fasterrcnn_lr(0, 900, 9, lr, 20) == pytest.approx(lr * 10 / 20)
    assert race.fasterrcnn_lr(0, 900, 19, lr, 20) == pytest.approx(lr)              # warm-up done
    assert race.fasterrcnn_lr(450, 900, 300, lr, 20) == pytest.approx(lr / 2)       # half the budget
    assert race.fasterrcnn_lr(225, 900, 300, lr, 20) == pytest.approx(lr * (1 + math.sqrt(0.5)) / 2)
    assert race.fasterrcnn_lr(900, 900, 500, lr, 20) == pytest.approx(0, abs=1e-15)  # budget spent
    assert race.fasterrcnn_lr(2000, 900, 500, lr, 20) == pytest.approx(0, abs=1e-15)


def test_budget_lr_follows_time_not_steps():
    c = TrainConfig(out="r", epochs=100, steps_per_epoch=10, lr=0.1, lr_schedule="cosine", budget_s=60)
    assert c.lr_at(500, 0.0) == pytest.approx(0.1)          # step count does not matter
    assert c.lr_at(3, 30.0) == pytest.approx(0.05)
    assert c.lr_at(3, 60.0) == pytest.approx(0.0, abs=1e-12)
    assert c.lr_at(3, 90.0) == pytest.approx(0.0, abs=1e-12)
    assert c.lr_at(500) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))  # no time: steps
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--budget-s"):
            TrainConfig(out="r", budget_s=bad).check()
    assert TrainConfig.from_argv(["--out", "r", "--budget-s", "90"]).budget_s == 90


def test_training_stops_when_the_budget_is_spent(tmp_path):
    budget = 3.0
    s = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "r"), "--epochs", "1000",
                                            "--steps-per-epoch", "50", "--optimizer", "adam",
                                            "--lr-schedule", "cosine", "--budget-s", str(budget)]))
    steps = json.loads((tmp_path / "r" / "metrics.json").read_text())["steps"]
    assert 1 <= s["steps"] == len(steps) < 50_000 and not s["stopped"]
    per_step = s["train_s"] / s["steps"]
    assert budget <= s["train_s"] < budget + 3 * per_step + 0.5   # stops within a step of the budget
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(1e-3)                          # cosine over time: starts at lr
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-3 * 0.2
    assert (tmp_path / "r" / "model.pt").is_file()                # a finished run, not a stopped one


def test_results_file_rows_replace_and_summary(tmp_path):
    f = tmp_path / "race.json"
    def row(det, b, seed, ap, steps=10):
        return {"detector": det, "budget_min": b, "seed": seed, "ap50_voc07": ap, "steps": steps,
                "train_cpu_s": 100.0, "test_images_per_s": 2.0, "params": 7}
    race.add_row(f, row("fasterrcnn", 15, 1, 0.5))
    race.add_row(f, row("fasterrcnn", 15, 0, 0.1))
    race.add_row(f, row("detectornet", 15, 0, 0.6, steps=20))
    race.add_row(f, row("fasterrcnn", 15, 0, 0.7))             # replaces the first seed-0 row
    runs = json.loads(f.read_text())["runs"]
    assert [(r["detector"], r["seed"], r["ap50_voc07"]) for r in runs] == [
        ("detectornet", 0, 0.6), ("fasterrcnn", 0, 0.7), ("fasterrcnn", 1, 0.5)]
    s = race.summary(json.loads(f.read_text()))
    assert [(r["detector"], r["seeds"]) for r in s] == [("detectornet", [0]), ("fasterrcnn", [0, 1])]
    assert s[1]["ap_mean"] == pytest.approx(0.6) and (s[1]["ap_min"], s[1]["ap_max"]) == (0.5, 0.7)
    # a recipe trial (variant) neither replaces nor joins the plain recipe's rows
    race.add_row(f, dict(row("detectornet", 15, 0, 0.9), variant="jitter"))
    data = json.loads(f.read_text())
    assert len(data["runs"]) == 4
    s = race.summary(data)
    assert [(r["detector"], r["variant"], r["ap_mean"]) for r in s[:2]] == [
        ("detectornet", "", 0.6), ("detectornet", "jitter", 0.9)]
    assert "DetectorNet (tiny, conv mask head), jitter | 15 min | **0.900**" in race.markdown_table(data)


def test_trial_scores_by_hand():
    """Two people in one image; detections ranked: person A (hit), nothing (miss), person B (hit).
    Precision/recall steps (1, 1/2), (1/2, 1/2), (2/3, 1): all-point AP = 1/2 · 1 + 1/2 · 2/3 =
    5/6; VOC07 11-point: recall 0-0.5 (6 points) reach precision 1, recall 0.6-1 (5 points) 2/3,
    (6 + 5 · 2/3) / 11 = 28/33."""
    gts = {"val": [{"boxes": torch.tensor([[0.0, 0, 10, 20], [20, 0, 30, 20]]),
                    "labels": torch.tensor([1, 1])}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]}
    dets = [{"boxes": [[0, 0, 10, 20], [50, 50, 60, 70], [21, 0, 30, 20]], "scores": [0.9, 0.8, 0.7],
             "labels": [1, 1, 1]}, {"boxes": [], "scores": [], "labels": []}]
    row = {"detector": "detectornet", "variant": "v", "budget_min": 45, "seed": 0, "eval_split": "val",
           "steps": 100, "ap50_voc07": 0.5, "detections": dets, "eval_images": 2}
    (s,) = race.trial_scores({"runs": [row]}, gts)
    assert s["ap_all"] == pytest.approx(5 / 6) and s["ap_voc07"] == pytest.approx(28 / 33)
    assert (s["found"], s["people"], s["fp"], s["recorded"]) == (2, 2, 1, 0.5)
    # a second seed: one detection, on A; the table shows both runs and their mean
    row1 = dict(row, seed=1, detections=[dict(dets[0], boxes=dets[0]["boxes"][:1], scores=[0.9],
                                               labels=[1]), dets[1]])
    sc = race.trial_scores({"runs": [row, row1]}, gts)
    assert sc[1]["ap_all"] == pytest.approx(0.5) and sc[1]["found"] == 1 and sc[1]["fp"] == 0
    table = race.trials_table(sc)
    assert "| v | 45 min | 0 | 100 | 0.848 | 0.833 | 2 / 2 | 1 |" in table
    assert "| v, mean | 45 min | 2 seeds | 100 | " in table and "| 0.667 | 1.5 / 2 | 0.5 |" in table
    with pytest.raises(ValueError, match="no ground truth given for split 'test'"):
        race.trial_scores({"runs": [dict(row, eval_split="test")]}, gts)
    with pytest.raises(ValueError, match="detections for 2 images, val has 1"):
        race.trial_scores({"runs": [dict(row, eval_images=1)]}, gts)


def test_run_rejects_bad_options():
    with pytest.raises(ValueError, match="detector must be one of"):
        race.run("yolo", 1)
    with pytest.raises(ValueError, match="budget_min"):
        race.run("fasterrcnn", 0)
    with pytest.raises(ValueError, match="budget_s"):
        race.train_fasterrcnn_budget(-1)
    with pytest.raises(ValueError, match="Faster R-CNN's is fixed"):
        race.run("fasterrcnn", 1, variant="x", train_args=["--lam", "0.3"])
    with pytest.raises(ValueError, match="needs a variant name"):
        race.run("detectornet", 1, train_args=["--lam", "0.3"])


@needs_pf
@pytest.mark.parametrize("detector", race.DETECTORS)
def test_race_command_records_a_run(tmp_path, detector):
    out = tmp_path / "race.json"
    trial = ["--variant", "jit", "--train-args", "--color-jitter 0.2 --lam 0.3"] \
        if detector == "detectornet" else []
    race.main(["run", "--detector", detector, "--budget-min", "0.03", "--seed", "3", "--threads", "1",
               "--eval-split", "val", "--eval-limit", "2", "--runs", str(tmp_path / "runs"),
               "--results", str(out)] + trial)
    (r,) = json.loads(out.read_text())["runs"]
    if trial:     # the trial's options reach the training command, its run has its own folder
        assert r["variant"] == "jit" and "--color-jitter 0.2 --lam 0.3" in r["recipe"]["train_args"]
        assert "--out" not in r["recipe"]["train_args"]
        assert "--train-args '--color-jitter 0.2 --lam 0.3'" in r["command"]     # runs as typed
        ck = torch.load(tmp_path / "runs" / "detectornet_jit_1.8s_s3" / "model.pt", weights_only=True)
        assert ck["meta"]["args"]["color_jitter"] == 0.2 and ck["meta"]["args"]["lam"] == 0.3
    assert r["detector"] == detector and r["seed"] == 3 and r["eval_images"] == 2 and r["eval_split"] == "val"
    assert r["steps"] >= 1 and r["train_s"] >= 1.8 and 0 <= r["ap50_voc07"] <= 1
    assert len(r["detections"]) == 2 and r["command"].startswith("python -m dnnod.studies.race run")
    assert r["torch_threads"] == 1 and r["params"] > 100_000
    race.main(["trials", "--results", str(out)])        # scores the row again (its 2 images)
    if detector == "detectornet":
        # rescore evaluates the row's checkpoint again: the run evaluated that same file, so the
        # numbers come back; what the row held before is kept under first_evaluation
        data = json.loads(out.read_text())
        data["runs"][0].update(ap50_voc07=-1.0, detections=[])
        out.write_text(json.dumps(data))
        race.main(["rescore", "--results", str(out), "--threads", "1"])
        (s,) = json.loads(out.read_text())["runs"]
        assert s["ap50_voc07"] == r["ap50_voc07"] and s["detections"] == r["detections"]
        assert s["first_evaluation"]["ap50_voc07"] == -1.0 and s["eval_images"] == 2
        assert s["evaluation"]["command"].startswith("python -m dnnod.studies.race rescore")


def test_race_figure_draws_every_seed():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dnnod.viz import compare
    runs = [{"detector": "fasterrcnn", "budget_min": 15, "seed": s, "ap50_voc07": ap}
            for s, ap in ((0, 0.63), (1, 0.61))] + \
           [{"detector": "detectornet", "budget_min": 15, "seed": 0, "ap50_voc07": 0.60}]
    fig = compare.race_figure(runs, shipped={"minutes": 45, "ap": 0.69, "label": "shipped"})
    ax = fig.axes[0]
    ys = sorted(float(y) for line in ax.lines if line.get_marker() == "o" for y in line.get_ydata())
    assert ys == pytest.approx([0.60, 0.61, 0.63])                  # one circle per run
    means = {line.get_label().split(":")[0]: list(line.get_ydata()) for line in ax.lines
             if line.get_marker() == "_"}
    assert means["Faster R-CNN (MobileNetV3-FPN)"] == pytest.approx([0.62])
    lo, hi = ax.get_ylim()
    assert lo <= 0.60 and hi >= 0.69 and lo == pytest.approx(0.5)  # cut to the data, labelled
    assert "axis from 0.5" in ax.get_ylabel()
    plt.close(fig)


def test_perfect_mask_ceiling_counts_what_union_masks_hide():
    """Perfect masks on hand-made photos: two people apart are both found (AP 1); a small person
    wholly inside a larger one is missed (the union masks hide it, chapter 9) and reported with
    its overlap, so the recall and the 11-point AP stop at one half (6 of 11 recall levels)."""
    from dnnod.studies.ceiling import perfect_mask_ap
    img = torch.full((3, 192, 192), 200, dtype=torch.uint8)
    def item(boxes):
        b = torch.tensor(boxes)
        return img, {"boxes": b, "labels": torch.ones(len(b), dtype=torch.long)}
    apart = perfect_mask_ap([item([[20., 20, 70, 150], [110, 30, 170, 170]])])
    assert apart["ap"] == pytest.approx(1.0) and apart["tp"] == apart["npos"] == 2
    assert apart["missed"] == [[]]
    nested = perfect_mask_ap([item([[30., 30, 150, 150], [45, 45, 95, 95]])])
    assert nested["tp"] == 1 and nested["npos"] == 2
    ((j, best, other),) = nested["missed"][0]
    assert j == 1 and best < 0.5 and other == pytest.approx(1.0)       # wholly inside the other
    assert nested["ap"] == pytest.approx(6 / 11)


def test_network_settings_ap_scores_the_given_network():
    """``network_ap`` runs one network on every photo: a "network" that knows only the first of
    two people apart (the perfect masks of that box alone) finds one of two in each of two
    photos, at precision 1, so recall stops at 1/2 and the 11-point AP is 6/11; the person it
    does not know is reported missed, with no other box covering it."""
    from dnnod.predict import GroundTruthPredictor
    from dnnod.studies.ceiling import network_ap
    img = torch.full((3, 192, 192), 200, dtype=torch.uint8)
    boxes = torch.tensor([[20., 20, 70, 150], [110, 30, 170, 170]])
    item = (img, {"boxes": boxes, "labels": torch.ones(2, dtype=torch.long)})
    knows_one = GroundTruthPredictor(boxes[:1], torch.ones(1, dtype=torch.long), num_classes=1)
    r = network_ap(knows_one, [item, item])
    assert r["tp"] == 2 and r["npos"] == 4 and r["ap"] == pytest.approx(6 / 11)
    assert [[j for j, _, _ in m] for m in r["missed"]] == [[1], [1]]
    assert all(other == 0 for m in r["missed"] for _, _, other in m)


@needs_pf
def test_weights_readme_trial_table_is_the_recorded_trials():
    """The recipe trials of dnnod/weights/README.md are the recorded rows scored again: every row
    of ``python -m dnnod.studies.race trials`` on the committed file is in the README, and every
    row recorded its own AP (the stored detections give the recorded number back)."""
    from pathlib import Path
    pkg = Path(race.__file__).resolve().parents[1]
    data = json.loads((pkg / "studies" / "results" / "pennfudan_trials.json").read_text())
    assert {r["eval_split"] for r in data["runs"]} == {"val"}          # choices made on val only
    scores = race.trial_scores(data, race.ground_truths(data))
    for s in scores:
        assert s["ap_voc07"] == pytest.approx(s["recorded"], abs=1e-9)
    readme = (pkg / "weights" / "README.md").read_text()
    rows = [l for l in race.trials_table(scores).splitlines() if l.startswith("| ") and "---" not in l]
    missing = [l for l in rows if l not in readme]
    assert not missing, "dnnod/weights/README.md lacks trial rows:\n" + "\n".join(missing)


def test_records_name_a_dirty_checkout(tmp_path):
    """A study row's commit says when tracked files differed from it (the code that ran was not
    that commit's); untracked files (run folders) do not count; outside git there is no commit."""
    import subprocess
    from dnnod.studies._records import git_commit
    assert git_commit(tmp_path) is None
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "run.log").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"
