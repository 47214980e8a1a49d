"""Adds OpenCV where no cv2 is installed; ComfyUI-Manager and comfy-cli run it after requirements.txt.

Several distributions provide `cv2` (opencv-python, opencv-python-headless, opencv-contrib-python,
their -headless twins); pip installs a second one beside the first, both writing the same cv2/
folder, and removing or upgrading either later breaks `import cv2`. So any cv2 already installed
(comfyui_controlnet_aux brings opencv-python) is used as it is, and opencv-python-headless is
installed only where there is none. setup.py asks the same question for `pip install .`.
"""

from __future__ import annotations

import subprocess
import sys

OPENCV = "opencv-python-headless>=4.8"


def has_module(name: str, python: str = sys.executable) -> bool:
    """Whether `python`'s environment has a top-level module `name`, from any distribution.

    Looked up, not imported (opencv-python on a machine without libGL fails to import but still owns
    cv2/), in a fresh `python -I`: pip builds a package with the environment's own site-packages
    hidden, and -I sees them again.
    """
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    return subprocess.run([python, "-I", "-c", code]).returncode == 0


def main() -> None:
    if has_module("cv2"):
        print("trt-metric3d: cv2 is installed; using it as it is")
        return
    print(f"trt-metric3d: no cv2 installed; installing {OPENCV}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", OPENCV])


if __name__ == "__main__":
    main()
