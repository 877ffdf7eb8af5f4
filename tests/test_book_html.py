"""The built book in a real browser: every chapter page of ``_build/html`` is loaded by headless
Chromium, offline, and must show no JavaScript error, no failed resource load, and every widget
rendered with content. Static checks of the HTML (no CDN script, vendored widget JavaScript,
Colab button) run even where Chromium is absent; the browser part is then skipped with a message.

``make test`` builds the book first (``make book``); run alone, the test skips if there is no build.
Set ``DNNOD_BOOK_HTML`` to check another build folder.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List

import pytest

from browser import CHROMIUM, chapter_pages

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("DNNOD_BOOK_HTML", ROOT / "_build" / "html"))
# What counts as an error in Chromium's console log (uncaught exceptions and rejections, failed
# loads such as a 404 / missing file, widget-manager failures).
ERROR_RE = re.compile(r"Uncaught|Failed to load resource|net::ERR_|TypeError|ReferenceError|"
                      r"SyntaxError|Error:|Could not (?:load|render|create)", re.I)
CONSOLE_RE = re.compile(r'INFO:CONSOLE[^\]]*\] "(?P<msg>.*)", source: (?P<src>\S*)')


PAGES = chapter_pages()


def _html(page: str) -> Path:
    path = HTML / f"{page}.html"
    if not HTML.is_dir():
        pytest.skip(f"no book build in {HTML}: run `make book` first (make test does)")
    assert path.is_file(), f"{path} missing: the toc lists {page} but the build has no page"
    return path


class _WidgetDom(HTMLParser):
    """Collect, for each rendered widget area (``div.widget-subarea``, where the html-manager
    renders one widget view), the widget classes, images and text inside it; plus the number of
    widget-view scripts (views the page asks for) and MathJax containers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.views = 0
        self.areas: List[Dict] = []
        self.mathjax = 0
        self._stack: List[str] = []
        self._area_depth = None
        self._in_view_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "script" and a.get("type") == "application/vnd.jupyter.widget-view+json":
            self.views += 1
        if tag == "mjx-container":
            self.mathjax += 1
        if tag in ("img", "input", "br", "meta", "link", "hr", "source"):   # void elements
            if self._area_depth is not None:
                self._record(tag, cls, a)
            return
        self._stack.append(tag)
        if self._area_depth is None and "widget-subarea" in cls.split():
            self._area_depth = len(self._stack)
            self.areas.append({"widgets": 0, "images": 0, "text": "", "kinds": set()})
        elif self._area_depth is not None:
            self._record(tag, cls, a)

    def _record(self, tag, cls, a):
        area = self.areas[-1]
        if "lm-Widget" in cls.split():
            area["widgets"] += 1
            area["kinds"].update(c for c in cls.split() if c.startswith("widget-") and c not in
                                 ("widget-container", "widget-box", "widget-inline-hbox"))
        if tag == "img" and (a.get("src") or "").startswith(("blob:", "data:")):
            area["images"] += 1

    def handle_endtag(self, tag):
        if tag in ("img", "input", "br", "meta", "link", "hr", "source"):
            return
        if self._stack:
            if self._area_depth is not None and len(self._stack) == self._area_depth:
                self._area_depth = None
            self._stack.pop()

    def handle_data(self, data):
        if self._area_depth is not None and data.strip():
            self.areas[-1]["text"] += data.strip() + " "


