"""PyTorch backend: fp32, or fp16 / bf16 autocast (LayerNorm, softmax and sums stay fp32), optional
compile. bf16 runs on the CPU too, through oneDNN (AMX / AVX512-BF16 units, see runtime/cpu.py).

With `cuda_graph=True` (CUDA only) the whole call (normalisation, network, casts) is captured once per
input shape as a CUDA graph and replayed: the network launches hundreds of small kernels (attention
blocks, GRU refinement), and a replay submits them all at once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..model import Metric3DOutput
from ..processing import MEAN, STD

log = logging.getLogger("trt_metric3d")

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class _Graph:
    """A captured forward: a replay reads `pixels` and overwrites `out` in place."""

    graph: torch.cuda.CUDAGraph
    pixels: torch.Tensor
    out: Metric3DOutput


class TorchBackend:
    name = "torch"
    MAX_GRAPHS = 4  # graphs (each with its own memory) kept for this many input shapes, least recent dropped
    WARMUP_RUNS = 2  # before a capture: lazy initialisation and autotuning must not end up in the graph

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        precision: str,
        compile: bool = False,
        cuda_graph: bool = False,
    ):
        if precision not in AUTOCAST_DTYPES:
            raise InputError(
                f"torch backend precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}"
            )
        if precision == "fp16" and device.type == "cpu":
            raise InputError(
                "fp16 on the CPU is slower than fp32 and not supported here; use precision='fp32'"
            )
        if cuda_graph and device.type != "cuda":
            raise InputError(f"cuda_graph=True needs a CUDA device, got {device}; leave cuda_graph off")
        self.device = device
        self.precision = precision
        self.model = model.to(device).eval().requires_grad_(False)
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self.graphs: OrderedDict[tuple[int, ...], _Graph] | None = OrderedDict() if cuda_graph else None

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255) on self.device -> network outputs (float32).

        With CUDA graphs the outputs are the graph's static tensors, overwritten by the next call.
        """
        if self.graphs is None:
            return self._eager(pixels)
        graph = self._graph(pixels)
        if graph is None:  # the capture failed: eager from now on
            return self._eager(pixels)
        graph.pixels.copy_(pixels)
        graph.graph.replay()
        return graph.out

    def _eager(self, pixels: torch.Tensor) -> Metric3DOutput:
        x = (pixels - self.mean) / self.std
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float16, enabled=dtype is not None):
            out = self.forward(x)
        return Metric3DOutput(*(t.float() for t in out))

    def _graph(self, pixels: torch.Tensor) -> _Graph | None:
        shape = tuple(pixels.shape)
        if shape in self.graphs:
            self.graphs.move_to_end(shape)
            return self.graphs[shape]
        graph = self._capture(pixels)
        if graph is None:
            self.graphs = None
            return None
        if len(self.graphs) >= self.MAX_GRAPHS:
            self.graphs.popitem(last=False)
        self.graphs[shape] = graph
        return graph

    def _capture(self, pixels: torch.Tensor) -> _Graph | None:
        """Warm up on a side stream, then record one call on static tensors (torch's documented recipe)."""
        static = pixels.clone()
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_RUNS):
                self._eager(static)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self._eager(static)
        except RuntimeError as e:  # e.g. a compiled graph or an op that synchronises cannot be captured
            reason = str(e).splitlines()[0]
            log.warning("torch: CUDA graph capture failed (%s); running without graphs", reason)
            return None
        return _Graph(graph, static, out)

    def close(self) -> None:
        self.model = self.forward = self.graphs = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
