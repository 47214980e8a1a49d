"""Result files of `infer`: one set per input image, named so that no two inputs of a run collide."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .io import write_npy, write_png
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


def depth_preview(depth: np.ndarray) -> np.ndarray:
    """Coloured RGB preview of a depth map: near is warm, far is cool (turbo on inverse depth)."""
    inverse = 1.0 / np.maximum(depth, 1e-6)
    lo, hi = np.percentile(inverse, (1, 99))
    scaled = np.clip((inverse - lo) / max(hi - lo, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class WrittenResult:
    files: list[Path]
    clipped_pixels: int  # pixels beyond 65.535 m, stored as 65535 in the millimetre PNG


def write_result_set(folder: Path, name: str, prediction: Prediction) -> WrittenResult:
    """<name>_depth.npy (float32 metres), _depth.png (uint16 millimetres), _depth_preview.png, _normal.png."""
    millimetres = np.rint(prediction.depth * 1000)
    clipped = int(np.count_nonzero(millimetres > MAX_DEPTH_MM))
    npy, png, preview, normal = (folder / f"{name}{suffix}" for suffix in RESULT_SUFFIXES)
    files = [
        write_npy(npy, prediction.depth),
        write_png(png, np.clip(millimetres, 0, MAX_DEPTH_MM).astype(np.uint16)),
        write_png(preview, depth_preview(prediction.depth)),
        write_png(normal, normal_to_image(prediction.normal)),
    ]
    return WrittenResult(files, clipped)
