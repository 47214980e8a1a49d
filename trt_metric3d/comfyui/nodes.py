"""What the ComfyUI nodes do, without ComfyUI's node API (that is `extension.py`).

Unlike comfyui_controlnet_aux's nodes, the model is loaded once and kept (ComfyUI may offload it),
and a batch runs in chunks of several images per forward. The optional `backend` input picks
TensorRT (engine built on first use, with a progress bar), ONNX Runtime, OpenVINO or PyTorch;
"auto" is TensorRT on a GPU where installed, else PyTorch (OpenVINO, faster on the CPU, when
asked for). Each runtime says once in the log which backend, precision and model file it runs; one
that cannot open says why and that PyTorch runs instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .. import choices
from ..annotator import runtime_controlnet_maps
from ..choices import QUANTIZED_PRECISIONS as QUANTIZED  # TensorRT or ONNX Runtime; PyTorch: its own
from ..engine import pipeline
from ..errors import Metric3DError
from ..io import write_npy, write_png
from ..results import depth_millimetres, depth_preview
from ..runtime import Metric3D
from ..runtime.precision import default_precision
from ..settings import RuntimeSettings
from .host import (
    ManagedModel,
    ManagedRuntime,
    Progress,
    load_managed,
    models_subfolder,
    node_checkpoint,
    register_model_folder,
    save_folder,
    torch_device,
)

log = logging.getLogger("trt_metric3d")

MAX_RESOLUTION = 16384  # ComfyUI's / controlnet_aux's limit
CATEGORY = "ControlNet Preprocessors/Normal and Depth Estimators"
BACKENDS = ("auto", "torch", *(name for name in choices.BACKENDS if name not in ("auto", "torch")))
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

    "auto" means TensorRT on a GPU in fp16, int8 or fp8, and ONNX Runtime in int8 / fp8 on the CPU;
    OpenVINO (fp32 / bf16, the CPU) when asked for.
    None means PyTorch: asked for, or the backend is not available here, which is logged once (per
    backbone, backend, precision and device).
    """
    if backend == "auto" and precision in QUANTIZED:
        backend = "tensorrt" if device.type == "cuda" else "onnxruntime"
    elif backend == "auto":  # on the CPU ComfyUI's managed PyTorch model: no ONNX export unasked
        backend = "tensorrt" if device.type == "cuda" and precision == "fp16" else "torch"
    if backend == "torch":
        return None
    key = (backbone, backend, precision, str(device))
    if key not in _accelerated:
        register_model_folder()
        progress = Progress(BUILD_STEPS)
        settings = RuntimeSettings(
            backbone,
            backend,
            precision,
            str(device),
            node_checkpoint(backbone),
            engine_dir=models_subfolder("tensorrt", "metric3d"),
            export_dir=models_subfolder("metric3d", "onnx"),
        )

        def open_runtime() -> Metric3D:
            return Metric3D.from_settings(settings, build_progress=progress.show_build)

        try:
            _accelerated[key] = ManagedRuntime(open_runtime)
            model_file = runtime_file(settings)
        # Not installed, no GPU or CUDA provider, fp32 asked of an FP16 engine, build or load failed.
        except (Metric3DError, ImportError, RuntimeError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning(
                "Metric3D: the %s backend could not be opened (%s); the nodes fall back to PyTorch",
                backend,
                reason,
            )
            _accelerated[key] = None
        else:
            say_what_runs(backbone, backend, precision, device, model_file)
    return _accelerated[key]


def runtime_file(settings: RuntimeSettings) -> Path:
    """The engine or ONNX file an opened runtime runs: the cache entry it opened, found again."""
    backbone, precision, checkpoint = settings.backbone, settings.precision, settings.checkpoint
    if settings.backend == "tensorrt":
        return pipeline.build(
            backbone,
            checkpoint,
            engine_dir=settings.engine_dir,
            export_dir=settings.export_dir,
            precision=precision,
        )
    if precision in QUANTIZED:
        return pipeline.quantized_onnx(backbone, precision, checkpoint, settings.export_dir)[0]
    fp32, fp16, _ = pipeline.exported_onnx(backbone, checkpoint, settings.export_dir)
    return fp16 if precision == "fp16" else fp32


def say_what_runs(backbone: str, backend: str, precision: str, device: torch.device, file: Path) -> None:
    log.info("Metric3D nodes: %s on %s, %s, %s, running %s", backbone, backend, precision, device, file)


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
        say_what_runs(backbone, "torch", torch_precision, device, managed_model(backbone).checkpoint)
    return _on_managed_model[key]


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


def controlnet_maps(
    image: torch.Tensor, output: int, backbone: str, resolution: int, backend: str, precision: str
) -> torch.Tensor:
    """The original preprocessor nodes' IMAGE batch: output 0 the depth maps, 1 the normal maps."""
    return to_image_batch(
        [pair[output] for pair in run_maps(image, backbone, resolution, backend, precision)]
    )


def metric_depth(
    image: torch.Tensor, backbone: str, fx: float, fy: float, backend: str, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth in metres (MASK layout, B x H x W) and the normal map (IMAGE), with fx / fy applied."""
    runtime = node_runtime(backbone, backend, precision)
    progress, depths, normals = Progress(image.shape[0]), [], []
    for start in range(0, image.shape[0], CHUNK):
        result = runtime.predict(image[start : start + CHUNK], fx=fx, fy=fy)
        depths.append(result.depth.cpu())
        # Unit normals in [-1, 1] -> [0, 1] RGB.
        normals.append((result.normal.cpu() * 0.5 + 0.5).clamp(0, 1))
        progress.update(result.depth.shape[0])
    return torch.cat(depths), torch.cat(normals)


def save_metric_depth(depth: torch.Tensor, filename_prefix: str) -> list[tuple[str, str]]:
    """Each frame of a MASK of metres as <prefix>_<counter>_depth.npy (float32 metres), _depth.png
    (uint16 millimetres) and _depth_preview.png (colours), in ComfyUI's output folder, numbered as
    SaveImage numbers its files. Returns the previews' (file name, subfolder)."""
    frames = depth.cpu().numpy().astype(np.float32)
    folder, name, counter, subfolder = save_folder(filename_prefix, frames.shape[2], frames.shape[1])
    previews = []
    for index, frame in enumerate(frames):
        stem = f"{name}_{counter + index:05}"
        millimetres, clipped = depth_millimetres(frame)
        if clipped:
            log.warning("Metric3D: %s: %d pixels beyond 65.535 m stored as 65535 mm", stem, clipped)
        write_npy(folder / f"{stem}_depth.npy", frame)
        write_png(folder / f"{stem}_depth.png", millimetres)
        write_png(folder / f"{stem}_depth_preview.png", depth_preview(frame))
        previews.append((f"{stem}_depth_preview.png", subfolder))
    return previews
