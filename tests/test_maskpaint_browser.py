"""The mask painter in a real browser: a page holding the widget's state and the book's vendored
widget JavaScript, opened from disk (file://, no server, no network) in Debian's headless
Chromium through Playwright; the mouse paints, erases and undoes, and the boxes must follow:

- a blob painted into an empty part of the full mask gives a new box there;
- erasing an object from all five masks removes its box; undo brings it back;
- no JavaScript error on the way.

Skipped, with a message, where chromium or Playwright's Python package is missing
(``apt-get install -y chromium``; ``pip install playwright==1.65.3``; no browser download).
"""
from __future__ import annotations

import json

import pytest
import torch

from browser import require_browser
from maskpaint_page import write_page

playwright_api = require_browser("the mask painter's browser test")

OBJECT = [16.0, 24.0, 88.0, 104.0]          # the one object of the test masks (px, 8 px per cell)
CELL = 12                                   # px per cell on the page (the painter's cell_px)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def open_page(browser, path):
    """Open ``path`` (file://), collecting JavaScript errors and failed loads in ``pg.errors``."""
    errors = []
    pg = browser.new_page()
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
          if m.type == "error" else None)
    pg.on("requestfailed", lambda r: errors.append(f"failed request: {r.url}"))
    pg.goto(path.as_uri())
    pg.wait_for_selector("canvas[data-mask=full]", timeout=30000)
    pg.errors = errors
    return pg


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    from dnnod.masks import mask_targets
    from dnnod.viz.maskpaint import MaskPainter

    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 192, 192, generator=g) * 255).to(torch.uint8)
    gt = mask_targets(torch.tensor([OBJECT]), (0, 0, 192, 192), d=24)
    widget = MaskPainter(image, {"ground truth": gt}, (0, 0, 192, 192), top_k=10, brush=6,
                         cell_px=CELL)
    pg = open_page(browser, write_page(widget, tmp_path_factory.mktemp("maskpaint")))
    yield pg
    pg.close()


def boxes(pg):
    return json.loads(pg.get_attribute("[data-boxes]", "data-boxes"))


def stroke(pg, mask: str, cells):
    """Press at the first (row, col) cell of ``mask``, move through the others, release."""
    bb = pg.locator(f"canvas[data-mask={mask}]").bounding_box()
    pts = [(bb["x"] + (c + 0.5) * CELL, bb["y"] + (r + 0.5) * CELL) for r, c in cells]
    pg.mouse.move(*pts[0])
    pg.mouse.down()
    for p in pts[1:]:
        pg.mouse.move(*p, steps=2)
    pg.mouse.up()


def test_paint_erase_undo(page):
    start = boxes(page)
    assert any(_iou(b, OBJECT) > 0.7 for b in start), f"no box on the object at the start: {start}"
    # 1. a blob (6 x 6-cell brush) in the empty lower right of the full mask -> a box there
    stroke(page, "full", [(18, 18), (19, 19)])
    after = boxes(page)
    blob = [16 * 8.0, 16 * 8.0, 23 * 8.0, 23 * 8.0]     # the cells the two dabs cover, in px
    new = [b for b in after if (b[0] + b[2]) / 2 > blob[0] and (b[1] + b[3]) / 2 > blob[1]
           and _iou(b, OBJECT) == 0.0]
    assert new, f"no new box on the painted blob: before {start}, after {after}"
    # 2. erase the object from all five masks (a 12 x 12-cell eraser over its cells)
    page.click("button[data-mode=erase]")
    page.select_option("select[data-control=target]", "all")
    page.eval_on_selector("input[data-control=brush]",
                          "e => { e.value = 12; e.dispatchEvent(new Event('input')); }")
    before_erase = boxes(page)
    stroke(page, "top", [(8, 6)])
    erased = boxes(page)
    assert not any(_iou(b, OBJECT) > 0.3 for b in erased), f"the object's box survived: {erased}"
    assert any(_iou(b, n) > 0.9 for b in erased for n in new), "erasing the object lost the blob"
    # 3. undo restores it
    page.click("button[data-action=undo]")
    assert boxes(page) == before_erase
    assert not page.errors, "JavaScript errors:\n" + "\n".join(page.errors)


def test_box_targets_follow_the_mouse(browser, tmp_path):
    """Chapter 3's box-targets widget: dragging out a new box on an empty part of the window adds
    its area (in cells) to the full target; moving it keeps the mass; removing it takes it away."""
    from dnnod.viz.boxtargets import BoxTargets

    image = torch.zeros(3, 96, 96, dtype=torch.uint8)
    widget = BoxTargets(image, [[8.0, 8.0, 40.0, 40.0]], d=12, canvas_px=240)   # 8 px cells
    pg = open_page(browser, write_page(widget, tmp_path))
    mass = lambda: json.loads(pg.get_attribute("[data-targets]", "data-targets"))
    assert mass()[0] == pytest.approx(16.0, abs=1e-6)            # 32 x 32 px = 4 x 4 cells
    bb = pg.locator("canvas[data-role=image]").bounding_box()
    s = bb["width"] / 96                                          # screen px per image px
    pg.mouse.move(bb["x"] + 56 * s, bb["y"] + 56 * s)             # drag out (56,56)-(88,80)
    pg.mouse.down()
    pg.mouse.move(bb["x"] + 88 * s, bb["y"] + 80 * s, steps=4)
    pg.mouse.up()
    m = mass()
    assert m[0] == pytest.approx(16.0 + 4 * 3, abs=0.3), m        # + 32 x 24 px = 12 cells
    assert m[1] == pytest.approx(m[0] / 2, abs=0.3) and m[3] == pytest.approx(m[0] / 2, abs=0.3)
    pg.mouse.move(bb["x"] + 70 * s, bb["y"] + 70 * s)             # move it inside the window
    pg.mouse.down()
    pg.mouse.move(bb["x"] + 62 * s, bb["y"] + 66 * s, steps=4)
    pg.mouse.up()
    assert mass()[0] == pytest.approx(m[0], abs=0.3)
    pg.click("button[data-action=remove]")
    assert mass()[0] == pytest.approx(16.0, abs=1e-6)
    assert not pg.errors, "JavaScript errors:\n" + "\n".join(pg.errors)


