"""The package layout keeps the data flow one way (README "Layout").

Every module of ``dnnod`` is parsed (``ast``, imports inside functions included) and each import of
another dnnod module is checked against the layers below: a module may import only from its own
layer or a layer listed before it. So the detector (model + inference) never imports the figure
code, the studies, the data loaders or the trainer, and ``dnnod.evaluate`` (AP of given
detections) imports nothing of inference. A second test checks that ``import dnnod`` stays cheap.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dnnod"

#: Layers in data-flow order: image -> windows -> network -> masks -> boxes -> refined boxes ->
#: evaluation, then the programs, the figures and the studies. A prefix names a module or a
#: subpackage (``dnnod.localize`` covers ``dnnod.localize.lattice``).
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("checks", ("dnnod._validate",)),
    ("model", ("dnnod.masks", "dnnod.loss", "dnnod.net", "dnnod.classifier", "dnnod.image")),
    ("boxes", ("dnnod.localize",)),
    ("windows and merged masks", ("dnnod.multiscale", "dnnod.predict")),
    ("refinement", ("dnnod.refine",)),
    ("detector", ("dnnod.detect", "dnnod.checkpoint", "dnnod")),   # "dnnod" = dnnod/__init__.py
    ("evaluation", ("dnnod.evaluate",)),
    ("data", ("dnnod.data",)),
    ("programs", ("dnnod.assess", "dnnod.train", "dnnod.cli", "dnnod.weights")),
    ("figures", ("dnnod.viz",)),
    ("studies", ("dnnod.studies",)),
]
#: Extra rule: the evaluation is model-free (only the input checks below it).
ONLY: Dict[str, Tuple[str, ...]] = {"dnnod.evaluate": ("dnnod._validate",)}
#: Third-party packages only the figure code may import.
DRAWING = ("matplotlib", "ipywidgets", "anywidget")


def layer_of(module: str) -> int:
    best, idx = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, idx = len(p), i
    assert idx is not None, f"{module} is in no layer of tests/test_layout.py: add it"
    return idx


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> List[Tuple[str, int]]:
    """(absolute module name, line) of every import in the file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None or node.level and not node.module:
                # "from . import plot": each name may be a submodule
                out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((mod, node.lineno))
    return out


def _resolve(target: str) -> str:
    """``dnnod.localize.nms`` may name a function of a module: shorten to an existing module."""
    parts = target.split(".")
    while len(parts) > 1:
        p = ROOT.joinpath(*parts)
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return "dnnod"


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


def violations() -> List[str]:
    bad = []
    for path in MODULES:
        src = module_name(path)
        ls = layer_of(src)
        for target, line in imports_of(path):
            if target.split(".")[0] in DRAWING and layer_of(src) != layer_of("dnnod.viz"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}: only dnnod.viz draws")
            if not (target == "dnnod" or target.startswith("dnnod.")):
                continue
            dst = _resolve(target)
            if src in ONLY and dst != src and not any(dst == o or dst.startswith(o + ".")
                                                      for o in ONLY[src]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {dst}: {src} may import "
                           f"only {ONLY[src]}")
            ld = layer_of(dst)
            if ld > ls:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {dst} ({LAYERS[ld][0]}) from "
                           f"the {LAYERS[ls][0]} layer: the arrow runs the wrong way")
    return bad


def test_imports_run_one_way():
    bad = violations()
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_checker_catches_a_wrong_arrow(tmp_path, monkeypatch):
    """The checker itself: a core module importing the figure code, and the evaluation importing
    inference, must both be flagged (a checker that flags nothing would pass trivially)."""
    fake = tmp_path / "dnnod"
    (fake / "localize").mkdir(parents=True)
    (fake / "viz").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "viz" / "__init__.py").write_text("")
    (fake / "viz" / "plot.py").write_text("import matplotlib\n")
    (fake / "localize" / "__init__.py").write_text("def f():\n    from ..viz import plot\n")
    (fake / "evaluate.py").write_text("from .detect import detect\n")
    (fake / "detect.py").write_text("import ipywidgets\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", sorted(fake.rglob("*.py")))
    bad = "\n".join(violations())
    assert "localize/__init__.py:2 imports dnnod.viz " in bad
    assert "evaluate.py:1 imports dnnod.detect" in bad
    assert "detect.py:1 imports ipywidgets" in bad
    assert "viz/plot.py" not in bad


def test_import_dnnod_is_cheap():
    """``import dnnod`` and the whole detector load no figure, data-loading or training code."""
    code = ("import sys, dnnod, dnnod.localize, dnnod.detect, dnnod.refine, dnnod.evaluate, "
            "dnnod.checkpoint\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'ipywidgets', 'anywidget', 'scipy') or m in "
            "('dnnod.viz', 'dnnod.studies', 'dnnod.data', 'dnnod.train', 'dnnod.assess'))\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "", f"import dnnod loaded {out}"


@pytest.mark.parametrize("mod", ["dnnod.viz.plot", "dnnod.data", "dnnod.train"])
def test_cheap_import_test_can_fail(mod):
    """Importing a heavy module is seen by the same probe (so the test above can fail)."""
    code = (f"import sys, {mod}\n"
            "print(any(m in sys.modules for m in ('dnnod.viz', 'dnnod.data', 'dnnod.train')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "True"


def test_readme_layout_matches_the_tree():
    """README's "Layout" block names every module and subpackage of dnnod/, and nothing else."""
    import re
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named, folder = set(), None
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        names = re.findall(r"(?<![\w/.-])([A-Za-z_][\w]*(?:\.py|/))(?=\s|$)", line.split("  ", 1)[0] if indent == 0 else line)
        if indent == 2:
            folder = None
        for n in names:
            if indent == 0:
                continue                      # top-level folders (dnnod/, book/, ...)
            if indent == 4 and folder:
                named.add(folder + n)
            else:
                named.add(n)
                if n.endswith("/"):
                    folder = n
    actual = {p.name for p in PKG.glob("*.py") if p.name != "__init__.py"}
    actual |= {p.name + "/" for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("__")}
    actual |= {p.parent.name + "/" + p.name for p in PKG.glob("localize/*.py")
               if p.name != "__init__.py"}
    assert len(named) > 15
    assert named == actual, (f"README names {sorted(named - actual)} that do not exist and "
                             f"misses {sorted(actual - named)}")
