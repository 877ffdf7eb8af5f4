"""Datasets, data root, downloads (offline paths only) and the paper's window samplers."""
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnnod import data as D
from dnnod.data import fetch as FE, shapes as SH
from dnnod.data import PennFudanDataset, ShapesDataset, VOCDataset, data_root, download
from dnnod.masks import mask_targets
from dnnod.data.sampler import (ClassifierSampler, ImageBank, LocalizerSampler, color_jitter, flip_targets,
                                gaussian_blur)

PF = D.data_root() / "PennFudanPed"
RACCOON = D.data_root() / "raccoon"


# ---------------------------------------------------------------- data root
def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNOD_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("DNNOD_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    r = data_root()
    assert r.name == "dnnod" and str(r).startswith(str(Path.home())) or str(tmp_path) in str(r)


# ---------------------------------------------------------------- shapes
def test_shapes_deterministic_and_valid():
    a = ShapesDataset("test", num_images=12, image_size=128, seed=3)
    b = ShapesDataset("test", num_images=12, image_size=128, seed=3, cache=False)
    c = ShapesDataset("val", num_images=12, image_size=128, seed=3)
    n_obj, sides = [], []
    for i in range(12):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert ia.dtype == torch.uint8 and ia.shape == (3, 128, 128)
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
        bx = ta["boxes"]
        assert ((bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])).all()
        assert bx.min() >= 0 and bx.max() <= 128
        assert ta["labels"].dtype == torch.int64 and set(ta["labels"].tolist()) <= {1, 2, 3}
        n_obj.append(len(bx))
        sides += ((bx[:, 2] - bx[:, 0]) / 128).tolist()
    assert 1 <= min(n_obj) and max(n_obj) <= 6
    assert min(sides) >= 0.08 - 1e-6 and max(sides) <= 0.9 + 1e-6
    assert not torch.equal(a[0][0], c[0][0])     # splits differ


def test_shapes_drawn_where_boxed():
    """The generator really draws each object inside its box: the box interior differs from
    the same image region's background far more than a random region does."""
    ds = ShapesDataset("train", num_images=6, image_size=128, seed=1, max_objects=1)
    for i in range(6):
        img, t = ds[i]
        x1, y1, x2, y2 = t["boxes"][0].round().int().tolist()
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        # the box centre is on the shape for all three classes (a triangle's centroid region)
        assert x1 <= cx < x2 and y1 <= cy < y2


def test_shapes_objects_stay_visible_and_fill_their_boxes():
    """Every labelled object keeps >= 60% of its own pixels visible once all later objects are
    drawn over it (counted here from the per-object masks, independently of the generator's
    running bookkeeping), and each mask fills its box: it touches all four sides. Without the
    pixel rule (box overlap only) 5 objects of these images fail, the worst 28% visible."""
    ds = ShapesDataset("val", num_images=120, image_size=192, seed=0)
    fracs, n_tri_or_circle = [], 0
    for i in range(len(ds)):
        t = ds.target(i)
        m = ds.object_masks(i)
        assert m.shape == (len(t["boxes"]), 192, 192) and m.dtype == torch.bool
        for k in range(len(m)):
            above = m[k + 1:].any(0) if k + 1 < len(m) else torch.zeros_like(m[k])
            fracs.append(float((m[k] & ~above).sum()) / float(m[k].sum()))
            ys, xs = torch.nonzero(m[k], as_tuple=True)
            x1, y1, x2, y2 = t["boxes"][k].tolist()
            # pixel p covers [p, p + 1]: the drawn extent matches the box within a pixel
            assert abs(xs.min().item() - x1) <= 1 and abs(xs.max().item() + 1 - x2) <= 1
            assert abs(ys.min().item() - y1) <= 1 and abs(ys.max().item() + 1 - y2) <= 1
            n_tri_or_circle += int(t["labels"][k]) != 2
    assert min(fracs) >= 0.6
    assert min(fracs) < 0.95 and n_tri_or_circle > 20     # overlaps really occur


