"""The inference pipeline (paper Sec. 5.3, 6): windows, merging, predictors, refinement, detect.

End to end with the perfect network (GroundTruthPredictor) on random scenes, scored with a
VOC AP helper written here (the package's evaluator is tested elsewhere).
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from dnnod import DetectorNet
from dnnod.detect import detect
from dnnod.image import load_image
from dnnod.localize import kmeans_aspect_ratios, mask_score
from dnnod.masks import mask_targets
from dnnod.multiscale import merge_masks, scale_windows
from dnnod.predict import GroundTruthPredictor, NetPredictor
from dnnod.refine import enlarge, match_aspect, refine_boxes


# ----------------------------------------------------------------------------- helpers
def iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def voc_ap(dets, gts, eleven_point: bool = True) -> float:
    """VOC AP at IoU 0.5: the VOC2007 11-point AP, or (``eleven_point=False``) the all-point
    AP of VOC2010+. dets: [(image, box[4], score)], gts: {image: boxes[N,4]}."""
    npos = sum(len(v) for v in gts.values())
    used = {k: torch.zeros(len(v), dtype=torch.bool) for k, v in gts.items()}
    tp = []
    for im, b, _ in sorted(dets, key=lambda t: -t[2]):
        g = gts[im]
        if len(g) == 0:
            tp.append(0)
            continue
        o = iou_matrix(b[None].double(), g.double())[0]
        j = int(o.argmax())
        ok = bool(o[j] >= 0.5) and not bool(used[im][j])
        if ok:
            used[im][j] = True
        tp.append(int(ok))
    tp = np.array(tp, dtype=float)
    rec = np.cumsum(tp) / max(npos, 1)
    prec = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    if not eleven_point:      # area under the monotone precision envelope
        r = np.concatenate([[0.0], rec, [1.0]])
        p = np.concatenate([[0.0], prec, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        i = np.nonzero(r[1:] != r[:-1])[0]
        return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))
    return float(np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def test_voc_ap_helper_hand_example():
    gts = {0: torch.tensor([[0, 0, 10, 10.0]]), 1: torch.tensor([[0, 0, 10, 10.0]])}
    perfect = [(0, torch.tensor([0, 0, 10, 10.0]), 0.9), (1, torch.tensor([0, 0, 10, 10.0]), 0.8)]
    assert voc_ap(perfect, gts) == pytest.approx(1.0)
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1
    fp_first = [(0, torch.tensor([50, 50, 60, 60.0]), 0.95)] + perfect
    assert voc_ap(fp_first, gts) == pytest.approx((6 * 2 / 3 + 5 * 2 / 3) / 11)


def random_scene(g: torch.Generator):
    """1-6 boxes, mean size 10-90% of the image's mean dimension, aspect 1/3-3, not
    overlapping, ~40% placed touching an earlier box; 2 classes. Returns (H, W), boxes, labels."""
    rnd = lambda: float(torch.rand(1, generator=g))
    W, H = int(torch.randint(80, 180, (1,), generator=g)), int(torch.randint(80, 180, (1,), generator=g))
    boxes = []
    for _ in range(int(torch.randint(1, 7, (1,), generator=g))):
        for attempt in range(30):
            m = (0.1 + (0.8 if attempt < 10 else 0.3) * rnd()) * (W + H) / 2
            a = 3.0 ** (2 * rnd() - 1)
            h = 2 * m / (1 + a)
            w = a * h
            if w > W or h > H:
                continue
            if boxes and rnd() < 0.4:
                p = boxes[int(torch.randint(len(boxes), (1,), generator=g))]
                x1, y1 = (p[2], p[1] + (rnd() - 0.5) * h) if rnd() < 0.5 else \
                    (p[0] + (rnd() - 0.5) * w, p[3])
            else:
                x1, y1 = rnd() * (W - w), rnd() * (H - h)
            c = [x1, y1, x1 + w, y1 + h]
            if x1 < 0 or y1 < 0 or c[2] > W or c[3] > H:
                continue
            if all(min(c[2], o[2]) - max(c[0], o[0]) <= 1e-9 or
                   min(c[3], o[3]) - max(c[1], o[1]) <= 1e-9 for o in boxes):
                boxes.append(c)
                break
    labels = torch.randint(1, 3, (len(boxes),), generator=g)
    return (H, W), torch.tensor(boxes, dtype=torch.float64), labels


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("seed", [2024, 7])
def test_end_to_end_ground_truth_predictor_ap(seed):
    g = torch.Generator().manual_seed(seed)
    train = torch.cat([random_scene(g)[1] for _ in range(40)])
    ar = kmeans_aspect_ratios(train, 10)
    dets = {1: [], 2: []}
    gts = {1: {}, 2: {}}
    n_touching = 0
    for i in range(50):
        size, boxes, labels = random_scene(g)
        o = iou_matrix(boxes, boxes)
        n_touching += int(((o == 0) & (torch.cdist(boxes[:, :2], boxes[:, [2, 1]]) < 1e-6)).any()
                          or ((boxes[:, None, 3] - boxes[None, :, 1]).abs() < 1e-9).any())
        pred = GroundTruthPredictor(boxes, labels, num_classes=2)
        out = detect(pred, torch.zeros(3, *size, dtype=torch.uint8), aspect_ratios=ar)
        assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
        assert ((out["labels"] >= 1) & (out["labels"] <= 2)).all()
        for c in (1, 2):
            gts[c][i] = boxes[labels == c]
            sel = out["labels"] == c
            dets[c] += [(i, b, float(s)) for b, s in zip(out["boxes"][sel], out["scores"][sel])]
    assert n_touching >= 5                                  # the generator does make touching boxes
    ap_all = [voc_ap(dets[c], gts[c], eleven_point=False) for c in (1, 2)]
    ap_07 = [voc_ap(dets[c], gts[c]) for c in (1, 2)]
    print("seed", seed, "all-point AP per class", ap_all, "11-point", ap_07)
    # The target, VOC AP@0.5 >= 0.95, as the all-point AP (VOC2010+). Measured:
    # seed 2024 1.0 / 1.0, seed 7 0.99 / 0.985. The 11-point AP falls to 10/11 = 0.909 as soon
    # as one object of a class is missed: seed 7 misses 2 of 186 objects (5 objects of one class
    # in one image against the paper's top 5 per scale, and a 10 px box), 11-point 0.909 / 0.907.
    assert min(ap_all) >= 0.95, ap_all
    assert min(ap_07) >= 0.90, ap_07


def test_refinement_improves_localisation():
    """Stage-1 boxes from a coarse scale are refined to the truth by the perfect network."""
    truth = torch.tensor([[31.0, 23.0, 97.0, 71.0]])
    pred = GroundTruthPredictor(truth, [1])
    img = torch.zeros(3, 120, 140, dtype=torch.uint8)
    rough = torch.tensor([[36.0, 26.0, 94.0, 68.0]])          # IoU ~0.8; its 1.2x crop holds the truth
    b, s, l = refine_boxes(pred, img, rough, [1])
    # default aspect ratios (factor 1.28 apart, none equal to the truth's 1.375): IoU ~0.9
    assert iou_matrix(b.double(), truth)[0, 0] > max(0.85, iou_matrix(rough, truth)[0, 0] + 0.05)
    assert l.tolist() == [1] and 4 < s.item() <= 5
    # with the truth's aspect ratio among the candidates, refinement is nearly exact
    b2, s2, _ = refine_boxes(pred, img, rough, [1], aspect_ratios=[66 / 48])
    assert iou_matrix(b2.double(), truth)[0, 0] > 0.95 and 4 < s2.item() <= 5


def test_detect_intermediates_and_scales():
    truth = torch.tensor([[20.0, 30.0, 80.0, 90.0]])
    pred = GroundTruthPredictor(truth, [1], num_classes=2)
    # The square object's aspect ratio among the candidates: with only the default ratios
    # (none is 1) the refined box is a near-square inside the object (IoU ~0.8).
    out = detect(pred, torch.zeros(3, 150, 200, dtype=torch.uint8), return_intermediates=True,
                 aspect_ratios=(0.5, 1.0, 2.0))
    assert [len(w) for w in out["windows"]] == [1, 9, 25]
    assert [tuple(m.shape) for m in out["merged_masks"]] == [(2, 5, 24, 24), (2, 5, 48, 48),
                                                            (2, 5, 96, 96)]
    assert out["image_size"] == (150, 200)
    assert len(out["candidates"]) == 3 and len(out["candidates"][0]) == 2
    assert out["boxes_before_refine"].shape[0] <= 3 * 5 * 2
    assert len(out["boxes"]) >= 1 and iou_matrix(out["boxes"][:1].double(), truth)[0, 0] > 0.85
    assert (out["labels"] == 1).all()                       # nothing of the absent class 2
    one = detect(pred, torch.zeros(3, 150, 200, dtype=torch.uint8), scales=1, refine=False,
                 return_intermediates=True)
    assert len(one["windows"]) == 1 and "refine_crops" not in one


def _dpm_overlaps(boxes: torch.Tensor) -> torch.Tensor:
    """[i, j] = area of box j inside box i / area of box j (brute force, plain Python)."""
    n = len(boxes)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            x1 = max(float(boxes[i, 0]), float(boxes[j, 0]))
            y1 = max(float(boxes[i, 1]), float(boxes[j, 1]))
            x2 = min(float(boxes[i, 2]), float(boxes[j, 2]))
            y2 = min(float(boxes[i, 3]), float(boxes[j, 3]))
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            out[i, j] = inter / float((boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]))
    return out


@pytest.mark.parametrize("final", [0.2, 0.35, 0.6])
def test_final_nms_overlap_holds(final):
    """The final NMS over all scales (ours): no kept box has more than ``final_nms_iou`` of its
    area inside a better-scored kept box of its class (the DPM overlap), checked by brute force on the
    many overlapping boxes of an untrained network; ``None`` means the per-scale ``nms_iou``."""
    torch.manual_seed(0)
    net = DetectorNet(2, arch="tiny", head="conv").eval()
    img = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    out = detect(net, img, device="cpu", final_nms_iou=final, threshold=0.0)
    assert len(out["boxes"]) >= 4
    for c in (1, 2):
        sel = out["labels"] == c
        b, s = out["boxes"][sel], out["scores"][sel]
        order = torch.argsort(s, descending=True)
        ov = _dpm_overlaps(b[order].double())
        for j in range(len(b)):
            assert all(ov[i, j] < final + 1e-6 for i in range(j)), (c, j)
    same = detect(net, img, device="cpu", nms_iou=0.4, final_nms_iou=None, threshold=0.0)
    ref = detect(net, img, device="cpu", nms_iou=0.4, final_nms_iou=0.4, threshold=0.0)
    torch.testing.assert_close(same["boxes"], ref["boxes"])
    with pytest.raises(ValueError, match="final_nms_iou"):
        detect(net, img, device="cpu", final_nms_iou=1.5)


def _constant_classifier(num_classes: int, label: int):
    """A BoxClassifier whose arg-max is always ``label`` (0 = background): zero weights, one bias."""
    from dnnod.classifier import BoxClassifier
    m = BoxClassifier(num_classes).eval()
    with torch.no_grad():
        m.head[-1].weight.zero_()
        m.head[-1].bias.zero_()
        m.head[-1].bias[label] = 1.0
    return m


def test_detect_with_box_classifier_module():
    """Paper Sec. 5.2, filter 2: a box survives only if the classifier assigns it to the
    detector's class. A classifier that always says class 1 keeps class 1's detections exactly
    as without it and removes class 2's; one that always says background removes all."""
    truth = torch.tensor([[20.0, 30.0, 80.0, 90.0], [110.0, 40.0, 170.0, 120.0]])
    pred = GroundTruthPredictor(truth, [1, 2], num_classes=2)
    img = torch.zeros(3, 150, 200, dtype=torch.uint8)
    kw = dict(aspect_ratios=(0.5, 0.75, 1.0, 2.0))
    plain = detect(pred, img, **kw)
    assert set(plain["labels"].tolist()) == {1, 2}
    only1 = detect(pred, img, classifier=_constant_classifier(2, 1), **kw)
    sel = plain["labels"] == 1
    assert (only1["labels"] == 1).all()
    torch.testing.assert_close(only1["boxes"], plain["boxes"][sel])
    torch.testing.assert_close(only1["scores"], plain["scores"][sel])
    none = detect(pred, img, classifier=_constant_classifier(2, 0), **kw)
    assert len(none["boxes"]) == 0
    with pytest.raises(ValueError, match="classes"):
        detect(pred, img, classifier=_constant_classifier(3, 1), **kw)


