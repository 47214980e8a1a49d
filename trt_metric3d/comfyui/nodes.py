"""ComfyUI nodes: drop-in replacements for comfyui_controlnet_aux's Metric3D nodes, plus metric depth.

The two preprocessor nodes keep the original IDs, inputs (same order, defaults and limits) and
outputs, so saved workflows load unchanged; unlike the original, the model is loaded once and kept
(ComfyUI may offload it), and a batch runs in chunks of several images per forward.
"""

from __future__ import annotations

import numpy as np
import torch

from ..annotator import controlnet_maps_batch
from ..model import BACKBONES
from ..runtime import Metric3D
from .host import ManagedModel, Progress, load_managed, register_model_folder, torch_device

MAX_RESOLUTION = 16384  # ComfyUI's / controlnet_aux's limit
CATEGORY = "ControlNet Preprocessors/Normal and Depth Estimators"
PRECISIONS = ("auto", "fp32", "fp16")
CHUNK = 4  # images per forward: memory stays bounded for long batches

_models: dict[tuple[str, str], ManagedModel] = {}


def managed_model(backbone: str) -> ManagedModel:
    """Loaded once per backbone and kept across runs; ComfyUI's model management owns its placement."""
    key = (backbone, str(torch_device()))
    if key not in _models:
        register_model_folder()
        _models[key] = load_managed(backbone)
    return _models[key]


def resolve_precision(device: torch.device, precision: str) -> str:
    """fp16 on CUDA unless fp32 is asked for; always fp32 on the CPU (fp16 is slower there)."""
    return "fp16" if device.type == "cuda" and precision in ("auto", "fp16") else "fp32"


def preprocessor_inputs() -> dict:
    """The original nodes' inputs, in their order, then ours."""
    return {
        "required": {"image": ("IMAGE",)},
        "optional": {
            "backbone": (list(BACKBONES), {"default": "vit-small"}),
            "fx": ("INT", {"default": 1000, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "fy": ("INT", {"default": 1000, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 64}),
            "precision": (list(PRECISIONS), {"default": "auto"}),
        },
    }


def run_maps(
    image: torch.Tensor, backbone: str, resolution: int, precision: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(depth, normal) node images for every frame of a ComfyUI IMAGE batch."""
    network = managed_model(backbone).ready()
    device = next(network.parameters()).device
    frames = np.asarray(image.cpu() * 255.0, dtype=np.uint8)  # as controlnet_aux converts
    progress, maps = Progress(len(frames)), []
    fp16 = resolve_precision(device, precision) == "fp16"
    with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
        for start in range(0, len(frames), CHUNK):
            chunk = list(frames[start : start + CHUNK])
            maps += controlnet_maps_batch(network, chunk, resolution)
            progress.update(len(chunk))
    return maps


def to_image_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)


class _ControlNetMap:
    """The original preprocessor node: one of the two node images (OUTPUT: 0 depth, 1 normal)."""

    OUTPUT = 0
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return preprocessor_inputs()

    def execute(self, image, backbone="vit-small", fx=1000, fy=1000, resolution=512, precision="auto"):
        # fx, fy are accepted for workflow compatibility; the original's images do not depend on them.
        maps = run_maps(image, backbone, resolution, precision)
        return (to_image_batch([pair[self.OUTPUT] for pair in maps]),)


class Metric3D_Depth_Map_Preprocessor(_ControlNetMap):
    OUTPUT = 0


class Metric3D_Normal_Map_Preprocessor(_ControlNetMap):
    OUTPUT = 1


class Metric3D_Metric_Depth:
    """Depth in metres (MASK layout, B x H x W) and the normal map, with fx / fy applied."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "image": ("IMAGE",),
                "backbone": (list(BACKBONES), {"default": "vit-small"}),
                "fx": ("FLOAT", {"default": 1000.0, "min": 1.0, "max": MAX_RESOLUTION, "step": 0.1}),
                "fy": ("FLOAT", {"default": 1000.0, "min": 1.0, "max": MAX_RESOLUTION, "step": 0.1}),
            },
            "optional": {"precision": (list(PRECISIONS), {"default": "auto"})},
        }

    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("depth_metres", "normal_map")
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, image, backbone="vit-small", fx=1000.0, fy=1000.0, precision="auto"):
        network = managed_model(backbone).ready()
        device = next(network.parameters()).device
        runtime = Metric3D(model=network, device=device, precision=resolve_precision(device, precision))
        progress, depths, normals = Progress(image.shape[0]), [], []
        for start in range(0, image.shape[0], CHUNK):
            result = runtime.predict(image[start : start + CHUNK], fx=fx, fy=fy)
            depths.append(result.depth.cpu())
            # Unit normals in [-1, 1] -> [0, 1] RGB.
            normals.append((result.normal.cpu() * 0.5 + 0.5).clamp(0, 1))
            progress.update(result.depth.shape[0])
        return torch.cat(depths), torch.cat(normals)


NODE_CLASS_MAPPINGS = {
    "Metric3D-DepthMapPreprocessor": Metric3D_Depth_Map_Preprocessor,
    "Metric3D-NormalMapPreprocessor": Metric3D_Normal_Map_Preprocessor,
    "Metric3D-MetricDepth": Metric3D_Metric_Depth,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Metric3D-DepthMapPreprocessor": "Metric3D Depth Map",
    "Metric3D-NormalMapPreprocessor": "Metric3D Normal Map",
    "Metric3D-MetricDepth": "Metric3D Metric Depth",
}
