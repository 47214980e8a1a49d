"""Stand-ins for the network, for plumbing tests: real pre- and post-processing around outputs that cost
nothing. `RedDepth` is a `Backend` (`Metric3D(backend=...)`); `StandInNetwork` takes the PyTorch
network's place where a checkpoint is loaded (the `stand_in_network` fixture), for code that opens its
own runtime by name, as the command line does."""

import time
from types import ModuleType

import pytest
import torch

from trt_metric3d.model import Metric3DOutput
from trt_metric3d.processing import MEAN, STD
from trt_metric3d.runtime.postprocess import output_buffers


def red_depth_outputs(pixels: torch.Tensor) -> Metric3DOutput:
    """Canonical depth from the red channel of 0..255 canvases (so every image's result differs), 1
    elsewhere."""
    out = output_buffers(tuple(pixels.shape), pixels.device)
    out[0].copy_(pixels[:, :1] / 255 * 100 + 1)
    for t in out[1:]:
        t.fill_(1.0)
    return Metric3DOutput(*out)


class RedDepth:
    """A stand-in backend: `red_depth_outputs`; optionally slow (sleeping releases the GIL, as a real
    forward does) or failing at one call."""

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
        return red_depth_outputs(pixels)

    def close(self) -> None:
        pass


class StandInNetwork(torch.nn.Module):
    """The network's interface (normalised canvases in, `Metric3DOutput` out) with `red_depth_outputs`
    inside: the torch backend runs it as it runs the real one."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Metric3DOutput:
        return red_depth_outputs(x * self.std + self.mean)


def load_stand_in_networks(monkeypatch: pytest.MonkeyPatch, checkpoint_module: ModuleType) -> None:
    """Checkpoints load into a `StandInNetwork` through `checkpoint_module.load_model` (the package's
    trt_metric3d.checkpoint, or a ComfyUI pack's own copy of it): the file is still found and read,
    so a missing or damaged one is still refused, but no ViT is built or run."""
    monkeypatch.setattr(checkpoint_module, "build_model", lambda backbone: StandInNetwork())
    monkeypatch.setattr(checkpoint_module, "load_state_dict_strict", lambda model, state_dict: None)
