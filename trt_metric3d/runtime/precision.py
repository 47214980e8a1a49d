"""Which precision a runtime runs in: the default for a device and backend, and the checks.

The table of what each backend runs is `choices.BACKEND_PRECISIONS`, for the runtime, the CLI and the
ComfyUI nodes. The default: fp16 on CUDA; on the CPU, bf16 where the CPU has bf16 matrix units
(runtime/cpu.py) and the backend is OpenVINO or PyTorch, else fp32. bf16 holds the accuracy bar
(depth AbsRel <= 1 % against fp32, docs/benchmarks.md), so it may be chosen unasked.
"""

from __future__ import annotations

import logging

import torch

from ..choices import BACKEND_PRECISIONS, PRECISIONS
from ..errors import InputError
from . import cpu
from .openvino_backend import INSTALL as OPENVINO_INSTALL

log = logging.getLogger("trt_metric3d")

BF16_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores


def backends_running(precision: str) -> list[str]:
    return [name for name, precisions in BACKEND_PRECISIONS.items() if precision in precisions]


def check_backend_precision(backend: str, precision: str) -> None:
    """InputError naming the backends that run `precision` when `backend` (not "auto") does not."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend != "auto" and precision not in BACKEND_PRECISIONS[backend]:
        raise InputError(
            f"precision {precision!r} runs on the {' and '.join(backends_running(precision))} "
            f"backend{'s' if len(backends_running(precision)) > 1 else ''}, not {backend}: choose "
            f"one of those, or precision {' / '.join(BACKEND_PRECISIONS[backend])}"
        )


def default_precision(device: torch.device, backend: str) -> str:
    """fp16 on CUDA; bf16 on a CPU with bf16 units for the openvino and torch backends ("auto" runs
    one of them on the CPU), said in the log; else fp32."""
    if device.type == "cuda":
        return "fp16"
    units = cpu.cpu_features().bf16_units
    if device.type == "cpu" and backend in ("auto", "openvino", "torch") and units is not None:
        log.info("Metric3D: bf16 on the CPU's %s units (precision='fp32' for full precision)", units)
        return "bf16"
    return "fp32"


def check_bf16_device(device: torch.device) -> None:
    """bf16 needs an Ampere or newer GPU (InputError otherwise); on a CPU without bf16 units it runs,
    emulated, slower than fp32: said in the log."""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < BF16_MIN_COMPUTE_CAPABILITY:
            major, minor = capability
            raise InputError(
                f"bf16 needs an Ampere or newer GPU (compute capability 8.0+), "
                f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use precision='fp16'"
            )
    elif device.type == "cpu" and cpu.cpu_features().bf16_units is None:
        log.warning(
            "Metric3D: this CPU has no bf16 units oneDNN may use (%s): bf16 is emulated and slower than fp32",
            cpu.cpu_features().summary(),
        )


def cpu_auto_backend(features: cpu.CpuFeatures, openvino_installed: bool) -> tuple[str, str]:
    """(backend, why) "auto" runs on the CPU where OpenVINO and PyTorch both run the precision: OpenVINO
    where installed and oneDNN not capped (ONEDNN_MAX_CPU_ISA: OpenVINO's oneDNN then compiles wrong or
    not at all), else PyTorch. For the runtime and for `doctor`."""
    if features.onednn_cap is not None:
        return "torch", f"oneDNN capped, ONEDNN_MAX_CPU_ISA={features.onednn_cap}"
    if openvino_installed:
        return "openvino", "installed; the fastest CPU path"
    return "torch", f"OpenVINO is faster: {OPENVINO_INSTALL}"


def cpu_path_lines(features: cpu.CpuFeatures, openvino: str | None) -> list[str]:
    """What runs on this CPU, for `doctor`: the default backend and precision, and what int8 runs.
    openvino: its version where installed."""
    name, why = cpu_auto_backend(features, openvino is not None)
    backend = f"{name} backend: {why}"
    bf16 = features.bf16_units
    default = (
        f"CPU precision by default: bf16 on {bf16} ({backend})"
        if bf16
        else f"CPU precision by default: fp32 ({backend}; no bf16 units oneDNN may use)"
    )
    installed = f"openvino {openvino}" if openvino else "openvino: not installed"
    int8 = next(iter(features.units(cpu.INT8_UNITS)), None)
    kernels = f"on {int8}" if int8 else "in AVX2 / AVX-512 integer arithmetic (no VNNI / AMX units)"
    return [installed, default, f"CPU int8 (onnxruntime backend): the integer graph, its kernels {kernels}"]