def test_shapes_distractor_dots_are_smaller_than_any_object():
    """A distractor dot as large as the smallest circle would be an unlabelled circle: every
    dot the generator draws is at most half the smallest object side."""
    class Recorder:
        def __init__(self):
            self.ellipses = []

        def ellipse(self, xy, **kw):
            self.ellipses.append(xy)

        def line(self, *a, **kw):
            pass

        def arc(self, *a, **kw):
            pass

    S, rec = 192, Recorder()
    for k in range(300):
        SH._distractors(np.random.default_rng(k), rec, S)
    widths = [max(x2 - x1, y2 - y1) for x1, y1, x2, y2 in rec.ellipses]
    assert len(widths) > 100
    assert max(widths) <= 0.5 * 0.08 * S + 1e-9
    assert max(widths) > 0.3 * 0.08 * S          # dots are still drawn at a visible size


def test_write_voc_roundtrip(tmp_path):
    ds = ShapesDataset("val", num_images=5, image_size=96, seed=0)
    ds.write_voc(tmp_path / "voc")
    v = VOCDataset(tmp_path / "voc", image_set="val", classes=ds.class_names)
    assert len(v) == 5
    for i in range(5):
        (a, ta), (b, tb) = ds[i], v[i]
        assert torch.equal(a, b)                       # PNG is lossless
        torch.testing.assert_close(ta["boxes"], tb["boxes"], atol=0.01, rtol=0)
        assert torch.equal(ta["labels"], tb["labels"])


@pytest.mark.skipif(not PF.is_dir(), reason="Penn-Fudan not in DNNOD_DATA")
def test_pennfudan_split_and_boxes():
    tr, te = PennFudanDataset(split="train"), PennFudanDataset(split="test")
    names = sorted(p.stem for p in (PF / "PNGImages").glob("*.png"))
    assert tr.ids == names[:120] and te.ids == names[-50:] and not set(tr.ids) & set(te.ids)
    img, t = tr[0]
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    # FudanPed00001: 1-based inclusive (160,182)-(302,431) -> continuous (159,181,302,431)
    assert tr.ids[0] == "FudanPed00001"
    assert t["boxes"][0].tolist() == [159.0, 181.0, 302.0, 431.0]
    # boxes agree with the instance masks (independent source) within a few pixels
    mask = np.asarray(Image.open(PF / "PedMasks" / "FudanPed00001_mask.png"))
    ys, xs = np.nonzero(mask == 1)
    assert abs(xs.min() - t["boxes"][0, 0]) <= 3 and abs(xs.max() + 1 - t["boxes"][0, 2]) <= 3


@pytest.mark.skipif(not RACCOON.is_dir(), reason="raccoon not in DNNOD_DATA")
def test_voc_raccoon():
    v = VOCDataset(RACCOON, image_set=None)
    assert v.class_names == ("raccoon",) and len(v) == 200
    img, t = v[0]
    assert img.shape[0] == 3 and len(t["boxes"]) >= 1 and t["labels"].tolist() == [1] * len(t["boxes"])


# ---------------------------------------------------------------- bad input
def _voc_folder(tmp_path, xml_body, img=True):
    root = tmp_path / "v"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "Annotations" / "a.xml").write_text(xml_body)
    if img:
        Image.new("RGB", (50, 40)).save(root / "JPEGImages" / "a.jpg")
    return root


