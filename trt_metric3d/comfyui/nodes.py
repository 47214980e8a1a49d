"""ComfyUI nodes: drop-in replacements for comfyui_controlnet_aux's Metric3D nodes, plus metric depth.

The two preprocessor nodes keep the original IDs, inputs (same order, defaults and limits) and
outputs, so saved workflows load unchanged; unlike the original, the model is loaded once and kept
(ComfyUI may offload it), and a batch runs in chunks of several images per forward. The optional
`backend` input picks TensorRT (engine built on first use, with a progress bar), ONNX Runtime or
PyTorch; "auto" is TensorRT on a GPU where installed, else PyTorch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..annotator import runtime_controlnet_maps
from ..export.quantize import (
    PRECISIONS as QUANTIZED,
)  # TensorRT or ONNX Runtime; PyTorch runs its own precision instead
from ..model import BACKBONES
from ..runtime import Metric3D
from ..runtime.precision import default_precision
from .host import (
    ManagedModel,
    ManagedRuntime,
    Progress,
    download_checkpoint,
    find_checkpoint,
    load_managed,
    models_subfolder,
    register_model_folder,
    torch_device,
)

log = logging.getLogger("trt_metric3d")

MAX_RESOLUTION = 16384  # ComfyUI's / controlnet_aux's limit
CATEGORY = "ControlNet Preprocessors/Normal and Depth Estimators"
BACKENDS = ("auto", "torch", "tensorrt", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", *QUANTIZED)
CHUNK = 4  # images per forward: memory stays bounded; the default engine profile's max batch
BUILD_STEPS = 100  # progress-bar resolution while an engine is built

_models: dict[tuple[str, str], ManagedModel] = {}
_accelerated: dict[tuple[str, str, str, str], ManagedRuntime | None] = {}
_on_managed_model: dict[tuple[str, str, str], Metric3D] = {}


def managed_model(backbone: str) -> ManagedModel:
    """Loaded once per backbone and kept across runs; ComfyUI's model management owns its placement."""
    key = (backbone, str(torch_device()))
    if key not in _models:
        register_model_folder()
        _models[key] = load_managed(backbone)
    return _models[key]


def resolve_precision(device: torch.device, precision: str) -> str:
    """fp32, bf16, int8 and fp8 as asked; "auto": PyTorch's default here (fp16 on CUDA, bf16 on a CPU
    with bf16 units, else fp32); fp16 on CUDA only (slower than fp32 on the CPU)."""
    if precision == "auto":
        return default_precision(device, "torch")
    if precision == "fp16":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def accelerated_runtime(
    backbone: str, backend: str, precision: str, device: torch.device
) -> ManagedRuntime | None:
    """A TensorRT / ONNX Runtime runtime, opened (the engine built) on first use and kept.

    "auto" means TensorRT on a GPU in fp16, int8 or fp8, and ONNX Runtime in int8 / fp8 on the CPU.
    None means PyTorch: asked for, or the backend is not available here, which is logged once (per
    backbone, backend, precision and device).
    """
    if backend == "auto" and precision in QUANTIZED:
        backend = "tensorrt" if device.type == "cuda" else "onnxruntime"
    elif backend == "auto":
        backend = "tensorrt" if device.type == "cuda" and precision == "fp16" else "torch"
    if backend == "torch":
        return None
    key = (backbone, backend, precision, str(device))
    if key not in _accelerated:
        register_model_folder()
        checkpoint = find_checkpoint(backbone) or download_checkpoint(backbone)
        progress = Progress(BUILD_STEPS)

        def open_runtime() -> Metric3D:
            return Metric3D(
                backbone,
                backend=backend,
                precision=precision,
                device=device,
                checkpoint=str(checkpoint) if checkpoint else None,
                build_progress=progress.show_build,
                engine_dir=models_subfolder("tensorrt", "metric3d"),
                export_dir=models_subfolder("metric3d", "onnx"),
            )

        try:
            _accelerated[key] = ManagedRuntime(open_runtime)
        # Not installed, no GPU or CUDA provider, fp32 asked of an FP16 engine, build failed.
        except (ImportError, RuntimeError, ValueError) as e:
            log.warning(
                "Metric3D: the %s backend is not available, the nodes use PyTorch instead: %s", backend, e
            )
            _accelerated[key] = None
    return _accelerated[key]