# ------------------------------------------------------------------------------ static checks
@pytest.mark.parametrize("page", PAGES)
def test_page_has_offline_widget_js_and_colab_button(page):
    html = _html(page).read_text(encoding="utf-8")
    srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
    remote = [s for s in srcs if "://" in s or s.startswith("//")]
    assert not remote, f"{page}: scripts loaded from the network (blank offline): {remote}"
    for s in srcs:       # every local script exists (no 404)
        target = (HTML / page).parent / s.split("?")[0]
        assert target.resolve().is_file(), f"{page}: script {s} is missing from the build"
    views = html.count('type="application/vnd.jupyter.widget-view+json"')
    if views:
        assert 'type="application/vnd.jupyter.widget-state+json"' in html, \
            f"{page}: widgets without stored state render blank"
        names = [Path(s.split("?")[0]).name for s in srcs]
        assert "require.js" in names and "embed-amd.js" in names
        assert names.index("require.js") < names.index("embed-amd.js")
    src_nb = ROOT / f"{page}.ipynb"
    if src_nb.exists():
        assert "colab.research.google.com/github/" in html, f"{page}: no Colab launch button"


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_markdown_table(page):
    """A Markdown output (``IPython.display.Markdown``) is rendered as MyST, which has tables
    (``nb_render_markdown_format: myst``); rendered as CommonMark it would show ``| a | b |`` and
    ``|---|`` as plain text."""
    html = _html(page).read_text(encoding="utf-8")
    text = re.sub(r"<(pre|code)\b.*?</\1>", "", html, flags=re.S)      # code may show tables
    raw = re.findall(r"\|\s*:?-{3,}:?\s*\|", text)
    assert not raw, f"{page}: {len(raw)} Markdown table rule(s) printed as text, e.g. {raw[0]!r}"


# ------------------------------------------------------------------------------ in the browser
class _Server:
    """The build served over HTTP on localhost, recording every request and its status: a
    file:// page reports no missing file, a served one shows each 404 (fonts and scripts that
    the widget manager or MathJax load later included)."""

    def __init__(self, root: Path) -> None:
        self.requests: List[tuple] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                outer.requests.append((self.path, int(code) if str(code).isdigit() else code))

            def log_message(self, *args):  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    if not HTML.is_dir():
        pytest.skip(f"no book build in {HTML}: run `make book` first (make test does)")
    srv = _Server(HTML)
    yield srv
    srv.close()


def _chromium(url: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="dnnod-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--enable-logging=stderr", "--v=0", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("page", PAGES)
def test_page_in_headless_chromium(page, server, capsys):
    path = _html(page)
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run does it as "
                    "root): the browser check of the book is skipped")
    server.requests.clear()
    r = _chromium(f"{server.url}/{page}.html")
    failed = [f"{p} -> {c}" for p, c in server.requests
              if not (isinstance(c, int) and c < 400) and p != "/favicon.ico"]   # browser's own
    assert r.returncode == 0, f"chromium failed on {page}: {r.stderr[-2000:]}"
    console = [m.group("msg") + "  (" + m.group("src").rsplit("/", 1)[-1] + ")"
               for m in CONSOLE_RE.finditer(r.stderr)]
    errors = [c for c in console if ERROR_RE.search(c)]
    dom = _WidgetDom()
    dom.feed(r.stdout)
    expects_math = 'class="math' in path.read_text(encoding="utf-8")
    empty = [i for i, a in enumerate(dom.areas) if a["widgets"] == 0 or not a["text"].strip()]
    no_image = [i for i, a in enumerate(dom.areas) if "widget-image" in a["kinds"] and a["images"] == 0]
    kinds = sorted(set().union(*[a["kinds"] for a in dom.areas])) if dom.areas else []
    line = (f"{page}: {dom.views} widget views, {len(dom.areas)} rendered "
            f"({sum(a['widgets'] for a in dom.areas)} widget elements, "
            f"{sum(a['images'] for a in dom.areas)} images; {', '.join(k[7:] for k in kinds)}), "
            f"{dom.mathjax} equations typeset, {len(server.requests)} requests "
            f"({len(failed)} failed), {len(errors)} JS errors")
    with capsys.disabled():
        print("\n[browser check] " + line)
    assert not errors, f"{page}: JavaScript errors in Chromium:\n" + "\n".join(errors)
    assert not failed, f"{page}: failed requests (404?):\n" + "\n".join(failed)
    assert len(dom.areas) == dom.views, \
        f"{page}: {dom.views} widget views but {len(dom.areas)} rendered"
    assert not empty, f"{page}: widget areas {empty} rendered empty"
    assert not no_image, f"{page}: image widgets {no_image} show no picture (state not stored?)"
    if expects_math:
        assert dom.mathjax > 0, f"{page}: the page has equations but MathJax typeset none (offline?)"