def test_a_finger_paints_too(browser, tmp_path):
    """Touch input (a tap on a touch screen) paints like the mouse: pointer events throughout."""
    from dnnod.viz.maskpaint import MaskPainter

    widget = MaskPainter(torch.zeros(3, 96, 96, dtype=torch.uint8), {"empty": torch.zeros(5, 24, 24)},
                         brush=4, threshold=0.5)
    path = write_page(widget, tmp_path)
    ctx = browser.new_context(has_touch=True)
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_selector("canvas[data-mask=full]", timeout=30000)
    assert boxes(pg) == []
    bb = pg.locator("canvas[data-mask=full]").bounding_box()
    pg.touchscreen.tap(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
    got = boxes(pg)
    assert len(got) >= 1, "a tap painted nothing"
    assert 24 <= (got[0][0] + got[0][2]) / 2 <= 72              # the box sits on the tapped block
    assert not errors, errors
    ctx.close()


def test_dragging_mass_moves_the_box(browser, tmp_path):
    """Drag mass on all five masks: the object's block follows the pointer and so does its box."""
    from dnnod.masks import mask_targets
    from dnnod.viz.maskpaint import MaskPainter

    gt = mask_targets(torch.tensor([OBJECT]), (0, 0, 192, 192), d=24)
    widget = MaskPainter(torch.zeros(3, 192, 192, dtype=torch.uint8), {"ground truth": gt},
                         (0, 0, 192, 192), brush=12, mode="drag", target="all", cell_px=CELL)
    pg = open_page(browser, write_page(widget, tmp_path))
    assert any(_iou(b, OBJECT) > 0.7 for b in boxes(pg))
    stroke(pg, "full", [(8, 6), (11, 10), (14, 14)])          # 6 rows down, 8 columns right
    moved = [OBJECT[0] + 64, OBJECT[1] + 48, OBJECT[2] + 64, OBJECT[3] + 48]
    got = boxes(pg)
    assert any(_iou(b, moved) > 0.7 for b in got), f"no box on the moved object: {got}"
    assert not any(_iou(b, OBJECT) > 0.5 for b in got), f"a box stayed behind: {got}"
    assert not pg.errors, pg.errors
    pg.close()


def test_drawing_a_box_paints_its_targets_and_finds_it(browser, tmp_path):
    """"Draw a box" adds the drawn box's Eq. 1 targets to all five masks: on empty masks the
    painter then finds that very box."""
    from dnnod.viz.maskpaint import MaskPainter

    widget = MaskPainter(torch.zeros(3, 192, 192, dtype=torch.uint8),
                         {"empty": torch.zeros(5, 24, 24)}, (0, 0, 192, 192), mode="box",
                         cell_px=CELL)
    pg = open_page(browser, write_page(widget, tmp_path))
    assert boxes(pg) == []
    stroke(pg, "left", [(4, 5), (10, 12), (16, 18)])          # cells (4, 5) to (16, 18), centres
    drawn = [5.5 * 8, 4.5 * 8, 18.5 * 8, 16.5 * 8]              # in image px (8 px per cell)
    got = boxes(pg)
    assert got and _iou(got[0], drawn) > 0.85, f"drawn {drawn}, found {got}"
    assert not pg.errors, pg.errors
    pg.close()


def test_the_nms_menu_switches_the_suppression_rule(browser, tmp_path):
    """Chapter 9's scene, an adult A and a child B in front of A's legs (perfect masks): DPM's
    suppression removes B's box at any overlap, suppression by explained mask support at 0.8
    keeps it; the "NMS" menu switches between the two, and the boxes are those Python finds."""
    from dnnod.masks import mask_targets
    from dnnod.viz.maskpaint import MaskPainter

    adult, child = [16.0, 8.0, 56.0, 88.0], [28.0, 56.0, 52.0, 88.0]
    masks = mask_targets(torch.tensor([adult, child]), (0, 0, 96, 96), d=24)
    widget = MaskPainter(torch.zeros(3, 96, 96, dtype=torch.uint8), {"A and B": masks},
                         (0, 0, 96, 96), nms_iou=0.8, top_k=3, cell_px=CELL)
    want = {}
    for mode in ("dpm", "explain"):
        widget.nms_mode = mode
        want[mode] = widget.reference()[0].tolist()
    widget.nms_mode = "dpm"
    pg = open_page(browser, write_page(widget, tmp_path))
    on_child = lambda bs: [b for b in bs if _iou(b, child) > 0.5]   # noqa: E731
    for mode in ("dpm", "explain", "dpm"):
        pg.select_option("select[data-control=nms_mode]", mode)
        got = boxes(pg)
        assert len(got) == len(want[mode]) and all(
            max(abs(a - b) for a, b in zip(g, w)) < 1e-3 for g, w in zip(got, want[mode])), \
            f"{mode}: the browser kept {got}, Python {want[mode]}"
        assert bool(on_child(got)) == (mode == "explain"), f"{mode}: {got}"
    assert not pg.errors, pg.errors
    pg.close()
