"""dnnod.viz.live without a browser: :func:`to_live` stores, for every combination of the
controls' options, exactly what the Python Panel shows for it (checked by setting the Panel's
controls afterwards, the way a reader with a kernel does), follows options that depend on other
controls, stores identical frames once, and leaves the Panel working; :func:`iou_live` starts
at the boxes it was given."""
from __future__ import annotations

import base64
import io
import itertools

import pytest
import torch

from dnnod.viz import live, widgets


def _image():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(3, 48, 64, generator=g) * 255).to(torch.uint8)


def _png_size(url: str):
    from PIL import Image

    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return im.size, im.mode


def test_every_combination_is_what_the_panel_shows():
    boxes = torch.tensor([[4.0, 4.0, 30.0, 40.0], [20.0, 10.0, 60.0, 44.0]])
    panel = widgets.resolution_widget(_image(), boxes, d_values=(4, 8, 16), d=8)
    lp = live.to_live(panel, max_width=300, close=False)
    assert [c["name"] for c in lp.controls] == ["d", "mask"]
    assert lp.controls[0]["options"] == ["4", "8", "16"] and lp.controls[0]["kind"] == "slider"
    assert lp.controls[1]["kind"] == "toggle" and len(lp.controls[1]["options"]) == 5
    assert lp.values == [1, 0]                          # opens where the Panel started: d = 8, full
    assert sorted(lp.table) == sorted(f"{i},{j}" for i in range(3) for j in range(5))
    for (i, d), (j, kind) in itertools.product(enumerate((4, 8, 16)), enumerate(lp.controls[1]["options"])):
        panel.controls["d"].value = d
        panel.controls["mask"].value = kind
        url, info = lp.frame([i, j])
        assert info == panel.info.value
        (w, _), mode = _png_size(url)
        assert mode == "P" and w <= 300
    # the 15 masks at 3 resolutions differ: no two combinations share a frame
    assert len(lp.frames) == 15
    assert panel.renders > 0 and panel.controls["d"].value == 16      # the Panel still draws


def test_dependent_options_and_shared_frames():
    from live_page import pr_results

    from dnnod.viz import explore

    panel = explore.pr_widget(pr_results())
    lp = live.to_live(panel, grid={"data": None, "class": None, "cut": [0, 100, 100]}, close=False)
    assert lp.depends["class"] == {"0": ["circle", "square"], "1": ["person"]}
    assert "cut" not in lp.depends
    assert len(lp.table) == 2 * 3 + 1 * 3
    # the repeated cut-off 100 draws the same picture: stored once
    assert len(lp.frames) == 2 * 2 + 1 * 2
    assert lp.table["1,0,1"][0] == lp.table["1,0,2"][0]
    panel.controls["data"].value = "people"
    panel.controls["cut"].value = 100
    assert lp.frame([1, 0, 1])[1] == panel.info.value


def test_float_slider_needs_a_grid_and_labels_follow_it():
    from dnnod.viz import compare

    images = [_image(), _image().flip(-1)]
    gts = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]])}] * 2
    det = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 38.0], [40.0, 10.0, 60.0, 30.0]]),
           "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([1, 1])}
    panel = compare.compare_widget(images, gts, {"A": [det, det], "B": [det, det]})
    with pytest.raises(ValueError, match="explicit grid"):
        live.to_live(panel)
    lp = live.to_live(panel, grid={"image": None, "threshold": [0.2, 0.5]}, close=False)
    assert lp.controls[1]["options"] == ["0.2", "0.5"]
    assert lp.values == [0, 1]                          # the Panel's 0.5
    assert "2 boxes" in lp.frame([0, 0])[1] and "1 boxes" in lp.frame([0, 1])[1]


def test_iou_live_starts_at_the_given_boxes():
    w = live.iou_live(box_a=(30, 30, 130, 110), box_b=(80, 60, 180, 150), size=(220, 180))
    got = {c["name"]: int(c["options"][v]) for c, v in zip(w.controls, w.values)}
    assert got == {"Ax": 30, "Ay": 30, "Aw": 100, "Ah": 80, "Bx": 80, "By": 60, "Bw": 100, "Bh": 90}
    with pytest.raises(ValueError):
        live.iou_live(box_a=(30, 30, 30, 110))


def test_closing_leaves_only_the_live_panel_to_store():
    """By default the Panel is closed: a notebook stores the live panel, not the Panel's picture."""
    panel = widgets.resolution_widget(_image(), torch.tensor([[4.0, 4.0, 30.0, 40.0]]),
                                      d_values=(4, 8), d=8)
    held = [panel, panel.image, panel.info, *panel.controls.values()]
    assert all(w.comm is not None for w in held)
    lp = live.to_live(panel)
    assert all(w.comm is None for w in held)
    assert lp.comm is not None and len(lp.table) == 10


def test_a_builder_opens_no_comm_and_slices_pick_options():
    """Built by to_live, the Panel's widgets open no comm (a notebook stores none of them);
    a slice in the grid offers those options of a control."""
    lp = live.to_live(widgets.resolution_widget, _image(), torch.tensor([[4.0, 4.0, 30.0, 40.0]]),
                      d_values=(4, 8, 16, 24), d=8, grid={"d": slice(1, 3), "mask": ["full"]})
    assert lp.controls[0]["options"] == ["8", "16"] and lp.controls[1]["options"] == ["full"]
    assert sorted(lp.table) == ["0,0", "1,0"] and lp.values == [0, 0]
    assert lp.comm is not None
    with pytest.raises(TypeError):
        live.to_live(widgets.resolution_widget(_image(), torch.tensor([[4.0, 4.0, 30.0, 40.0]])), 3)
