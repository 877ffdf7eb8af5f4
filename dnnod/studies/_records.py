"""What every study row records about where it ran (shared by the studies' commands)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

__all__ = ["git_commit"]


def git_commit() -> Optional[str]:
    """The repository's short commit hash, or ``None`` outside a git checkout (an installed copy)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parents[2])
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