# ----------------------------------------------------------------------------- windows / merge
def test_scale_windows_layout():
    ws = scale_windows((375, 500))
    assert [len(w) for w in ws] == [1, 9, 25]
    for s, w in enumerate(ws):
        assert torch.allclose(w[:, 2] - w[:, 0], torch.tensor(500 / 2 ** s))
        assert torch.allclose(w[:, 3] - w[:, 1], torch.tensor(375 / 2 ** s))
        assert w[:, 0].min() == 0 and w[:, 2].max() == 500 and w[:, 3].max() == 375
        if s:
            # neighbours along x share >= 20% of their area
            xs = torch.unique(w[:, 0])
            step = float(xs[1] - xs[0])
            assert (500 / 2 ** s - step) / (500 / 2 ** s) >= 0.2 - 1e-6
    assert sum(len(w) for w in scale_windows((100, 100), 3)) < 40


def test_merge_masks_against_pixel_rasterisation():
    """Merging the perfect masks of each window by max, sampled at pixels, equals the max over
    windows of each window's own mask at that pixel (brute force per pixel)."""
    H, W, d = 60, 80, 8         # window steps (3/4 of a window) fall on the finest grid
    g = torch.Generator().manual_seed(5)
    win = scale_windows((H, W), 3)[2]                              # 25 windows, 20 x 15
    wm = torch.rand(len(win), 1, 5, d, d, generator=g)
    merged = merge_masks(wm, win, (H, W))
    Dy, Dx = merged.shape[-2:]
    assert (Dy, Dx) == (4 * d, 4 * d)
    for y in range(0, H, 7):
        for x in range(0, W, 9):
            px, py = x + 0.5, y + 0.5
            ref = 0.0
            for k, (x1, y1, x2, y2) in enumerate(win.tolist()):
                if x1 <= px < x2 and y1 <= py < y2:
                    j = min(int((px - x1) / (x2 - x1) * d), d - 1)
                    i = min(int((py - y1) / (y2 - y1) * d), d - 1)
                    ref = max(ref, float(wm[k, 0, 2, i, j]))
            got = float(merged[0, 2, int(py / H * Dy), int(px / W * Dx)])
            assert got == pytest.approx(ref)


