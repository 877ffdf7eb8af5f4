"""The book's text speaks to readers: checks over the chapter sources (``book/_src/*.md``) and the
plain pages of ``book/`` (appendices, glossary), no build needed.

- **No lab notes.** How the project was made (who asked for a chapter, borrowed machines, targets
  "we set", working sessions, files outside the repository such as ``PAPER.md``) belongs in the
  appendix "Reproducing every number" (generated from the records) and ``dnnod/weights/README.md``,
  not in a chapter. ``LAB_NOTES`` lists the phrases that give it away.
- **Every figure numbered and captioned.** A code cell that draws a figure (``plt.show()``,
  ``fig = ...``, ``plt.subplots``, a widget's ``.snapshot()``) carries myst-nb's figure metadata::

      ```{code-cell} ipython3
      ---
      mystnb:
        figure:
          caption: "What the figure shows."
          name: fig-ch3-union
      ---

  The name starts with ``fig-``, is unique in the book, and the chapter refers to it by number
  (``{numref}`fig-ch3-union```) somewhere in its text.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "book" / "_src"
CHAPTERS = sorted(SRC.glob("[0-9]*.md"))
PAGES = CHAPTERS + sorted((ROOT / "book").glob("*.md"))

#: Phrases of a lab notebook, not of a textbook (case-insensitive regular expressions).
LAB_NOTES = {
    r"PAPER\.md": "cites a file outside the repository; cite the paper's sections or {ref}`paper-at-a-glance`",
    r"\bwe set\b|\bour target\b|\bthe target of 0\.\d+": "a target the project set itself",
    r"\bsession\s*\d+|\b(this|that|two|the|second|first) sessions?\b(?! end)|\bsession's\b":
        "a working period; records name a run by date, commit and command",
    r"\bborrowed\b|\blent to\b": "which machine the project was lent",
    r"\basked for\b|\bthe issue\b": "who asked for what",
    r"\bearly notes\b|\bour notes\b": "the project's notes",
    r"\b(then|previous(ly)?|first) shipped\b|\bshipped until\b|\bof that day\b|\btoday's\b":
        "the history of the shipped files (appendix B, dnnod/weights/README.md)",
    r"\bwe could not\b|\bwe did not look\b|\bnot redone\b": "what the project did not get to",
}
FIGURE_CODE = re.compile(r"plt\.show\(\)|^\s*fig\s*=|plt\.subplots|\.snapshot\(\)", re.M)
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)


def _prose(text: str) -> str:
    """The text outside code cells and outside code spans/blocks (where commands and file names
    may legitimately contain anything)."""
    text = CELL.sub("", text)
    text = re.sub(r"^```.*?^```\s*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _cells(text: str):
    """(metadata dict, code) of every code cell of a MyST notebook source."""
    for m in CELL.finditer(text):
        body = m.group("body")
        meta = {}
        if body.startswith("---\n"):
            head, _, body = body[4:].partition("\n---\n")
            meta = yaml.safe_load(head) or {}
        else:
            opts = re.findall(r"^:(\w+):\s*(.*)$", body, re.M)
            meta = {k: v for k, v in opts}
            body = re.sub(r"^:\w+:.*\n", "", body, flags=re.M)
        yield meta, body


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_lab_notes(page):
    prose = _prose(page.read_text(encoding="utf-8"))
    found = []
    for pattern, why in LAB_NOTES.items():
        for m in re.finditer(pattern, prose, re.I):
            line = prose[max(0, m.start() - 50):m.end() + 30].replace("\n", " ")
            found.append(f"{m.group(0)!r} ({why}): ...{line}...")
    assert not found, f"{page.name} reads like a lab notebook:\n" + "\n".join(found)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_is_captioned_named_and_referenced(chapter):
    text = chapter.read_text(encoding="utf-8")
    problems = []
    for meta, code in _cells(text):
        if not FIGURE_CODE.search(code):
            continue
        first = next((ln for ln in code.splitlines() if ln.strip() and not ln.startswith("#")), "")
        fig = (meta.get("mystnb") or {}).get("figure") or {}
        caption, name = str(fig.get("caption") or "").strip(), str(fig.get("name") or "")
        if not caption:
            problems.append(f"figure cell without a caption: {first[:70]!r}")
        if not name.startswith("fig-"):
            problems.append(f"figure cell without a name fig-...: {first[:70]!r}")
        elif f"<{name}>`" not in text and f"{{numref}}`{name}`" not in text:
            problems.append(f"{name} is never referenced with {{numref}}")
    assert not problems, f"{chapter.name}:\n" + "\n".join(problems)


def test_figure_names_are_unique():
    names = []
    for chapter in CHAPTERS:
        for meta, _ in _cells(chapter.read_text(encoding="utf-8")):
            name = ((meta.get("mystnb") or {}).get("figure") or {}).get("name")
            if name:
                names.append(name)
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"figure names used twice: {dupes}"


def test_the_rules_catch_what_they_should():
    """The two checks above, on small examples (so a broken regular expression cannot pass)."""
    bad = "As the issue asked for, we set 0.70 in session 11 on a borrowed GPU (PAPER.md §10)."
    hits = [p for p in LAB_NOTES if re.search(p, _prose(bad), re.I)]
    assert len(hits) >= 5, hits
    assert not any(re.search(p, _prose("Colab sessions end: add `--resume`."), re.I) for p in LAB_NOTES)
    src = "```{code-cell} ipython3\nfig, ax = plt.subplots()\nplt.show()\n```\n"
    (meta, code), = list(_cells(src))
    assert FIGURE_CODE.search(code) and not meta


def test_package_cites_nothing_outside_the_repository():
    """Docstrings and comments cite the paper's sections and the book's appendix, never a working
    file readers do not have (such as the team's PAPER.md digest)."""
    root = Path(__file__).resolve().parents[1]
    bad = [f"{p.relative_to(root)}:{i}" for p in sorted((root / "dnnod").rglob("*.py"))
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if "PAPER.md" in line]
    assert not bad, "cites PAPER.md: " + ", ".join(bad)
