"""Checkpoint -> FP32 ONNX (cached) -> mixed FP16 ONNX (cached) -> TensorRT engine (cached).

INT8 / FP8: FP32 ONNX -> calibrated Q/DQ ONNX (cached per calibration set and recipe) -> its mixed
FP16 version (cached) -> TensorRT engine (cached).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from filelock import FileLock

from .. import export
from ..checkpoint import load_model, resolve_checkpoint
from ..choices import ENGINE_PRECISIONS
from ..errors import BackendUnavailable, InputError
from ..export import quantize, staging
from ..io import writable_folder
from ..workspace import EXPORT_DIR_ENV, workspace_dir
from .builder import (
    BuildProgress,
    ShapeProfile,
    build_engine,
    check_workspace,
    compute_capability_target,
    import_tensorrt,
    print_progress,
)
from .cache import EngineCache, EngineSpec, file_sha256, remove_stale_temps

log = logging.getLogger("trt_metric3d")

EXPORT_DIR_FIX = f"choose another with --out (export), --export-dir (build) or {EXPORT_DIR_ENV}"
EXPORT_MODULES = ("onnx", "onnxscript")  # torch's ONNX exporter and our FP16 conversion


def _needs_export(path: Path) -> bool:
    """True when `path` must be (re)written: missing, or damaged (said once, naming the file)."""
    damage = staging.damage(path)
    if damage is not None and (path.exists() or staging.manifest_path(path).exists()):
        log.warning("%s cannot be used (%s): exporting it again", path, damage)
    return damage is not None


def _to_redo(chain: tuple[Path, ...]) -> list[bool]:
    """Per file of `chain` (each made from the one before): whether it must be (re)made. Leftovers of
    interrupted writes are removed first; call under the lock every writer of the chain holds."""
    for output in chain:
        remove_stale_temps(output)
        remove_stale_temps(staging.manifest_path(output))
    redo, flags = False, []
    for output in chain:
        redo = redo or _needs_export(output)
        flags.append(redo)
    return flags


def exported_onnx(
    backbone: str, checkpoint: str | os.PathLike | None = None, folder: str | os.PathLike | None = None
) -> tuple[Path, Path, str]:
    """(FP32 ONNX, mixed FP16 ONNX, checkpoint sha256), exported once per checkpoint file.

    Each file is checked against the manifest written with it; a damaged one is exported again.
    """
    folder = writable_folder(  # checked before a checkpoint download
        folder if folder is not None else workspace_dir(EXPORT_DIR_ENV, "export"), EXPORT_DIR_FIX
    )
    checkpoint = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(backbone)
    digest = file_sha256(checkpoint)
    fp32 = folder / f"{backbone}-{digest[:12]}.onnx"
    fp16 = fp32.with_suffix(".fp16.onnx")
    with FileLock(str(fp32) + ".lock"):  # held by every writer of both files and their manifests
        redo_fp32, redo_fp16 = _to_redo((fp32, fp16))
        if redo_fp16:
            for name in EXPORT_MODULES:  # before minutes spent loading and tracing the model
                export.import_onnx_extra(name)
        if redo_fp32:
            log.info("exporting %s to %s", backbone, fp32)
            export.export_onnx(load_model(backbone, checkpoint), fp32)
        if redo_fp16:
            from ..export.fp16 import convert_fp16

            convert_fp16(fp32, fp16)
    return fp32, fp16, digest


def quantization_key(precision: str, calibration: list[Path], canvas_hw: tuple[int, int] | None) -> str:
    """What a Q/DQ graph depends on besides the checkpoint: precision, calibration set, recipe, modelopt."""
    record = {
        "precision": precision,
        "calibration": quantize.calibration_digest(calibration),
        "canvas_hw": canvas_hw,
        "recipe": quantize.RECIPE,
        "modelopt": version("nvidia-modelopt"),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


def quantized_onnx(
    backbone: str,
    precision: str,
    checkpoint: str | os.PathLike | None = None,
    folder: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    canvas_hw: tuple[int, int] | None = None,
) -> tuple[Path, Path, str, str]:
    """(Q/DQ ONNX, its mixed FP16 version for TensorRT, checkpoint sha256, quantization key) for
    precision int8 or fp8, calibrated once per checkpoint, calibration set and recipe.

    calibration: a folder of photos (default: the bundled calibration/ photos).
    canvas_hw: calibrate on photos resized to this (height, width) instead of the real canvases (tests).
    """
    quantize.check_precision(precision)
    photos = quantize.calibration_images(calibration)
    quantize.import_modelopt()  # before an export and a calibration that would need it
    fp32, _, digest = exported_onnx(backbone, checkpoint, folder)
    key = quantization_key(precision, photos, canvas_hw)
    qdq = fp32.with_name(f"{fp32.stem}.{precision}-{key}.onnx")
    mixed = qdq.with_suffix(".fp16.onnx")
    with FileLock(str(qdq) + ".lock"):  # held by every writer of both files and their manifests
        redo_qdq, redo_mixed = _to_redo((qdq, mixed))
        if redo_qdq:
            quantize.quantize_onnx(fp32, qdq, precision, quantize.calibration_canvases(photos, canvas_hw))
        if redo_mixed:
            from ..export.fp16 import convert_fp16

            convert_fp16(qdq, mixed)
    return qdq, mixed, digest, key


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
    from ..runtime.tensorrt_backend import EngineLoadError, deserialize

    try:
        deserialize(path, flavour)
    except EngineLoadError:
        return False
    return True