def test_merged_perfect_masks_score_true_box_high():
    H, W = 120, 160
    truth = torch.tensor([[13.0, 21.0, 77.0, 98.0]])
    wins = scale_windows((H, W), 3)
    pred = GroundTruthPredictor(truth, [1])
    for s, w in enumerate(wins):
        m = merge_masks(pred(None, w), w, (H, W))
        # at the finer scales the merged mask is the image-level target itself
        ref = mask_targets(truth, (0, 0, W, H), d=m.shape[-1])
        assert torch.allclose(m[0], ref, atol=1e-5)
        assert mask_score(m[0, 0], truth, (0, 0, W, H)).item() > 0.9


# ----------------------------------------------------------------------------- predictors
def test_ground_truth_predictor_matches_mask_targets():
    boxes = torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 60.0, 30.0], [0, 0, 10, 10.0]])
    labels = torch.tensor([2, 2, 1])
    pred = GroundTruthPredictor(boxes, labels, num_classes=3, d=8)
    wins = torch.tensor([[0.0, 0.0, 64.0, 48.0], [10.0, 5.0, 40.0, 35.0]])
    out = pred(None, wins)
    assert out.shape == (2, 3, 5, 8, 8)
    for k in range(2):
        assert torch.allclose(out[k, 0], mask_targets(boxes[2:], wins[k], 8))
        assert torch.allclose(out[k, 1], mask_targets(boxes[:2], wins[k], 8))
        assert out[k, 2].abs().sum() == 0


