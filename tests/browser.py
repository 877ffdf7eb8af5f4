"""What the browser tests share: Debian's chromium (``apt-get install chromium``; .ci/run installs
it), driven by Playwright's Python package with ``executable_path`` (never a browser download),
and the list of the book's pages from ``_toc.yml``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(c)), None)
#: Headless, and none of chromium's own network services (this machine reaches no other host).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def launch(playwright):
    """Debian's chromium through Playwright, headless, offline."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def require_browser(what: str):
    """Playwright's sync API, or skip the calling test module (with ``what`` in the message)."""
    api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright's Python package is not installed "
        "(pip install playwright==1.65.3; it drives Debian's chromium, no browser download)")
    if CHROMIUM is None:
        pytest.skip(f"chromium not installed (apt-get install -y chromium): {what} skipped",
                    allow_module_level=True)
    return api


def chapter_pages() -> List[str]:
    """Every page of the table of contents (chapters and appendices), as ``_toc.yml`` names them."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))
    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return files
