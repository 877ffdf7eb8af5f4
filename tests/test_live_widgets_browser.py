"""The live widgets in a real browser, with no kernel: pages opened from disk (file://, no server,
no network) in Debian's headless Chromium through Playwright, using the book's vendored widget
JavaScript. For every live widget (dnnod.viz.live.LivePanel, dnnod.viz.boxtargets.BoxTargets):

- every control (slider, dropdown, toggle) is set to each of its options (sliders: first, middle,
  last and a few more) and at least one change of each control must change what is drawn (the
  frame, the line of numbers, the canvas, the targets), and the drawn key must follow;
- 60 random changes in quick succession, with no wait, end on the right frame and line;
- no JavaScript error on the way.

The widgets come from (a) widgets built here from small synthetic data, whose frames are compared
with the Python Panel's own drawing, (b) the executed chapter notebooks ``book/NN_*.ipynb`` (their
stored widget state, as the book keeps it) and (c) the built book ``_build/html`` (or ``$DNNOD_BOOK_HTML``) when present.
Skipped, with a message, where chromium or Playwright's Python package is missing.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
import torch

from live_page import CONTROLS_JS, SET_JS, SIGNATURE_JS, html_live, notebook_live, pr_results
from browser import require_browser
from maskpaint_page import ROOT, write_page, write_state_page

playwright_api = require_browser("the live widgets' browser tests")

# Chapters 1-10 (the appendices hold no widget; chapter 6's mask painter has its own tests).
CHAPTERS = sorted(p for p in (ROOT / "book").glob("[01][0-9]_*.ipynb")
                  if int(p.name[:2]) <= 10 and not p.name.startswith("06"))
HTML = Path(os.environ.get("DNNOD_BOOK_HTML", ROOT / "_build" / "html"))   # as test_book_html.py
ROOTS = ".dnnod-live, .dnnod-bt"
# The book theme (pydata-sphinx-theme) logs this with console.error on a page opened from disk,
# whose localStorage holds no light/dark choice yet; it is a note, not a failure.
THEME_NOTE = re.compile(r"Got invalid theme mode: .*Resetting to auto\.$")


def open_page(browser, url: str, count: int):
    """Open ``url``, wait for ``count`` live widgets; JavaScript errors go to ``pg.errors``."""
    errors = []
    pg = browser.new_page()
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
          if m.type == "error" and not THEME_NOTE.match(m.text) else None)
    pg.on("requestfailed", lambda r: errors.append(f"failed request: {r.url}"))
    pg.goto(url)
    pg.wait_for_function(f"document.querySelectorAll('{ROOTS}').length >= {count}", timeout=60000)
    pg.errors = errors
    return pg


def signature(pg, i: int) -> str:
    return pg.evaluate(f"(i) => ({SIGNATURE_JS})(document.querySelectorAll('{ROOTS}')[i])", i)


def drive(pg, i: int, rng: random.Random) -> list:
    """Set every control of widget ``i`` to several options; return the controls that never
    changed the drawing (should be none). Then many changes in quick succession."""
    controls = pg.evaluate(CONTROLS_JS, i)
    assert controls, f"widget {i} has no controls"
    dead = []
    for k in range(len(controls)):
        name, n, lo, now = pg.evaluate(CONTROLS_JS, i)[k]   # options may depend on earlier controls
        for j in range(k):                   # one option here: look for more under another choice
            if n >= 2:
                break
            nj, loj = controls[j][1], controls[j][2]
            for p in range(nj):
                pg.evaluate(SET_JS, [i, controls[j][0], loj + p])
                name, n, lo, now = pg.evaluate(CONTROLS_JS, i)[k]
                if n >= 2:
                    break
        if n < 2:
            dead.append(f"{name} (never more than one option)")
            continue
        picks = sorted({0, n // 2, n - 1, *rng.sample(range(n), min(n, 3))} - {now}) + [now]
        seen = {signature(pg, i)}
        for p in picks:                                   # ... and back where it started
            pg.evaluate(SET_JS, [i, name, lo + p])
            seen.add(signature(pg, i))
        if len(seen) == 1:
            dead.append(name)
    # quick succession: random controls, random options, no waiting between them
    moves = []
    for _ in range(60):
        name, n, lo, _now = rng.choice(controls)
        moves.append([i, name, lo + rng.randrange(max(n, 1))])
    pg.evaluate(f"(moves) => {{ const set = {SET_JS}; for (const m of moves) set(m); }}", moves)
    return dead


def expected(pg, i: int, model_state: dict):
    """For a frames LivePanel: the (info text, frame hash) its stored table gives the drawn key."""
    key = pg.evaluate(f"(i) => document.querySelectorAll('{ROOTS}')[i].getAttribute('data-key')", i)
    f, k = model_state["table"][key]
    info = pg.evaluate("(h) => { const d = document.createElement('div'); d.innerHTML = h; "
                       "return d.textContent; }", model_state["infos"][k])
    return key, info, model_state["frames"][f]


def check_page(pg, states: list) -> None:
    """Drive every widget of the page; ``states[i]``: the stored state of widget ``i`` or None."""
    rng = random.Random(0)
    n = pg.evaluate(f"document.querySelectorAll('{ROOTS}').length")
    assert n == len(states), f"{n} live widgets on the page, {len(states)} expected"
    for i in range(n):
        dead = drive(pg, i, rng)
        assert not dead, f"widget {i}: changing {dead} never changed what is drawn"
        st = states[i]
        if st is not None and st.get("mode") == "frames":
            key, info, src = expected(pg, i, st)
            shown = pg.evaluate(f"(i) => {{ const r = document.querySelectorAll('{ROOTS}')[i]; return "
                                "[r.querySelector('[data-role=info]').textContent, "
                                "r.querySelector('[data-role=frame]').getAttribute('src')]; }", i)
            assert shown[0] == info, f"widget {i} at {key}: info {shown[0]!r}, table says {info!r}"
            assert shown[1] == src, f"widget {i} at {key}: the frame is not the table's"
    assert not pg.errors, "JavaScript errors:\n" + "\n".join(pg.errors)


# ------------------------------------------------------------------------------ synthetic
def test_frames_panel_follows_every_control(browser, tmp_path):
    """A PR-curve panel whose class list depends on the data set: every control changes the
    drawing, and what is drawn is what the Python Panel itself draws for those control values."""
    from dnnod.viz import explore, live

    panel = explore.pr_widget(pr_results())
    lp = live.to_live(panel, grid={"data": None, "class": None, "cut": [0, 30, 60, 100]}, close=False)
    assert len(lp.table) == (2 + 1) * 4                     # two classes + one class, four cut-offs
    pg = open_page(browser, write_page(lp, tmp_path).as_uri(), 1)
    st = {"mode": "frames", "table": lp.table, "infos": lp.infos, "frames": lp.frames}
    check_page(pg, [st])
    # the page at a chosen combination shows the Panel's own line of numbers for it
    pg.evaluate(SET_JS, [0, "data", 1])
    pg.evaluate(SET_JS, [0, "cut", 2])
    panel.controls["data"].value = "people"
    panel.controls["cut"].value = 60
    text = pg.evaluate("document.querySelector('[data-role=info]').textContent")
    ref = pg.evaluate("(h) => { const d = document.createElement('div'); d.innerHTML = h; "
                      "return d.textContent; }", panel.info.value)
    assert text == ref
    opts = pg.evaluate("[...document.querySelector('[data-control=class]').options].map(o => o.text)")
    assert opts == ["person"]
    pg.close()


def test_iou_panel_computes_torchvision_iou(browser, tmp_path):
    """The IoU panel: random slider settings; the page's IoU equals torchvision's box_iou of the
    boxes the sliders describe (clipped to the canvas)."""
    from torchvision.ops import box_iou

    from dnnod.viz import live

    w = live.iou_live(size=(220, 180))
    pg = open_page(browser, write_page(w, tmp_path).as_uri(), 1)
    check_page(pg, [None])
    rng = random.Random(3)
    for _ in range(25):
        v = {"Ax": rng.randrange(220), "Ay": rng.randrange(180), "Aw": rng.randrange(1, 221),
             "Ah": rng.randrange(1, 181), "Bx": rng.randrange(220), "By": rng.randrange(180),
             "Bw": rng.randrange(1, 221), "Bh": rng.randrange(1, 181)}
        lo = {"x": 0, "y": 0, "w": 1, "h": 1}
        for name, val in v.items():
            pg.evaluate(SET_JS, [0, name, val - lo[name[1]]])
        a = [v["Ax"], v["Ay"], min(220, v["Ax"] + v["Aw"]), min(180, v["Ay"] + v["Ah"])]
        b = [v["Bx"], v["By"], min(220, v["Bx"] + v["Bw"]), min(180, v["By"] + v["Bh"])]
        ref = float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)))
        got = float(pg.get_attribute(".dnnod-live", "data-iou"))
        assert got == pytest.approx(ref, abs=1e-6), (v, got, ref)
    assert not pg.errors, pg.errors
    pg.close()


# ------------------------------------------------------------------------------ the book
@pytest.mark.skipif(not CHAPTERS, reason="no executed chapter notebooks in book/")
@pytest.mark.parametrize("nb", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_widgets_are_live(browser, tmp_path, nb):
    """Every live widget an executed chapter stores, on a page of its own, responds to every control."""
    state, ids = notebook_live(nb)
    assert ids, f"{nb.name} stores no live widget (re-execute it with book/_tools/build_notebooks.py)"
    pg = open_page(browser, write_state_page(state, ids, tmp_path).as_uri(), len(ids))
    check_page(pg, [state[m]["state"] for m in ids])
    pg.close()


@pytest.mark.skipif(not HTML.is_dir(), reason="no built book in _build/html (make book builds it; "
                    "make test builds it first)")
@pytest.mark.parametrize("stem", [p.stem for p in CHAPTERS])
def test_built_pages_are_live(browser, stem):
    """The same on the built HTML page of each chapter, opened from disk."""
    page = HTML / "book" / f"{stem}.html"
    if not page.is_file():
        pytest.skip(f"{page} not built")
    html = page.read_text(encoding="utf-8")
    state, ids = html_live(html)
    assert ids, f"{page.name}: no live widget view found in the page"
    pg = open_page(browser, page.as_uri(), len(ids))
    check_page(pg, [state[m]["state"] for m in ids])
    pg.close()