def test_net_predictor_crops_and_shapes():
    torch.manual_seed(0)
    net = DetectorNet(num_classes=2, arch="tiny", d=8)
    net.aspect_ratios = [0.5, 1.0, 2.0]
    pred = NetPredictor(net, device="cpu", batch_size=3)
    assert pred.aspect_ratios == [0.5, 1.0, 2.0] and pred.num_classes == 2 and pred.d == 8
    # crops: a window holding a constant-colour quadrant comes out that colour
    img = torch.zeros(3, 64, 80, dtype=torch.uint8)
    img[:, :32, :40] = torch.tensor([200, 100, 50], dtype=torch.uint8)[:, None, None]
    c = pred.crops(img, [[0.0, 0.0, 40.0, 32.0], [40.0, 32.0, 80.0, 64.0]])
    assert c.shape == (2, 3, 96, 96)
    # away from the border (where bilinear sampling sees the neighbouring pixels)
    inner = (slice(None), slice(3, -3), slice(3, -3))
    assert torch.allclose(c[0][inner], (torch.tensor([200, 100, 50]) / 255)[:, None, None],
                          atol=1e-5)
    assert c[1][inner].abs().max() < 1e-6
    # batched prediction equals one window at a time; eval mode restored afterwards
    net.train()
    wins = torch.tensor([[0, 0, 40, 32.0], [10, 10, 70, 60.0], [0, 0, 80, 64.0], [5, 5, 25, 25.0]])
    out = pred(img, wins)
    assert out.shape == (4, 2, 5, 8, 8) and net.training
    single = torch.cat([pred(img, wins[i:i + 1]) for i in range(4)])
    assert torch.allclose(out, single, atol=1e-5)
    r = detect(net, img, device="cpu", threshold=0.0)
    assert set(r) >= {"boxes", "scores", "labels"}


