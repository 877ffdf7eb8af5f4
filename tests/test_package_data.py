"""The book's results travel with the package: ``pip install`` (Colab included) is all a chapter needs.

- a wheel built from the checkout (``pip wheel --no-deps``) holds every JSON file that a chapter or
  appendix loads (the ``load_book_data("...")`` calls of the chapter sources, and the files the
  appendix "Reproducing every number" reads through :mod:`dnnod.viz.records`);
- ``load_book_data`` reads them from the package wherever Python runs (no checkout, no network), and
  nothing in the chapters or the package fetches files from the repository's web address.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD_RE = re.compile(r"""load_book_data\(\s*["']([^"']+)["']""")
CHAPTER_SOURCES = sorted((ROOT / "book" / "_src").glob("*.md")) + sorted((ROOT / "book").glob("*.md"))


def loaded_files() -> set:
    names = set()
    for src in CHAPTER_SOURCES:
        names |= set(LOAD_RE.findall(src.read_text(encoding="utf-8")))
    names |= set(re.findall(r'"(ch\d\d_\w+\.json)"', (ROOT / "dnnod" / "viz" / "records.py").read_text()))
    return names


def test_the_chapters_load_results():
    names = loaded_files()
    # chapters 8, 9 and 10 and the appendix read their numbers from stored results
    assert len(names) >= 10, sorted(names)
    assert {"ch08_refine_gain.json", "ch09_pr_curves.json", "ch10_gpu_runs.json"} <= names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # first offline, with the environment's setuptools; where it cannot build wheels (an old
    # setuptools without the wheel package), pip's usual isolated build
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(out)]
    r = subprocess.run(base + ["--no-build-isolation", "--no-index"], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        r = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob("dnnod-*.whl")
    with zipfile.ZipFile(whl) as z:
        yield z


def test_wheel_holds_every_json_a_chapter_loads(wheel):
    inside = {Path(n).name for n in wheel.namelist() if n.startswith("dnnod/studies/results/")}
    missing = sorted(loaded_files() - inside)
    assert not missing, f"the wheel lacks {missing}: add them to dnnod/studies/results and package-data"
    # and they are the files of the checkout, byte for byte
    for name in sorted(loaded_files()):
        assert wheel.read(f"dnnod/studies/results/{name}") == \
            (ROOT / "dnnod" / "studies" / "results" / name).read_bytes(), name


def test_load_book_data_reads_the_package_from_anywhere(tmp_path):
    """From a folder that has no checkout (as on Colab), with no network allowed."""
    code = ("import socket, json\n"
            "def no_net(*a, **k): raise OSError('network used')\n"
            "socket.socket.connect = no_net\n"
            "from dnnod.viz.explore import load_book_data\n"
            "d = load_book_data('ch09_paper_table1.json')\n"
            "print(json.dumps(sorted(d)[:1]))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with pytest.raises(FileNotFoundError, match="no_such_file.json"):
        from dnnod.viz.explore import load_book_data
        load_book_data("no_such_file.json")


def test_nothing_fetches_from_the_repository_web_address():
    pattern = re.compile(r"raw\.githubusercontent\.com|github\.com/[\w.-]+/[\w.-]+/(?:raw|blob)/")
    offenders = []
    for path in CHAPTER_SOURCES + sorted((ROOT / "dnnod").rglob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
