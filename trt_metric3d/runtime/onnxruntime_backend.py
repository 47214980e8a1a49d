"""ONNX Runtime backend: CPU here; CUDA / TensorRT execution providers where installed; I/O binding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import BackendUnavailable
from ..export import INPUT_NAME, OUTPUT_NAMES, import_onnx_extra
from ..model import Metric3DOutput
from ..workspace import ENGINE_DIR_ENV, workspace_dir
from .postprocess import output_buffers


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


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: torch.device, providers: list) -> None:
        ort = import_onnx_extra("onnxruntime")
        self.device = device
        self.session = ort.InferenceSession(str(onnx_path), providers=providers)

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