# ----------------------------------------------------------------------------- refine / image
def test_enlarge_hand_worked():
    b = enlarge([[10.0, 20.0, 30.0, 60.0]], 1.2)
    assert b[0].tolist() == pytest.approx([8.0, 16.0, 32.0, 64.0])
    clipped = enlarge([[0.0, 0.0, 10.0, 10.0]], 1.2, image_size=(11, 100))
    assert clipped[0].tolist() == pytest.approx([0.0, 0.0, 11.0, 11.0])


def test_match_aspect_hand_worked():
    # a tall 10 x 40 box in a 200 x 100 (W x H) image: widened about its centre to 2 x 40 = 80
    b = match_aspect([[50.0, 20.0, 60.0, 60.0]], 2.0, (100, 200))
    assert b[0].tolist() == pytest.approx([15.0, 20.0, 95.0, 60.0])
    # a wide box gets taller instead; near the edge it is shifted inside, not clipped
    b = match_aspect([[0.0, 90.0, 100.0, 100.0]], 2.0, (100, 200))
    assert b[0].tolist() == pytest.approx([0.0, 50.0, 100.0, 100.0])
    # larger than the image: clipped to it
    b = match_aspect([[10.0, 10.0, 20.0, 90.0]], 4.0, (100, 200))
    assert b[0].tolist() == pytest.approx([0.0, 10.0, 200.0, 90.0])
    with pytest.raises(ValueError, match="aspect"):
        match_aspect([[0, 0, 1, 1.0]], 0.0, (10, 10))


