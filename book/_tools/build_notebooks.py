"""Build the book's chapter notebooks from their MyST text sources, executed, with outputs.

    .venv/bin/python book/_tools/build_notebooks.py            # all chapters in book/_src/
    .venv/bin/python book/_tools/build_notebooks.py 03_masks   # one chapter
    .venv/bin/python book/_tools/build_notebooks.py --check    # sources and notebooks agree?

Chapters are written as MyST Markdown notebooks in ``book/_src/NN_name.md`` (readable diffs) and
stored as executed notebooks ``book/NN_name.ipynb`` (what Jupyter Book, Colab, GitHub and nbval
use). This script converts one to the other, gives cells stable ids, executes the notebook with
nbclient in ``book/`` (widget state is stored in the notebook metadata, so widgets show their
initial view without a kernel) and prints each chapter's execution time. ``--check`` fails if a
notebook's cells differ from its source (run by tests/test_plot_widgets.py), so the two never drift.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from myst_nb.core.read import read_myst_markdown_notebook

BOOK = Path(__file__).resolve().parents[1]
SRC = BOOK / "_src"


def convert(md: Path) -> nbformat.NotebookNode:
    """MyST text -> notebook with stable cell ids (``<chapter>-<index>``) and no outputs."""
    nb = read_myst_markdown_notebook(md.read_text(encoding="utf-8"), path=str(md))
    stem = md.stem.split("_", 1)[0]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{stem}-{i:02d}"
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell["execution_count"] = None
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def cells_signature(nb) -> list:
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
             sorted(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def check(names) -> int:
    bad = 0
    for md in names:
        ipynb = BOOK / f"{md.stem}.ipynb"
        if not ipynb.exists():
            print(f"MISSING {ipynb.relative_to(BOOK.parent)} (run {Path(__file__).name})")
            bad += 1
            continue
        stored = nbformat.read(ipynb, as_version=4)
        if cells_signature(stored) != cells_signature(convert(md)):
            print(f"STALE   {ipynb.relative_to(BOOK.parent)} differs from {md.relative_to(BOOK.parent)}")
            bad += 1
        elif any(c["cell_type"] == "code" and c["source"].strip() and c.get("execution_count") is None
                 for c in stored.cells):
            print(f"UNRUN   {ipynb.relative_to(BOOK.parent)} is stored without outputs")
            bad += 1
        else:
            print(f"ok      {ipynb.relative_to(BOOK.parent)}")
    return bad


def build(md: Path, timeout: int = 300):
    """Execute one chapter; returns (wall seconds, CPU seconds of its kernel). The CPU time is
    what the chapter costs on an idle machine; wall time grows with whatever else is running."""
    import resource

    from nbclient import NotebookClient

    nb = convert(md)
    env = os.environ
    env.setdefault("DNNOD_DATA", str(BOOK.parent.parent / "shared" / "data"))
    env.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(BOOK)}})
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    client.execute()            # starts, runs and shuts down (reaps) its own kernel
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    nbformat.write(nb, BOOK / f"{md.stem}.ipynb")
    return dt, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chapters", nargs="*", help="chapter stems (default: all in book/_src)")
    ap.add_argument("--check", action="store_true", help="only check notebooks against sources")
    args = ap.parse_args(argv)
    names = sorted(SRC.glob("[0-9]*.md"))     # chapters are NN_name.md; README.md is not
    if args.chapters:
        names = [SRC / f"{c.removesuffix('.md')}.md" for c in args.chapters]
    if args.check:
        return 1 if check(names) else 0
    for md in names:
        dt, cpu = build(md)
        print(f"{md.stem}: executed in {dt:.1f} s wall, {cpu:.1f} s CPU (kernel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
