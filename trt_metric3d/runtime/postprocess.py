"""Post-processing: the network's canvas outputs back to each image's size, in metres, and to the host.

Also the output buffers the backends fill, and each image's focal lengths and metric scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable, InputError
from ..focal import resolve_focal_lengths
from ..model import Metric3DOutput
from ..processing import Canvas, check_focal, metric_scale, resize_to_image, unpad
from .prediction import Prediction

OUTPUT_CHANNELS = (1, 1, 4, 3)  # depth, confidence, normal (xyz + kappa), normal_iter1


def output_buffers(canvas_shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Float32 tensors for the exported network's outputs, for a B x 3 x H x W canvas batch."""
    b, _, h, w = canvas_shape
    return [torch.empty(b, c, h, w, device=device) for c in OUTPUT_CHANNELS]


def to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Numpy copies of device tensors: asynchronous copies into pinned memory, then one wait."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors, strict=True):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.numpy() for t in host]


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
