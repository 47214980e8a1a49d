"""What the nodes need from ComfyUI: model folders, model management, progress bars.

Every piece is optional: outside ComfyUI (tests, scripts) the pack still imports and runs on the
CPU, without the model-management and progress-bar hooks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checkpoint import HF_REPO, checkpoint_filename, load_model, resolve_checkpoint

if TYPE_CHECKING:
    from ..runtime import Metric3D

log = logging.getLogger("trt_metric3d")

MODEL_FOLDER = "metric3d"

try:
    import folder_paths
except ImportError:  # not running inside ComfyUI
    folder_paths = None

try:
    import comfy.model_management as model_management
    import comfy.model_patcher as model_patcher
    import comfy.utils as comfy_utils
    from comfy.patcher_extension import CallbacksMP
except ImportError:
    model_management = model_patcher = comfy_utils = CallbacksMP = None


def register_model_folder() -> None:
    """models/metric3d/ for checkpoints, as a ComfyUI model folder (extra_model_paths.yaml can add more)."""
    if folder_paths is not None:
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


def _controlnet_aux_checkpoint(filename: str) -> Path | None:
    """A checkpoint comfyui_controlnet_aux already downloaded (ckpts/JUGGHM/Metric3D/<file>)."""
    roots = [os.environ.get("AUX_ANNOTATOR_CKPTS_PATH")]
    if folder_paths is not None:
        roots += [
            os.path.join(p, "comfyui_controlnet_aux", "ckpts")
            for p in folder_paths.get_folder_paths("custom_nodes")
        ]
    for root in filter(None, roots):
        candidate = Path(root) / HF_REPO / filename
        if candidate.is_file():
            return candidate
    return None


def find_checkpoint(backbone: str) -> Path | None:
    """models/metric3d, then a comfyui_controlnet_aux download; None: the package's own resolution."""
    filename = checkpoint_filename(backbone)
    if folder_paths is not None:
        found = folder_paths.get_full_path(MODEL_FOLDER, filename)
        if found:
            return Path(found)
    return _controlnet_aux_checkpoint(filename)


def download_checkpoint(backbone: str) -> Path | None:
    """Into models/metric3d inside ComfyUI; None outside (the package then uses the HF cache)."""
    if folder_paths is None:
        return None
    import huggingface_hub

    target = folder_paths.get_folder_paths(MODEL_FOLDER)[0]
    log.info("Metric3D: downloading %s from %s into %s", checkpoint_filename(backbone), HF_REPO, target)
    return Path(huggingface_hub.hf_hub_download(HF_REPO, checkpoint_filename(backbone), local_dir=target))


def node_checkpoint(backbone: str) -> Path:
    """The checkpoint the nodes load: models/metric3d, controlnet_aux's download, a download into
    models/metric3d; outside ComfyUI, the package's own resolution."""
    return find_checkpoint(backbone) or download_checkpoint(backbone) or resolve_checkpoint(backbone)


def models_subfolder(*parts: str) -> Path | None:
    """models/<parts> inside ComfyUI; None outside (the package's own cache folders are used)."""
    if folder_paths is None:
        return None
    return Path(folder_paths.models_dir).joinpath(*parts)


def torch_device() -> torch.device:
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ManagedModel:
    """A PyTorch network that ComfyUI may move off the GPU when it needs the memory."""

    network: torch.nn.Module
    patcher: object | None
    checkpoint: Path

    def ready(self) -> torch.nn.Module:
        """The network on the compute device (ComfyUI frees other models first if needed)."""
        if self.patcher is not None:
            model_management.load_models_gpu([self.patcher], force_full_load=True)
        return self.network


def load_managed(backbone: str) -> ManagedModel:
    checkpoint = node_checkpoint(backbone)
    network = load_model(backbone, checkpoint)  # on the CPU; ComfyUI moves it when used
    if model_management is None:
        return ManagedModel(network.to(torch_device()), None, checkpoint)
    patcher = model_patcher.ModelPatcher(
        network, load_device=torch_device(), offload_device=model_management.unet_offload_device()
    )
    return ManagedModel(network, patcher, checkpoint)


class Metric3DRuntimeHandle(torch.nn.Module):
    """What ComfyUI's model management holds for a runtime (and names in its log): no weights."""


class ManagedRuntime:
    """A TensorRT / ONNX Runtime `Metric3D` that ComfyUI's model management can unload.

    It is registered as a weightless model whose size is the device memory the runtime took when
    opened. When ComfyUI unloads it (to make room for another model, or "free model cache"), the
    runtime is closed; the next use opens it again (a cached engine loads in seconds).
    """

    def __init__(self, open_runtime: Callable[[], Metric3D]) -> None:
        self.open_runtime = open_runtime
        device = torch_device()
        free_before = _free_device_memory(device)
        self.runtime = open_runtime()
        self.patcher = None
        if model_management is not None:
            taken = max(free_before - _free_device_memory(device), 1)  # 0 would mean "measure weights"
            self.patcher = model_patcher.ModelPatcher(
                Metric3DRuntimeHandle(),
                load_device=device,
                offload_device=model_management.unet_offload_device(),
                size=taken,
            )
            self.patcher.add_callback(CallbacksMP.ON_DETACH, self._release)

    def _release(self, patcher: object, unpatch_all: bool) -> None:
        if self.runtime is not None:
            log.info("Metric3D: %s runtime released (ComfyUI unloaded it)", self.runtime.backend)
            self.runtime.close()
            self.runtime = None

    def ready(self) -> Metric3D:
        """The runtime, reopened if ComfyUI unloaded it (ComfyUI first frees memory for it if needed)."""
        if self.patcher is not None:
            model_management.load_models_gpu([self.patcher], force_full_load=True)
        if self.runtime is None:
            self.runtime = self.open_runtime()
        return self.runtime


def _free_device_memory(device: torch.device) -> int:
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0


def save_folder(filename_prefix: str, width: int, height: int) -> tuple[Path, str, int, str]:
    """(folder, file name stem, first free counter, subfolder) for files saved under ComfyUI's output
    directory, as SaveImage names them; outside ComfyUI, the current directory."""
    if folder_paths is None:
        folder = Path.cwd() / Path(filename_prefix).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder, Path(filename_prefix).name, 1, str(Path(filename_prefix).parent)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), width, height
    )
    return Path(folder), name, counter, subfolder


class Progress:
    """ComfyUI's progress bar, or nothing outside ComfyUI."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = comfy_utils.ProgressBar(total) if comfy_utils is not None else None

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show_build(self, phase: str, fraction: float) -> None:
        """A TensorRT engine build's progress (phase, fraction done) on this bar and in the log."""
        if fraction == 0.0:
            log.info("Metric3D: building the TensorRT engine: %s", phase)
        if self.bar is not None:
            self.bar.update_absolute(round(fraction * self.total), self.total)
