"""Live panels: the book's :class:`dnnod.viz.widgets.Panel` s working with no kernel behind them
(the static HTML book), as `anywidgets <https://anywidget.dev>`_ whose ES module ``live.js``
selects and draws precomputed results in the browser.

Two kinds of :class:`LivePanel`:

- ``mode="frames"`` (:func:`to_live`): every control becomes a discrete list of options; the
  Panel's own Python callback draws the picture and the line of numbers for every combination
  (at build time, with the kernel), and the page keeps them as palette PNGs (identical frames
  stored once). Choosing options in the browser looks the frame up. This is how the widgets that
  need the network (predicted masks, windows of a scale, refinement steps) or a long computation
  stay live. Options that depend on other controls (the windows of a scale, the classes of a
  data set) are read from the Panel after setting the controls they depend on.
- ``mode="iou"`` (:func:`iou_live`): two boxes on a canvas and their IoU (paper Sec. 7's match
  criterion, ``torchvision.ops.box_iou``), computed in JavaScript from the sliders (tests/
  test_live_js.py compares ``boxIoU`` of ``live.js`` with ``torchvision.ops.box_iou`` under Node).

With a kernel the same widget works in Jupyter and Colab (the selection happens in the browser;
``widget.values`` holds the chosen option index of every control).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import anywidget
import traitlets

__all__ = ["LivePanel", "to_live", "iou_live", "ESM_PATH", "state_bytes"]

ESM_PATH = pathlib.Path(__file__).with_name("live.js")


class LivePanel(anywidget.AnyWidget):
    """Controls with discrete options and what to show for each combination of them.

    ``controls``: ``[{"name", "label", "kind": "slider" | "dropdown" | "toggle", "options":
    [label, ...], "value": index}]``. ``depends``: control name -> ``{key: [label, ...]}``, the
    options of that control given the option indices of the controls before it (``key`` = the
    indices joined by ``","``), where they vary. ``table``: key of every control's index ->
    ``[frame, info]`` indices into ``frames`` (PNG data URLs) and ``infos`` (HTML).
    """

    _esm = ESM_PATH
    title = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Unicode("frames").tag(sync=True)
    controls = traitlets.List().tag(sync=True)
    depends = traitlets.Dict().tag(sync=True)
    values = traitlets.List(traitlets.Int()).tag(sync=True)
    frames = traitlets.List(traitlets.Unicode()).tag(sync=True)
    infos = traitlets.List(traitlets.Unicode()).tag(sync=True)
    table = traitlets.Dict().tag(sync=True)
    data = traitlets.Dict().tag(sync=True)
    frame_width = traitlets.Int(0).tag(sync=True)

    def key(self, values: Optional[Sequence[int]] = None) -> str:
        """The table key of option indices ``values`` (default: the current ones)."""
        return ",".join(str(int(v)) for v in (self.values if values is None else values))

    def frame(self, values: Optional[Sequence[int]] = None) -> Tuple[str, str]:
        """(PNG data URL, info HTML) shown for ``values`` (default: the current ones)."""
        f, i = self.table[self.key(values)]
        return self.frames[f], self.infos[i]


# ------------------------------------------------------------------------------ frames
def _compact(png: bytes, colors: int = 128, max_width: Optional[int] = None,
             jpeg: Optional[int] = None) -> Tuple[bytes, str]:
    """``png`` made small: downscaled to ``max_width``, then a palette PNG (``colors`` colours,
    octree: thin coloured lines keep their colour) or, with ``jpeg`` = a quality, a JPEG
    (smaller where the figure is mostly photographs). Returns (bytes, MIME type)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    if max_width and im.width > max_width:
        im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
    out = io.BytesIO()
    if jpeg:
        im.save(out, format="JPEG", quality=int(jpeg), optimize=True)
        return out.getvalue(), "image/jpeg"
    q = im.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    q.save(out, format="PNG", optimize=True)
    return out.getvalue(), "image/png"


def _options_of(w) -> Tuple[List[str], List[Any]]:
    """(labels, values) of a selection widget, or of an integer slider's every step."""
    if hasattr(w, "_options_labels"):
        return [str(v) for v in w._options_labels], list(w._options_values)
    if hasattr(w, "step") and isinstance(w.value, int):
        vals = list(range(int(w.min), int(w.max) + 1, int(w.step)))
        return [str(v) for v in vals], vals
    raise ValueError(f"{type(w).__name__} needs an explicit grid of values in to_live")


