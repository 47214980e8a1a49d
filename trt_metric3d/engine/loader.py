"""Loading a serialized engine: the one place a plan file becomes a TensorRT engine object.

Beside the builder, below the runtime: the engine pipeline deserialises a cached plan to check that it
still loads on this GPU, and the TensorRT backend to run it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable
from .builder import import_tensorrt


class EngineLoadError(BackendUnavailable):
    """The engine file does not deserialise with this TensorRT / GPU."""


def deserialize(engine_path: str | Path, flavour: str | None = None):
    """(runtime, engine) for the plan at `engine_path`; EngineLoadError where it does not load here."""
    trt, _ = import_tensorrt(flavour)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EngineLoadError(f"{engine_path} does not load with TensorRT {trt.__version__} on this GPU")
    return runtime, engine
