"""Nothing sticks out of the content column: every chapter and appendix page of the built book is
opened from disk (file://, offline) in Debian's headless Chromium through Playwright, at window widths
1400 px and 800 px, and every element inside the article column (``article.bd-article`` of the
sphinx-book-theme page) must lie inside the column and must not hold content wider than itself:

- an element whose right edge lies right of the column's right edge (or left of its left edge)
  sticks out of the column: a code line, a printed table, an equation or a figure cut at the edge;
- a block (``display`` block, flex, grid, table, list-item) that does not scroll (``overflow-x``
  visible, hidden or clip) whose ``scrollWidth``
  exceeds its ``clientWidth`` holds content wider than itself (shown over its neighbours, or cut);
- a block that scrolls inside itself by design (``overflow-x: auto | scroll``, e.g. a display
  equation in reader.css) may hold wider content: only its own box must fit the column;
- the page itself must not scroll sideways.

The same checker runs on tiny synthetic pages first: an over-wide element, a clipped code line and
an over-wide image must fail it; a wide equation that scrolls inside itself must pass.

Skipped, with a message, where there is no book build (``make book``; ``DNNOD_BOOK_HTML`` names
another build folder), no ``chromium`` (``apt-get install -y chromium``) or no Playwright
(``pip install playwright==1.65.3``; it drives Debian's chromium, never a browser download).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

from browser import chapter_pages, require_browser

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("DNNOD_BOOK_HTML", ROOT / "_build" / "html"))
WIDTHS = (1400, 800)
TOLERANCE_PX = 1.0      # sub-pixel rounding of layout boxes
COLUMN = "article.bd-article"

playwright_api = require_browser("the book's overflow test")


# The checker, run inside the page. It returns the offending elements (only the outermost of a
# nested run of offenders: a too-wide table is one finding, not one per cell).
CHECK_JS = r"""
([selector, tol]) => {
  const col = document.querySelector(selector);
  if (!col) return {error: `no element ${selector} on the page`};
  const c = col.getBoundingClientRect();
  const scrolls = (s) => s.overflowX === "auto" || s.overflowX === "scroll";
  const describe = (el, why) => {
    const r = el.getBoundingClientRect();
    const cls = (typeof el.className === "string" ? el.className : "").trim().split(/\s+/).slice(0, 3).join(".");
    const text = (el.innerText || el.getAttribute("alt") || el.getAttribute("src") || "").replace(/\s+/g, " ").slice(0, 80);
    const sec = el.closest("section[id]");
    return {tag: el.tagName.toLowerCase() + (cls ? "." + cls : ""), why, section: sec ? sec.id : "",
            left: Math.round(r.left), right: Math.round(r.right), width: Math.round(r.width),
            scrollWidth: el.scrollWidth, clientWidth: el.clientWidth, text};
  };
  // inside a scroll container (between the element and the column), an element may extend beyond
  // the column: the container scrolls. The container itself is checked.
  const insideScroller = (el) => {
    for (let a = el.parentElement; a && a !== col; a = a.parentElement)
      if (scrolls(getComputedStyle(a))) return true;
    return false;
  };
  // inside inline content (an inline formula: span.math is inline-flex, its MathJax boxes are
  // blockified flex items), boxes are part of a line
  const insideInline = (el) => {
    for (let a = el.parentElement; a && a !== col; a = a.parentElement)
      if (getComputedStyle(a).display.startsWith("inline")) return true;
    return false;
  };
  const BLOCKS = new Set(["block", "flow-root", "flex", "grid", "table", "list-item", "table-cell"]);
  const bad = new Map();
  for (const el of col.querySelectorAll("*")) {
    const s = getComputedStyle(el);
    if (s.display === "none" || s.visibility === "hidden" || s.position === "fixed") continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (insideScroller(el)) continue;
    if (r.right > c.right + tol || r.left < c.left - tol) {
      bad.set(el, describe(el, `sticks out of the column (column ${Math.round(c.left)}..${Math.round(c.right)} px)`));
      continue;
    }
    // blocks only, outside inline content: an inline formula whose italic glyphs overhang its
    // box by a few pixels is not an overflow (one that leaves the column is caught above)
    const block = BLOCKS.has(s.display) && el.clientWidth > 0 && !insideInline(el);
    if (block && !scrolls(s) && el.scrollWidth > el.clientWidth + tol)
      bad.set(el, describe(el, `content wider than the block (${s.overflowX}, not scrolling)`));
  }
  const outer = [];
  for (const [el, d] of bad) {
    let nested = false;
    for (let a = el.parentElement; a && a !== col; a = a.parentElement) if (bad.has(a)) { nested = true; break; }
    if (!nested) outer.push(d);
  }
  const doc = document.documentElement;
  return {column: [Math.round(c.left), Math.round(c.right)], pageScrollWidth: doc.scrollWidth,
          viewport: window.innerWidth, offenders: outer};
}
"""

SETTLE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(ok => { i.onload = ok; i.onerror = ok; })));
  if (document.fonts) await document.fonts.ready;
}
"""


