"""Installing the pack the ComfyUI way and the README's way, beside comfyui_controlnet_aux's packages.

Real pip into fresh venvs (tests/support/comfyui_envs.py: torch comes from a layer, wheels are downloaded
once); offline, these skip. What each environment lists for OpenCV / ONNX Runtime before and after is
printed (pytest -s shows it).
"""

from __future__ import annotations

import os
import shutil
import textwrap

import numpy as np
import pytest

from support import comfyui_envs as envs
from support.reference import load_arrays

pytestmark = pytest.mark.environments  # real pip installs: their own step of .ci/run


@pytest.fixture(scope="module")
def wheels():
    return envs.wheelhouse(*envs.CONTROLNET_AUX, "opencv-contrib-python")


@pytest.fixture(scope="module")
def torch_layer():
    return envs.torch_layer()


def offline_pack_env(small_checkpoint, export_dir=None) -> dict:
    env = {**os.environ, "METRIC3D_CHECKPOINT_DIR": str(small_checkpoint.parent), "HF_HUB_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    if export_dir is not None:
        env["METRIC3D_EXPORT_DIR"] = str(export_dir)
    return env


def test_a_fresh_machine_gets_what_the_readme_command_needs(tmp_path, torch_layer, small_checkpoint):
    python = envs.fresh_venv(tmp_path / "venv", [torch_layer])
    before = envs.opencv_and_onnxruntime(python)
    clone = envs.copy_of_the_repository(tmp_path / "trt-metric3d")
    envs.run([python, "-m", "pip", "install", "-q", "."], cwd=clone)  # the README: pip install .
    after = envs.opencv_and_onnxruntime(python)
    print(f"\nfresh venv: before {before}, after pip install . {after}")
    assert before == [] and [line.split("==")[0] for line in after] == ["opencv-python-headless"]
    envs.run([python, "-m", "pip", "check"])
    photo = tmp_path / "photo.jpg"
    ref, _ = load_arrays("vit-small", "coffee", "model")
    import cv2

    cv2.imwrite(str(photo), np.ascontiguousarray(ref["input_u8"][::4, ::4, ::-1]))
    command = [python.parent / "trt-metric3d", "infer", "photo.jpg", "--fx", "1400"]
    envs.run(command, cwd=tmp_path, env=offline_pack_env(small_checkpoint))
    depth = np.load(tmp_path / "depth_out" / "photo_depth.npy")
    assert depth.shape == (100, 150) and np.isfinite(depth).all() and depth.min() > 0


def test_manager_style_install_adds_opencv_where_there_is_none(tmp_path, torch_layer):
    python = envs.fresh_venv(tmp_path / "venv", [torch_layer])
    pack = envs.copy_of_the_repository(tmp_path / "custom_nodes" / "trt-metric3d")
    envs.manager_install(python, pack)
    after = envs.opencv_and_onnxruntime(python)
    print(f"\nfresh venv, Manager-style: before [], after {after}")
    assert [line.split("==")[0] for line in after] == ["opencv-python-headless"]
    envs.run([python, "-m", "pip", "check"])
    envs.run([python, "-c", "import cv2, huggingface_hub, filelock, PIL"], cwd=tmp_path)


NODE_ON_ONNXRUNTIME = textwrap.dedent(
    """
    import sys, numpy as np, torch, cv2, onnxruntime
    from importlib.metadata import packages_distributions
    from trt_metric3d.comfyui import nodes
    image = torch.from_numpy(np.load(sys.argv[1]))
    out = nodes.controlnet_maps(image, 0, "vit-small", 64, "onnxruntime", "auto")
    (runtime,) = [r.runtime for r in nodes._accelerated.values() if r is not None]
    np.save(sys.argv[2], out.numpy())
    provider = runtime._backend.session.get_providers()[0]
    print(runtime.backend, provider, packages_distributions()["onnxruntime"])
    """
)


def test_beside_controlnet_aux_one_distribution_per_module(
    tmp_path, wheels, torch_layer, small_checkpoint, small_onnx, pack_images
):
    """controlnet_aux's opencv-python and onnxruntime-gpu first, then the pack, Manager-style and then
    `pip install .`: still one cv2 and one onnxruntime, the full OpenCV build, and the node runs on
    the onnxruntime backend on the GPU build's CPU provider."""
    python = envs.fresh_venv(tmp_path / "venv", [torch_layer])
    envs.run([python, "-m", "pip", "install", "-q", "--find-links", wheels, *envs.CONTROLNET_AUX])
    before = envs.opencv_and_onnxruntime(python)
    pack = envs.copy_of_the_repository(tmp_path / "custom_nodes" / "trt-metric3d")
    commands = envs.manager_install(python, pack)
    after_manager = envs.opencv_and_onnxruntime(python)
    envs.run([python, "-m", "pip", "install", "-q", "."], cwd=pack)
    after_pip = envs.opencv_and_onnxruntime(python)
    print(f"\ncontrolnet_aux venv: before {before}\n  Manager-style ({commands}): {after_manager}")
    print(f"  then pip install .: {after_pip}")
    names = [line.split("==")[0] for line in before]
    assert names == ["onnxruntime-gpu", "opencv-python"]
    assert [line.split("==")[0] for line in after_manager] == names == [x.split("==")[0] for x in after_pip]
    envs.run([python, "-m", "pip", "check"])
    gui = envs.run([python, "-c", "import cv2; print(cv2.getBuildInformation())"]).stdout
    assert "GUI:                           NONE" not in gui and "highgui" in gui, "the headless cv2 won"

    export = tmp_path / "export"
    shutil.copytree(small_onnx[0].parent, export)  # the session's export: no onnx / onnxscript needed there
    env = offline_pack_env(small_checkpoint, export)
    image, expected = pack_images
    np.save(tmp_path / "image.npy", image)
    script = [python, "-c", NODE_ON_ONNXRUNTIME, tmp_path / "image.npy", tmp_path / "out.npy"]
    said = envs.run(script, env=env, cwd=tmp_path)  # not the repository: the installed pack
    assert said.stdout.split() == ["onnxruntime", "CPUExecutionProvider", "['onnxruntime-gpu']"]
    # OpenCV 4.12 here, controlnet_aux's newer opencv-python there: resizes may round 1 level apart.
    assert np.abs(np.load(tmp_path / "out.npy") - expected).max() <= 1 / 255 + 1e-6


def test_pip_install_keeps_opencv_contrib(tmp_path, wheels, torch_layer):
    python = envs.fresh_venv(tmp_path / "venv", [torch_layer])
    envs.run([python, "-m", "pip", "install", "-q", "--find-links", wheels, "opencv-contrib-python"])
    before = envs.opencv_and_onnxruntime(python)
    clone = envs.copy_of_the_repository(tmp_path / "trt-metric3d")
    envs.run([python, "-m", "pip", "install", "-q", "."], cwd=clone)
    after = envs.opencv_and_onnxruntime(python)
    print(f"\nopencv-contrib-python venv: before {before}, after pip install . {after}")
    assert before == after and [line.split("==")[0] for line in after] == ["opencv-contrib-python"]
    envs.run([python, "-m", "pip", "check"])
    envs.run([python, "-c", "import cv2; cv2.ximgproc; import trt_metric3d.annotator"], cwd=tmp_path)


@pytest.fixture(scope="module")
def pack_images(small_model):
    """A small image and the depth map this environment's node code draws of it (PyTorch)."""
    import torch

    from trt_metric3d.annotator import runtime_controlnet_maps
    from trt_metric3d.comfyui import nodes
    from trt_metric3d.runtime import Metric3D

    image = torch.rand(1, 48, 72, 3, generator=torch.Generator().manual_seed(3))
    maps = runtime_controlnet_maps(
        Metric3D(model=small_model, device="cpu"), list(np.asarray(image * 255.0, dtype=np.uint8)), 64
    )
    return image.numpy(), nodes.to_image_batch([depth for depth, _ in maps]).numpy()
