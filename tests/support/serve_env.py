"""A Python with PyTriton for the serving tests, beside the test environment.

PyTriton pins numpy < 2, while the test environment needs OpenCV 4.12 (numpy >= 2) to reproduce the
reference bit for bit, so one environment cannot hold both. Where PyTriton is not importable here,
the tests get a small virtual environment holding only PyTriton and its numpy < 2; everything else
(torch, OpenCV, this package) comes from the test environment, whose site-packages it appends to its
path. It is built once, under a lock, and kept in the user cache; offline, the tests skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

SERVE_REQUIREMENTS = ("nvidia-pytriton>=0.5",)  # the [serve] extra of pyproject.toml
CACHE_ENV = "TRT_METRIC3D_TEST_ENV_DIR"


def _env_dir() -> Path:
    """One side env per test environment: its .pth names that environment's site-packages."""
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "trt-metric3d" / "test-envs"))
    key = hashlib.sha256(f"{sys.prefix}|{sys.version}|{SERVE_REQUIREMENTS}".encode()).hexdigest()[:12]
    return root / f"serve-{key}"


def _python_in(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _build(env: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
    python = _python_in(env)
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *SERVE_REQUIREMENTS]
    result = subprocess.run(install, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(env, ignore_errors=True)
        pytest.skip(f"could not install {' '.join(SERVE_REQUIREMENTS)} (offline?): {result.stderr[-300:]}")
    # After the install, so pip never sees (or touches) the test environment's packages. addsitedir,
    # not a bare path, so the test environment's own .pth files (the editable install) are read too.
    purelib = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (purelib / "trt_metric3d_test_env.pth").write_text("\n".join(lines) + "\n")


def serve_python() -> Path:
    """A Python that imports pytriton and this package: this one when it can, else the side env."""
    if importlib.util.find_spec("pytriton") is not None:
        return Path(sys.executable)
    env = _env_dir()
    env.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(env) + ".lock"):
        ready = env / "ready"
        if not ready.is_file():
            _build(env)
            ready.touch()
    return _python_in(env)