def overflow(browser, url: str, width: int, inject: str = "") -> Dict:
    """Open ``url`` at ``width`` px window width and return the checker's findings (after running
    the JavaScript ``inject``, if given, on the page)."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    try:
        page.goto(url, wait_until="load", timeout=60000)
        page.evaluate(SETTLE_JS)
        page.wait_for_timeout(300)                       # widgets and late layout
        if inject:
            page.evaluate(inject)
        result = page.evaluate(CHECK_JS, [COLUMN, TOLERANCE_PX])
    finally:
        page.close()
    assert "error" not in result, f"{url}: {result['error']}"
    if result["pageScrollWidth"] > result["viewport"] + TOLERANCE_PX:
        result["offenders"].append({"tag": "html", "why": f"the page scrolls sideways "
                                    f"({result['pageScrollWidth']} px in a {result['viewport']} px window)",
                                    "section": "", "text": ""})
    return result


def report(result: Dict) -> str:
    lines = [f"column {result['column'][0]}..{result['column'][1]} px:"]
    for o in result["offenders"][:15]:
        lines.append(f"  #{o['section']} <{o['tag']}> {o['why']}: left {o.get('left')}, right "
                     f"{o.get('right')}, scrollWidth {o.get('scrollWidth')} > clientWidth "
                     f"{o.get('clientWidth')}?  {o['text']!r}")
    if len(result["offenders"]) > 15:
        lines.append(f"  ... and {len(result['offenders']) - 15} more")
    return "\n".join(lines)


# --- the checker on synthetic pages: it must catch a real overflow ---------------------------------

PAGE = """<!doctype html><html><head><style>
body {{ margin: 0; }} main {{ width: 100%; }}
article.bd-article {{ width: 600px; margin-left: 40px; font: 16px sans-serif; }}
</style></head><body><main><article class="bd-article"><section id="s"><p>Text that fits.</p>
{body}</section></article></main></body></html>"""

SYNTHETIC = {
    "wide block": ('<div style="width: 900px; background: #ddd">a block 900 px wide</div>', True),
    "clipped code line": ('<pre style="white-space: pre; overflow-x: hidden">' + "x = 1  # " + "long " * 60
                          + "</pre>", True),
    "over-wide image": ('<img alt="wide" src="data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22 '
                        'width=%221000%22 height=%2220%22%3E%3C/svg%3E">', True),
    "unbreakable word": ("<p>" + "W" * 200 + "</p>", True),
    "scrolling equation": ('<div style="overflow-x: auto"><span style="display: inline-block; '
                           'width: 1200px">a display equation that scrolls inside itself</span></div>', False),
    "wrapped code": ('<pre style="white-space: pre-wrap; overflow-wrap: anywhere">' + "y = 2  # " + "long " * 60
                     + "</pre>", False),
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_checker_on_synthetic_page(name, width, browser, tmp_path):
    body, overflows = SYNTHETIC[name]
    path = tmp_path / "page.html"
    path.write_text(PAGE.format(body=body))
    result = overflow(browser, path.as_uri(), width)
    if overflows:
        assert result["offenders"], f"the checker misses a {name} that sticks out: {report(result)}"
    else:
        assert not result["offenders"], f"the checker flags a {name} that fits: {report(result)}"


# --- the book ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", chapter_pages())
def test_nothing_sticks_out_of_the_content_column(page, width, browser):
    if not HTML.is_dir():
        pytest.skip(f"no book build in {HTML}: run `make book` first (make test does), or set "
                    "DNNOD_BOOK_HTML to a build folder")
    path = HTML / f"{page}.html"
    assert path.is_file(), f"{path} missing: the toc lists {page} but the build has no page"
    result = overflow(browser, path.as_uri(), width)
    assert not result["offenders"], f"{page} at {width} px: {report(result)}"


#: Over-wide content put into a real page of the book: a figure drawn at its natural width, and a
#: printed output whose lines do not wrap in a block that clips them.
INJECTIONS = {
    "over-wide figure": """() => { const img = document.createElement('img');
        img.src = 'data:image/svg+xml,' + encodeURIComponent('<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="30"/>');
        img.style.maxWidth = 'none'; document.querySelector('article.bd-article section p').after(img); }""",
    "clipped printed line": """() => { const pre = document.createElement('pre');
        pre.style.whiteSpace = 'pre'; pre.style.overflowX = 'hidden'; pre.textContent = 'mAP '.repeat(80);
        document.querySelector('article.bd-article section p').after(pre); }""",
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_checker_fails_a_book_page_with_an_overflow(name, browser):
    if not HTML.is_dir():
        pytest.skip(f"no book build in {HTML}")
    page = chapter_pages()[1]
    clean = overflow(browser, (HTML / f"{page}.html").as_uri(), 800)
    hurt = overflow(browser, (HTML / f"{page}.html").as_uri(), 800, inject=INJECTIONS[name])
    assert len(hurt["offenders"]) > len(clean["offenders"]), f"the checker misses an injected {name}"
