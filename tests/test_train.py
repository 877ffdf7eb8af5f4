"""Training loop: bit-exact resume, DDP (2 gloo processes), checkpoints, classifier task."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dnnod import checkpoint as C
from dnnod.net import DetectorNet
from dnnod.train import BoxClassifier, TrainConfig, make_box_classifier, train

TINY = ["--data", "shapes", "--num-images", "6", "--image-size", "64", "--batch-size", "4",
        "--d", "6", "--val-images", "0", "--val-batches", "1", "--no-progress", "--threads", "1",
        "--epochs", "2", "--steps-per-epoch", "3", "--seed", "5"]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_exact(tmp_path):
    full = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "full")]))
    assert full["steps"] == 6 and not full["stopped"]
    # "killed" after step 3, last checkpoint at step 2 (ckpt-every 2): resume redoes step 3
    part = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "part"), "--ckpt-every", "2", "--stop-after", "3"]))
    assert part["stopped"] and part["steps"] == 3
    assert not (tmp_path / "part" / "model.pt").exists()
    ck = C.read_checkpoint(tmp_path / "part" / "last.pt")
    assert ck["step"] == 3
    res = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "part"), "--resume"]))
    assert res["steps"] == 6
    a = C.read_checkpoint(tmp_path / "full" / "model.pt")["state_dict"]
    b = C.read_checkpoint(tmp_path / "part" / "model.pt")["state_dict"]
    _same(a, b)
    # the optimizer state and the loss log agree too
    la = json.loads((tmp_path / "full" / "metrics.json").read_text())
    lb = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert [r["loss"] for r in la["steps"]] == [r["loss"] for r in lb["steps"]]
    assert len(la["epochs"]) == 2 and "val_loss" in la["epochs"][0]
    # a different seed gives different weights (the comparison above can fail)
    other = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "other"), "--seed", "6"]))
    c = other["model"].state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_trained_model_detects_with_its_checkpoints_shapes(tmp_path):
    """The model train() returns carries the class names and the k-means aspect ratios that its
    model.pt stores (a caller that evaluates it in memory, as the race does, must search the same
    candidate shapes as a user who loads the file), not the generic default ratios."""
    s = train(TrainConfig.from_argv(TINY + ["--epochs", "1", "--steps-per-epoch", "1",
                                            "--out", str(tmp_path / "r")]))
    loaded = C.load_checkpoint(tmp_path / "r" / "model.pt", device="cpu")
    assert s["model"].aspect_ratios == loaded.aspect_ratios
    assert s["model"].class_names == loaded.class_names == ["circle", "square", "triangle"]
    # shapes are as wide as tall: k-means gives one ratio near 1, the defaults span 1/3 to 3
    assert loaded.aspect_ratios == pytest.approx([1.0], abs=0.05)


def test_data_seed_fixes_the_shapes_images(tmp_path):
    """--data-seed separates the shapes images from the init/batch seed (default: --seed)."""
    short = TINY + ["--epochs", "1", "--steps-per-epoch", "1"]

    def run(name, *extra):
        train(TrainConfig.from_argv(short + ["--out", str(tmp_path / name), *extra]))
        return C.read_checkpoint(tmp_path / name / "model.pt")

    base = run("a")                                     # --seed 5: data seed 5
    same_data = run("b", "--seed", "6", "--data-seed", "5")
    other_data = run("c", "--seed", "6")                # data seed follows --seed
    # the k-means aspect ratios are a function of the training boxes only
    assert same_data["aspect_ratios"] == base["aspect_ratios"]
    assert other_data["aspect_ratios"] != base["aspect_ratios"]
    # ... while the initialisation follows --seed
    w = "features.0.weight"
    assert not torch.equal(same_data["state_dict"][w], base["state_dict"][w])
    assert same_data["meta"]["args"]["data_seed"] == 5 and base["meta"]["args"]["data_seed"] is None
    with pytest.raises(ValueError, match="--data-seed seeds the generated shapes"):
        train(TrainConfig.from_argv(["--data", "pennfudan", "--data-seed", "1", "--out", str(tmp_path / "p")]))


def test_loss_decreases_and_model_loads(tmp_path):
    s = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "r"), "--epochs", "1", "--steps-per-epoch", "12",
                      "--optimizer", "adam", "--lr", "3e-3"]))
    losses = [r["loss"] for r in json.loads((tmp_path / "r" / "metrics.json").read_text())["steps"]]
    assert sum(losses[-4:]) < sum(losses[:4])
    m = C.load_checkpoint(tmp_path / "r" / "model.pt", device="cpu")
    assert isinstance(m, DetectorNet) and not m.training
    assert m.class_names == ["circle", "square", "triangle"] and len(m.aspect_ratios) >= 1
    # the csv logs exist for the book
    assert (tmp_path / "r" / "metrics_steps.csv").read_text().startswith("step,")
    # training runs channels_last; the checkpoint stores plain contiguous tensors all the same
    sd = C.read_checkpoint(tmp_path / "r" / "model.pt")["state_dict"]
    assert all(v.is_contiguous() for v in sd.values())
    assert s["model"].features[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_classifier_task(tmp_path):
    s = train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "c"), "--task", "classifier", "--epochs", "1"]))
    m = C.load_checkpoint(tmp_path / "c" / "model.pt", device="cpu")
    assert isinstance(m, BoxClassifier) and m.num_classes == 3
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    keep = make_box_classifier(m, img, 1)(torch.tensor([[0.0, 0, 20, 20], [10, 10, 50, 60]]))
    assert keep.dtype == torch.bool and keep.shape == (2,)
    with pytest.raises(ValueError):
        make_box_classifier(m, img, 4)
    # detect() calls it as keep(boxes, label); the arg-max decides
    k2 = make_box_classifier(m, img)
    boxes = torch.tensor([[0.0, 0, 20, 20], [10, 10, 50, 60], [5, 5, 30, 40]])
    from torchvision.ops import roi_align
    crops = roi_align(img.float()[None] / 255, [boxes], (m.input_size,) * 2, 1.0, -1, True)
    with torch.no_grad():
        arg = m(crops).argmax(1)
    for lab in (1, 2, 3):
        assert torch.equal(k2(boxes, lab), arg == lab)


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "x"), "--epochs", "0"]))
    with pytest.raises(ValueError, match="--color-jitter"):
        train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "x"), "--color-jitter", "1"]))
    with pytest.raises(ValueError, match="--blur"):
        train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "x"), "--blur", "-1"]))
    with pytest.raises(ValueError, match="unknown training option"):
        train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "x")]), nonsense=1)
    # resuming with another architecture is refused with a clear message
    train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "y"), "--epochs", "1", "--steps-per-epoch", "1"]))
    with pytest.raises(ValueError, match="--resume"):
        train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "y"), "--d", "8", "--resume"]))


# ---------------------------------------------------------------- checkpoints
def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "ck.pt"
    C.save_checkpoint({"a": torch.ones(2)}, p)

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint({"a": torch.zeros(2)}, p)
    monkeypatch.undo()
    assert torch.equal(torch.load(p, weights_only=True)["a"], torch.ones(2))
    assert [q.name for q in tmp_path.iterdir()] == ["ck.pt"]        # no temp file left


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        C.read_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        C.load_checkpoint(bad)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a dnnod checkpoint"):
        C.read_checkpoint(tmp_path / "foreign.pt")
    # truncated file
    m = DetectorNet(2, arch="tiny", d=6)
    good = tmp_path / "good.pt"
    C.save_checkpoint({"format": "dnnod", "version": 1, "kind": "localizer", "config": m.config(),
                       "class_names": ["a", "b"], "aspect_ratios": [1.0], "state_dict": m.state_dict()}, good)
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="trunc.pt"):
        C.load_checkpoint(tmp_path / "trunc.pt")
    # wrong class count / arch into an existing model
    with pytest.raises(ValueError, match="num_classes"):
        C.load_weights_into(DetectorNet(3, arch="tiny", d=6), good)
    with pytest.raises(ValueError, match="arch"):
        C.load_weights_into(DetectorNet(2, arch="paper", d=6), good)
    with pytest.raises(ValueError, match="classes"):
        C.load_checkpoint(good, num_classes=3)
    m2 = C.load_weights_into(DetectorNet(2, arch="tiny", d=6), good)
    assert m2.class_names == ["a", "b"]
    with pytest.raises(ValueError, match="available"):
        C.load_pretrained("imagenet-huge")


def test_kmeans_aspect_ratios_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([0.5, 1.0, 2.0]).repeat(30)
    h = torch.rand(90, generator=g) * 50 + 10
    w = h * ratios * (1 + 0.01 * torch.randn(90, generator=g))
    boxes = torch.stack([torch.zeros(90), torch.zeros(90), w, h], 1)
    r = C.kmeans_aspect_ratios(boxes, k=3)
    assert sorted(r) == pytest.approx([0.5, 1.0, 2.0], rel=0.02)


# ---------------------------------------------------------------- DDP
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        from dnnod.train import TrainConfig, train
        args = {TINY!r} + ["--out", {str(tmp_path / 'ddp')!r}, "--epochs", "1", "--device", "cpu"]
        s = train(TrainConfig.from_argv(args))
        torch.save(s["model"].state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    _same(a, b)
    init = DetectorNet(3, arch="tiny", d=6).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a if a[k].is_floating_point())


# ---------------------------------------------------------------- CLI
def test_cli_detect_and_errors(tmp_path, capsys):
    from PIL import Image
    from dnnod.cli import main
    from dnnod.data import ShapesDataset
    img, _ = ShapesDataset("test", num_images=1, image_size=96)[0]
    src = tmp_path / "a.png"
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(src)
    rc = main(["detect", str(src), "--weights", "shapes-tiny", "--out", str(tmp_path / "o"),
               "--scales", "1", "--no-refine", "--device", "cpu"])
    assert rc == 0
    det = json.loads((tmp_path / "o" / "detections.json").read_text())[str(src)]
    assert (tmp_path / "o" / "a_boxes.png").is_file()
    for d in det:
        assert d["class"] in ("circle", "square", "triangle") and len(d["box"]) == 4
    assert main(["evaluate", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_cli_detect_defaults_and_classifier_option(tmp_path, capsys):
    """The CLI's detect settings default to dnnod.detect's (the AP in dnnod/weights/README.md
    is measured with them), and --classifier takes a box classifier of the localizer's classes."""
    from dnnod.cli import build_parser, main
    from dnnod.detect import DETECT_TOP_K, detect
    import inspect
    a = build_parser().parse_args(["evaluate", "--weights", "shapes-tiny"])
    sig = inspect.signature(detect).parameters
    assert a.top_k == DETECT_TOP_K == sig["top_k"].default
    assert a.threshold == sig["threshold"].default and a.nms_iou == sig["nms_iou"].default
    assert a.final_nms_iou == sig["final_nms_iou"].default
    assert a.scales == sig["scales"].default
    # a localizer passed as --classifier, and a classifier of another class count: clear errors
    args = ["evaluate", "--weights", "shapes-tiny", "--limit", "1", "--device", "cpu"]
    assert main(args + ["--classifier", "shapes-tiny"]) == 2
    assert "not a box classifier" in capsys.readouterr().err
    train(TrainConfig.from_argv(TINY + ["--out", str(tmp_path / "c3"), "--task", "classifier", "--epochs", "1"]))
    ck = C.read_checkpoint(tmp_path / "c3" / "model.pt")
    m = BoxClassifier(2)
    ck.update(config=m.config(), state_dict=m.state_dict(), class_names=["a", "b"])
    C.save_checkpoint(ck, tmp_path / "c2.pt")
    assert main(args + ["--classifier", str(tmp_path / "c2.pt")]) == 2
    assert "localizer detects" in capsys.readouterr().err
    # a matching classifier runs end to end
    assert main(args + ["--classifier", str(tmp_path / "c3" / "model.pt"), "--scales", "1"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_recorded_command_is_a_training_command(monkeypatch):
    """meta["command"] is the `dnnod train` line only when training was launched as one; a study
    that calls train() from Python (its argv is its own command) records None, not a mix."""
    from dnnod.train import _command_line
    for argv in (["/venv/bin/dnnod", "train", "--out", "r"], ["/src/dnnod/cli.py", "train", "--out", "r"],
                 ["/src/dnnod/train.py", "--out", "r"]):
        monkeypatch.setattr(sys, "argv", argv)
        assert _command_line() == "dnnod train --out r"
    for argv in (["/src/dnnod/studies/race.py", "run", "--detector", "detectornet"], ["-c"], []):
        monkeypatch.setattr(sys, "argv", argv)
        assert _command_line() is None


def test_config_is_the_command_line():
    """The typed config and the command line agree: the parser's defaults are the dataclass's,
    options map to fields of the same name, and train() refuses an argv list with a clear hint."""
    import dataclasses
    cfg = TrainConfig.from_argv(["--out", "r", "--steps-per-epoch", "7", "--no-flip", "--lam", "0.3"])
    assert cfg == TrainConfig(out="r", steps_per_epoch=7, no_flip=True, lam=0.3)
    defaults = TrainConfig.from_argv(["--out", "r"])
    for f in dataclasses.fields(TrainConfig):
        if f.name != "out":
            assert getattr(defaults, f.name) == f.default, f.name
    assert cfg.replace(epochs=3).epochs == 3 and cfg.epochs == 10
    with pytest.raises(ValueError, match="unknown training option"):
        cfg.replace(stepz=3)
    with pytest.raises(TypeError, match="TrainConfig.from_argv"):
        train(["--out", "r"])
    with pytest.raises(ValueError, match="--optimizer"):
        train(out="r", optimizer="rmsprop")
    # cosine schedule: full rate at step 0, half way at the middle, 0 at the end
    c = TrainConfig(out="r", epochs=2, steps_per_epoch=5, lr=0.1, lr_schedule="cosine")
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(5) == pytest.approx(0.05)
    assert c.lr_at(10) == pytest.approx(0.0, abs=1e-12)
