"""Strongly typed TensorRT engines from the mixed FP16 ONNX: TensorRT 10/11 and TensorRT-RTX.

The three share the builder API used here; `tensorrt` is preferred when both are installed.
Precision comes from the ONNX itself (strongly typed network): no FP16 builder flag, which
TensorRT 11 and TensorRT-RTX do not have.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from ..errors import InputError, MissingDependency
from ..export import INPUT_NAME
from ..logs import percent
from ..model import CANVAS_MULTIPLE

INSTALL_HINT = (
    "TensorRT is not installed. Install one of:\n"
    "  pip install tensorrt-cu12     # TensorRT for CUDA 12 (data-centre and desktop GPUs)\n"
    "  pip install tensorrt-cu13     # TensorRT for CUDA 13\n"
    "  pip install tensorrt-rtx      # TensorRT-RTX (GeForce / RTX GPUs; also builds without a GPU)"
)


class TensorRTNotInstalled(MissingDependency):
    pass


def import_tensorrt(flavour: str | None = None) -> tuple[ModuleType, str]:
    """(module, flavour) with flavour "tensorrt" or "tensorrt_rtx"; None tries both, TensorRT first."""
    for name in [flavour] if flavour else ["tensorrt", "tensorrt_rtx"]:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise TensorRTNotInstalled(INSTALL_HINT)


@dataclass(frozen=True)
class ShapeProfile:
    """Min / opt / max (batch, height, width) of the canvas input: one optimisation profile."""

    min: tuple[int, int, int] = (1, 616, 616)
    opt: tuple[int, int, int] = (1, 616, 1064)
    max: tuple[int, int, int] = (4, 1064, 1064)  # covers 616 x 1064 landscape and portrait

    def __post_init__(self) -> None:
        for name, (b, h, w) in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if b < 1 or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE or h <= 0 or w <= 0:
                raise InputError(
                    f"profile {name}={b}x{h}x{w}: batch must be >= 1 and height/width positive multiples of "
                    f"{CANVAS_MULTIPLE}"
                )
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise InputError(f"profile needs min <= opt <= max in every dimension, got {self}")

    def as_dict(self) -> dict:
        return asdict(self)


def check_workspace(workspace_gib: float) -> None:
    if not workspace_gib > 0:  # also NaN
        raise InputError(
            f"workspace {workspace_gib} GiB: the builder workspace must be > 0 GiB (--workspace)"
        )


def compute_capability_target(trt: ModuleType, value: str) -> str:
    """The `trt.ComputeCapability` name ("SM86") for "SM86", "sm86", "86" or "8.6"."""
    enum = getattr(trt, "ComputeCapability", None)  # TensorRT-RTX only
    targets = [name for name in enum.__members__ if name.startswith("SM")] if enum is not None else []
    if not targets:
        raise InputError(
            f"--compute-capability: {trt.__name__} {trt.__version__} only builds for the GPU it runs on; "
            "ahead-of-time targets need TensorRT-RTX (pip install tensorrt-rtx, --flavour tensorrt_rtx)"
        )
    name = "SM" + value.strip().upper().removeprefix("SM").replace(".", "")
    if name not in targets:
        raise InputError(
            f"--compute-capability {value!r} is not a target of {trt.__name__} {trt.__version__}; "
            f"choose one of {', '.join(targets)}"
        )
    return name


BuildProgress = Callable[[str, float], None]  # (top-level build phase, fraction of it done)


def print_progress(phase: str, fraction: float) -> None:
    """The default build progress: phases and tenths on stderr."""
    print(f"[TensorRT] {phase}: {percent(fraction)}", file=sys.stderr, flush=True)


def _progress_monitor(trt: ModuleType, report: BuildProgress):
    """A builder progress monitor calling `report` (None where the API lacks one)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        """Top-level build phases, reported at start and every tenth; nested phases are skipped."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.top: dict[str, int] = {}

        def phase_start(self, parent_phase, phase_name, num_steps):
            if parent_phase is None:
                self.top[phase_name] = max(num_steps, 1)
                report(phase_name, 0.0)

        def step_complete(self, phase_name, step):
            total = self.top.get(phase_name)
            if total and (total < 10 or (step + 1) % (total // 10) == 0):
                report(phase_name, (step + 1) / total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            self.top.pop(phase_name, None)

    return Monitor()


def build_engine(
    onnx_path: str | Path,
    profile: ShapeProfile,
    *,
    flavour: str | None = None,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    compute_capability: str | None = None,
    progress: BuildProgress = print_progress,
) -> bytes:
    """Parse `onnx_path` into a strongly typed network and build a serialized engine.

    compute_capability (TensorRT-RTX only), e.g. "SM86" or "86": build ahead of time for that GPU family,
    which also works on a machine without a GPU.
    """
    trt, flavour = import_tensorrt(flavour)
    check_workspace(workspace_gib)
    target = compute_capability_target(trt, compute_capability) if compute_capability is not None else None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    shapes = builder.create_optimization_profile()
    shapes.set_shape(INPUT_NAME, *((b, 3, h, w) for b, h, w in (profile.min, profile.opt, profile.max)))
    config.add_optimization_profile(shapes)
    if target is not None:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target), 0)
    monitor = _progress_monitor(trt, progress)
    if monitor is not None:
        config.progress_monitor = monitor
    cache = None
    if timing_cache is not None and flavour == "tensorrt":  # TensorRT-RTX has no timing cache (no-op)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(
            f"TensorRT ({flavour}) failed to build an engine from {onnx_path}; see the log above"
        )
    if cache is not None:
        from ..io import atomic_write_bytes

        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    return bytes(serialized)
