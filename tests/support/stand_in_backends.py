"""Stand-ins for the network, for plumbing tests: real pre- and post-processing around outputs that cost
nothing. `RedDepth` is a `Backend` (`Metric3D(backend=...)`); `StandInNetwork` takes the PyTorch
network's place where a checkpoint is loaded (the `stand_in_network` fixture), for code that opens its
own runtime by name, as the command line does; `marked_stand_in_loader` does it for the checkpoints of one
folder only, in processes a test cannot patch (Ray's actors, the benchmark's processes)."""

import os
import time
from collections.abc import Callable
from pathlib import Path
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
        # a weight, as every network has: code finds a network's device and precision from its weights
        self.weight = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
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


STAND_IN_FOLDER = "stand-in-network"  # checkpoints in a folder of this name load into a StandInNetwork


def marked_stand_in_loader(load_model: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """`load_model` for checkpoints in a STAND_IN_FOLDER folder: the file is still read (a missing one is
    still refused), the network is a `StandInNetwork`; every other checkpoint loads as `load_model` does."""
    from trt_metric3d.checkpoint import read_state_dict

    def load(backbone: str, checkpoint=None, device="cpu") -> torch.nn.Module:
        if isinstance(checkpoint, str | os.PathLike) and Path(checkpoint).parent.name == STAND_IN_FOLDER:
            read_state_dict(checkpoint)
            return StandInNetwork().to(device).eval()
        return load_model(backbone, checkpoint, device)

    return load


def install_marked_stand_ins() -> None:
    """In a process of its own (a Ray actor, a benchmark process): `marked_stand_in_loader` in place of
    trt_metric3d.checkpoint.load_model, which the runtime looks up when it opens a model."""
    from trt_metric3d import checkpoint

    checkpoint.load_model = marked_stand_in_loader(checkpoint.load_model)


def measure_on_stand_ins(request, log_level: int):
    """`benchmark.measure` after `install_marked_stand_ins`: in the place of `benchmark.measure`, the
    benchmark's own processes (spawned: they import this module by name) run stand-ins too."""
    from trt_metric3d import benchmark

    install_marked_stand_ins()
    return benchmark.measure(request, log_level)
