"""Canonical-camera pre- and post-processing around the network, as the original Metric3D does it.

The network always sees a 616 x 1064 canvas: the image is scaled (aspect kept) to fit it, padded
around the centre, and normalised with the ImageNet mean / std. Its depth is "canonical": the depth
a camera with a 1000 px focal length would measure on the canvas. `to_metric_depth` undoes both the
resize and the focal normalisation.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

CANVAS_HW = (616, 1064)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
CANONICAL_FOCAL = 1000.0
# The original pads with cv2.copyMakeBorder(value=MEAN); on a uint8 image OpenCV rounds that
# colour to these integers, so the padding is not exactly zero after normalisation.
PAD_RGB_U8 = (124, 116, 104)
# The network clamps canonical depth to [0.1, 200] (the model configs' max_depth).
MAX_CANONICAL_DEPTH = 200.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # a Python float: comparing to it casts nothing

MAX_SIDE = 32768
MAX_PIXELS = 100_000_000

_MEAN_T = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
_STD_T = torch.tensor(STD, dtype=torch.float32)[:, None, None]


@dataclass(frozen=True)
class Canvas:
    """Where an image sits on the network canvas.

    image_hw:   the original image's (H, W)
    scale:      resize ratio r = min(616 / H, 1064 / W)
    resized_hw: (h, w) of the resized image = the valid region of the canvas
    pad:        (top, bottom, left, right) padding around the valid region
    canvas_hw:  the canvas (616, 1064)
    """

    image_hw: tuple[int, int]
    scale: float
    resized_hw: tuple[int, int]
    pad: tuple[int, int, int, int]
    canvas_hw: tuple[int, int] = CANVAS_HW


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check an RGB image and return it as a C-contiguous H x W x 3 uint8 array.

    Accepts uint8, or float32 / float64 in [0, 1] (the ComfyUI IMAGE layout), converted as ComfyUI
    nodes do (`x * 255` truncated), so uint8 values survive a `/ 255` round trip exactly.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"image must be a numpy array, got {type(image).__module__}.{type(image).__qualname__}; "
            "convert it first, e.g. np.asarray(pil_image) or tensor.cpu().numpy()"
        )
    shape = tuple(image.shape)
    if image.ndim != 3 or shape[2] != 3:
        if image.ndim == 2 or (image.ndim == 3 and shape[2] == 1):
            fix = "it looks grayscale: convert it to RGB, e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)"
        elif image.ndim == 3 and shape[2] == 4:
            fix = "it looks RGBA: drop or composite the alpha channel, e.g. image[..., :3]"
        elif image.ndim == 4:
            fix = "it looks like a batch: pass one image at a time, e.g. images[0]"
        else:
            fix = "pass a single RGB image"
        raise InputError(f"image must have shape (H, W, 3) (RGB), got shape {shape}; {fix}")
    height, width = shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"image is empty (shape {shape}); pass an image with at least one row and column")
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise InputError(
            f"image of {height}x{width} is too large: the limit is {MAX_SIDE} pixels per side and "
            f"{MAX_PIXELS // 1_000_000} megapixels; downscale it first (the network sees at most "
            f"{CANVAS_HW[0]}x{CANVAS_HW[1]} anyway)"
        )
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype not in (np.float32, np.float64):
        raise InputError(
            f"image dtype {image.dtype} is not supported; pass uint8 (0..255) or float32/float64 in "
            "[0, 1], e.g. image.astype(np.float32) / 255 for 8-bit data"
        )
    if not np.isfinite(image).all():
        raise InputError("image contains NaN or inf values; replace them first, e.g. np.nan_to_num(image)")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"float image values must lie in [0, 1], got [{low:g}, {high:g}]; "
            "for 0..255 data divide by 255 or cast to uint8, otherwise clip to [0, 1]"
        )
    # ComfyUI / controlnet_aux: np.asarray(x * 255., dtype=np.uint8) truncates, it does not round.
    return np.ascontiguousarray(np.asarray(image * 255.0, dtype=np.uint8))


def fit_canvas(height: int, width: int) -> Canvas:
    """Where an image of height x width lands on the canvas (keep-ratio fit, centred padding)."""
    canvas_h, canvas_w = CANVAS_HW
    scale = min(canvas_h / height, canvas_w / width)
    # int() truncation of the float64 products, as the original: 289 rows * (616/289) -> 615.
    resized_h, resized_w = int(scale * height), int(scale * width)
    if resized_h == 0 or resized_w == 0:
        raise InputError(
            f"image of {height}x{width} is too elongated: it would shrink to {resized_h}x{resized_w} "
            f"on the {canvas_h}x{canvas_w} canvas; crop it to a less extreme aspect ratio"
        )
    pad_h, pad_w = canvas_h - resized_h, canvas_w - resized_w
    top, left = int(pad_h / 2), int(pad_w / 2)
    return Canvas(
        image_hw=(height, width),
        scale=scale,
        resized_hw=(resized_h, resized_w),
        pad=(top, pad_h - top, left, pad_w - left),
    )


def make_canvas(image: np.ndarray) -> tuple[np.ndarray, Canvas]:
    """Resize and pad an RGB image onto the 616 x 1064 uint8 canvas the network sees."""
    image = validate_image(image)
    canvas = fit_canvas(*image.shape[:2])
    (resized_h, resized_w), (top, _, left, _) = canvas.resized_hw, canvas.pad
    # OpenCV's fixed-point uint8 bilinear: a float port differs by 1 on ~12 % of the pixels.
    resized = cv2.resize(image, dsize=(resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    canvas_u8 = np.empty((*CANVAS_HW, 3), dtype=np.uint8)
    canvas_u8[:] = PAD_RGB_U8
    canvas_u8[top : top + resized_h, left : left + resized_w] = resized
    return canvas_u8, canvas


def normalize_canvas(canvas_u8: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 canvas -> normalised float32 1 x 3 x H x W network input."""
    x = torch.from_numpy(np.ascontiguousarray(canvas_u8)).permute(2, 0, 1).float()
    return ((x - _MEAN_T) / _STD_T)[None].contiguous()


