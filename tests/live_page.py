"""Helpers for the live widgets' browser checks (tests/test_live_widgets_browser.py): the live
widgets stored in an executed chapter notebook (their widget state, as the book keeps it) on a
standalone page opened from disk with the book's vendored widget JavaScript, and a driver that
changes every control of every live widget on a page and records what is drawn."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

from maskpaint_page import STATE_MIME, VIEW_MIME


def is_live(model_state: Dict) -> bool:
    """A LivePanel (dnnod.viz.live) or a BoxTargets (dnnod.viz.boxtargets) model."""
    s = model_state.get("state", {})
    return ({"controls", "table", "mode"} <= set(s)) or ({"boxes", "start_boxes", "d"} <= set(s))


def notebook_live(nb_path: Path) -> Tuple[Dict, List[str]]:
    """(the notebook's stored widget state, ids of the live models its outputs display)."""
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    state = nb.get("metadata", {}).get("widgets", {}).get(STATE_MIME, {}).get("state", {})
    shown = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(VIEW_MIME)
            if view and view["model_id"] in state and is_live(state[view["model_id"]]):
                shown.append(view["model_id"])
    return state, shown


def html_live(html: str) -> Tuple[Dict, List[str]]:
    """(the widget state a built HTML page stores, ids of the live models it displays, in order)."""
    import re

    tag = r'<script[^>]*type="application/vnd\.jupyter\.widget-{}\+json"[^>]*>(.*?)</script>'
    m = re.search(tag.format("state"), html, re.S)
    state = json.loads(m.group(1).replace("<\\/", "</"))["state"] if m else {}
    shown = []
    for v in re.finditer(tag.format("view"), html, re.S):
        mid = json.loads(v.group(1))["model_id"]
        if mid in state and is_live(state[mid]):
            shown.append(mid)
    return state, shown


def state_size(state: Dict, model_id: str) -> int:
    """Bytes of one model's stored state (JSON)."""
    return len(json.dumps(state[model_id]))


# What a widget shows, as one string: the frame (hashed), the info line, the IoU canvas, the key.
SIGNATURE_JS = """(root) => {
  const h = (s) => { let x = 0; for (let i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) | 0; return x; };
  const img = root.querySelector('[data-role=frame]');
  const cv = root.querySelector('canvas[data-role=canvas]');
  const info = root.querySelector('[data-role=info]');
  const tg = root.closest('[data-targets]');
  return [root.getAttribute('data-key') || '', img ? h(img.getAttribute('src') || '') : '',
          info ? info.textContent : '', cv ? h(cv.toDataURL()) : '',
          tg ? tg.getAttribute('data-targets') : ''].join(' | ');
}"""

# Set control `name` of widget root `i` to option `v` the way a reader does (input/change/click).
SET_JS = """([i, name, v]) => {
  const root = document.querySelectorAll('.dnnod-live, .dnnod-bt')[i];
  const e = root.querySelector(`[data-control="${name}"]`);
  if (e.tagName === 'SELECT') { e.value = String(v); e.dispatchEvent(new Event('change')); }
  else if (e.tagName === 'INPUT') { e.value = String(v); e.dispatchEvent(new Event('input')); }
  else { const bs = e.querySelectorAll('button'); bs[Math.min(v, bs.length - 1)].click(); }
}"""

# The controls of widget root `i`: [name, number of options, first value, current option]
# (the d slider of BoxTargets included).
CONTROLS_JS = """(i) => {
  const root = document.querySelectorAll('.dnnod-live, .dnnod-bt')[i];
  const out = [];
  root.querySelectorAll('[data-control]').forEach((e) => {
    const name = e.getAttribute('data-control');
    if (e.tagName === 'SELECT') out.push([name, e.options.length, 0]);
    else if (e.tagName === 'INPUT' && e.type === 'range')
      out.push([name, Number(e.max) - Number(e.min) + 1, Number(e.min)]);
    else if (e.tagName !== 'INPUT') out.push([name, e.querySelectorAll('button').length, 0]);
  });
  out.forEach((c) => {                 // the option shown now (an index counted from 0)
    const e = root.querySelector(`[data-control="${c[0]}"]`);
    if (e.tagName === 'SELECT' || e.tagName === 'INPUT') c.push(Number(e.value) - c[2]);
    else c.push(Math.max(0, [...e.querySelectorAll('button')].findIndex((b) => b.classList.contains('on'))));
  });
  return out;
}"""


def pr_results():
    """Two data sets with different classes (the class dropdown depends on the data set)."""
    import torch

    g = torch.Generator().manual_seed(1)

    def curve(n):
        hit = (torch.rand(n, generator=g) < 0.6).double()
        tp = hit.cumsum(0)
        return {"recall": (tp / 40).tolist(), "precision": (tp / torch.arange(1, n + 1)).tolist()}

    return {"shapes": {"class_names": ["circle", "square"], "pr": {"circle": curve(50), "square": curve(30)},
                       "ap_07": {"circle": 0.5, "square": 0.4}, "ap_all": {"circle": 0.52, "square": 0.41},
                       "npos": {"circle": 40, "square": 40}},
            "people": {"class_names": ["person"], "pr": {"person": curve(60)}, "ap_07": {"person": 0.6},
                       "ap_all": {"person": 0.61}, "npos": {"person": 40}}}
