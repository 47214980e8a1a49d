"""TensorRT backend (TensorRT 10/11 and TensorRT-RTX share this API): one engine, one context, one stream.

Device buffers are torch tensors allocated once per input shape and reused; the input canvas is
already on the GPU (pre-processing runs there), so a call is: bind addresses, `execute_async_v3` on
our stream, and make the caller's stream wait for it. Nothing is copied back to the host here.
With `cuda_graph=True` the execution is captured once per shape and replayed (less launch overhead
for the many small kernels of the GRU refinement).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine.loader import deserialize
from ..errors import InputError
from ..export import INPUT_NAME, OUTPUT_NAMES
from ..model import Metric3DOutput
from .postprocess import output_buffers

log = logging.getLogger("trt_metric3d")


@dataclass
class _ShapeState:
    """What one input shape needs: output buffers and, with CUDA graphs, a static input and the graph."""

    outputs: list[torch.Tensor]
    static_input: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None


class TensorRTBackend:
    name = "tensorrt"
    MAX_SHAPES = 4  # buffers (and graphs) kept for this many canvas shapes, least recent dropped

    def __init__(
        self,
        engine_path: str | Path,
        device: torch.device,
        flavour: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        self.device = device
        self.cuda_graph = cuda_graph
        self.runtime, self.engine = deserialize(engine_path, flavour)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)
        self.shapes: OrderedDict[tuple[int, ...], _ShapeState] = OrderedDict()

    def _state(self, shape: tuple[int, ...]) -> _ShapeState:
        if shape in self.shapes:
            self.shapes.move_to_end(shape)
            return self.shapes[shape]
        if len(self.shapes) >= self.MAX_SHAPES:
            self.shapes.popitem(last=False)
        state = _ShapeState(output_buffers(shape, self.device))
        if self.cuda_graph:
            state.static_input = torch.empty(shape, device=self.device)
        self.shapes[shape] = state
        return state

    def _bind(self, pixels: torch.Tensor, outputs: list[torch.Tensor]) -> None:
        if not self.context.set_input_shape(INPUT_NAME, tuple(pixels.shape)):
            raise InputError(
                f"canvas batch {tuple(pixels.shape)} is outside the engine's optimisation profile; "
                "rebuild with a larger --max"
            )
        self.context.set_tensor_address(INPUT_NAME, pixels.data_ptr())
        for name, out in zip(OUTPUT_NAMES, outputs, strict=True):
            self.context.set_tensor_address(name, out.data_ptr())

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed; see the TensorRT log above")

    def _capture(self, state: _ShapeState) -> None:
        """Record one execution as a CUDA graph; TensorRT wants one plain run after a shape change first."""
        self._execute()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self._execute()
        except RuntimeError as e:  # e.g. an engine with a layer that cannot be captured
            log.warning("TensorRT: CUDA graph capture failed (%s); running without graphs", e)
            self.cuda_graph = False
            return
        state.graph = graph

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255, float32) on the GPU -> outputs on the GPU (reused buffers)."""
        pixels = pixels.float().contiguous()
        state = self._state(tuple(pixels.shape))
        if state.static_input is not None:  # CUDA graphs replay fixed addresses: copy the input in
            state.static_input.copy_(pixels)
            pixels = state.static_input
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the canvas is ready
        with torch.cuda.stream(self.stream):
            if state.graph is not None:
                state.graph.replay()
            else:
                self._bind(pixels, state.outputs)
                if self.cuda_graph:
                    self._capture(state)
                else:
                    self._execute()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        pixels.record_stream(self.stream)
        return Metric3DOutput(*state.outputs)

    def close(self) -> None:
        self.shapes.clear()
        self.context = self.engine = self.runtime = None
        torch.cuda.empty_cache()
