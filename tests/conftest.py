"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per module (tests/browser.py: the modules that
    use it skip first where Playwright or chromium is missing)."""
    from playwright.sync_api import sync_playwright

    from browser import launch

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()