def _xml(boxes, w=50, h=40):
    objs = "".join(f"<object><name>cat</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    return f"<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        VOCDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="a.xml"):
        VOCDataset(_voc_folder(tmp_path / "1", "<annotation><size>"), image_set=None)
    with pytest.raises(ValueError, match="x2 <= x1"):
        VOCDataset(_voc_folder(tmp_path / "2", _xml([[20, 5, 10, 30]])), image_set=None)
    with pytest.warns(UserWarning, match="clipped"):
        v = VOCDataset(_voc_folder(tmp_path / "3", _xml([[1, 1, 60, 30]])), image_set=None)
    assert v.target(0)["boxes"].tolist() == [[0.0, 0.0, 50.0, 30.0]]
    with pytest.raises(ValueError, match="outside"):
        VOCDataset(_voc_folder(tmp_path / "4", _xml([[70, 1, 80, 30]])), image_set=None)
    # an image with no objects is kept (a valid negative) unless skip_empty
    v = VOCDataset(_voc_folder(tmp_path / "5", _xml([])), image_set=None, classes=["cat"])
    assert len(v) == 1 and len(v.target(0)["boxes"]) == 0
    with pytest.warns(UserWarning, match="without objects"):
        assert len(VOCDataset(tmp_path / "5" / "v", image_set=None, classes=["cat"], skip_empty=True)) == 0
    # corrupt / truncated image names the file
    root = _voc_folder(tmp_path / "6", _xml([[1, 1, 10, 10]]), img=False)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(ValueError, match="a.jpg"):
        VOCDataset(root, image_set=None)[0]
    with pytest.raises(FileNotFoundError, match="trainval"):
        VOCDataset(root, image_set="trainval")
    with pytest.raises(FileNotFoundError):
        PennFudanDataset(root=tmp_path / "nothing")
    with pytest.raises(ValueError):
        ShapesDataset("training")


