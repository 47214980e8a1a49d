"""The package's dependencies, decided when it is installed (pyproject.toml marks them dynamic).

requirements.txt (what ComfyUI-Manager installs) plus torch, and OpenCV only where the environment
being installed into has no cv2 yet (install.py says why): a static list would add
opencv-python-headless beside comfyui_controlnet_aux's opencv-python. pip runs this with the target
environment's Python, so `has_module` sees that environment. A wheel built elsewhere (`python -m
build`, in its own empty environment) asks for OpenCV.
"""

import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # setuptools' build backend does not put the project on the path

from install import OPENCV, has_module  # noqa: E402

base = [
    line.split("#")[0].strip()
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]
setup(install_requires=["torch>=2.4", *base, *([] if has_module("cv2") else [OPENCV])])
