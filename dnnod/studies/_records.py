"""What every study row records about where it ran (shared by the studies' commands)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

__all__ = ["git_commit"]


def git_commit(root=None) -> Optional[str]:
    """The repository's short commit hash, with ``-dirty`` when tracked files differ from it (the
    code that ran is then not that commit's), or ``None`` outside a git checkout (an installed copy).
    ``root``: the checkout (default: the one this package lies in)."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=root)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10, cwd=root)
        dirty = st.returncode == 0 and st.stdout.strip() != ""
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
