"""Where the package keeps what it makes: the export/, engines/ and calibration/ workspaces.

Light on purpose (no torch, OpenCV or numpy): the command line shows these folders in --help.
"""

from __future__ import annotations

import os
from pathlib import Path

ENGINE_DIR_ENV = "METRIC3D_ENGINE_DIR"
EXPORT_DIR_ENV = "METRIC3D_EXPORT_DIR"
CALIBRATION_DIR_ENV = "METRIC3D_CALIBRATION_DIR"


def workspace_dir(env: str, name: str) -> Path:
    """$env, else the `name/` workspace of a source checkout, else ~/.cache/trt-metric3d/<name>."""
    if os.environ.get(env):
        return Path(os.environ[env])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trt-metric3d" / name


def default_calibration_dir() -> Path:
    """$METRIC3D_CALIBRATION_DIR, else a source checkout's calibration/, else the photos installed
    with the package (a wheel ships calibration/ as trt_metric3d/calibration)."""
    folder = workspace_dir(CALIBRATION_DIR_ENV, "calibration")
    packaged = Path(__file__).resolve().parent / "calibration"
    return folder if folder.is_dir() or not packaged.is_dir() else packaged
