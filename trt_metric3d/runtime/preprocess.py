"""Pre-processing: images onto the network's 616 x 1064 canvases, on the backend's device.

Numpy images are resized with OpenCV on the host (bit-exact to the original); image tensors that
already live on a GPU are resized there with torch's bilinear filter (no host round-trip; within
one grey level of OpenCV's fixed-point filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..processing import CANVAS_HW, MAX_PIXELS, MAX_SIDE, PAD_RGB_U8, Canvas, fit_canvas, make_canvas


@dataclass(frozen=True)
class CanvasBatch:
    """B x 3 x 616 x 1064 float32 RGB canvases (0..255, not normalised) and where each image sits."""

    pixels: torch.Tensor
    canvases: list[Canvas]


def host_canvases(images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Canvas]]:
    """Images checked and put on B x 616 x 1064 x 3 uint8 canvases on the host (OpenCV, bit-exact)."""
    canvases_u8, canvases = zip(*(make_canvas(image) for image in images), strict=True)
    return torch.from_numpy(np.stack(canvases_u8)), list(canvases)


def upload(canvases_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """B x H x W x 3 uint8 host canvases -> B x 3 x H x W float32 on `device`, sent as uint8 (a quarter
    of the float bytes)."""
    if device.type == "cuda" and not canvases_u8.is_pinned():
        # Page-locked staging, so the copy runs asynchronously. torch's pinned-memory allocator
        # caches blocks and reuses one only after the copy that read it has finished.
        canvases_u8 = canvases_u8.pin_memory()
    return canvases_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float()


def canvases_from_arrays(images: Sequence[np.ndarray], device: torch.device) -> CanvasBatch:
    """Canvases made on the host and uploaded to `device`."""
    canvases_u8, canvases = host_canvases(images)
    return CanvasBatch(upload(canvases_u8, device), canvases)


IMAGE_TENSOR_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_image_tensor(images: torch.Tensor) -> torch.Tensor:
    """B x H x W x 3 float in [0, 1] (ComfyUI IMAGE) or uint8, detached, half floats as float32.

    Clear InputErrors for any other layout, dtype or value range.
    """
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[3] != 3:
        raise InputError(
            f"an image tensor must be B x H x W x 3 (ComfyUI IMAGE layout), got shape {shape}; "
            "add a batch dimension with images[None] or drop alpha with images[..., :3]"
        )
    if 0 in shape[:3]:
        raise InputError(f"empty image tensor (shape {shape})")
    if max(shape[1:3]) > MAX_SIDE or shape[1] * shape[2] > MAX_PIXELS:
        raise InputError(
            f"images of {shape[1]}x{shape[2]} are too large (limit {MAX_SIDE} per side); downscale"
        )
    if images.dtype not in IMAGE_TENSOR_DTYPES:
        raise InputError(
            f"image tensor dtype {images.dtype} is not supported; use float in [0, 1] or uint8, "
            "e.g. images.float() / 255 for 8-bit data"
        )
    images = images.detach()
    if images.dtype == torch.uint8:
        return images
    if images.dtype in (torch.float16, torch.bfloat16):
        images = images.float()
    if not torch.isfinite(images).all():
        raise InputError("image tensor contains NaN or inf values")
    low, high = images.min().item(), images.max().item()
    if low < 0 or high > 1:
        raise InputError(
            f"float image values must lie in [0, 1], got [{low:g}, {high:g}]; divide 0..255 data by 255"
        )
    return images


def canvases_from_tensor(images: torch.Tensor, device: torch.device) -> CanvasBatch:
    """Same-size B x H x W x 3 images; host tensors take the exact OpenCV path, GPU ones stay there."""
    images = check_image_tensor(images)
    if images.device.type == "cpu":
        return canvases_from_arrays(list(images.numpy()), device)
    canvas = fit_canvas(images.shape[1], images.shape[2])
    images = images.to(device, non_blocking=True)
    if images.dtype != torch.uint8:
        images = (images * 255.0).to(torch.uint8)  # truncation, as ComfyUI's nodes convert
    resized = F.interpolate(images.permute(0, 3, 1, 2).float(), size=canvas.resized_hw, mode="bilinear")
    resized = resized.round_().clamp_(0, 255)
    pixels = torch.tensor(PAD_RGB_U8, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    pixels = pixels.expand(images.shape[0], 3, *CANVAS_HW).clone()
    top, _, left, _ = canvas.pad
    pixels[:, :, top : top + canvas.resized_hw[0], left : left + canvas.resized_hw[1]] = resized
    return CanvasBatch(pixels, [canvas] * images.shape[0])
