"""`Metric3D`: one predict API over the TensorRT, ONNX Runtime and PyTorch backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..model import BACKBONES
from .batching import (
    DepthBatch,
    Prediction,
    canvases_from_arrays,
    canvases_from_tensor,
    metric_scales,
    to_image_size,
)

log = logging.getLogger("trt_metric3d")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Metric3D:
    """Metric depth, confidence and surface normals from RGB images.

    >>> with Metric3D("vit-small", backend="torch") as m:
    ...     result = m.predict(image, fx=1400.0, fy=1400.0)   # H x W x 3 uint8 -> Prediction
    """

    def __init__(
        self,
        backbone: str = "vit-small",
        backend: str = "auto",
        precision: str | None = None,
        device: str | torch.device | None = None,
        checkpoint: str | None = None,
        compile: bool = False,
        model: torch.nn.Module | None = None,
    ) -> None:
        """backend "auto" picks the fastest that is installed and works, and logs which.
        precision: "fp16" (default on CUDA) or "fp32" (default on CPU).
        checkpoint: official .pth path (default: METRIC3D_CHECKPOINT_DIR, HF cache, download).
        model: an already-loaded PyTorch network to run (torch backend); skips checkpoint loading.
        """
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.backbone = backbone
        self.device = torch.device(device) if device is not None else _default_device()
        if precision is None:
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self._backend = self._open(backend, checkpoint, compile, model)
        log.info("Metric3D %s: %s backend, %s, %s", backbone, self._backend.name, precision, self.device)

    @property
    def backend(self) -> str:
        return self._backend.name

    def _open(self, backend: str, checkpoint: str | None, compile: bool, model: torch.nn.Module | None):
        if model is not None:
            if backend not in ("torch", "auto"):
                raise ValueError(f"a PyTorch model runs on the torch backend, not {backend!r}")
            return self._torch(model, checkpoint, compile)
        if backend == "tensorrt":
            return self._tensorrt(checkpoint)
        if backend == "auto" and self.device.type == "cuda":
            try:
                return self._tensorrt(checkpoint)
            except ImportError as e:  # TensorRT missing: say so once, fall back
                log.warning(
                    "Metric3D: TensorRT backend unavailable, using PyTorch (%s)", str(e).splitlines()[0]
                )
        if backend == "onnxruntime":
            from ..engine.pipeline import exported_onnx
            from .onnxruntime_backend import OnnxRuntimeBackend

            fp32, fp16, _ = exported_onnx(self.backbone, checkpoint)
            return OnnxRuntimeBackend(fp16 if self.precision == "fp16" else fp32, self.device)
        return self._torch(None, checkpoint, compile)

    def _tensorrt(self, checkpoint: str | None):
        from ..engine.pipeline import build
        from .tensorrt_backend import TensorRTBackend

        if self.precision != "fp16":
            raise ValueError("TensorRT engines are built in FP16; use precision='fp16' or another backend")
        return TensorRTBackend(build(self.backbone, checkpoint, check_loads=True), self.device)

    def _torch(self, model: torch.nn.Module | None, checkpoint: str | None, compile: bool):
        from .torch_backend import TorchBackend

        if model is None:
            from ..checkpoint import load_model

            model = load_model(self.backbone, checkpoint, device=self.device)
        return TorchBackend(model, self.device, self.precision, compile=compile)

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
        if self._backend is None:
            raise RuntimeError("this Metric3D was closed; create a new one")
        fy = fx if fy is None else fy
        if isinstance(images, torch.Tensor):
            batch = canvases_from_tensor(images, self.device)
        else:
            arrays = [images] if isinstance(images, np.ndarray) else list(images)
            if not arrays:
                raise ValueError("no images given")
            batch = canvases_from_arrays(arrays, self.device)
        scales = metric_scales(batch.canvases, fx, fy)  # checks fx / fy before the forward
        out = self._backend(batch.pixels)
        per_image = [to_image_size(out, i, c) for i, c in enumerate(batch.canvases)]
        if isinstance(images, torch.Tensor):
            stacked = {k: torch.stack([p[k] for p in per_image]) for k in per_image[0]}
            factors = torch.tensor(scales, device=self.device).view(-1, 1, 1)
            return DepthBatch(depth=stacked["canonical_depth"] * factors, **stacked)
        results = [
            Prediction(
                depth=(p["canonical_depth"] * s).cpu().numpy(),
                confidence=p["confidence"].cpu().numpy(),
                normal=p["normal"].cpu().numpy(),
                canonical_depth=p["canonical_depth"].cpu().numpy(),
                canvas=c,
            )
            for p, s, c in zip(per_image, scales, batch.canvases, strict=True)
        ]
        return results[0] if isinstance(images, np.ndarray) else results

    def close(self) -> None:
        """Free the backend and its device memory; the object can no longer predict."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Metric3D:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
