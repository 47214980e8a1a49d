"""Where the package keeps its files, and the helpers every cache shares.

The folders (checkpoints, ONNX exports, engines, calibration photos) each have an environment
variable that overrides them; a source checkout uses its own `export/`, `engines/`, `calibration/`;
an installed package uses ~/.cache/trt-metric3d/. Light on purpose (no torch, OpenCV or numpy): the
command line shows these folders in --help. Below the checkpoint, export and engine layers,
which all hash files and clean up after interrupted writes the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger("trt_metric3d")

CHECKPOINT_DIR_ENV = "METRIC3D_CHECKPOINT_DIR"
EXPORT_DIR_ENV = "METRIC3D_EXPORT_DIR"
ENGINE_DIR_ENV = "METRIC3D_ENGINE_DIR"
CALIBRATION_DIR_ENV = "METRIC3D_CALIBRATION_DIR"


def workspace_dir(env: str, name: str) -> Path:
    """$env, else the `name/` workspace of a source checkout, else ~/.cache/trt-metric3d/<name>."""
    if os.environ.get(env):
        return Path(os.environ[env])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trt-metric3d" / name


def file_sha256(path: str | os.PathLike, chunk: int = 2**24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temps(path: Path) -> None:
    """Remove what interrupted writes of `path` left: `.<name>.XXXXXXXX.tmp` files (atomic writes) and
    `.<name>.XXXXXXXX/` folders (staged exports). Call only under the lock every writer of `path` holds,
    so that whatever is found belongs to a writer that died."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[^.]+(\.tmp)?")
    for entry in [e for e in path.parent.iterdir() if pattern.fullmatch(e.name)]:
        log.warning("removing %s, left by an interrupted write of %s", entry, path.name)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def default_calibration_dir() -> Path:
    """$METRIC3D_CALIBRATION_DIR, else a source checkout's calibration/, else the photos installed
    with the package (a wheel ships calibration/ as trt_metric3d/calibration)."""
    folder = workspace_dir(CALIBRATION_DIR_ENV, "calibration")
    packaged = Path(__file__).resolve().parent / "calibration"
    return folder if folder.is_dir() or not packaged.is_dir() else packaged