def test_refinement_stays_on_its_object():
    """A small person beside a large one: the small one's refinement crop (grown to the image's
    aspect ratio) shows the large one whole. Without the IoU limit its detection jumps to the large
    person (score 4.02 there against 3.73 on its own), and NMS would then lose the small one."""
    truth = torch.tensor([[20.0, 20.0, 50.0, 90.0], [50.0, 40.0, 64.0, 90.0]])
    pred = GroundTruthPredictor(truth, torch.tensor([1, 1]), num_classes=1)
    img = torch.zeros(3, 100, 140, dtype=torch.uint8)
    rough = torch.tensor([[22.0, 22.0, 50.0, 88.0], [48.0, 38.0, 64.0, 90.0]])
    b, _, _ = refine_boxes(pred, img, rough, torch.tensor([1, 1]), apply_nms=False)
    assert (torch.diagonal(iou_matrix(b.double(), truth.double())) > 0.7).all()
    jumped, _, _ = refine_boxes(pred, img, rough, torch.tensor([1, 1]), apply_nms=False, min_iou=0.0)
    assert iou_matrix(jumped[1:].double(), truth.double())[0].argmax() == 0     # the large one


def test_load_image_variants(tmp_path):
    rgb = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert torch.equal(load_image(rgb), rgb)
    arr = rgb.permute(1, 2, 0).numpy()
    assert torch.equal(load_image(arr), rgb)
    assert torch.equal(load_image(Image.fromarray(arr)), rgb)
    p = tmp_path / "x.png"
    Image.fromarray(arr).save(p)
    assert torch.equal(load_image(str(p)), rgb)
    gray = load_image(Image.fromarray(arr[:, :, 0]))
    assert gray.shape == (3, 5, 7) and torch.equal(gray[0], gray[2])
    rgba = load_image(Image.fromarray(np.concatenate([arr, arr[:, :, :1]], 2), "RGBA"))
    assert torch.equal(rgba, rgb)
    assert torch.equal(load_image(rgb.float() / 255), rgb)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(bad)
    with pytest.raises(ValueError):
        load_image(torch.zeros(3, 0, 5, dtype=torch.uint8))
    with pytest.raises(ValueError):
        load_image(torch.full((3, 4, 4), 200.0))            # float beyond [0, 1]


@pytest.mark.parametrize("call", [
    lambda: scale_windows((0, 10)),
    lambda: scale_windows((10, 10), scales=0),
    lambda: merge_masks(torch.zeros(2, 1, 5, 4, 4), torch.tensor([[0, 0, 5, 5.0]]), (10, 10)),
    lambda: merge_masks(torch.zeros(1, 1, 4, 4, 4), torch.tensor([[0, 0, 5, 5.0]]), (10, 10)),
    lambda: GroundTruthPredictor([[0, 0, 1, 1]], [0]),
    lambda: GroundTruthPredictor([[0, 0, 1, 1]], [1, 2]),
    lambda: GroundTruthPredictor([[0, 0, 1, 1]], [1])(None, torch.zeros(0, 4)),
    lambda: detect(GroundTruthPredictor([[0, 0, 1, 1]], [1]), torch.zeros(3, 0, 4,
                                                                          dtype=torch.uint8)),
    lambda: detect(object(), torch.zeros(3, 8, 8, dtype=torch.uint8)),
    lambda: refine_boxes(GroundTruthPredictor([[0, 0, 1, 1]], [1]),
                         torch.zeros(3, 8, 8, dtype=torch.uint8), [[0, 0, 4, 4]], [3]),
    lambda: enlarge([[0, 0, 1, 1]], factor=0),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
