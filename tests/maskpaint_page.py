"""Helpers for the mask painter's browser checks (tests/test_maskpaint_browser.py and
bench/maskpaint_latency.py): a standalone HTML page holding a widget's full state, rendered by the
same vendored widget JavaScript as the book (book/_vendor/widgets, no CDN), opened from disk; and
headless Chromium (Debian's, through Playwright's Python package; never a browser download)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

from browser import CHROMIUM, launch  # noqa: F401 (re-exported for the page's users)

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "book" / "_vendor" / "widgets"


STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def write_state_page(state: Dict, model_ids: List[str], folder: Path, title: str = "widgets") -> Path:
    """``folder/page.html`` showing the models ``model_ids`` of the widget ``state`` offline, with
    the vendored scripts copied beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("widgets-setup.js", "require.js", "embed-amd.js", "anywidget.js"):
        shutil.copy(VENDOR / f, folder / f)
    # inside <script>, entities are not decoded: only "</" must be escaped (valid JSON as "<\\/")
    data = json.dumps({"version_major": 2, "version_minor": 0, "state": state}).replace("</", "<\\/")
    views = "\n".join(
        f'<div class="w"><script type="{VIEW_MIME}">'
        f'{json.dumps({"version_major": 2, "version_minor": 0, "model_id": m})}</script></div>'
        for m in model_ids)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="widgets-setup.js"></script>
<script src="require.js"></script>
<script src="embed-amd.js"></script>
</head><body>
<script type="{STATE_MIME}">{data}</script>
{views}
</body></html>"""
    path = folder / "page.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_page(widget, folder: Path) -> Path:
    """``folder/page.html`` showing ``widget`` offline: its state (every trait, never
    ``drop_defaults``: that would drop the anywidget's ``_esm``) and the vendored scripts."""
    from ipywidgets.embed import dependency_state

    state = dependency_state([widget], drop_defaults=False)
    return write_state_page(state, [widget.model_id], folder, title="mask painter")


def chapter6_painter(default_aspect: bool = False, **kw):
    """The painter of chapter 6: a shapes test image, its largest object's class, the shipped
    network's masks and the ground-truth targets over the whole 192 × 192 image; the network's
    aspect ratios (one: the shapes are squares), or with ``default_aspect`` the package's 10."""
    import torch

    from dnnod.checkpoint import load_pretrained
    from dnnod.data import ShapesDataset
    from dnnod.masks import mask_targets
    from dnnod.predict import NetPredictor
    from dnnod.viz.maskpaint import MaskPainter

    shapes = ShapesDataset("test", num_images=8, image_size=192, seed=0)
    image, target = shapes[5]
    region = (0.0, 0.0, 192.0, 192.0)
    big = int((target["boxes"][:, 2:] - target["boxes"][:, :2]).prod(1).argmax())
    label = int(target["labels"][big])
    class_boxes = target["boxes"][target["labels"] == label]
    gt = mask_targets(class_boxes, region, d=24)
    model = load_pretrained("shapes-tiny", device="cpu")
    net = NetPredictor(model, device="cpu")(image, torch.tensor([region]))[0, label - 1]
    aspect = None if default_aspect else [float(a) for a in model.aspect_ratios]
    return MaskPainter(image, {"network": net, "ground truth": gt}, region, aspect,
                       gt_boxes=class_boxes, **kw)