# ---------------------------------------------------------------- download (offline paths)
def test_download_offline_and_checksum(tmp_path, monkeypatch):
    def offline(req, timeout=None):
        raise urllib.error.URLError("no network")
    with pytest.raises(ConnectionError, match="offline"):
        download("pennfudan", tmp_path, opener=offline, progress=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        download("coco", tmp_path)

    payload = b"x" * 1000
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    url = src.as_uri()
    import hashlib
    good = hashlib.md5(payload).hexdigest()
    with pytest.raises(ValueError, match="checksum"):
        FE._fetch(url, tmp_path / "out.bin", "0" * 32, progress=False)
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.bin.part").exists()
    p = FE._fetch(url, tmp_path / "out.bin", good, progress=False)
    assert p.read_bytes() == payload

    # resume: a partial file is continued with a Range request (fake server honours it)
    part = tmp_path / "r.bin.part"
    part.write_bytes(payload[:300])
    seen = {}

    class Resp(io.BytesIO):
        status = 206
        headers = {}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def ranged(req, timeout=None):
        seen["range"] = req.get_header("Range")
        start = int(seen["range"].split("=")[1].rstrip("-"))
        r = Resp(payload[start:])
        r.headers = {"Content-Length": str(len(payload) - start)}
        return r
    FE._fetch("http://example.invalid/r.bin", tmp_path / "r.bin", good, opener=ranged, progress=False)
    assert seen["range"] == "bytes=300-" and (tmp_path / "r.bin").read_bytes() == payload


# ---------------------------------------------------------------- samplers
@pytest.fixture(scope="module")
def bank():
    return ImageBank(ShapesDataset("train", num_images=20, image_size=128, seed=0))


def test_localizer_sampler_rules(bank):
    s = LocalizerSampler(bank, 3, 48, d=8, flip=False)
    g = torch.Generator().manual_seed(0)
    idx, wins, pos = s.windows(200, g)
    assert pos.float().mean() == pytest.approx(0.4)
    W, H = bank.sizes[idx].unbind(1)
    w, h = wins[:, 2] - wins[:, 0], wins[:, 3] - wins[:, 1]
    # width in [0.1 W, W], image aspect ratio, inside the image
    assert (w >= 0.1 * W - 1e-3).all() and (w <= W + 1e-3).all()
    torch.testing.assert_close(w / h, W / H)
    assert (wins[:, :2] >= -1e-4).all() and (wins[:, 2] <= W + 1e-3).all() and (wins[:, 3] <= H + 1e-3).all()
    # brute-force the rules, box by box
    n_neg_ok = 0
    for k in range(200):
        bx, lab = bank.boxes[idx[k]], bank.labels[idx[k]]
        bx = bx[lab > 0]
        a = wins[k].tolist()
        cover = []
        for b in bx.tolist():
            iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
            cover.append(iw * ih / ((b[2] - b[0]) * (b[3] - b[1])))
        if pos[k]:
            assert max(cover) >= 0.8 - 1e-6
        else:
            n_neg_ok += 1
    assert n_neg_ok == 120


def test_localizer_crop_width_distributions(bank):
    """Crop width / image width of the raw window draws: uniform on [0.25, 1] (mean 0.625), or
    log-uniform (median sqrt(0.25) = 0.5, half the crops between 1/4 and 1/2); both inside the
    range, and an unknown distribution is refused."""
    idx = torch.zeros(1, dtype=torch.long)
    fr = {}
    for dist in ("uniform", "log"):
        s = LocalizerSampler(bank, 3, 48, d=8, min_scale=0.25, scale_dist=dist)
        w = s._random_windows(idx, 20000, torch.Generator().manual_seed(1))[0]
        f = (w[:, 2] - w[:, 0]) / bank.sizes[0, 0]
        assert (f >= 0.25 - 1e-6).all() and (f <= 1 + 1e-6).all()
        fr[dist] = f
    assert float(fr["uniform"].mean()) == pytest.approx(0.625, abs=0.01)
    assert float((fr["uniform"] < 0.5).float().mean()) == pytest.approx(1 / 3, abs=0.015)
    assert float(fr["log"].median()) == pytest.approx(0.5, abs=0.01)
    assert float((fr["log"] < 0.5).float().mean()) == pytest.approx(0.5, abs=0.015)
    with pytest.raises(ValueError, match="scale_dist"):
        LocalizerSampler(bank, 3, 48, scale_dist="normal")


def test_localizer_sample_targets_and_flip(bank):
    s = LocalizerSampler(bank, 3, 48, d=8, flip=True)
    b = s.sample(16, torch.Generator().manual_seed(1))
    assert b["x"].shape == (16, 3, 48, 48) and b["y"].shape == (16, 3, 5, 8, 8)
    assert b["x"].min() >= 0 and b["x"].max() <= 1
    # targets equal mask_targets of the (mirrored when flipped) boxes of each class
    s2 = LocalizerSampler(bank, 3, 48, d=8, flip=False)
    b2 = s2.sample(16, torch.Generator().manual_seed(1))
    for k in range(16):
        boxes, labels = bank.boxes[b2["img_idx"][k]], bank.labels[b2["img_idx"][k]]
        for c in range(3):
            ref = mask_targets(boxes[labels == c + 1].double(), b2["windows"][k].double(), 8)
            torch.testing.assert_close(b2["y"][k, c], ref, atol=1e-5, rtol=0)
    # flipping = targets of the mirrored boxes (computed independently here)
    win = torch.tensor([10.0, 20.0, 90.0, 80.0])
    boxes = torch.tensor([[12.0, 25.0, 40.0, 70.0], [50.0, 30.0, 85.0, 50.0]])
    mirrored = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([100.0, 0, 100.0, 0])
    torch.testing.assert_close(flip_targets(mask_targets(boxes, win, 8)), mask_targets(mirrored, win, 8))


def test_color_jitter_is_torchvisions_adjustments():
    """Each crop equals torchvision's adjust_brightness, adjust_contrast, adjust_saturation applied
    one crop at a time with factors in [1 - s, 1 + s]; strength 0 changes nothing."""
    import torchvision.transforms.functional as TF
    x = torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    got = color_jitter(x, 0.4, torch.Generator().manual_seed(5))
    f = 1 + 0.4 * (2 * torch.rand(6, 3, generator=torch.Generator().manual_seed(5)) - 1)
    assert ((f >= 0.6) & (f <= 1.4)).all() and f.std() > 0.1
    for k in range(6):
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[k], float(f[k, 0])),
                                                      float(f[k, 1])), float(f[k, 2]))
        torch.testing.assert_close(got[k], ref, atol=1e-5, rtol=0)
    assert torch.equal(color_jitter(x, 0.0, torch.Generator()), x)
    with pytest.raises(ValueError, match="jitter"):
        color_jitter(x, 1.5, torch.Generator())


