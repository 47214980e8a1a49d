"""Result files of `infer` and `video`: names that never collide, depth previews, the writers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .io import write_npy, write_png
from .pointcloud import PointCloud, write_ply
from .runtime import Prediction
from .visualize import normal_to_image

MAX_DEPTH_MM = int(np.iinfo(np.uint16).max)
RESULT_SUFFIXES = ("_depth.npy", "_depth.png", "_depth_preview.png", "_normal.png")


def _name(path: Path, level: int) -> str:
    """Ever more specific names for `path`: stem; stem_ext; parent_stem_ext; grandparent_parent_..."""
    if level == 0:
        return path.stem
    name = f"{path.stem}_{path.suffix.lstrip('.')}" if path.suffix else path.stem
    folders = path.resolve().parent.parts[1:]  # without the root ("/" or "C:\\")
    used = folders[len(folders) - min(level - 1, len(folders)) :]
    return "_".join([*used, name])


def result_names(paths: Sequence[Path]) -> list[str]:
    """One distinct name per input path (inputs are distinct files), the plain stem wherever it is unique.

    Where stems clash (`a/photo.png`, `a/photo.jpg`, `b/photo.jpg`) the extension is added, then
    folder names in front, as far as needed. Names are compared without case, as on macOS or Windows.
    """
    levels = [0] * len(paths)
    names = [_name(p, 0) for p in paths]
    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, name in enumerate(names):
            groups[name.lower()].append(index)
        clashing = [group for group in groups.values() if len(group) > 1]
        if not clashing:
            return names
        for group in clashing:
            for index in group:
                levels[index] += 1
                every_folder = len(paths[index].resolve().parts)  # the level that names all folders
                name = _name(paths[index], min(levels[index], every_folder))
                # beyond that, the paths differ only in case: their position tells them apart
                names[index] = name if levels[index] <= every_folder else f"{name}_{index + 1}"


def inverse_depth_range(depth: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of inverse depth: the span a preview's colours cover."""
    lo, hi = np.percentile(1.0 / np.maximum(depth, 1e-6), (1, 99))
    return float(lo), float(hi)


def depth_preview(depth: np.ndarray, inverse_range: tuple[float, float] | None = None) -> np.ndarray:
    """Coloured RGB preview of a depth map: near is warm, far is cool (turbo on inverse depth).

    inverse_range: the inverse depths mapped to the ends of the colour map (default: this image's).
    """
    lo, hi = inverse_range or inverse_depth_range(depth)
    inverse = 1.0 / np.maximum(depth, 1e-6)
    scaled = np.clip((inverse - lo) / max(hi - lo, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class SteadyDepthPreview:
    """Depth previews for a video: the colour range follows the scene slowly, so colours do not flicker
    from frame to frame as a per-frame range would."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.inverse_range: tuple[float, float] | None = None

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        lo, hi = inverse_depth_range(depth)
        if self.inverse_range is not None:
            k = self.smoothing
            lo, hi = k * self.inverse_range[0] + (1 - k) * lo, k * self.inverse_range[1] + (1 - k) * hi
        self.inverse_range = (lo, hi)
        return depth_preview(depth, self.inverse_range)


def depth_millimetres(depth: np.ndarray) -> tuple[np.ndarray, int]:
    """(uint16 millimetres, how many pixels lie beyond 65.535 m and were stored as 65535)."""
    millimetres = np.rint(depth * 1000)
    clipped = int(np.count_nonzero(millimetres > MAX_DEPTH_MM))
    return np.clip(millimetres, 0, MAX_DEPTH_MM).astype(np.uint16), clipped


@dataclass(frozen=True)
class WrittenResult:
    files: list[Path]
    clipped_pixels: int  # pixels beyond 65.535 m, stored as 65535 in the millimetre PNG


def write_result_set(
    folder: Path, name: str, prediction: Prediction, point_cloud: PointCloud | None = None
) -> WrittenResult:
    """<name>_depth.npy (float32 metres), _depth.png (uint16 millimetres), _depth_preview.png, _normal.png,
    and <name>.ply when a point cloud is given."""
    millimetres, clipped = depth_millimetres(prediction.depth)
    npy, png, preview, normal, *ply = result_files(folder, name, point_cloud is not None)
    files = [
        write_npy(npy, prediction.depth),
        write_png(png, millimetres),
        write_png(preview, depth_preview(prediction.depth)),
        write_png(normal, normal_to_image(prediction.normal)),
    ]
    if point_cloud is not None:
        files.append(write_ply(ply[0], point_cloud))
    return WrittenResult(files, clipped)


def result_files(folder: Path, name: str, ply: bool = False) -> list[Path]:
    """The files `write_result_set` writes for `name`, in its order."""
    return [folder / f"{name}{suffix}" for suffix in RESULT_SUFFIXES] + (
        [folder / f"{name}.ply"] if ply else []
    )
