"""PyTorch backend: fp32, or fp16 autocast (LayerNorm, softmax and sums stay fp32), optional compile."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..model import Metric3DOutput
from ..processing import MEAN, STD


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, compile: bool = False):
        if precision not in ("fp32", "fp16"):
            raise InputError(f"torch backend precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and device.type == "cpu":
            raise InputError(
                "fp16 on the CPU is slower than fp32 and not supported here; use precision='fp32'"
            )
        self.device = device
        self.precision = precision
        self.model = model.to(device).eval().requires_grad_(False)
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255) on self.device -> network outputs (float32)."""
        x = (pixels - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "fp16"):
            out = self.forward(x)
        return Metric3DOutput(*(t.float() for t in out))

    def close(self) -> None:
        self.model = self.forward = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