def _kind_of(w) -> str:
    name = type(w).__name__
    if name in ("Dropdown", "Select"):
        return "dropdown"
    if name in ("ToggleButtons", "RadioButtons"):
        return "toggle"
    return "slider"


@contextlib.contextmanager
def _no_frontend():
    """Widgets built inside open no comm: nothing of them reaches a front end or a notebook's
    stored widget state (nbclient keeps every model a kernel ever opened, closed or not)."""
    import ipywidgets as W

    opened = W.Widget.open
    W.Widget.open = lambda self: None
    try:
        yield
    finally:
        W.Widget.open = opened


def to_live(panel, *args, grid: Optional[Mapping[str, Optional[Sequence[Any]]]] = None,
            colors: int = 128, max_width: Optional[int] = None, jpeg: Optional[int] = None,
            labels: Optional[Mapping[str, Any]] = None, close: bool = True, **kwargs) -> LivePanel:
    """A :class:`LivePanel` showing ``panel`` (a :class:`dnnod.viz.widgets.Panel`) for every
    combination of its controls' options, drawn by the panel's own render callback.

    ``panel`` is a Panel, or a function that builds one (called with ``*args, **kwargs``): built
    here, its widgets never open a comm, so a notebook stores only the live panel (e.g.
    ``to_live(explore.refine_widget, image, steps, grid={...})``).

    ``grid``: control name -> the values to offer (``None``: every option of a dropdown, toggle
    or integer slider; a ``slice``: those of its options); controls are enumerated in ``grid``'s
    order (default: the panel's), so a control whose options depend on others must come after
    them. A value not offered by the
    control at some combination is skipped there. ``labels``: control name -> a function
    value -> label, for sliders over floats. Frames become ``colors``-colour palette PNGs (or JPEGs
    of quality ``jpeg``) at most ``max_width`` px wide. The panel is left at its starting values;
    with ``close`` (the default) it and its controls are closed, so a notebook does not store
    their state (the picture) beside the live panel's.
    """
    if not hasattr(panel, "controls"):
        with _no_frontend():
            panel = panel(*args, **kwargs)
    elif args or kwargs:
        raise TypeError("arguments after a Panel: pass the function that builds it instead")
    grid = dict(grid) if grid is not None else {k: None for k in panel.controls}
    names = list(grid)
    for n in names:
        if n not in panel.controls:
            raise ValueError(f"{n!r} is not a control of this panel ({list(panel.controls)})")
    labels = dict(labels or {})
    render = panel._render
    frames: List[str] = []
    infos: List[str] = []
    seen_f: Dict[str, int] = {}
    seen_i: Dict[str, int] = {}
    table: Dict[str, List[int]] = {}
    opts_at: Dict[str, Dict[str, List[str]]] = {n: {} for n in names}
    start = {n: panel.controls[n].value for n in names}
    width = 0

    def offered(n: str) -> Tuple[List[str], List[Any]]:
        w = panel.controls[n]
        if grid[n] is None:
            return _options_of(w)
        if isinstance(grid[n], slice):
            labs, vals = _options_of(w)
            return labs[grid[n]], vals[grid[n]]
        try:
            have = _options_of(w)[1]
        except ValueError:
            have = None
        vals = [v for v in grid[n] if have is None or v in have
                or (hasattr(w, "min") and w.min <= v <= w.max)]
        fmt = labels.get(n, lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        if hasattr(w, "_options_labels"):
            lab = dict(zip(w._options_values, w._options_labels))
            return [str(lab.get(v, fmt(v))) for v in vals], vals
        return [fmt(v) for v in vals], vals

    def walk(level: int, prefix: List[int]) -> None:
        nonlocal width
        if level == len(names):
            png, html = render()
            small, mime = _compact(png, colors, max_width, jpeg)
            width = max(width, _width_of(small))
            h = hashlib.sha1(small).hexdigest()
            if h not in seen_f:
                seen_f[h] = len(frames)
                frames.append(f"data:{mime};base64," + base64.b64encode(small).decode())
            if html not in seen_i:
                seen_i[html] = len(infos)
                infos.append(html)
            table[",".join(map(str, prefix))] = [seen_f[h], seen_i[html]]
            return
        n = names[level]
        labs, vals = offered(n)
        if not vals:
            raise ValueError(f"control {n!r} offers no value at {dict(zip(names, prefix))}")
        opts_at[n][",".join(map(str, prefix))] = labs
        for i, v in enumerate(vals):
            panel.controls[n].value = v
            walk(level + 1, prefix + [i])

    # Set controls without drawing (their observers may refresh the panel); draw once per leaf.
    panel._render = lambda: (panel.image.value, panel.info.value)
    try:
        walk(0, [])
    finally:
        panel._render = render
        for n in names:                              # back to the panel's starting values
            if start[n] in _values_of(panel.controls[n]):
                panel.controls[n].value = start[n]
        panel.refresh()

    controls, depends = [], {}
    for n in names:
        variants = opts_at[n]
        first = next(iter(variants.values()))
        if any(v != first for v in variants.values()):
            depends[n] = variants
        w = panel.controls[n]
        controls.append({"name": n, "label": getattr(w, "description", "") or n,
                         "kind": _kind_of(w), "options": first, "value": 0})
    # open at the panel's starting combination where it is offered, else at the first options
    idx: List[int] = []
    for n in names:
        labs = opts_at[n].get(",".join(map(str, idx)), [])
        lab = _label_of(panel.controls[n], start[n], labels.get(n))
        idx.append(labs.index(lab) if lab in labs else 0)
    values = idx if ",".join(map(str, idx)) in table else [0] * len(names)
    for c, v in zip(controls, values):
        c["value"] = v
    title = ""
    kids = panel.children
    if kids and type(kids[0]).__name__ == "HTML" and kids[0].value.startswith("<b>"):
        title = kids[0].value[3:-4]
    result = LivePanel(title=title, mode="frames", controls=controls, depends=depends, values=values,
                       frames=frames, infos=infos, table=table, frame_width=width)
    if close and panel.comm is not None:
        _close_tree(panel)
    return result


def _close_tree(w) -> None:
    """Close widget ``w``, everything it holds (children, controls, picture) and their layouts
    and styles: models a notebook would otherwise store."""
    todo, seen = [w], set()
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        todo += list(getattr(x, "children", ()) or ())
        todo += list((getattr(x, "controls", None) or {}).values()) if isinstance(
            getattr(x, "controls", None), dict) else []
        todo += [v for v in (getattr(x, "image", None), getattr(x, "info", None),
                             getattr(x, "layout", None), getattr(x, "style", None))
                 if v is not None and hasattr(v, "close")]
        x.close()


def _width_of(data: bytes) -> int:
    from PIL import Image

    return Image.open(io.BytesIO(data)).width


def _values_of(w) -> List[Any]:
    try:
        return _options_of(w)[1]
    except ValueError:
        return [w.value]


def _label_of(w, v, fmt=None) -> str:
    if hasattr(w, "_options_labels"):
        lab = dict(zip(w._options_values, w._options_labels))
        if v in lab:
            return str(lab[v])
    if fmt is not None:
        return fmt(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------ IoU (chapter 2)
def iou_live(box_a=(30, 30, 130, 110), box_b=(80, 60, 180, 150), size: Tuple[int, int] = (220, 180),
             step: int = 1) -> LivePanel:
    """Two boxes moved and resized with sliders on a ``size = (width, height)`` canvas; their
    intersection, union and IoU are computed in the browser (``boxIoU`` in ``live.js``, equal to
    ``torchvision.ops.box_iou``). Sliders move in ``step`` pixels."""
    from .._validate import as_boxes

    width, height = int(size[0]), int(size[1])
    for name, b in (("box_a", box_a), ("box_b", box_b)):
        as_boxes([b], name, allow_empty_area=False)
    controls, values = [], []
    for p, b in (("A", box_a), ("B", box_b)):
        x1, y1, x2, y2 = (float(v) for v in b)
        for key, label, v, lo, hi in (("x", "left", x1, 0, width - 1), ("y", "top", y1, 0, height - 1),
                                      ("w", "width", x2 - x1, 1, width), ("h", "height", y2 - y1, 1, height)):
            opts = list(range(lo, hi + 1, step))
            i = min(range(len(opts)), key=lambda k: abs(opts[k] - v))
            controls.append({"name": f"{p}{key}", "label": f"{p} {label}", "kind": "slider",
                             "options": [str(o) for o in opts], "value": i})
            values.append(i)
    return LivePanel(title="IoU of two boxes", mode="iou", controls=controls, values=values,
                     data={"width": width, "height": height, "threshold": 0.5}, frame_width=360)


def state_bytes(widget) -> int:
    """Bytes of ``widget``'s stored state as the book keeps it (JSON, every trait)."""
    import json

    from ipywidgets.embed import dependency_state

    return len(json.dumps(dependency_state([widget], drop_defaults=False)))
