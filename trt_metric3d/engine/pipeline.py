"""Checkpoint -> FP32 ONNX (cached) -> mixed FP16 ONNX (cached) -> TensorRT engine (cached).

The ONNX stages are `export.stages`; this module adds the engine step and its cache key.

INT8 / FP8: FP32 ONNX -> calibrated Q/DQ ONNX (cached per calibration set and recipe) -> its mixed
FP16 version (cached) -> TensorRT engine (cached).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from ..choices import ENGINE_PRECISIONS
from ..errors import BackendUnavailable, InputError
from ..export.stages import exported_onnx, quantized_onnx
from .builder import (
    BuildProgress,
    ShapeProfile,
    build_engine,
    check_workspace,
    compute_capability_target,
    import_tensorrt,
    print_progress,
)
from .cache import EngineCache, EngineSpec
from .loader import EngineLoadError, deserialize

log = logging.getLogger("trt_metric3d")


def target_gpu(trt: ModuleType, compute_capability: str | None) -> tuple[str, str]:
    """(GPU name, compute capability "86"): this machine's CUDA GPU, or an ahead-of-time target."""
    import torch

    if compute_capability is not None:
        return "aot", compute_capability_target(trt, compute_capability).removeprefix("SM")
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "no CUDA GPU found: TensorRT builds for the GPU it runs on. With tensorrt-rtx you can build "
            "ahead of time for a GPU family: pass --compute-capability (e.g. SM86 for RTX 30xx)"
        )
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}{minor}"


def build(
    backbone: str,
    checkpoint: str | os.PathLike | None = None,
    profile: ShapeProfile | None = None,
    *,
    flavour: str | None = None,
    engine_dir: str | os.PathLike | None = None,
    export_dir: str | os.PathLike | None = None,
    workspace_gib: float = 4.0,
    compute_capability: str | None = None,
    check_loads: bool = False,
    progress: BuildProgress = print_progress,
    precision: str = "fp16",
    calibration: str | os.PathLike | None = None,
) -> Path:
    """The engine for `backbone`, from the cache or built now.

    precision: "fp16", or "int8" / "fp8" (calibrated on the photos in `calibration`, default: the
    bundled calibration/ photos; the rest of the graph in FP16).
    check_loads: deserialise a cached engine first (needs the GPU) and rebuild it if that fails.
    progress: called with (phase, fraction) while an engine is built (default: printed to stderr).
    """
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"engines are built in {', '.join(ENGINE_PRECISIONS)}, not {precision!r}")
    trt, flavour = import_tensorrt(flavour)  # fail before the export if TensorRT is missing
    check_workspace(workspace_gib)
    profile = profile or ShapeProfile()
    gpu_name, capability = target_gpu(trt, compute_capability)
    cache = EngineCache(engine_dir)
    cache.writable_folder()
    if precision == "fp16":
        _, graph, digest = exported_onnx(backbone, checkpoint, export_dir)
        quantization = ""
    else:
        _, graph, digest, quantization = quantized_onnx(
            backbone, precision, checkpoint, export_dir, calibration
        )
    spec = EngineSpec(
        backbone=backbone,
        checkpoint_sha256=digest,
        precision=precision,
        profile=profile.as_dict(),
        flavour=flavour,
        trt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        quantization=quantization,
    )
    timing_cache = cache.folder / f"timing-{flavour}{trt.__version__}-sm{capability}.cache"
    return cache.get_or_build(
        spec,
        lambda: build_engine(
            graph,
            profile,
            flavour=flavour,
            workspace_gib=workspace_gib,
            timing_cache=timing_cache,
            compute_capability=f"SM{capability}" if compute_capability else None,
            progress=progress,
        ),
        loads=(lambda path: _deserialises(path, flavour)) if check_loads else None,
    )


def _deserialises(path: Path, flavour: str) -> bool:
    try:
        deserialize(path, flavour)
    except EngineLoadError:
        return False
    return True
