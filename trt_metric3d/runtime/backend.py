"""The `Backend` protocol: what `Metric3D` needs of the thing that runs the network.

The TensorRT, ONNX Runtime and PyTorch backends have this shape; so can a user's own (another
runtime, a remote model) or a test's stand-in, passed as `Metric3D(backend=...)`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import InputError
from ..model import Metric3DOutput


@runtime_checkable
class Backend(Protocol):
    name: str  # what the log and `Metric3D.backend` call it

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255, float32) on the runtime's device -> the network's
        outputs on that device; they may be reused buffers, valid until the next call."""
        ...

    def close(self) -> None:
        """Free what the backend holds (device memory, sessions); it is not called again."""
        ...


def check_backend(backend: object) -> Backend:
    """`backend` itself where it has the protocol's name, __call__ and close; InputError otherwise."""
    if not isinstance(backend, Backend) or not isinstance(getattr(backend, "name", None), str):
        raise InputError(
            f"backend {backend!r} is neither a backend name nor a Backend object (a `name` string, "
            "`__call__(pixels) -> Metric3DOutput` and `close()`): pass e.g. backend='torch'"
        )
    return backend
