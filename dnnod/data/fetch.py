"""The data root and the downloads of PASCAL VOC and Penn-Fudan (resumable, md5-checked).

Nothing here runs unless asked: tests and chapters read generated data or files under
``$DNNOD_DATA``; :func:`download` is what a Colab reader runs to fetch real data.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union


PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------------
# data root and downloads
# --------------------------------------------------------------------------------------------
def data_root() -> Path:
    """``$DNNOD_DATA`` if set, else a per-user cache folder (``$XDG_CACHE_HOME/dnnod`` on Linux,
    ``~/Library/Caches/dnnod`` on macOS, ``%LOCALAPPDATA%\\dnnod`` on Windows)."""
    env = os.environ.get("DNNOD_DATA")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "dnnod"


#: name -> list of (url, file name, md5, folder the archive unpacks to). md5 values are the
#: ones torchvision publishes for the same archives.
DATASETS: Dict[str, List[Tuple[str, str, Optional[str], str]]] = {
    "voc2007": [
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
         "VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64", "VOCdevkit/VOC2007"),
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
         "VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f", "VOCdevkit/VOC2007"),
    ],
    "voc2012": [
        ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
         "VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012"),
    ],
    "pennfudan": [
        # No published checksum exists for this archive (and we could not fetch it offline to
        # compute one): md5 None skips the check; the reader then validates every annotation.
        ("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip", "PennFudanPed.zip",
         None, "PennFudanPed"),
    ],
}


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: Optional[str], opener: Optional[Callable] = None,
           progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request,
    then verify the md5 (a mismatch deletes the file and raises)."""
    from tqdm.auto import tqdm
    opener = opener or urllib.request.urlopen
    if dest.exists() and (md5 is None or _md5(dest) == md5):
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = opener(req, timeout=60)
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(
            f"could not download {url} ({e}). Are you offline? Download it by hand into "
            f"{dest.parent} or set DNNOD_DATA to a folder that already holds the data.") from e
    with resp:
        status = getattr(resp, "status", None) or getattr(resp, "code", 200)
        if start and status != 206:       # the server ignored Range: start over
            start = 0
        total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
        total = int(total) + start if total else None
        with open(part, "ab" if start else "wb") as f, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                     disable=not progress) as bar:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    if md5 is not None:
        got = _md5(part)
        if got != md5:
            part.unlink()
            raise ValueError(f"checksum mismatch for {dest.name} from {url}: md5 {got}, expected "
                             f"{md5}; the partial file was deleted, run download() again")
    os.replace(part, dest)
    return dest


def download(name: str, root: Optional[PathLike] = None, *, opener: Optional[Callable] = None,
             progress: bool = True, extract: bool = True) -> Path:
    """Download and unpack ``"voc2007"``, ``"voc2012"`` or ``"pennfudan"`` into ``root``
    (default :func:`data_root`); resumable, md5-verified, with a progress bar. Returns the
    dataset folder. Meant for Colab: nothing else in dnnod calls it."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    root = Path(root) if root is not None else data_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for url, fname, md5, sub in DATASETS[name]:
        path = _fetch(url, root / fname, md5, opener=opener, progress=progress)
        folder = root / sub
        if extract:
            shutil.unpack_archive(str(path), str(root))
    return folder
