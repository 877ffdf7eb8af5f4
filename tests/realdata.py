"""The real photos the tests read from ``$DNNOD_DATA`` (``../shared/data`` under ``make``): a skip
marker for tests that need Penn-Fudan, so a checkout without the data skips them with a reason."""
from pathlib import Path

import pytest

from dnnod.data import data_root


def pennfudan_available() -> bool:
    try:
        return (Path(data_root()) / "PennFudanPed" / "PNGImages").is_dir()
    except Exception:
        return False


needs_pf = pytest.mark.skipif(not pennfudan_available(), reason="Penn-Fudan not found (set DNNOD_DATA)")
