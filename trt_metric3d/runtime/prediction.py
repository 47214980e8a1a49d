"""The runtime's result types: a `Prediction` per image on the host, a `DepthBatch` on the device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..pointcloud import PointCloud, depth_to_point_cloud
from ..processing import Canvas, check_focal


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
