"""One image through the PyTorch model: canonical canvas in, metric depth and normals out."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .processing import Canvas, metric_scale, preprocess, resize_to_image, unpad


@dataclass(frozen=True)
class Prediction:
    """Results at the input image's resolution (H x W)."""

    depth: np.ndarray  # H x W float32, metres
    confidence: np.ndarray  # H x W float32, depth confidence logit
    normal: np.ndarray  # H x W x 3 float32, unit surface normals (camera frame)
    canonical_depth: np.ndarray  # H x W float32, depth for a focal length of 1000 px
    canvas: Canvas


def device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which float type `model` computes: from its first parameter or buffer.

    A wrapped engine may hold only buffers, or nothing (then it runs on the CPU in float32).
    """
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    if tensor is None:
        return torch.device("cpu"), torch.float32
    return tensor.device, tensor.dtype if tensor.is_floating_point() else torch.float32


def _to_image(t: torch.Tensor, canvas: Canvas) -> np.ndarray:
    """1 x C x canvas -> H x W (x C) float32 numpy at the image size."""
    image = resize_to_image(unpad(t, canvas), canvas)[0].float().cpu()
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


@torch.inference_mode()
def predict_image(model: torch.nn.Module, image: np.ndarray, fx: float, fy: float) -> Prediction:
    """Metric depth (metres), confidence and surface normals for one RGB image (H x W x 3)."""
    x, canvas = preprocess(image)
    scale = metric_scale(canvas, fx, fy)  # checks fx, fy before the costly forward
    device, dtype = device_and_dtype(model)
    out = model(x.to(device, dtype))
    normal = torch.nn.functional.normalize(resize_to_image(unpad(out.normal[:, :3], canvas), canvas), dim=1)
    canonical = _to_image(out.depth, canvas)
    return Prediction(
        depth=canonical * np.float32(scale),
        confidence=_to_image(out.confidence, canvas),
        normal=normal[0].permute(1, 2, 0).float().cpu().numpy(),
        canonical_depth=canonical,
        canvas=canvas,
    )
