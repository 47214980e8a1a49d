"""The cached ONNX stages: checkpoint -> FP32 ONNX -> mixed FP16 ONNX; FP32 ONNX -> calibrated
INT8 / FP8 Q/DQ ONNX -> its mixed FP16 version; FP32 ONNX -> ONNX Runtime's integer INT8 graph (CPU).

Each file is made once per input (checkpoint; calibration set and recipe), under a lock, with a
manifest that tells a complete file from a damaged one (re-exported with one warning). ONNX Runtime
runs these files directly; `engine.pipeline` builds TensorRT engines from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path

from filelock import FileLock

from ..checkpoint import load_model, resolve_checkpoint
from ..io import writable_folder
from ..workspace import EXPORT_DIR_ENV, file_sha256, remove_stale_temps, workspace_dir
from . import export_onnx, import_onnx_extra, integer, quantize, staging

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
                import_onnx_extra(name)
        if redo_fp32:
            log.info("exporting %s to %s", backbone, fp32)
            export_onnx(load_model(backbone, checkpoint), fp32)
        if redo_fp16:
            from .fp16 import convert_fp16

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
            from .fp16 import convert_fp16

            convert_fp16(qdq, mixed)
    return qdq, mixed, digest, key


def integer_onnx(
    backbone: str, checkpoint: str | os.PathLike | None = None, folder: str | os.PathLike | None = None
) -> tuple[Path, str, str]:
    """(ONNX Runtime's integer INT8 ONNX, checkpoint sha256, its key), made once per checkpoint,
    recipe and ONNX Runtime version (export/integer.py; nothing to calibrate)."""
    import_onnx_extra("onnxruntime")  # its quantizer, before an export that would need it
    fp32, _, digest = exported_onnx(backbone, checkpoint, folder)
    key = integer.integer_key()
    path = fp32.with_name(f"{fp32.stem}.int8-cpu-{key}.onnx")
    with FileLock(str(path) + ".lock"):  # held by every writer of the file and its manifest
        (redo,) = _to_redo((path,))
        if redo:
            integer.quantize_integer(fp32, path)
    return path, digest, key
