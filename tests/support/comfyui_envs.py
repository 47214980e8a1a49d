"""Virtual environments for the install tests: a ComfyUI user's Python, built with pip.

Each test environment is a fresh venv whose torch (and, for a ComfyUI run, ComfyUI's own
requirements) comes from a layer beneath it, named in a .pth file: pip sees those packages as
installed and adds only what the pack and comfyui_controlnet_aux bring, into the venv itself. The
torch layer is a folder of links to torch and what it needs in this test environment, and nothing
else (this environment's own OpenCV and ONNX Runtime must stay out of sight). Downloaded wheels are
kept in a wheelhouse under $TRT_METRIC3D_TEST_ENV_DIR (the user cache by default); offline, the tests
that need them skip.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock
from packaging.requirements import Requirement

from support.reference import REPO_ROOT

CACHE_ENV = "TRT_METRIC3D_TEST_ENV_DIR"
# comfyui_controlnet_aux's requirements.txt (commit e8b689a) names these two as they are here.
CONTROLNET_AUX = ("opencv-python", "onnxruntime-gpu")
CV2_OR_ONNXRUNTIME = ("opencv", "onnxruntime")


def cache_root() -> Path:
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "trt-metric3d" / "test-envs"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def python_in(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    """A command that must succeed; its output is shown when it does not."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result


def wheelhouse(*requirements: str) -> Path:
    """A folder holding wheels for `requirements` (and their dependencies), downloaded once."""
    key = hashlib.sha256(f"{sys.version_info[:2]}|{requirements}".encode()).hexdigest()[:12]
    folder = cache_root() / f"wheels-{key}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / "ready").is_file():
            command = [sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), *requirements]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"could not download {' '.join(requirements)} (offline?): {result.stderr[-300:]}")
            (folder / "ready").touch()
    return folder


def _closure(name: str) -> list[metadata.Distribution]:
    """`name`'s distribution and those it requires (no extras), installed here."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def torch_layer() -> Path:
    """A folder of links to this environment's torch and what it requires, as site-packages."""
    torch_version = metadata.version("torch")
    folder = (
        cache_root() / f"torch-{hashlib.sha256(f'{sys.prefix}|{torch_version}'.encode()).hexdigest()[:12]}"
    )
    with FileLock(str(folder) + ".lock"):
        if not (folder / "ready").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for dist in _closure("torch"):
                for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
                    source = Path(dist.locate_file(top))
                    if (
                        source.exists()
                        and not (folder / top).exists()
                        and top != "__pycache__"
                        and not top.endswith(".pth")
                    ):
                        (folder / top).symlink_to(source)
            (folder / "ready").touch()
    return folder


def _venv_template(without_setuptools: bool) -> Path:
    """A venv as `python -m venv` makes it (with the setuptools it brings removed, where asked), made
    once and copied for each test: making one runs ensurepip, the slowest step of a test's set-up."""
    key = hashlib.sha256(f"{sys.version}|{without_setuptools}".encode()).hexdigest()[:12]
    template = cache_root() / f"venv-{key}"
    with FileLock(str(template) + ".lock"):
        if not (template / "ready").is_file():
            run([sys.executable, "-m", "venv", "--clear", template])
            if without_setuptools:
                run([python_in(template), "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
            (template / "ready").touch()
    return template


def fresh_venv(env: Path, layers: list[Path]) -> Path:
    """A new venv at `env` that also sees the site-packages folders in `layers`; its Python. (A copy of
    a template: a venv finds its prefix from where its python is, so a copy is a venv of its own.)"""
    # the venv's own old setuptools would hide the one the layers' torch asks for
    shutil.copytree(_venv_template(without_setuptools=bool(layers)), env, symlinks=True)
    (env / "ready").unlink()
    python = python_in(env)
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(purelib) / "zz_layers.pth").write_text("".join(f"{layer}\n" for layer in layers))
    return python


def site_packages(python: Path) -> list[Path]:
    """The site-packages folders of another Python's environment (to layer under a fresh venv)."""
    code = "import site, sys; print('\\n'.join(p for p in sys.path if p.endswith('site-packages')))"
    return [Path(p) for p in run([python, "-c", code]).stdout.split()]


def opencv_and_onnxruntime(python: Path) -> list[str]:
    """`pip list | grep -iE "opencv|onnxruntime"` in that environment."""
    listed = run([python, "-m", "pip", "list", "--format=freeze"]).stdout.splitlines()
    return sorted(line for line in listed if line.lower().startswith(CV2_OR_ONNXRUNTIME))


def copy_of_the_repository(dest: Path) -> Path:
    """What `git clone` of this repository gives (with the working tree's changes): its tracked and
    not-ignored files."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def manager_install(python: Path, pack: Path) -> list[str]:
    """What ComfyUI-Manager (and comfy-cli, through it) does after cloning a pack: `pip install` each
    line of requirements.txt (comments skipped), then `python install.py`. Returns the commands."""
    commands = []
    for line in (pack / "requirements.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            commands.append([python, "-m", "pip", "install", requirement])
    if (pack / "install.py").is_file():
        commands.append([python, "install.py"])
    for command in commands:
        run(command, cwd=pack)
    return [" ".join(map(str, c[1:])) for c in commands]


def comfyui_layers(comfyui_dir: Path) -> list[Path]:
    """site-packages folders that hold ComfyUI's requirements, to layer under a fresh venv: those of
    $COMFYUI_PYTHON's environment when set, else of a venv built once from the checkout's
    requirements.txt with this environment's torch version from PyPI. (A CPU-only torch build will
    not do: ComfyUI imports torchvision, whose PyPI wheels need the CUDA build of torch; the CUDA
    build runs on the CPU too. So pip runs here without this machine's pip configuration, which may
    point at local CPU wheels.)"""
    if os.environ.get("COMFYUI_PYTHON"):
        return site_packages(Path(os.environ["COMFYUI_PYTHON"]))
    requirements = (comfyui_dir / "requirements.txt").read_text()
    torch = f"torch=={metadata.version('torch').split('+')[0]}"
    env = cache_root() / f"comfyui-{hashlib.sha256(f'{requirements}|{torch}'.encode()).hexdigest()[:12]}"
    with FileLock(str(env) + ".lock"):
        if not (env / "ready").is_file():
            python = fresh_venv(env, [])
            pip_env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
            pip_env["PIP_CONFIG_FILE"] = os.devnull
            # ComfyUI 0.3.64 imports requests without listing it (other packages used to bring it).
            requirements_txt = comfyui_dir / "requirements.txt"
            command = [python, "-m", "pip", "install", "-q", torch, "requests", "-r", requirements_txt]
            result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=pip_env)
            if result.returncode != 0:
                pytest.skip(f"could not install ComfyUI's requirements (offline?): {result.stderr[-300:]}")
            (env / "ready").touch()
    return [p for p in site_packages(python_in(env)) if p.is_relative_to(env)]
