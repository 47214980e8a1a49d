"""Checkpoint -> FP32 ONNX (cached) -> mixed FP16 ONNX (cached) -> TensorRT engine (cached)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from filelock import FileLock

from ..checkpoint import load_model, resolve_checkpoint
from .builder import BuildProgress, ShapeProfile, build_engine, import_tensorrt, print_progress
from .cache import EngineCache, EngineSpec, file_sha256, workspace_dir

log = logging.getLogger("trt_metric3d")

EXPORT_DIR_ENV = "METRIC3D_EXPORT_DIR"


def exported_onnx(
    backbone: str, checkpoint: str | os.PathLike | None = None, folder: str | os.PathLike | None = None
) -> tuple[Path, Path, str]:
    """(FP32 ONNX, mixed FP16 ONNX, checkpoint sha256), exported once per checkpoint file."""
    from ..export import export_onnx
    from ..export.fp16 import convert_fp16

    checkpoint = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(backbone)
    digest = file_sha256(checkpoint)
    folder = Path(folder) if folder is not None else workspace_dir(EXPORT_DIR_ENV, "export")
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / f"{backbone}-{digest[:12]}.onnx"
    fp16 = fp32.with_suffix(".fp16.onnx")
    with FileLock(str(fp32) + ".lock"):
        if not fp32.is_file():
            log.info("exporting %s to %s", backbone, fp32)
            export_onnx(load_model(backbone, checkpoint), fp32)
        if not fp16.is_file():
            convert_fp16(fp32, fp16)
    return fp32, fp16, digest


def target_gpu(compute_capability: str | None) -> tuple[str, str]:
    """(GPU name, compute capability "86"): this machine's CUDA GPU, or an ahead-of-time target."""
    import torch

    if compute_capability is not None:
        return "aot", compute_capability.upper().removeprefix("SM")
    if not torch.cuda.is_available():
        raise RuntimeError(
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
) -> Path:
    """The FP16 engine for `backbone`, from the cache or built now.

    check_loads: deserialise a cached engine first (needs the GPU) and rebuild it if that fails.
    progress: called with (phase, fraction) while an engine is built (default: printed to stderr).
    """
    trt, flavour = import_tensorrt(flavour)  # fail before the export if TensorRT is missing
    profile = profile or ShapeProfile()
    gpu_name, capability = target_gpu(compute_capability)
    _, fp16_onnx, digest = exported_onnx(backbone, checkpoint, export_dir)
    spec = EngineSpec(
        backbone=backbone,
        checkpoint_sha256=digest,
        precision="fp16",
        profile=profile.as_dict(),
        flavour=flavour,
        trt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
    )
    cache = EngineCache(engine_dir)
    timing_cache = cache.folder / f"timing-{flavour}{trt.__version__}-sm{capability}.cache"
    return cache.get_or_build(
        spec,
        lambda: build_engine(
            fp16_onnx,
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
    from ..runtime.tensorrt_backend import EngineLoadError, deserialize

    try:
        deserialize(path, flavour)
    except EngineLoadError:
        return False
    return True
