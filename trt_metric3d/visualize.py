"""The depth and normal images the ComfyUI Metric3D nodes show, identical to the original's.

The original drew the depth with matplotlib's "Greys" colormap; matplotlib is not a dependency of
this package, so the colormap's lookup table and its float -> index rule are rebuilt here with the
same float arithmetic (the tests check the result against matplotlib).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# ColorBrewer's 9-class "Greys" (matplotlib's _Greys_data), white to black, as 8-bit levels:
# level / 255 equals matplotlib's float literals exactly.
_GREYS_LEVELS = (255, 240, 217, 189, 150, 115, 82, 37, 0)
_LUT_SIZE = 256  # matplotlib's default rcParams["image.lut"]
_NORM_VMAX = 1.1  # the original's Normalize(vmin=0, vmax=1.1): the deepest pixel is not pure black


def _greys_lut() -> np.ndarray:
    """The 256-entry uint8 grey ramp matplotlib builds for Greys (LinearSegmentedColormap.from_list)."""
    levels = np.array(_GREYS_LEVELS, dtype=np.float64) / 255.0
    last = _LUT_SIZE - 1
    anchors = np.linspace(0.0, 1.0, len(levels)) * last
    samples = last * np.linspace(0.0, 1.0, _LUT_SIZE)
    inner = samples[1:-1]
    right = np.searchsorted(anchors, inner)
    fraction = (inner - anchors[right - 1]) / (anchors[right] - anchors[right - 1])
    ramp = fraction * (levels[right] - levels[right - 1]) + levels[right - 1]
    lut = np.clip(np.concatenate([levels[:1], ramp, levels[-1:]]), 0.0, 1.0)
    # The original scaled the float RGBA by 255 and truncated.
    return (lut * 255).astype(np.uint8)


_GREYS_LUT_U8 = _greys_lut()


def depth_to_image(depth_valid: np.ndarray) -> np.ndarray:
    """H x W depth -> H x W x 3 uint8 grey image, as the original gray_to_colormap(depth, "Greys").

    Negative depths count as 0, depth is divided by its maximum, near-zero pixels are black, far
    pixels dark and near ones light. The caller's array is left untouched.
    """
    depth = np.array(depth_valid, dtype=np.float32)  # a copy: negatives are zeroed below
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"depth must be a non-empty H x W array, got shape {depth.shape}")
    depth[depth < 0] = 0
    invalid = depth < 1e-10
    # A NaN (or an inf maximum) makes matplotlib map every affected pixel to its "bad" colour,
    # black; the float warnings on that path are expected.
    with np.errstate(invalid="ignore", divide="ignore"):
        # The original's operations with the same operand types, so that numpy's promotion rules
        # (value-based in numpy 1, NEP 50 in numpy 2) round every pixel as the original does under
        # the installed numpy: a python float added to the float32 maximum, then matplotlib's
        # Normalize dividing the float32 data by a float64 vmax and storing float32.
        unit = depth / (depth.max() + 1e-8)
        normed = (unit / np.float64(_NORM_VMAX)).astype(np.float32)
        positions = normed * np.float32(_LUT_SIZE)
    bad = np.isnan(positions)
    # Colormap lookup: truncate x * N; below range -> first entry, at or above N -> last entry.
    index = np.clip(np.where(bad, 0, positions), 0, _LUT_SIZE - 1).astype(np.intp)
    grey = _GREYS_LUT_U8[index]
    grey[bad | invalid] = 0
    return np.repeat(grey[:, :, None], 3, axis=2)


def normal_to_image(normal_hw3: np.ndarray) -> np.ndarray:
    """H x W x 3 surface normals -> H x W x 3 uint8: n / (|n| + 1e-8) * 127 + 128, truncated."""
    normal = np.asarray(normal_hw3, dtype=np.float32)
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise ValueError(f"normals must be an H x W x 3 array, got shape {normal.shape}")
    length = np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    unit = normal / (length + np.float32(1e-8))
    return (unit * np.float32(127) + np.float32(128)).astype(np.uint8)


def _pad64(size: int) -> int:
    return -size % 64


def resize_with_pad(
    image_u8: np.ndarray, resolution: int, upscale: int = cv2.INTER_CUBIC
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Resize so the short side is `resolution`, edge-pad to multiples of 64 (controlnet_aux's
    resize_image_with_pad).

    Returns the padded image and `remove_pad`, which returns a copy of any H x W (x C) array cropped
    to the resized size. Upscaling uses `upscale` (an OpenCV interpolation flag), downscaling
    INTER_AREA.
    """
    if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image_u8.dtype} of shape {image_u8.shape}")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
    height, width = image_u8.shape[:2]
    k = float(resolution) / float(min(height, width))
    target_h, target_w = int(np.round(height * k)), int(np.round(width * k))
    resized = cv2.resize(image_u8, (target_w, target_h), interpolation=upscale if k > 1 else cv2.INTER_AREA)
    padded = np.pad(resized, [[0, _pad64(target_h)], [0, _pad64(target_w)], [0, 0]], mode="edge")

    def remove_pad(x: np.ndarray) -> np.ndarray:
        return x[:target_h, :target_w].copy()

    return padded, remove_pad
