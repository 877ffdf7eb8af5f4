"""The mask editor (dnnod.viz.editor): edits change the masks exactly as a hand-written reference says,
and the boxes of Sec. 5.2 follow the edited mass (paint creates a box, erase removes it, drag moves
it by exactly the dragged cells, undo restores)."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from dnnod.viz.editor import MaskEditor, eq3_terms, mask_editor_widget

D = 24
REGION = (0.0, 0.0, 240.0, 240.0)      # 10 px cells
# One candidate shape, 40 × 40 px = 4 × 4 cells, on a 5 px lattice starting at 0: a 4 × 4 block
# of mass at any cell position is then exactly a candidate box (make_lattice centres the lattice;
# (240 - 40) / 5 is an integer, so it starts at 0).
EXACT = dict(aspect_ratios=[1.0], sizes=(40 / 240,))


def block_masks(r0: int, c0: int, h: int = 4, w: int = 4) -> torch.Tensor:
    """The five Eq. 1 masks of an object filling cells [r0, r0+h) × [c0, c0+w), written by hand:
    full = the block, top/bottom = its upper/lower rows, left/right = its left/right columns."""
    m = torch.zeros(5, D, D, dtype=torch.float64)
    m[0, r0:r0 + h, c0:c0 + w] = 1
    m[1, r0:r0 + h // 2, c0:c0 + w] = 1
    m[2, r0 + h // 2:r0 + h, c0:c0 + w] = 1
    m[3, r0:r0 + h, c0:c0 + w // 2] = 1
    m[4, r0:r0 + h, c0 + w // 2:c0 + w] = 1
    return m


def cells_box(r0, c0, h=4, w=4, cell=10.0):
    return torch.tensor([c0 * cell, r0 * cell, (c0 + w) * cell, (r0 + h) * cell], dtype=torch.float64)


def test_paint_erase_drag_edit_the_cells_like_a_reference():
    g = torch.Generator().manual_seed(0)
    start = torch.rand(5, D, D, generator=g, dtype=torch.float64)
    ed = MaskEditor(start, REGION)
    ref = start.clone()
    ed.paint("top", (2, 5), (3, 9), 0.7)
    ref[1, 2:5, 3:9] = 0.7
    assert torch.equal(ed.masks, ref)
    ed.erase("all", (0, 1), (0, D))
    ref[:, 0, :] = 0
    assert torch.equal(ed.masks, ref)
    ed.paint(["left", 4], (10, 12), (10, 11), 1.0)
    ref[[3, 4], 10:12, 10] = 1.0
    assert torch.equal(ed.masks, ref)
    # drag: the source block is emptied, its values land (d_rows, d_cols) away, cell by cell
    before = ed.masks
    ed.drag("full", (5, 9), (6, 10), 3, -2)
    for i in range(D):
        for j in range(D):
            src_i, src_j = i - 3, j + 2
            if 5 <= src_i < 9 and 6 <= src_j < 10:
                want = before[0, src_i, src_j]
            elif 5 <= i < 9 and 6 <= j < 10:
                want = 0.0
            else:
                want = before[0, i, j]
            assert float(ed.masks[0, i, j]) == float(want), (i, j)
    assert torch.equal(ed.masks[1:], before[1:])


def test_drag_off_the_grid_drops_what_leaves_it():
    ed = MaskEditor(block_masks(10, 20), REGION)
    ed.drag("all", (10, 14), (20, 24), 0, 2)
    want = torch.zeros(5, D, D, dtype=torch.float64)
    want[0, 10:14, 22:24] = 1            # the left two columns of the block, moved right by 2
    want[1, 10:12, 22:24] = 1
    want[2, 12:14, 22:24] = 1
    want[3, 10:14, 22:24] = 1             # the left half moved onto the old right half
    assert torch.equal(ed.masks, want)


def test_undo_and_reset_restore_earlier_masks():
    start = block_masks(3, 3)
    ed = MaskEditor(start, REGION)
    assert not ed.undo()
    states = [ed.masks]
    ed.paint("full", (0, 2), (0, 2), 0.5)
    states.append(ed.masks)
    ed.drag("all", (3, 7), (3, 7), 5, 5)
    states.append(ed.masks)
    ed.erase("right", (0, D), (0, D))
    assert ed.num_edits == 3
    for want in reversed(states):
        assert ed.undo()
        assert torch.equal(ed.masks, want)
    ed.paint("full", (20, 24), (20, 24))
    ed.reset()
    assert torch.equal(ed.masks, start)
    assert ed.undo() and float(ed.masks[0, 20:24, 20:24].min()) == 1.0   # reset is undoable


def test_painting_a_block_creates_a_box_there_and_erasing_removes_it():
    ed = MaskEditor(torch.zeros(5, D, D), REGION, **EXACT)
    assert len(ed.boxes()[0]) == 0 and ed.chosen() is None       # no mass: no box
    # paint the five masks of an object at rows 6-9, columns 12-15 (40 × 40 px)
    ed.paint("full", (6, 10), (12, 16))
    ed.paint("top", (6, 8), (12, 16))
    ed.paint("bottom", (8, 10), (12, 16))
    ed.paint("left", (6, 10), (12, 14))
    ed.paint("right", (6, 10), (14, 16))
    boxes, scores = ed.boxes()
    assert torch.allclose(boxes[0].double(), cells_box(6, 12), atol=1e-4)
    assert scores[0] == pytest.approx(5.0, abs=1e-4)            # a perfect box scores 5 (Eq. 3)
    ed.erase("all", (6, 10), (12, 16))
    assert len(ed.boxes()[0]) == 0
    assert ed.undo()
    assert torch.allclose(ed.chosen().double(), cells_box(6, 12), atol=1e-4)


def test_painting_with_the_default_lattice_finds_the_new_object():
    # default: 9 sizes × 10 aspect ratios (none exactly 1) on a 5 px lattice — a surviving box must
    # match the new block at the VOC criterion, IoU >= 0.5
    ed = MaskEditor(block_masks(2, 2, 6, 6), REGION)
    target = cells_box(14, 14, 6, 6)[None]
    before = ed.boxes()[0]
    assert len(before) and box_iou(before.double(), target).max() < 0.1
    second = block_masks(14, 14, 6, 6)          # paint it mask by mask, as a teacher would
    for k in range(5):
        rows = torch.nonzero(second[k].sum(1)).flatten()
        cols = torch.nonzero(second[k].sum(0)).flatten()
        ed.paint(k, (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1), 1.0)
    after = ed.boxes()[0]
    assert box_iou(after.double(), target).max() >= 0.5
    assert box_iou(after.double(), cells_box(2, 2, 6, 6)[None]).max() >= 0.5   # the first one stays


@pytest.mark.parametrize("dr,dc", [(3, 5), (-2, 4), (7, -6)])
def test_drag_moves_the_chosen_box_by_exactly_the_dragged_cells(dr, dc):
    ed = MaskEditor(block_masks(8, 9), REGION, **EXACT)
    b0 = ed.chosen().double()
    assert torch.allclose(b0, cells_box(8, 9), atol=1e-4)
    ed.drag("all", (8, 12), (9, 13), dr, dc)
    b1 = ed.chosen().double()
    shift = torch.tensor([dc, dr, dc, dr], dtype=torch.float64) * 10.0
    assert torch.allclose(b1, b0 + shift, atol=1e-4)
    assert ed.undo()
    assert torch.allclose(ed.chosen().double(), b0, atol=1e-4)


def test_eq3_terms_add_up_and_match_a_hand_computed_box():
    m = block_masks(8, 9)
    exact = cells_box(8, 9)[None]
    t = eq3_terms(m, exact, REGION)
    for k in ("full", "top", "bottom", "left", "right"):
        assert float(t[k][0]) == pytest.approx(1.0)
    assert float(t["surround"][0]) == pytest.approx(0.0)
    # The box shifted right by half its width (2 cells) covers columns 11-14, the block 9-12:
    # full: half the box is covered; top mask: the box's top half holds 2 × 2 of its 2 × 4 cells
    # and its bottom half none; left mask (columns 9-10) lies outside the box; right mask
    # (columns 11-12) fills the box's *left* half: own half 0, opposite half 1.
    shifted = exact + torch.tensor([20.0, 0, 20.0, 0])
    t = eq3_terms(m, shifted, REGION)
    assert float(t["full"][0]) == pytest.approx(0.5)
    assert float(t["top"][0]) == pytest.approx(0.5 - 0.0)
    assert float(t["bottom"][0]) == pytest.approx(0.5 - 0.0)
    assert float(t["left"][0]) == pytest.approx(0.0 - 0.0)
    assert float(t["right"][0]) == pytest.approx(0.0 - 1.0)
    assert float(t["total"][0]) == pytest.approx(sum(float(t[k][0]) for k in
                                                     ("full", "top", "bottom", "left", "right",
                                                      "surround")))


def test_bad_input_is_a_clear_value_error():
    ed = MaskEditor(torch.zeros(5, D, D), REGION)
    with pytest.raises(ValueError, match="kind"):
        ed.paint("middle", (0, 1), (0, 1))
    with pytest.raises(ValueError, match="rows"):
        ed.paint("full", (3, 3), (0, 1))
    with pytest.raises(ValueError, match="cols"):
        ed.erase("full", (0, 1), (0, D + 1))
    with pytest.raises(ValueError, match="value"):
        ed.paint("full", (0, 1), (0, 1), 1.5)
    with pytest.raises(ValueError, match="d_rows"):
        ed.drag("full", (0, 1), (0, 1), 0.5, 0)
    with pytest.raises(ValueError, match=r"\[5, dy, dx\]"):
        MaskEditor(torch.zeros(4, D, D), REGION)
    with pytest.raises(ValueError, match="NaN"):
        MaskEditor(torch.full((5, D, D), float("nan")), REGION)
    assert ed.num_edits == 0                     # failed edits leave no history


def test_widget_apply_undo_reset_and_source_switch():
    image = torch.full((3, 240, 240), 200, dtype=torch.uint8)
    gt = block_masks(8, 9)
    panel = mask_editor_widget(image, {"ground truth": gt, "empty": torch.zeros(5, D, D)},
                               REGION, brush=((8, 12), (9, 13)), **EXACT)
    c = panel.controls
    assert "★" in panel.info.value and "(90.0, 80.0, 130.0, 120.0)" in panel.info.value
    png0, renders = panel.image.value, panel.renders
    c["mask"].value = "all"
    c["mode"].value = "drag"
    c["d_rows"].value, c["d_cols"].value = 2, 3
    c["apply"].click()
    assert "(120.0, 100.0, 160.0, 140.0)" in panel.info.value          # moved 3 cols, 2 rows
    assert c["rows"].value == (10, 13) and c["cols"].value == (12, 15)  # the brush followed
    assert panel.image.value != png0 and panel.renders > renders
    c["undo"].click()
    assert torch.equal(panel.editor.masks, gt)
    c["mode"].value = "erase"
    c["rows"].value, c["cols"].value = (8, 11), (9, 12)
    c["apply"].click()
    assert "No box" in panel.info.value
    c["reset"].click()
    assert torch.equal(panel.editor.masks, gt)
    c["source"].value = "empty"
    assert float(panel.editor.masks.abs().sum()) == 0 and panel.editor.num_edits == 0
    assert "No box" in panel.info.value
    c["threshold"].value = 0.0
    assert panel.editor.threshold == 0.0


def test_sampler_widget_browses_the_samplers_windows():
    from dnnod.data import ShapesDataset
    from dnnod.viz.editor import sampler_widget
    from dnnod.data.sampler import ImageBank, LocalizerSampler

    ds = ShapesDataset("train", num_images=4, image_size=96, seed=0)
    bank = ImageBank(ds)
    sampler = LocalizerSampler(bank, 3, 48, d=12)
    panel = sampler_widget(sampler, pool=40, seed=0, class_names=ds.class_names)
    pool = panel.pool
    assert pool["positive"].float().mean() == pytest.approx(0.4, abs=0.01)   # the sampler's 40 %
    c = panel.controls
    for kind in ("positive", "negative"):
        c["kind"].value = kind
        n = int(((pool["img_idx"] == c["image"].value) & (pool["positive"] == (kind == "positive"))).sum())
        assert c["sample"].max == max(0, n - 1)
        if n:
            i = int(torch.nonzero((pool["img_idx"] == c["image"].value)
                                  & (pool["positive"] == (kind == "positive")))[0])
            w = pool["windows"][i]
            assert f"window ({', '.join(f'{float(v):.0f}' for v in w)})" in panel.info.value
    # each class has its own targets (and title): the pictures of the three classes differ
    pngs = set()
    for k in range(3):
        c["cls"].value = k
        pngs.add(panel.image.value)
    assert len(pngs) == 3
    with pytest.raises(ValueError, match="class_names"):
        sampler_widget(sampler, pool=10, class_names=["a"])
