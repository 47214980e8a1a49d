"""TensorRT backend (TensorRT 10/11 and TensorRT-RTX share this API): one engine, one context, one stream.

Device buffers are torch tensors allocated once per input shape and reused; the input canvas is
already on the GPU (pre-processing runs there), so a call is: bind addresses, `execute_async_v3` on
our stream, and make the caller's stream wait for it. Nothing is copied back to the host here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.builder import import_tensorrt
from ..export import INPUT_NAME, OUTPUT_NAMES
from ..model import Metric3DOutput

OUTPUT_CHANNELS = (1, 1, 4, 3)  # depth, confidence, normal, normal_iter1


class EngineLoadError(RuntimeError):
    """The engine file does not deserialise with this TensorRT / GPU."""


def deserialize(engine_path: str | Path, flavour: str | None = None):
    trt, _ = import_tensorrt(flavour)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EngineLoadError(f"{engine_path} does not load with TensorRT {trt.__version__} on this GPU")
    return runtime, engine


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: torch.device, flavour: str | None = None) -> None:
        if device.type != "cuda":
            raise ValueError("the TensorRT backend runs on a CUDA device; use device='cuda'")
        self.device = device
        self.runtime, self.engine = deserialize(engine_path, flavour)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)
        self.outputs: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def _buffers(self, shape: tuple[int, ...]) -> list[torch.Tensor]:
        if shape not in self.outputs:
            self.outputs.clear()  # keep one shape's buffers: memory does not grow with new sizes
            b, _, h, w = shape
            self.outputs[shape] = [torch.empty(b, c, h, w, device=self.device) for c in OUTPUT_CHANNELS]
        return self.outputs[shape]

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255, float32) on the GPU -> outputs on the GPU (reused buffers)."""
        pixels = pixels.float().contiguous()
        shape = tuple(pixels.shape)
        outputs = self._buffers(shape)
        if not self.context.set_input_shape(INPUT_NAME, shape):
            raise ValueError(
                f"canvas batch {shape} is outside the engine's optimisation profile; rebuild with --max"
            )
        self.context.set_tensor_address(INPUT_NAME, pixels.data_ptr())
        for name, out in zip(OUTPUT_NAMES, outputs, strict=True):
            self.context.set_tensor_address(name, out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the canvas is ready
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed; see the TensorRT log above")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        pixels.record_stream(self.stream)
        return Metric3DOutput(*outputs)

    def close(self) -> None:
        self.outputs.clear()
        self.context = self.engine = self.runtime = None
        torch.cuda.empty_cache()
