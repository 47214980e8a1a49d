"""The repository works whatever its folder is called (a `git clone` names it `trt-metric3d`)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.reference import REPO_ROOT


@pytest.mark.parametrize("folder", ["trt-metric3d", "trt_metric3d_clone"])
def test_pytest_runs_in_a_clone_of_any_folder_name(tmp_path, folder):
    clone = tmp_path / folder
    (clone / "tests").mkdir(parents=True)
    # the root as pytest sees it: ComfyUI's __init__.py, the config, and the tests' own set-up
    for name in ("__init__.py", "pyproject.toml", "tests/conftest.py"):
        shutil.copy(REPO_ROOT / name, clone / name)
    shutil.copytree(REPO_ROOT / "tests" / "support", clone / "tests" / "support")
    (clone / "tests" / "test_probe.py").write_text("def test_probe():\n    assert 1 + 1 == 2\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_every_subpackage_ships():
    tomllib = pytest.importorskip("tomllib")
    find_packages = pytest.importorskip("setuptools").find_packages

    listed = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = find_packages(str(REPO_ROOT), include=["trt_metric3d*"])
    assert set(found) <= set(listed), f"add {sorted(set(found) - set(listed))} to pyproject.toml packages"


def test_a_wheel_ships_the_calibration_photos(tmp_path):
    """`check` without --images uses them in an installed (non-editable) package."""
    pytest.importorskip("setuptools")  # the build backend, used without build isolation (offline)
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info"))
    wheel_command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    result = subprocess.run(
        [sys.executable, "-m", *wheel_command], cwd=source, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            Path(name).name for name in archive.namelist() if name.startswith("trt_metric3d/calibration/")
        }
    expected = {p.name for p in (REPO_ROOT / "calibration").iterdir() if p.suffix == ".jpg"}
    assert expected and expected <= shipped
