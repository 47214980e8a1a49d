"""The ComfyUI Metric3D depth / normal map nodes as one plain function.

Reproduces comfyui_controlnet_aux's Metric3D_Depth_Map_Preprocessor and
Metric3D_Normal_Map_Preprocessor outputs, but both images come from a single forward (the original
ran the full network once per node). fx / fy are not parameters: the original nodes accept them
but neither image depends on them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .model import Metric3DOutput
from .processing import Canvas, resize_to_image, unpad
from .runtime import Metric3D
from .runtime.preprocess import canvases_from_arrays
from .visualize import depth_to_image, normal_to_image, resize_with_pad

DEFAULT_RESOLUTION = 512
MIN_RESOLUTION = 64


def _detect_resolution(resolution: int) -> int:
    # controlnet_aux's common_annotator_call silently uses 512 for anything but an int >= 64.
    integral = isinstance(resolution, numbers.Integral) and not isinstance(resolution, bool)
    return int(resolution) if integral and resolution >= MIN_RESOLUTION else DEFAULT_RESOLUTION


def controlnet_maps(
    model: torch.nn.Module,
    image: np.ndarray,
    resolution: int = DEFAULT_RESOLUTION,
    upscale: int = cv2.INTER_CUBIC,
) -> tuple[np.ndarray, np.ndarray]:
    """(depth image, normal image), both uint8 h' x w' x 3, as the original ComfyUI nodes output them.

    image: RGB H x W x 3, uint8 or float in [0, 1] (one ComfyUI IMAGE frame).
    resolution: short side of the outputs; values below 64 mean 512, as in controlnet_aux.
    upscale: OpenCV interpolation when the maps are enlarged (shrinking always uses INTER_AREA).
    The network runs where its parameters are, in their precision (fp16 weights: fp16 autocast).
    """
    return controlnet_maps_batch(model, [image], resolution, upscale)[0]


def controlnet_maps_batch(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    resolution: int = DEFAULT_RESOLUTION,
    upscale: int = cv2.INTER_CUBIC,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`controlnet_maps` for several images with one forward of the network."""
    weight = next(model.parameters())
    precision = "fp16" if weight.dtype == torch.float16 else "fp32"
    with Metric3D(model=model, device=weight.device, precision=precision) as runtime:
        return runtime_controlnet_maps(runtime, images, resolution, upscale)


def runtime_controlnet_maps(
    runtime: Metric3D,
    images: Sequence[np.ndarray],
    resolution: int = DEFAULT_RESOLUTION,
    upscale: int = cv2.INTER_CUBIC,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`controlnet_maps` of each RGB image through an open `Metric3D` (any backend), one forward."""
    batch = canvases_from_arrays(list(images), runtime.device)
    out = runtime.forward(batch.pixels)
    return [node_images(out, i, c, resolution, upscale) for i, c in enumerate(batch.canvases)]


def node_images(
    out: Metric3DOutput, index: int, canvas: Canvas, resolution: int, upscale: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of a batch of network outputs drawn as the nodes' (depth image, normal image)."""
    resolution = _detect_resolution(resolution)
    # The depth image is drawn at the valid canvas size, the normals at the image size.
    depth = unpad(out.depth[index : index + 1], canvas)[0, 0].float().cpu().numpy()
    normal = resize_to_image(unpad(out.normal_iter1[index : index + 1], canvas).float(), canvas)
    normal = normal[0].permute(1, 2, 0).cpu().numpy()
    depth_image = depth_to_image(depth)
    # ControlNet's normal convention is the inverse of Metric3D's visualisation.
    normal_image = 255 - normal_to_image(normal)
    depth_padded, remove_pad = resize_with_pad(depth_image, resolution, upscale)
    normal_padded, _ = resize_with_pad(normal_image, resolution, upscale)
    # The original crops both with the depth map's remove_pad, so the normal map takes the depth
    # map's size (edge-replicated where its own resize came out smaller).
    return remove_pad(depth_padded), remove_pad(normal_padded)
