"""Batches of images onto canvases and network outputs back to images, on the backend's device.

Numpy images are resized with OpenCV on the host (bit-exact to the original); image tensors that
already live on a GPU are resized there with torch's bilinear filter (no host round-trip; within
one grey level of OpenCV's fixed-point filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable, InputError
from ..focal import resolve_focal_lengths
from ..model import Metric3DOutput
from ..pointcloud import PointCloud, depth_to_point_cloud
from ..processing import (
    CANVAS_HW,
    MAX_PIXELS,
    MAX_SIDE,
    PAD_RGB_U8,
    Canvas,
    check_focal,
    fit_canvas,
    make_canvas,
    metric_scale,
    resize_to_image,
    unpad,
)

OUTPUT_CHANNELS = (1, 1, 4, 3)  # depth, confidence, normal (xyz + kappa), normal_iter1


def output_buffers(canvas_shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Float32 tensors for the exported network's outputs, for a B x 3 x H x W canvas batch."""
    b, _, h, w = canvas_shape
    return [torch.empty(b, c, h, w, device=device) for c in OUTPUT_CHANNELS]


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


def to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Numpy copies of device tensors: asynchronous copies into pinned memory, then one wait."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors, strict=True):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.numpy() for t in host]


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


@dataclass(frozen=True)
class Prediction:
    """One image's results at its own resolution (H x W), numpy float32, and the focal lengths (pixels) it
    was predicted with: the metric depth holds for that camera."""

    depth: np.ndarray  # H x W, metres
    confidence: np.ndarray  # H x W, depth confidence logit
    normal: np.ndarray  # H x W x 3, unit surface normals (camera frame)
    canonical_depth: np.ndarray  # H x W, depth for a focal length of 1000 px
    canvas: Canvas
    fx: float
    fy: float

    def point_cloud(
        self,
        fx: float | None = None,
        fy: float | None = None,
        cx: float | None = None,
        cy: float | None = None,
        stride: int = 1,
        max_depth: float | None = None,
        image: np.ndarray | None = None,
    ) -> PointCloud:
        """The depth back-projected to camera-frame points (x right, y down, z forward, metres).

        fx / fy default to the focal lengths `predict` was given; another value is refused, since the
        depth is metric for that camera only (`depth_to_point_cloud` takes any intrinsics as they come).
        cx / cy default to the image centre; see `depth_to_point_cloud`.
        """
        fx, fy = _predicted_with("fx", fx, self.fx), _predicted_with("fy", fy, self.fy)
        return depth_to_point_cloud(self.depth, fx, fy, cx, cy, stride, max_depth, image)


def _predicted_with(name: str, given: object, used: float) -> float:
    """`used`, the focal length the depth was predicted with; InputError if `given` is another one."""
    if given is None:
        return used
    focal = check_focal(name, given)
    if not math.isclose(focal, used, rel_tol=1e-6):  # float32 copies of `used` are the same camera
        raise InputError(
            f"{name}={focal:g} is not the {name}={used:g} this depth was predicted with, and the depth is "
            f"metric for that camera only: leave {name} out, or predict again with {name}={focal:g} "
            f"(depth_to_point_cloud(prediction.depth, {name}={focal:g}) back-projects it as it is)"
        )
    return used


@dataclass(frozen=True)
class DepthBatch:
    """Results for same-size images, torch tensors on the backend's device (float32)."""

    depth: torch.Tensor  # B x H x W, metres
    confidence: torch.Tensor  # B x H x W
    normal: torch.Tensor  # B x H x W x 3, unit normals
    canonical_depth: torch.Tensor  # B x H x W, depth for a 1000 px focal length


