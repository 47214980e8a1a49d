"""`Metric3D`: one predict API over the TensorRT, ONNX Runtime, OpenVINO and PyTorch backends."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..choices import BACKENDS
from ..engine.builder import BuildProgress, print_progress
from ..errors import BackendUnavailable, InputError
from ..model import BACKBONES, Metric3DOutput
from ..model.config import CONFIGS
from ..processing import Canvas
from ..settings import RuntimeSettings
from .backend import Backend, check_backend
from .postprocess import check_finite_depth, focal_lengths, metric_scales, to_metric_images, to_predictions
from .precision import (
    backends_running,
    check_backend_precision,
    check_bf16_device,
    cpu_auto_backend,
    default_precision,
)
from .prediction import DepthBatch, Prediction
from .preprocess import canvases_from_arrays, canvases_from_tensor
from .stream import FrameStream

log = logging.getLogger("trt_metric3d")

# What "auto" tries on a GPU, fastest first, among those that run the precision; PyTorch always works.
AUTO_ORDER_CUDA = ("tensorrt", "onnxruntime", "torch")
# On the CPU, the first that runs the precision (ONNX Runtime: int8 / fp8); OpenVINO where installed,
# falling back to PyTorch: its bf16 / fp32 forwards are the fastest here (docs/benchmarks.md).
AUTO_ORDER_CPU = ("openvino", "torch", "onnxruntime")


# Devices besides cpu and cuda that the torch backend runs on, when this torch sees them.
_OTHER_ACCELERATORS = {
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def _valid_devices() -> str:
    others = [kind for kind, available in _OTHER_ACCELERATORS.items() if available()]
    return ", ".join(["cpu", "cuda", "cuda:N", *others])


def _check_cuda(device: torch.device) -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if torch.version.cuda is None:
            build = "this torch is a CPU-only build (torch.version.cuda is None)"
        else:
            build = f"torch built for CUDA {torch.version.cuda}: check the driver and CUDA_VISIBLE_DEVICES"
        raise InputError(
            f"device {str(device)!r} needs a CUDA GPU, but torch sees none: {build}; use device='cpu'"
        )
    if device.index is not None and device.index >= count:
        raise InputError(
            f"device {str(device)!r} does not exist: torch sees {count} CUDA GPU(s), cuda:0 to "
            f"cuda:{count - 1}"
        )


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: `device` checked against this machine, or (None) cuda when torch
    sees a GPU, else cpu. An invalid or absent device raises InputError saying what to use."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device {device!r} is not valid: use one of {_valid_devices()}") from e
    if resolved.type == "cuda":
        _check_cuda(resolved)
    elif resolved.type != "cpu" and not _can_allocate_on(resolved):
        raise InputError(f"device {str(resolved)!r} is not available here: use one of {_valid_devices()}")
    return resolved


def _can_allocate_on(device: torch.device) -> bool:
    """Whether tensors can live on `device`: true for mps / xpu / DirectML ("privateuseone") where their
    torch support is present; a meta device holds no data, so it cannot run a model."""
    if device.type == "meta":
        return False
    try:
        torch.empty(0, device=device)
    except Exception:  # torch says "absent" in many ways: RuntimeError, NotImplementedError, import errors
        return False
    return True


class Metric3D:
    """Metric depth, confidence and surface normals from RGB images.

    >>> with Metric3D("vit-small", backend="torch") as m:
    ...     result = m.predict(image, fx=1400.0, fy=1400.0)   # H x W x 3 uint8 -> Prediction
    """

    def __init__(
        self,
        backbone: str = "vit-small",
        backend: str | Backend = "auto",
        precision: str | None = None,
        device: str | torch.device | None = None,
        checkpoint: str | None = None,
        compile: bool = False,
        model: torch.nn.Module | None = None,
        cuda_graph: bool = False,
        build_progress: BuildProgress = print_progress,
        engine_dir: str | os.PathLike | None = None,
        export_dir: str | os.PathLike | None = None,
        calibration: str | os.PathLike | None = None,
    ) -> None:
        """backend: a name, or a `Backend` object to run instead (its outputs are post-processed as
        the built-in backends' are). "auto": on a GPU, TensorRT, then ONNX Runtime's CUDA provider,
        then PyTorch (the first that is installed and works; the log says which and why others were
        skipped); on the CPU, OpenVINO where installed (fp32 / bf16), else PyTorch.
        precision: "fp16" (default on CUDA), "fp32" or "bf16" (PyTorch autocast: on Ampere or newer
        GPUs; OpenVINO and PyTorch on CPUs with AMX-BF16 or AVX512-BF16 units, where it is their
        default; see runtime/precision.py); "int8" or "fp8" (TensorRT and ONNX Runtime): the ViT encoder
        quantized, calibrated once on the photos in `calibration` (default: the bundled calibration/
        photos), the rest FP16 (TensorRT) or FP32 (ONNX Runtime); int8 on ONNX Runtime's CPU
        provider: its integer graph, calibrated on nothing (export/integer.py). A `Backend` object
        runs in what it runs in: precision only names it (default fp32).
        checkpoint: official .pth path (default: METRIC3D_CHECKPOINT_DIR, HF cache, download).
        compile: torch.compile the PyTorch network.
        model: an already-loaded PyTorch network to run (torch backend); skips checkpoint loading.
        cuda_graph: on a CUDA device, TensorRT and PyTorch capture one CUDA graph per input shape and
        replay it (less launch overhead); ONNX Runtime ignores it; on other devices it is ignored with
        a log line (there are no CUDA graphs to capture).
        build_progress: called while a missing TensorRT engine is built (it is built on first use).
        engine_dir: where TensorRT engines are cached (default: METRIC3D_ENGINE_DIR, engines/ of a
        source checkout, else ~/.cache/trt-metric3d/engines).
        export_dir: where the ONNX files are cached (default: METRIC3D_EXPORT_DIR, likewise export/).
        calibration: a folder of photos like the ones to run on, for int8 / fp8.
        """
        if backbone not in BACKBONES:
            raise InputError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        if isinstance(backend, str) and backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if model is not None:  # name what is really running
            model_cfg = getattr(model, "cfg", None)
            backbone = next((name for name, cfg in CONFIGS.items() if cfg == model_cfg), backbone)
        self.backbone = backbone
        self.device = resolve_device(device)
        if model is not None and backend not in ("torch", "auto"):
            raise InputError(f"a PyTorch model runs on the torch backend, not {backend!r}")
        if backend == "tensorrt" and self.device.type != "cuda":  # the first reason, whatever the precision
            raise InputError(f"TensorRT runs on a CUDA GPU, and this runtime's device is {self.device}")
        # what runs the network: a Backend object runs in what it runs in (the precision only names it)
        runs_on = "torch" if model is not None else backend if isinstance(backend, str) else None
        if precision is None:
            precision = default_precision(self.device, runs_on) if runs_on is not None else "fp32"
        check_backend_precision(runs_on or "auto", precision)
        if precision == "bf16":
            check_bf16_device(self.device)
        self.precision = precision
        self._calibration = calibration
        self._checkpoint = checkpoint
        self._engine_dir = engine_dir
        self._export_dir = export_dir
        if cuda_graph and self.device.type != "cuda":
            log.info("Metric3D: cuda_graph ignored: CUDA graphs need a CUDA device, not %s", self.device)
        self._cuda_graph = cuda_graph and self.device.type == "cuda"
        if not isinstance(backend, str):
            self._backend = check_backend(backend)
        elif model is not None:
            self._backend = self._torch(model, compile)
        elif backend != "auto":
            self._backend = self._open(backend, compile, cuda_graph, build_progress)
        else:
            self._backend = self._open_auto(compile, cuda_graph, build_progress)
        log.info("Metric3D %s: %s backend, %s, %s", self.backbone, self.backend, precision, self.device)

    @classmethod
    def from_settings(
        cls,
        settings: RuntimeSettings,
        *,
        model: torch.nn.Module | None = None,
        build_progress: BuildProgress = print_progress,
    ) -> Metric3D:
        """The Metric3D that `settings` describe (the command line's, Ray's actors', Triton's model's)."""
        return cls(**settings.keywords(), model=model, build_progress=build_progress)

    @property
    def backend(self) -> str:
        return self._backend.name

    def _open_auto(self, compile: bool, cuda_graph: bool, build_progress: BuildProgress):
        runs = backends_running(self.precision)
        order = [name for name in AUTO_ORDER_CUDA if name in runs]
        if self.device.type != "cuda":
            order = self._cpu_order([name for name in AUTO_ORDER_CPU if name in runs])
        for name in order[:-1]:
            try:
                return self._open(name, compile, cuda_graph, build_progress)
            except (ImportError, RuntimeError) as e:  # not installed, no CUDA provider, engine fails
                reason = str(e).splitlines()[0]
                log.warning("Metric3D: %s backend unavailable (%s); trying the next", name, reason)
        return self._open(order[-1], compile, cuda_graph, build_progress)

    def _cpu_order(self, order: list[str]) -> list[str]:
        """The first of `order`; where that is OpenVINO, what `cpu_auto_backend` chooses, said once."""
        from .cpu import cpu_features
        from .openvino_backend import openvino_installed

        if order[0] != "openvino":
            return order[:1]
        backend, why = cpu_auto_backend(cpu_features(), openvino_installed())
        log.info("Metric3D: auto on the CPU: the %s backend (%s)", backend, why)
        return order[:2] if backend == "openvino" else order[1:2]

    def _open(self, backend: str, compile: bool, cuda_graph: bool, build_progress: BuildProgress):
        if backend == "tensorrt":
            from ..engine.pipeline import build
            from .tensorrt_backend import TensorRTBackend

            engine = build(
                self.backbone,
                self._checkpoint,
                engine_dir=self._engine_dir,
                export_dir=self._export_dir,
                check_loads=True,
                progress=build_progress,
                precision=self.precision,
                calibration=self._calibration,
            )
            return TensorRTBackend(engine, self.device, cuda_graph=cuda_graph)
        if backend == "onnxruntime":
            from .onnxruntime_backend import OnnxRuntimeBackend, onnxruntime_graph, onnxruntime_providers

            providers = onnxruntime_providers(self.device, self._engine_dir)  # before a long export
            graph = (self.backbone, self.precision, self.device, self._checkpoint, self._export_dir)
            return OnnxRuntimeBackend(onnxruntime_graph(*graph, self._calibration), self.device, providers)
        if backend == "openvino":
            from .openvino_backend import open_openvino

            folders = (self._checkpoint, self._export_dir, self._engine_dir)
            return open_openvino(self.backbone, self.precision, self.device, *folders)
        return self._torch(None, compile)

    def _torch(self, model: torch.nn.Module | None, compile: bool):
        from .torch_backend import TorchBackend

        if model is None:
            from ..checkpoint import load_model

            model = load_model(self.backbone, self._checkpoint, device=self.device)
        return TorchBackend(model, self.device, self.precision, compile=compile, cuda_graph=self._cuda_graph)

    def predict(
        self,
        images: np.ndarray | Sequence[np.ndarray] | torch.Tensor,
        fx: float | Sequence[float],
        fy: float | Sequence[float] | None = None,
    ) -> Prediction | list[Prediction] | DepthBatch:
        """Metric depth (metres) at each input's resolution.

        images: one RGB H x W x 3 array (uint8, or float in [0, 1]) -> `Prediction`;
                a list of them (any sizes) -> list of `Prediction`;
                a B x H x W x 3 tensor (ComfyUI IMAGE; may live on the GPU) -> `DepthBatch` of tensors
                on this runtime's device.
        fx, fy: focal lengths in pixels, one for all images or one per image (fy defaults to fx).
        """
        self._check_open()
        if isinstance(images, torch.Tensor):
            batch = canvases_from_tensor(images, self.device)
        elif isinstance(images, np.ndarray | list | tuple):
            arrays = [images] if isinstance(images, np.ndarray) else list(images)
            if not arrays:
                raise InputError("no images given")
            batch = canvases_from_arrays(arrays, self.device)
        else:
            kind = f"{type(images).__module__}.{type(images).__qualname__}"
            raise InputError(
                f"images must be a numpy array, a list of them or a B x H x W x 3 tensor, got {kind}; "
                "convert it first, e.g. np.asarray(pil_image.convert('RGB'))"
            )
        scales = metric_scales(batch.canvases, fx, fy)  # checks fx / fy before the forward
        per_image = self.to_images(self.forward(batch.pixels), batch.canvases, scales)
        if isinstance(images, torch.Tensor):
            return DepthBatch(**{k: torch.stack([p[k] for p in per_image]) for k in per_image[0]})
        focals = focal_lengths(len(batch.canvases), fx, fy)
        results = to_predictions(per_image, batch.canvases, focals)
        return results[0] if isinstance(images, np.ndarray) else results

    def stream(
        self,
        frames: Iterable[np.ndarray | torch.Tensor],
        fx: float,
        fy: float | None = None,
        *,
        latest: bool = False,
        queue_size: int = 2,
    ) -> FrameStream:
        """Depth of a video or camera, pipelined: iterate the returned `FrameStream` for a `StreamResult`
        (index, RGB frame, Prediction, latency_s) per frame, in order, each equal to `predict(frame)`.

        frames: any iterable of RGB frames (H x W x 3 uint8 or float in [0, 1] arrays, H x W x 3 or
                1 x H x W x 3 tensors), e.g. `trt_metric3d.video.FrameSource`. Tensors are put on
                their canvas on the host, as predict does with CPU tensors (a GPU tensor is copied
                back: the result carries the frame as a numpy array).
        fx, fy: the camera's focal lengths in pixels (fy defaults to fx), for every frame.
        latest: a live source: frames are read as fast as they come and only the newest waiting one
                is processed; the others are dropped (counted in `FrameStream.dropped`).
        queue_size: frames waiting between two stages (memory vs. smoothing of uneven stage times).
        Use it in a `with` block, or close() it, when leaving the loop early with a reference kept.
        """
        self._check_open()
        return FrameStream(self, frames, fx, fy, latest=latest, queue_size=queue_size)

    def forward(self, pixels: torch.Tensor) -> Metric3DOutput:
        """The network stage: B x 3 x H x W canvases on this device -> canonical outputs; they may be the
        backend's reused buffers (TensorRT, CUDA graphs), valid until its next call."""
        self._check_open()
        return self._backend(pixels)

    def to_images(
        self, out: Metric3DOutput, canvases: Sequence[Canvas], scales: Sequence[float]
    ) -> list[dict[str, torch.Tensor]]:
        """The post-processing stage: each image's outputs on this device, at its own size, with metric
        "depth" (NaN / inf refused)."""
        check_finite_depth(
            out.depth,
            f"the {self.backend} backend ({self.precision})",
            "the backend is not working here: try precision='fp32' or backend='torch'",
        )
        return to_metric_images(out, canvases, scales)

    def _check_open(self) -> None:
        if self._backend is None:
            raise BackendUnavailable("this Metric3D was closed; create a new one")

    def close(self) -> None:
        """Free the backend and its device memory; the object can no longer predict."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Metric3D:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
