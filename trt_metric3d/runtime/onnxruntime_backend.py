"""ONNX Runtime backend: CPU here; CUDA / TensorRT execution providers where installed; I/O binding."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..choices import QUANTIZED_PRECISIONS
from ..errors import BackendUnavailable
from ..export import INPUT_NAME, OUTPUT_NAMES, import_onnx_extra
from ..model import Metric3DOutput
from ..workspace import ENGINE_DIR_ENV, workspace_dir
from .postprocess import output_buffers

log = logging.getLogger("trt_metric3d")


def execution_providers(device: torch.device, available: list[str], engine_dir: Path) -> list:
    """ONNX Runtime providers for `device`: on a GPU, TensorRT (engines cached in `engine_dir`) where
    onnxruntime-gpu has it, then CUDA (which also takes the nodes TensorRT leaves); else the CPU."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailable(
            f"ONNX Runtime has no CUDA provider here ({available}); pip install onnxruntime-gpu"
        )
    index = device.index or 0
    providers: list = [("CUDAExecutionProvider", {"device_id": index})]
    if "TensorrtExecutionProvider" in available:
        engine_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "device_id": index,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engine_dir),
        }
        providers.insert(0, ("TensorrtExecutionProvider", options))
    return providers


def onnxruntime_providers(device: torch.device, engine_dir: str | os.PathLike | None = None) -> list:
    """The providers for `device`, checked before any export is spent on them: MissingDependency or
    BackendUnavailable when ONNX Runtime is missing or cannot run there.
    engine_dir: the TensorRT execution provider's engine cache goes in its onnxruntime/."""
    ort = import_onnx_extra("onnxruntime")
    engines = Path(engine_dir) if engine_dir is not None else workspace_dir(ENGINE_DIR_ENV, "engines")
    return execution_providers(device, ort.get_available_providers(), engines / "onnxruntime")


def onnxruntime_graph(
    backbone: str,
    precision: str,
    device: torch.device,
    checkpoint: str | os.PathLike | None = None,
    export_dir: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
) -> Path:
    """The ONNX file ONNX Runtime runs for `precision` on `device` (exported, quantized, cached as
    needed), said in the log: int8 on the CPU, the integer graph (integer kernels; nothing calibrated);
    int8 elsewhere and fp8, the calibrated Q/DQ graph with FP32 elsewhere; fp16, the mixed FP16 graph."""
    from ..export.stages import exported_onnx, integer_onnx, quantized_onnx

    if precision == "int8" and device.type == "cpu":
        onnx, *_ = integer_onnx(backbone, checkpoint, export_dir)
        what = "the integer int8 graph (encoder MatMuls in integer kernels, no calibration)"
        if calibration is not None:
            what += "; calibration photos unused: it calibrates nothing"
    elif precision in QUANTIZED_PRECISIONS:
        onnx, *_ = quantized_onnx(backbone, precision, checkpoint, export_dir, calibration)
        what = f"the calibrated {precision} Q/DQ graph (FP32 elsewhere)"
    else:
        fp32, fp16, _ = exported_onnx(backbone, checkpoint, export_dir)
        onnx, what = (fp16, "the mixed FP16 graph") if precision == "fp16" else (fp32, "the FP32 graph")
    log.info("Metric3D: ONNX Runtime runs %s: %s", what, onnx.name)
    return onnx


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, onnx_path: str | Path, device: torch.device, providers: list, threads: int | None = None
    ) -> None:
        """threads: ONNX Runtime's intra-op threads (default: its own, one per physical core)."""
        ort = import_onnx_extra("onnxruntime")
        self.device = device
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255) on self.device -> float32 outputs on self.device.

        Input and outputs are torch tensors bound in place (no copies through numpy).
        """
        pixels = pixels.float().contiguous()
        outputs = output_buffers(tuple(pixels.shape), self.device)
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input(
            INPUT_NAME, self.device.type, index, np.float32, tuple(pixels.shape), pixels.data_ptr()
        )
        for name, out in zip(OUTPUT_NAMES, outputs, strict=True):
            binding.bind_output(name, self.device.type, index, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return Metric3DOutput(*outputs)

    def close(self) -> None:
        self.session = None