def test_samplers_jitter_crops_not_targets(bank):
    """jitter changes the crops and leaves windows and targets as they were; off by default, so
    a seeded run without it draws exactly what it drew before the option existed."""
    for make in (lambda j: LocalizerSampler(bank, 3, 48, d=8, jitter=j),
                 lambda j: ClassifierSampler(bank, 32, jitter=j)):
        a = make(0.0).sample(8, torch.Generator().manual_seed(3))
        b = make(0.3).sample(8, torch.Generator().manual_seed(3))
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["img_idx"], b["img_idx"])
        assert not torch.allclose(a["x"], b["x"]) and b["x"].min() >= 0 and b["x"].max() <= 1
    with pytest.raises(ValueError, match="jitter"):
        LocalizerSampler(bank, 3, 48, jitter=-0.1)


def test_gaussian_blur_is_torchvisions_per_crop():
    """Each crop equals torchvision's gaussian_blur of that crop alone (kernel 2·ceil(3·max) + 1,
    reflected borders) with its own sigma drawn uniformly in [0, max]; a blurred constant image
    stays constant; sigma_max 0 changes nothing; out-of-range values are refused."""
    import torchvision.transforms.v2.functional as TF
    x = torch.rand(5, 3, 21, 26, generator=torch.Generator().manual_seed(0))
    got = gaussian_blur(x, 2.5, torch.Generator().manual_seed(7))
    sig = 2.5 * torch.rand(5, generator=torch.Generator().manual_seed(7))
    assert sig.max() - sig.min() > 0.5
    for k in range(5):
        ref = TF.gaussian_blur(x[k], kernel_size=[17, 17], sigma=[float(sig[k])] * 2)
        torch.testing.assert_close(got[k], ref, atol=1e-5, rtol=0)
        if sig[k] > 0.5:        # detail removed: neighbouring pixels differ less
            assert got[k].diff(dim=-1).abs().mean() < 0.7 * x[k].diff(dim=-1).abs().mean()
    flat = torch.full((2, 3, 21, 26), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 3.0, torch.Generator()), flat, atol=1e-6, rtol=0)
    assert torch.equal(gaussian_blur(x, 0.0, torch.Generator()), x)
    for bad in (-0.5, 9.0, float("nan")):
        with pytest.raises(ValueError, match="blur"):
            gaussian_blur(x, bad, torch.Generator())
    with pytest.raises(ValueError, match="wider"):        # a kernel wider than the crop
        gaussian_blur(x, 7.0, torch.Generator())


def test_samplers_blur_crops_not_targets(bank):
    """blur softens the crops (less neighbour-to-neighbour variation) and leaves windows and
    targets as they were; off by default, so runs without it repeat as before."""
    for make in (lambda s: LocalizerSampler(bank, 3, 48, d=8, blur=s),
                 lambda s: ClassifierSampler(bank, 32, blur=s)):
        a = make(0.0).sample(8, torch.Generator().manual_seed(3))
        b = make(2.0).sample(8, torch.Generator().manual_seed(3))
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["img_idx"], b["img_idx"])
        assert b["x"].diff(dim=-1).abs().mean() < a["x"].diff(dim=-1).abs().mean()
        assert b["x"].min() >= 0 and b["x"].max() <= 1
    with pytest.raises(ValueError, match="blur"):
        ClassifierSampler(bank, 32, blur=-1)


def test_crop_matches_manual_resize(bank):
    """roi_align crop of a window == the window cut out with integer slicing (aligned grid)."""
    win = torch.tensor([[16.0, 32.0, 80.0, 96.0]])
    out = bank.crop(torch.tensor([0]), win, 64)
    ref = bank.images[0, :, 32:96, 16:80].float() / 255
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)


def test_classifier_sampler_rules(bank):
    from torchvision.ops import box_iou
    s = ClassifierSampler(bank, 32, flip=False)
    b = s.sample(100, torch.Generator().manual_seed(2))
    assert b["x"].shape == (100, 3, 32, 32)
    assert (b["y"] > 0).sum() == 40
    for k in range(100):
        bx, lab = bank.boxes[b["img_idx"][k]], bank.labels[b["img_idx"][k]]
        iou = box_iou(b["boxes"][k:k + 1], bx[lab > 0])[0]
        if b["y"][k] == 0:
            assert iou.max() < 0.2
        else:
            assert iou.max() >= 0.6 - 1e-6 and lab[lab > 0][iou.argmax()] == b["y"][k]