def preprocess(image: np.ndarray) -> tuple[torch.Tensor, Canvas]:
    """RGB image -> (1 x 3 x 616 x 1064 float32 network input, its Canvas); bit-exact to the original."""
    canvas_u8, canvas = make_canvas(image)
    return normalize_canvas(canvas_u8), canvas


def unpad(t: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Crop a B x C x canvas tensor to the valid (resized image) region."""
    if tuple(t.shape[-2:]) != canvas.canvas_hw:
        raise InputError(f"expected a tensor of spatial size {canvas.canvas_hw}, got shape {tuple(t.shape)}")
    top, _, left, _ = canvas.pad
    height, width = canvas.resized_hw
    return t[..., top : top + height, left : left + width]


def resize_to_image(t: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of a B x C x h x w tensor to the original image size."""
    return F.interpolate(t, size=canvas.image_hw, mode="bilinear", align_corners=False)


def _describe(value: object) -> str:
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"a {name} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} (a {name})"


def check_focal(name: str, value: object) -> float:
    """A focal length in pixels as a float: a real number, or a 0-d numpy array / torch tensor of one."""
    number = value.item() if isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 0 else value
    # bool is an int subclass: fx=True would silently mean 1 px. (numpy bools are no numbers.Real.)
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise InputError(
            f"{name} must be a real number, the focal length in pixels, got {_describe(value)}; pass "
            f"e.g. {name}=1400.0, or a list with one value per image"
        )
    focal = float(number)
    if not math.isfinite(focal) or focal <= 0:
        raise InputError(
            f"{name} must be a finite focal length in pixels > 0, got {value!r}; pass the camera's "
            f"focal length in pixels of this image (f_mm / sensor_width_mm * image_width_px)"
        )
    return focal


def metric_scale(canvas: Canvas, fx: object, fy: object, names: tuple[str, str] = ("fx", "fy")) -> float:
    """Factor from canonical canvas depth to metres: focal * r / 1000, focal = (fx + fy) / 2.

    The inverse of the original's label_scale_factor = (1000 / focal) / r. `names` are what error
    messages call fx and fy (e.g. "fx[2]" for the third image of a batch).
    """
    focals = (check_focal(names[0], fx), check_focal(names[1], fy))
    scale = (focals[0] + focals[1]) / 2 * canvas.scale / CANONICAL_FOCAL
    if MAX_CANONICAL_DEPTH * scale > _FLOAT32_MAX:
        name, focal = max(zip(names, focals, strict=True), key=lambda named: named[1])
        raise InputError(
            f"{name}={focal:g} is absurdly large for a focal length in pixels: the metric depth "
            f"would overflow float32; pass the camera's focal length in pixels of this image"
        )
    return scale


def to_metric_depth(depth_canvas: torch.Tensor, canvas: Canvas, fx: float, fy: float) -> torch.Tensor:
    """Canonical B x 1 x canvas depth -> B x 1 x H x W metric depth (metres) at the image size."""
    scale = metric_scale(canvas, fx, fy)
    return resize_to_image(unpad(depth_canvas, canvas), canvas) * scale
