"""Text in the book's wide figures stays readable where the book shows them: at least 10 px tall
(font size in pixels) once the figure is scaled down to the content column.

The book's notebooks draw at 100 dpi (matplotlib's default, which the inline backend keeps), so a
figure ``w`` px wide (as saved, ``bbox_inches="tight"``) is shown at ``min(1, COLUMN_PX / w)`` of
its size, and a ``p``-point text at ``p * 100 / 72`` times that. The column is measured in the
built book (``tests/test_book_overflow.py`` opens the pages): 768 px of figure at a 1400 px window,
720 px at 800 px; the narrower one is used. The figures are the galleries the chapters draw with the
package's functions (a crop and its five masks per row, a grid of training crops, the merged
masks of three scales), on synthetic inputs of the chapters' sizes.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dnnod.viz import explore, plot  # noqa: E402

DPI = 100
COLUMN_PX = 720
MIN_PX = 10.0


def shown_text_px(fig):
    """(smallest text size in px as shown in the column, the text, the figure's natural width)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    natural = Image.open(io.BytesIO(buf.getvalue())).size[0]
    scale = min(1.0, COLUMN_PX / natural)
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    assert texts, "the figure has no text to measure"
    smallest = min(texts, key=lambda t: t.get_fontsize())
    plt.close(fig)
    return smallest.get_fontsize() * DPI / 72 * scale, smallest.get_text(), natural


def _image(h=240, w=320):
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, h, w, generator=g)


def _result(image, d=24):
    H, W = image.shape[1:]
    windows = [torch.tensor([[0.0, 0.0, W, H]]),
               torch.tensor([[0.0, 0.0, W / 2, H / 2], [W / 2, H / 2, W, H]]),
               torch.tensor([[0.0, 0.0, W / 4, H / 4], [W / 4, H / 4, W / 2, H / 2]])]
    masks = [torch.rand(len(w), 1, 5, d, d) for w in windows]
    merged = [torch.rand(1, 5, 6 * 2 ** s, 8 * 2 ** s) for s in range(3)]
    return {"windows": windows, "window_masks": masks, "merged_masks": merged}


def _steps(image, n=3, d=24):
    crops = torch.tensor([[10.0, 20.0, 130.0, 200.0]]).repeat(n, 1)
    return {"crops": crops, "labels": torch.ones(n, dtype=torch.long),
            "boxes_before": crops + torch.tensor([12.0, 15.0, -10.0, -12.0]),
            "boxes_after": crops + torch.tensor([10.0, 10.0, -10.0, -10.0]),
            "scores_after": torch.full((n,), 0.87), "crop_masks": torch.rand(n, 5, d, d)}


FIGURES = {
    "window gallery (chapter 7)": lambda img: explore.window_gallery(img, _result(img), [(0, 0), (1, 1), (2, 1)]),
    "refinement details (chapter 8)": lambda img: explore.refine_figure(img, _steps(img), [0, 1, 2],
                                                                       class_names=["pedestrian"]),
    "merged masks (chapter 7)": lambda img: explore.merged_figure(img, _result(img)),
    "windows of each scale (chapter 7)": lambda img: explore.windows_figure(img, _result(img)),
    "training crops, 3 x 4 (chapter 5)": lambda img: plot.crop_gallery(
        [img[:, :96, :96]] * 12, titles=["negative · pedestrian"] * 12,
        masks=[torch.rand(24, 24)] * 12, ncols=4, size=2.4),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_text_is_at_least_10_px_in_the_column(name):
    px, text, natural = shown_text_px(FIGURES[name](_image()))
    assert px >= MIN_PX, (f"{name}: {text!r} shows at {px:.1f} px (figure {natural} px wide, "
                          f"column {COLUMN_PX} px)")


def test_the_measure_catches_a_shrunk_figure():
    """The old six-column crop gallery (6 x 1.9 in): its 10 pt titles showed at about 9 px."""
    img = _image()
    fig = plot.crop_gallery([img[:, :96, :96]] * 12, titles=["negative · pedestrian"] * 12, ncols=6, size=1.9)
    px, _, natural = shown_text_px(fig)
    assert natural > 1050 and px < MIN_PX