def node_runtime(backbone: str, backend: str, precision: str) -> Metric3D:
    """The runtime a node runs on: the accelerated one when available, else the managed PyTorch model."""
    device = torch_device()
    precision = resolve_precision(device, precision)
    accelerated = accelerated_runtime(backbone, backend, precision, device)
    if accelerated is not None:
        return accelerated.ready()
    torch_precision = resolve_precision(device, "auto") if precision in QUANTIZED else precision
    network = managed_model(backbone).ready()  # ComfyUI loads it onto the GPU (again) if needed
    key = (backbone, torch_precision, str(device))
    if key not in _on_managed_model:
        if torch_precision != precision:  # said once: PyTorch runs no Q/DQ graph
            log.warning("Metric3D: PyTorch runs in %s, not %s", torch_precision, precision)
        _on_managed_model[key] = Metric3D(model=network, device=device, precision=torch_precision)
    return _on_managed_model[key]


def preprocessor_inputs() -> dict:
    """The original nodes' inputs, in their order, then ours."""
    return {
        "required": {"image": ("IMAGE",)},
        "optional": {
            "backbone": (list(BACKBONES), {"default": "vit-small"}),
            "fx": ("INT", {"default": 1000, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "fy": ("INT", {"default": 1000, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 64}),
            **runtime_inputs(),
        },
    }


def runtime_inputs() -> dict:
    return {
        "backend": (list(BACKENDS), {"default": "auto"}),
        "precision": (list(PRECISIONS), {"default": "auto"}),
    }


def run_maps(
    image: torch.Tensor, backbone: str, resolution: int, backend: str, precision: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(depth, normal) node images for every frame of a ComfyUI IMAGE batch."""
    runtime = node_runtime(backbone, backend, precision)
    frames = np.asarray(image.cpu() * 255.0, dtype=np.uint8)  # as controlnet_aux converts
    progress, maps = Progress(len(frames)), []
    for start in range(0, len(frames), CHUNK):
        chunk = list(frames[start : start + CHUNK])
        maps += runtime_controlnet_maps(runtime, chunk, resolution)
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

    def execute(
        self, image, backbone="vit-small", fx=1000, fy=1000, resolution=512, backend="auto", precision="auto"
    ):
        # fx, fy are accepted for workflow compatibility; the original's images do not depend on them.
        maps = run_maps(image, backbone, resolution, backend, precision)
        return (to_image_batch([pair[self.OUTPUT] for pair in maps]),)


class Metric3D_Depth_Map_Preprocessor(_ControlNetMap):
    OUTPUT = 0


class Metric3D_Normal_Map_Preprocessor(_ControlNetMap):
    OUTPUT = 1


class Metric3D_Metric_Depth:
    """Depth in metres (MASK layout, B x H x W) and the normal map, with fx / fy applied."""

    DESCRIPTION = (
        "Metric depth in metres (not 0..1: viewed as an image it is white beyond 1 m; normalise it "
        "first) and the surface-normal map. fx, fy: the image's focal lengths in pixels."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "image": ("IMAGE",),
                "backbone": (list(BACKBONES), {"default": "vit-small"}),
                "fx": ("FLOAT", {"default": 1000.0, "min": 1.0, "max": MAX_RESOLUTION, "step": 0.1}),
                "fy": ("FLOAT", {"default": 1000.0, "min": 1.0, "max": MAX_RESOLUTION, "step": 0.1}),
            },
            "optional": runtime_inputs(),
        }

    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("depth_metres", "normal_map")
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, image, backbone="vit-small", fx=1000.0, fy=1000.0, backend="auto", precision="auto"):
        runtime = node_runtime(backbone, backend, precision)
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
