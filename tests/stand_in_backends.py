"""Stand-in backends (the `Backend` protocol) for plumbing tests: real pre- and post-processing around a
network that costs nothing."""

import time

import torch

from trt_metric3d.model import Metric3DOutput
from trt_metric3d.runtime.postprocess import output_buffers


class RedDepth:
    """A stand-in backend: canonical depth from the red channel, so every frame's result differs;
    optionally slow (sleeping releases the GIL, as a real forward does) or failing at one call."""

    name = "stub"

    def __init__(self, delay_s: float = 0.0, fail_at_call: int | None = None):
        self.delay_s = delay_s
        self.fail_at_call = fail_at_call
        self.calls = 0

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("the backend broke")
        time.sleep(self.delay_s)
        out = output_buffers(tuple(pixels.shape), pixels.device)
        out[0].copy_(pixels[:, :1] / 255 * 100 + 1)
        for t in out[1:]:
            t.fill_(1.0)
        return Metric3DOutput(*out)

    def close(self) -> None:
        pass