def to_image_size(out: Metric3DOutput, index: int, canvas: Canvas) -> dict[str, torch.Tensor]:
    """One image's outputs, un-padded and resized to the image: H x W (x 3) float32 tensors."""

    def resize(t: torch.Tensor) -> torch.Tensor:
        return resize_to_image(unpad(t[index : index + 1].float(), canvas), canvas)[0]

    normal = F.normalize(resize(out.normal[:, :3]), dim=0)
    return {
        "canonical_depth": resize(out.depth)[0],
        "confidence": resize(out.confidence)[0],
        "normal": normal.permute(1, 2, 0),
    }


def to_metric_images(
    out: Metric3DOutput, canvases: Sequence[Canvas], scales: Sequence[float]
) -> list[dict[str, torch.Tensor]]:
    """`to_image_size` of each image, with metric "depth": canonical depth x its `metric_scales` factor."""
    per_image = [to_image_size(out, i, c) for i, c in enumerate(canvases)]
    for p, s in zip(per_image, scales, strict=True):
        p["depth"] = p["canonical_depth"] * s
    return per_image


def check_finite_depth(depth: torch.Tensor, source: str, fix: str) -> None:
    """Refuse NaN / inf canonical depth (B x 1 x H x W) from `source` (e.g. "the tensorrt backend (fp16)"),
    naming the first bad image and the fix: one reduction; the search only on failure."""
    if bool(torch.isfinite(depth).all()):
        return
    index = next(i for i, image in enumerate(depth) if not bool(torch.isfinite(image).all()))
    raise BackendUnavailable(f"{source} returned NaN or inf depth for image {index}; {fix}")


def to_predictions(
    per_image: Sequence[dict[str, torch.Tensor]],
    canvases: Sequence[Canvas],
    focals: Sequence[tuple[float, float]],
) -> list[Prediction]:
    """Host `Prediction`s of `to_image_size` results with metric "depth" added, made with `focals` (each
    image's fx, fy from `focal_lengths`): one wait for all copies."""
    fields = ("depth", "confidence", "normal", "canonical_depth")
    host = iter(to_host([p[f] for p in per_image for f in fields]))
    return [
        Prediction(**{f: next(host) for f in fields}, canvas=c, fx=fx, fy=fy)
        for c, (fx, fy) in zip(canvases, focals, strict=True)
    ]


def _is_per_image(value: object) -> bool:
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.ndim == 1
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _per_image(name: str, value: object, n: int) -> list[tuple[str, object]]:
    """(name, value) of fx or fy for each of n images: a 1-d sequence / array / tensor gives one per
    image, anything else is one value for all (checked as a number by `metric_scale`)."""
    if not _is_per_image(value):
        return [(name, value)] * n
    return [(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _named_focals(n: int, fx: object, fy: object) -> list[tuple[str, object, str, object]]:
    """(fx name, fx, fy name, fy) for each of n images (fy defaults to fx); InputError when fx or fy has
    another count."""
    fx, fy, _ = resolve_focal_lengths(fx, fy, check=False)  # each image's values are checked by the caller
    fxs, fys = _per_image("fx", fx, n), _per_image("fy", fy, n)
    if len(fxs) != n or len(fys) != n:
        raise InputError(
            f"got {len(fxs)} fx and {len(fys)} fy values for {n} images; pass one each or a scalar"
        )
    return [(*x, *y) for x, y in zip(fxs, fys, strict=True)]


def focal_lengths(
    n: int, fx: float | Sequence[float], fy: float | Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """Each of n images' checked (fx, fy) in pixels; fx/fy are scalars or one per image."""
    named = _named_focals(n, fx, fy)
    return [(check_focal(x_name, x), check_focal(y_name, y)) for x_name, x, y_name, y in named]


def metric_scales(
    canvases: Sequence[Canvas], fx: float | Sequence[float], fy: float | Sequence[float] | None = None
) -> list[float]:
    """Per-image metres-per-canonical-unit factors; fx/fy are scalars or one per image."""
    named = _named_focals(len(canvases), fx, fy)
    return [
        metric_scale(canvas, x, y, names=(x_name, y_name))
        for canvas, (x_name, x, y_name, y) in zip(canvases, named, strict=True)
    ]
