"""Running the widgets' JavaScript under Node (tests that compare it with the Python it repeats)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")


def needs_node(what: str):
    """A ``pytestmark`` that skips a module where Node is missing."""
    return pytest.mark.skipif(NODE is None, reason=f"node not on PATH (Node >= 18 runs {what}; "
                              "apt-get install -y nodejs)")


def run_module(esm: Path, as_name: str, runner: str, payload, folder: Path, timeout: int = 300):
    """Copy the ES module ``esm`` to ``folder/as_name``, run the ``runner`` script (which imports
    it as ``./as_name`` and reads JSON on stdin) with ``payload`` and return its JSON output."""
    (folder / as_name).write_text(esm.read_text())
    (folder / "run.mjs").write_text(runner)
    r = subprocess.run([NODE, str(folder / "run.mjs")], input=json.dumps(payload),
                       capture_output=True, text=True, timeout=timeout, cwd=folder)
    assert r.returncode == 0, f"node failed:\n{r.stderr[-3000:]}"
    return json.loads(r.stdout)
