"""dnnod.viz.plot and dnnod.viz.widgets, checked without a browser, plus the book's own bookkeeping
(chapter notebooks in sync with their sources, vendored widget JavaScript wired into the config).

References are worked by hand in the tests (pixel positions, areas, IoU), never the code's output.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dnnod.viz import plot, widgets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ plot
def test_to_hwc_accepts_tensor_array_and_pil():
    chw = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    hwc = chw.permute(1, 2, 0).numpy()
    assert np.array_equal(plot.to_hwc(chw), hwc)
    assert np.array_equal(plot.to_hwc(hwc), hwc)
    assert np.array_equal(plot.to_hwc(Image.fromarray(hwc)), hwc)
    # float images in [0, 1] become 0..255
    assert plot.to_hwc(torch.ones(3, 2, 2)).max() == 255
    with pytest.raises(ValueError, match="image must be"):
        plot.to_hwc(torch.zeros(5, 4, 4, 4))


def test_draw_detections_outlines_the_pixels_inside_the_box():
    img = torch.zeros(3, 20, 30, dtype=torch.uint8)
    # box covering pixels x in [4, 12), y in [6, 15) (continuous pixel edges)
    out = plot.render_detections(img, [[4.0, 6.0, 12.0, 15.0]], color="#ff0000", width=1)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    red = out[0] == 255
    # the outline runs along the first and last pixel rows/columns inside the box
    assert red[6, 4] and red[6, 11] and red[14, 4] and red[14, 11] and red[10, 4] and red[10, 11]
    assert not red[6, 12] and not red[15, 4] and not red[5, 4] and not red[6, 3]   # outside
    assert not red[10, 8]                                                          # interior
    assert img.sum() == 0                                                          # input untouched


def test_draw_detections_caption_and_errors():
    img = np.zeros((40, 60, 3), np.uint8)
    pil = plot.draw_detections(img, [[10, 20, 50, 38]], labels=[2], scores=[0.9],
                               class_names=["cat", "dog"])
    assert isinstance(pil, Image.Image) and pil.size == (60, 40)
    arr = np.asarray(pil)
    # the caption box sits above the box top (y < 20), in the class-2 colour
    c2 = tuple(int(plot.color_for(2)[i:i + 2], 16) for i in (1, 3, 5))
    assert (arr[:20, 10:50] == c2).all(-1).any()
    with pytest.raises(ValueError, match="labels has 2 entries for 1 boxes"):
        plot.draw_detections(img, [[1, 1, 5, 5]], labels=[1, 2])
    with pytest.raises(ValueError, match="x2 >= x1"):
        plot.draw_detections(img, [[5, 1, 1, 5]])


def test_draw_boxes_and_masks_use_pixel_coordinates():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots()
    plot.show_image(ax, torch.zeros(3, 10, 20, dtype=torch.uint8))
    assert ax.get_xlim() == (0, 20) and ax.get_ylim() == (10, 0)   # pixel edges, y down
    plot.draw_boxes(ax, [[1, 2, 5, 9], [0, 0, 20, 10]], labels=[1, 3], scores=[0.5, 0.25],
                    class_names=["a", "b", "c"])
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == \
        [(1, 2, 4, 7), (0, 0, 20, 10)]
    assert [t.get_text() for t in ax.texts] == ["a 0.50", "c 0.25"]
    im = plot.draw_mask(ax, torch.eye(4), window=(8, 2, 16, 10))
    assert tuple(im.get_extent()) == (8, 16, 10, 2)
    assert np.array_equal(np.asarray(im.get_array()), np.eye(4))
    with pytest.raises(ValueError, match=r"\[d, d\]"):
        plot.draw_mask(ax, torch.zeros(3, 4))
    plt.close(fig)


def test_plot_masks_and_gallery_figures():
    import matplotlib.pyplot as plt

    fig = plot.plot_masks(torch.rand(5, 6, 6), values=True)      # 5 masks and their colour bar
    assert len(fig.axes) == 6 and [a.get_title() for a in fig.axes[:5]] == list(plot.MASK_TYPES)
    assert fig.axes[5].get_ylabel() == "mask value"
    plt.close(fig)
    fig = plot.plot_masks(torch.rand(5, 6, 6), colorbar=False)
    assert len(fig.axes) == 5
    plt.close(fig)
    crops = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 7
    fig = plot.crop_gallery(crops, titles=[str(i) for i in range(7)], masks=[torch.rand(4, 4)] * 7,
                            ncols=4)
    assert len(fig.axes) == 8 and sum(a.axison for a in fig.axes) == 7
    png = plot.fig_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot.crop_gallery([])


# --------------------------------------------------------------------------------------- widgets
def test_iou_widget_updates_picture_and_number():
    w = widgets.iou_widget(box_a=(0, 0, 10, 10), box_b=(5, 0, 15, 10), size=(40, 30))
    # by hand: intersection 5 x 10 = 50, union 100 + 100 - 50 = 150
    assert "IoU 0.333" in w.info.value and "not a match" in w.info.value
    first, renders = w.image.value, w.renders
    w.controls["Bx"].value = 2           # B = (2, 0, 12, 10): 80 / 120
    assert "IoU 0.667" in w.info.value and "a match" in w.info.value
    assert w.renders == renders + 1 and w.image.value != first
    w.controls["By"].value = 20          # disjoint
    assert "IoU 0.000" in w.info.value
    snap = w.snapshot()
    assert snap.data == w.image.value
    import io
    assert w.image.width == str(Image.open(io.BytesIO(w.image.value)).size[0])   # natural size
    with pytest.raises(ValueError):
        widgets.iou_widget(box_a=(5, 5, 5, 9))


def test_masks_widget_edits_the_picked_box():
    img = torch.zeros(3, 40, 40, dtype=torch.uint8)
    w = widgets.masks_widget(img, [[0, 0, 10, 10], [20, 20, 30, 30]], d=4)
    # cells are 10 x 10 px; each box covers exactly one cell: full mask sums to 2 cells
    assert "each cell is 10.0 × 10.0 px" in w.info.value
    assert "full 2.0" in w.info.value and "top 1.0" in w.info.value
    w.controls["w"].value = 20           # box 1 becomes (0, 0, 20, 10): 2 cells
    assert "full 3.0" in w.info.value
    w.controls["box"].value = 1          # load box 2 into the sliders, box 1 keeps its edit
    assert (w.controls["x"].value, w.controls["y"].value) == (20, 20)
    assert (w.controls["w"].value, w.controls["h"].value) == (10, 10)
    assert "full 3.0" in w.info.value
    w.controls["h"].value = 5            # box 2 becomes (20, 20, 30, 25): half a cell
    assert "full 2.5" in w.info.value
    with pytest.raises(ValueError, match="at least one box"):
        widgets.masks_widget(img, torch.zeros(0, 4))


def test_resolution_widget():
    img = torch.zeros(3, 48, 48, dtype=torch.uint8)
    w = widgets.resolution_widget(img, [[0, 0, 24, 24]], d_values=(2, 4, 8), d=4)
    # d = 4: 12 px cells; the box covers 2 x 2 = 4 cells
    assert "a cell is 12.0 × 12.0 px; 4 of 16 cells" in w.info.value
    w.controls["d"].value = 8
    assert "a cell is 6.0 × 6.0 px; 16 of 64 cells" in w.info.value
    w.controls["mask"].value = "top"     # top half: y in [0, 12): 4 x 2 cells at d = 8
    assert "8 of 64 cells" in w.info.value and "top network" in w.info.value
    with pytest.raises(ValueError, match="not one of d_values"):
        widgets.resolution_widget(img, [[0, 0, 24, 24]], d_values=(2, 4), d=24)


def test_lambda_widget():
    res = {lam: {"masks": torch.full((5, 3, 3), v), "losses": [3.0, 2.0, 1.0]}
           for lam, v in ((0.01, 0.9), (1.0, 0.1))}
    w = widgets.lambda_widget(res, target=torch.zeros(5, 3, 3))
    assert "λ = 1:" in w.info.value and "mean predicted mask value 0.100" in w.info.value
    assert "<b>0.0%</b>" in w.info.value
    before = w.image.value
    w.controls["lam"].value = 0.01
    assert "λ = 0.01:" in w.info.value and "<b>100.0%</b>" in w.info.value
    assert w.image.value != before
    with pytest.raises(ValueError):
        widgets.lambda_widget({})


# ------------------------------------------------------------------------------------- the book
def test_chapter_notebooks_match_their_sources_and_are_executed():
    r = subprocess.run([sys.executable, str(ROOT / "book/_tools/build_notebooks.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_vendored_widget_js_is_wired_into_the_config():
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    sph = cfg["sphinx"]["config"]
    static = [ROOT / p for p in sph["html_static_path"]]
    assert all(p.is_dir() and p.name != "_static" for p in static)
    js = list(sph["nb_ipywidgets_js"])
    assert [Path(j).name for j in js] == ["widgets-setup.js", "require.js", "embed-amd.js"]
    for j in js + [sph["mathjax_path"]]:
        assert "://" not in j, f"{j} would load from the network"
        assert any((p / j).is_file() for p in static), f"{j} is not vendored"
    # The build renders the stored, executed notebooks (their widget states included); nbval
    # re-executes them in `make test` and the --check test keeps them equal to their sources.
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert sph["nb_execution_raise_on_error"] is True
    assert cfg["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def _chapters():
    import nbformat

    return [(p.name, nbformat.read(p, as_version=4)) for p in sorted((ROOT / "book").glob("*.ipynb"))]


@pytest.mark.parametrize("name,nb", _chapters(), ids=lambda v: v if isinstance(v, str) else "")
def test_chapter_conventions(name, nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0].source
    # installs dnnod only in Colab, from GitHub, without pinning Colab's own packages
    assert '"google.colab" in sys.modules' in first and "git+https://github.com/" in first, name
    assert not re.search(r"(torch|numpy|matplotlib|torchvision)\s*[=<>~]=", first), name
    assert "cuda" in first, f"{name}: the setup cell does not pick the GPU"
    for c in code:
        mimes = {k for o in c.get("outputs", []) for k in o.get("data", {})}
        if "application/vnd.jupyter.widget-view+json" in mimes:
            assert "nbval-ignore-output" in c.metadata.get("tags", []), \
                f"{name} cell {c.get('id')}: widget output must be tagged nbval-ignore-output"
        last = c.source.rstrip().splitlines()[-1] if c.source.strip() else ""
        assert not last.endswith(";"), f"{name} cell {c.get('id')}: assign to _ instead of ';'"
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if int(name.split("_", 1)[0]) <= 10:       # chapters; the appendices (11_...) have no exercises
        assert "Learning goals" in text and "Exercises" in text and ":class: dropdown" in text, name
