"""Figures with one look for the whole project: the book's chapters, the widgets and ``dnnod detect``
all draw through these functions, so a box, a mask or a score looks the same everywhere.

Conventions (package-wide): images are ``uint8 [3, H, W]`` tensors (``[H, W, 3]`` arrays and PIL
images are accepted too); boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates, so a
box ``(0, 0, W, H)`` covers the whole image and ``imshow`` uses ``extent=(0, W, H, 0)`` — pixel
edges, not pixel centres. Masks are ``[d, d]`` grids over a window (paper Sec. 3, Eq. 1); a mask is
drawn stretched over its window so it lines up with the image under it.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .._validate import as_boxes, as_rect
from ..masks import MASK_TYPES

# One palette (matplotlib's tab10, colour-blind friendly enough) indexed by 1-based class label.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
#: colour of ground-truth boxes when they are drawn next to predictions
GT_COLOR = "#00c853"
MASK_CMAP = "magma"
BOX_WIDTH = 2.0

ImageLike = Union[torch.Tensor, np.ndarray, Image.Image]


def color_for(label: Optional[int]) -> str:
    """The colour of class ``label`` (1-based; ``None`` or 0 gives the first colour)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)] if label else PALETTE[0]


def to_hwc(image: ImageLike) -> np.ndarray:
    """Any image form -> ``uint8 [H, W, 3]`` numpy array (what matplotlib and PIL want)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)                       # CHW -> HWC
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] in (1, 3) and \
            isinstance(image, torch.Tensor):
        arr = arr.transpose(1, 2, 0)                       # tiny tensor images are CHW too
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [3, H, W] (tensor), [H, W, 3] (array) or PIL; got shape "
                         f"{tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0                              # float images in [0, 1]
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


def show_image(ax, image: ImageLike, title: Optional[str] = None):
    """Draw an image with pixel-edge coordinates (``extent=(0, W, H, 0)``) and no axis ticks."""
    arr = to_hwc(image)
    h, w = arr.shape[:2]
    ax.imshow(arr, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _label_text(i: int, labels, scores, class_names) -> Optional[str]:
    parts = []
    if labels is not None:
        lab = int(labels[i])
        parts.append(class_names[lab - 1] if class_names is not None and 0 < lab <= len(class_names)
                     else str(lab))
    if scores is not None:
        parts.append(f"{float(scores[i]):.2f}")
    return " ".join(parts) if parts else None


def draw_boxes(ax, boxes, labels=None, scores=None, class_names: Optional[Sequence[str]] = None,
               color: Optional[str] = None, linestyle: str = "-", linewidth: float = BOX_WIDTH,
               alpha: float = 1.0, fill: bool = False, text: bool = True):
    """Draw xyxy boxes on a matplotlib axis; the caption is "class score" when given.

    ``color`` overrides the per-class colour (e.g. ``GT_COLOR`` for ground truth).
    """
    from matplotlib.patches import Rectangle

    b = as_boxes(boxes, "boxes")
    n = b.shape[0]
    for name, v in (("labels", labels), ("scores", scores)):
        if v is not None and len(v) != n:
            raise ValueError(f"{name} has {len(v)} entries for {n} boxes")
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        c = color or color_for(int(labels[i]) if labels is not None else None)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=fill, edgecolor=c,
                               facecolor=c if fill else "none", linewidth=linewidth,
                               linestyle=linestyle, alpha=alpha))
        caption = _label_text(i, labels, scores, class_names) if text else None
        if caption:
            ax.text(x1, y1, caption, fontsize=9.5, color="white", va="bottom", ha="left",
                    bbox=dict(facecolor=c, edgecolor="none", pad=1.0, alpha=0.85), clip_on=True)
    return ax


def draw_grid(ax, window, d: int, color: str = "white", linewidth: float = 0.4, alpha: float = 0.5):
    """The d×d cell grid T(i, j) of Eq. 1 over ``window`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = as_rect(window).tolist()
    xs = np.linspace(x1, x2, d + 1)
    ys = np.linspace(y1, y2, d + 1)
    ax.vlines(xs, y1, y2, colors=color, linewidth=linewidth, alpha=alpha)
    ax.hlines(ys, x1, x2, colors=color, linewidth=linewidth, alpha=alpha)
    return ax


def draw_mask(ax, mask, window=None, grid: bool = True, title: Optional[str] = None,
              cmap: str = MASK_CMAP, alpha: float = 1.0, values: bool = False, colorbar: bool = False):
    """A ``[d, d]`` mask as a heatmap in [0, 1] with its cell grid.

    ``window`` places the mask in image coordinates (default: one unit per cell, so the axes read
    as cell indices). ``values=True`` prints each cell's value (small d only).
    """
    m = torch.as_tensor(mask).detach().cpu().double()
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"mask must be [d, d]; got shape {tuple(m.shape)}")
    d = m.shape[0]
    x1, y1, x2, y2 = as_rect(window if window is not None else (0, 0, d, d)).tolist()
    im = ax.imshow(m.numpy(), extent=(x1, x2, y2, y1), vmin=0.0, vmax=1.0, cmap=cmap,
                   alpha=alpha, interpolation="nearest")
    if grid:
        draw_grid(ax, (x1, y1, x2, y2), d, color="#888888" if alpha >= 1 else "white")
    if values:
        cw, ch = (x2 - x1) / d, (y2 - y1) / d
        for i in range(d):              # annotation only (small d): one text per cell
            for j in range(d):
                v = float(m[i, j])
                ax.text(x1 + (j + 0.5) * cw, y1 + (i + 0.5) * ch, f"{v:.2f}".rstrip("0").rstrip("."),
                        ha="center", va="center", fontsize=9, color="black" if v > 0.6 else "white")
    if window is None:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def overlay_mask(ax, image: ImageLike, mask, window=None, alpha: float = 0.55,
                 title: Optional[str] = None, grid: bool = False):
    """Image with a mask laid over its window (default: the whole image)."""
    show_image(ax, image, title=title)
    arr = to_hwc(image)
    win = window if window is not None else (0, 0, arr.shape[1], arr.shape[0])
    draw_mask(ax, mask, window=win, grid=grid, alpha=alpha)
    ax.set_xlim(0, arr.shape[1])
    ax.set_ylim(arr.shape[0], 0)
    return ax


def plot_masks(masks, axes=None, window=None, image: Optional[ImageLike] = None, boxes=None,
               titles: Sequence[str] = MASK_TYPES, values: bool = False, suptitle: Optional[str] = None,
               colorbar: Optional[bool] = None):
    """The five masks ``[5, d, d]`` (``MASK_TYPES`` order) side by side; returns the figure.

    With ``image`` each mask is overlaid on it (inside ``window``); ``boxes`` are outlined on each.
    ``colorbar`` (default: when this function makes the figure) adds one colour bar for the mask
    value, 0 to 1, beside the last mask.
    """
    import matplotlib.pyplot as plt

    m = torch.as_tensor(masks).detach().cpu()
    if m.dim() != 3:
        raise ValueError(f"masks must be [K, d, d]; got shape {tuple(m.shape)}")
    if colorbar is None:
        colorbar = axes is None
    if axes is None:
        fig, axes = plt.subplots(1, m.shape[0], figsize=(1.95 * m.shape[0], 2.3), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for k, ax in enumerate(axes[: m.shape[0]]):
        title = titles[k] if k < len(titles) else None
        if image is not None:
            overlay_mask(ax, image, m[k], window=window, title=title, grid=True)
        else:
            draw_mask(ax, m[k], window=window, title=title, values=values)
        if boxes is not None:
            draw_boxes(ax, boxes, color=GT_COLOR, linewidth=1.2, text=False)
        if window is not None and image is None:
            ax.set_xticks([])
            ax.set_yticks([])
    if colorbar:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from mpl_toolkits.axes_grid1.inset_locator import inset_axes

        last = axes[m.shape[0] - 1]
        cax = inset_axes(last, width="6%", height="100%", loc="lower left",
                         bbox_to_anchor=(1.04, 0.0, 1, 1), bbox_transform=last.transAxes, borderpad=0)
        fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=MASK_CMAP), cax=cax, label="mask value")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def crop_gallery(crops: Sequence[ImageLike], titles: Optional[Sequence[str]] = None,
                 masks: Optional[Sequence] = None, ncols: int = 6, size: float = 1.8,
                 boxes: Optional[Sequence] = None):
    """A grid of crops (windows), optionally each with a mask overlaid and boxes drawn."""
    import matplotlib.pyplot as plt

    n = len(crops)
    if n == 0:
        raise ValueError("crop_gallery needs at least one crop")
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        title = titles[k] if titles is not None else None
        if masks is not None and masks[k] is not None:
            overlay_mask(ax, crops[k], masks[k], title=title)
        else:
            show_image(ax, crops[k], title=title)
        if boxes is not None and boxes[k] is not None and len(boxes[k]):
            draw_boxes(ax, boxes[k], color=GT_COLOR, linewidth=1.2, text=False)
    fig.tight_layout()
    return fig


def fig_to_png(fig, dpi: int = 80, close: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes (what the widgets display) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()


def _hex_rgb(c: str):
    c = c.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))


def draw_detections(image: ImageLike, boxes, labels=None, scores=None,
                    class_names: Optional[Sequence[str]] = None, color: Optional[str] = None,
                    width: int = 2) -> Image.Image:
    """Boxes burnt into a copy of the image, as a PIL image (for ``dnnod detect`` and files).

    Same colours and captions as :func:`draw_boxes`; box edges are continuous pixel coordinates,
    so the outline is drawn on the pixels just inside the box.
    """
    pil = Image.fromarray(to_hwc(image).copy())
    b = as_boxes(boxes, "boxes")
    for name, v in (("labels", labels), ("scores", scores)):
        if v is not None and len(v) != b.shape[0]:
            raise ValueError(f"{name} has {len(v)} entries for {b.shape[0]} boxes")
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        c = _hex_rgb(color or color_for(int(labels[i]) if labels is not None else None))
        # pixel edges -> the last pixel inside is x2 - 1
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=c, width=width)
        caption = _label_text(i, labels, scores, class_names)
        if caption:
            tb = draw.textbbox((x1, y1), caption, font=font)
            th = tb[3] - tb[1] + 2
            ty = y1 - th if y1 - th >= 0 else y1
            draw.rectangle([x1, ty, x1 + tb[2] - tb[0] + 3, ty + th], fill=c)
            draw.text((x1 + 1, ty), caption, fill=(255, 255, 255), font=font)
    return pil


def render_detections(image: ImageLike, boxes, labels=None, scores=None,
                      class_names: Optional[Sequence[str]] = None, **kw) -> torch.Tensor:
    """Like :func:`draw_detections` but returns a ``uint8 [3, H, W]`` tensor."""
    pil = draw_detections(image, boxes, labels, scores, class_names, **kw)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def pipeline_figure(image: ImageLike, windows, masks, window, boxes, refined=None,
                    gt_boxes=None, title_masks: str = "5 masks of one window"):
    """The paper's pipeline on one image, as two rows of three panels:
    image → windows → network → 5 masks → boxes → refined boxes.

    windows: ``[W, 4]`` windows drawn on the image; masks: ``[5, d, d]`` of ``window``;
    boxes: candidate / detected boxes; refined: the boxes after refinement (optional).
    """
    import matplotlib.pyplot as plt

    # Two rows of three panels, so that every title stays >= 10 px at the book's column width
    # (one row of six panels shrank them to about 5 px).
    fig = plt.figure(figsize=(9.6, 7.0))
    gs = fig.add_gridspec(2, 3, hspace=0.28, wspace=0.12)
    ax_img = fig.add_subplot(gs[0, 0])
    show_image(ax_img, image, title="1. image")
    if gt_boxes is not None:
        draw_boxes(ax_img, gt_boxes, color=GT_COLOR, linewidth=1.5, text=False)
    ax_win = fig.add_subplot(gs[0, 1])
    show_image(ax_win, image, title=f"2. {len(windows)} windows")
    draw_boxes(ax_win, windows, color="white", linewidth=0.8, alpha=0.6, text=False)
    draw_boxes(ax_win, torch.as_tensor(window)[None], color="#ffd600", linewidth=2.5, text=False)
    ax_net = fig.add_subplot(gs[0, 2])
    ax_net.axis("off")
    ax_net.set_title("3. DetectorNet", fontsize=13)
    ax_net.text(0.5, 0.5, "CNN\n(AlexNet)\n↓\nregression\nlayer", ha="center", va="center",
                fontsize=13, bbox=dict(boxstyle="round", facecolor="#e3f2fd", edgecolor="#1f77b4"))
    sub = gs[1, 0].subgridspec(2, 3, wspace=0.08, hspace=0.35)
    m = torch.as_tensor(masks)
    for k in range(5):
        ax = fig.add_subplot(sub[k // 3, k % 3])
        draw_mask(ax, m[k], grid=False)
        ax.set_title(MASK_TYPES[k], fontsize=11, pad=2)
    ax_title = fig.add_subplot(sub[1, 2])
    ax_title.axis("off")
    ax_title.text(0.0, 0.5, "4. " + title_masks, ha="left", va="center", fontsize=11, wrap=True)
    ax_box = fig.add_subplot(gs[1, 1])
    show_image(ax_box, image, title=f"5. {len(boxes)} boxes")
    draw_boxes(ax_box, boxes, linewidth=1.5, text=False)
    if refined is not None:
        ax_ref = fig.add_subplot(gs[1, 2])
        show_image(ax_ref, image, title="6. refined boxes")
        draw_boxes(ax_ref, refined, color=color_for(4), linewidth=2, text=False)
    for ax in fig.axes:
        if ax.get_title() and ax.title.get_fontsize() < 11:
            ax.title.set_fontsize(13)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.03)
    return fig
