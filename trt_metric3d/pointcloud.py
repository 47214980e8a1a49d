"""Metric depth to 3D points in the camera frame, and binary PLY files of them.

The convention is the original Metric3D's (mono/utils/unproj_pcd.py `reconstruct_pcd`): OpenCV
camera axes (x right, y down, z forward, metres), pixel (u, v) at the integer coordinates of its
column and row, X = (u - cx) * Z / fx, Y = (v - cy) * Z / fy. The principal point defaults to
(W / 2, H / 2), as the original's demo intrinsics [fx, fy, W / 2, H / 2] (mono/utils/do_test.py).
Unlike `reconstruct_pcd`, the depth is not median-filtered first: points are the predicted depths.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .focal import resolve_focal_lengths
from .io import atomic_write_bytes
from .processing import validate_image

_PLY_TYPES = {"<f4": "float", "|u1": "uchar"}  # numpy dtype.str -> PLY property type


def _is_rows_of_3(value: object, dtype: type) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == dtype and value.ndim == 2 and value.shape[1] == 3


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} of shape {value.shape}"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class PointCloud:
    """N points in the camera frame (N x 3 float32, metres) and their RGB colours (N x 3 uint8) or None."""

    points: np.ndarray
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        # write_ply assigns columns into a structured array, which would broadcast bad shapes silently.
        if not _is_rows_of_3(self.points, np.float32):
            raise InputError(
                f"points must be an N x 3 float32 array, got {_describe(self.points)}; "
                "convert with np.asarray(points, dtype=np.float32).reshape(-1, 3)"
            )
        if self.colors is not None and not (
            _is_rows_of_3(self.colors, np.uint8) and len(self.colors) == len(self.points)
        ):
            raise InputError(
                f"colors must be None or an N x 3 uint8 array for the {len(self.points)} points, got "
                f"{_describe(self.colors)}; pass one RGB uint8 row per point"
            )

    def __len__(self) -> int:
        return len(self.points)


def _check_principal_point(name: str, value: object, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(
            f"{name} must be a finite number, the principal point in pixels, got {value!r}; "
            f"pass e.g. {name}={default:g} (the image centre) or leave it out"
        )
    return float(value)


def _check_stride(stride: object) -> int:
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise InputError(
            f"stride must be an integer >= 1, got {stride!r}; pass e.g. stride=4 to keep every 4th "
            "row and column, or stride=1 for every pixel"
        )
    return int(stride)


def _check_max_depth(max_depth: object) -> float:
    if max_depth is None:
        return math.inf
    # `not > 0` also refuses NaN.
    if isinstance(max_depth, bool) or not isinstance(max_depth, numbers.Real) or not max_depth > 0:
        raise InputError(
            f"max_depth must be a distance in metres > 0, got {max_depth!r}; pass e.g. max_depth=20.0, "
            "or leave it out to keep every point"
        )
    return float(max_depth)


def _check_colors(image: object, depth_hw: tuple[int, int]) -> np.ndarray:
    image = validate_image(image)
    if image.shape[:2] != depth_hw:
        raise InputError(
            f"image is {image.shape[0]}x{image.shape[1]} but the depth is {depth_hw[0]}x{depth_hw[1]}; "
            "pass the image the prediction was made from"
        )
    return image


def depth_to_point_cloud(
    depth: np.ndarray,
    fx: float,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    stride: int = 1,
    max_depth: float | None = None,
    image: np.ndarray | None = None,
) -> PointCloud:
    """Back-project an H x W metric depth map (metres) through a pinhole camera; see the module doc.

    fy defaults to fx, (cx, cy) to (W / 2, H / 2). Every `stride`-th row and column is kept; points
    with a non-finite, non-positive or farther than `max_depth` depth are dropped. `image` (H x W x 3
    RGB, as `predict` accepts it) colours the points. Points come in row-major pixel order.
    """
    if not isinstance(depth, np.ndarray) or depth.ndim != 2:
        raise InputError(
            f"depth must be an H x W numpy array, got {_describe(depth)}; "
            "pass one image's depth, e.g. prediction.depth"
        )
    height, width = depth.shape
    fx, fy, _ = resolve_focal_lengths(fx, fy)
    cx = _check_principal_point("cx", cx, width / 2)
    cy = _check_principal_point("cy", cy, height / 2)
    stride = _check_stride(stride)
    max_depth = _check_max_depth(max_depth)
    colors = None if image is None else _check_colors(image, (height, width))

    z = depth[::stride, ::stride]
    rows, cols = np.nonzero(np.isfinite(z) & (z > 0) & (z <= max_depth))  # NaN fails every comparison
    z = z[rows, cols].astype(np.float32)
    # One float32 ray per kept column / row at its full-size pixel coordinate, as the original's grid.
    x_rays = ((np.arange(0, width, stride) - cx) / fx).astype(np.float32)
    y_rays = ((np.arange(0, height, stride) - cy) / fy).astype(np.float32)
    points = np.stack([x_rays[cols] * z, y_rays[rows] * z, z], axis=1)
    if colors is not None:
        colors = colors[::stride, ::stride][rows, cols]
    return PointCloud(points, colors)


def write_ply(path: str | os.PathLike, cloud: PointCloud) -> Path:
    """Write `cloud` as a binary little-endian PLY 1.0 file (x, y, z floats; red, green, blue uchars)."""
    columns = dict(zip(("x", "y", "z"), cloud.points.T, strict=True))
    if cloud.colors is not None:
        columns |= dict(zip(("red", "green", "blue"), cloud.colors.T, strict=True))
    # A packed structured array: its bytes are the PLY vertex records, with no per-point Python loop.
    dtype = np.dtype([(name, column.dtype.newbyteorder("<")) for name, column in columns.items()])
    vertices = np.empty(len(cloud), dtype=dtype)
    for name, column in columns.items():
        vertices[name] = column
    properties = "".join(f"property {_PLY_TYPES[dtype[name].str]} {name}\n" for name in columns)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(cloud)}\n{properties}end_header\n"
    return atomic_write_bytes(path, header.encode("ascii") + vertices.tobytes())
