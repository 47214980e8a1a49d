"""The ensemble's pre- and post-processing around the TensorRT plan, on numpy arrays: what its Python
models run, with the functions `Metric3D.predict` uses, so the ensemble answers what predict returns.

Every image lands on the same 616 x 1064 canvas (portrait ones too, letterboxed as predict does), so
the plan sees one input shape and Triton batches canvases of any image sizes together.
"""

from __future__ import annotations

import numpy as np
import torch

from ..export import INPUT_NAME, OUTPUT_NAMES
from ..model import Metric3DOutput
from ..processing import fit_canvas
from ..runtime.postprocess import OUTPUT_CHANNELS, check_finite_depth, metric_scales, to_metric_images
from ..runtime.preprocess import canvases_from_arrays
from .interface import CONFIDENCE, DEPTH, NORMAL
from .model_config import tensor

# Tensors between the steps (inputs and outputs of the Python models)
CANVAS, IMAGE_SIZE, SCALE = "CANVAS", "IMAGE_SIZE", "SCALE"
CANVAS_OUTPUTS = {"depth": "CANVAS_DEPTH", "confidence": "CANVAS_CONFIDENCE", "normal": "CANVAS_NORMAL"}
# The plan's tensors (export/README.md); each image's own size is not known to it
PLAN_INPUTS = [tensor(INPUT_NAME, "FP32", [3, -1, -1])]
PLAN_CHANNELS = dict(zip(OUTPUT_NAMES, OUTPUT_CHANNELS, strict=True))
PLAN_OUTPUTS = [tensor(name, "FP32", [PLAN_CHANNELS[name], -1, -1]) for name in OUTPUT_NAMES]

PREPROCESS_OUTPUTS = [
    tensor(CANVAS, "FP32", [3, -1, -1]),
    tensor(IMAGE_SIZE, "INT32", [2]),
    tensor(SCALE, "FP64", [1]),  # predict scales by a Python float: float64, as here
]
POSTPROCESS_INPUTS = [
    *(tensor(CANVAS_OUTPUTS[name], "FP32", [PLAN_CHANNELS[name], -1, -1]) for name in CANVAS_OUTPUTS),
    tensor(IMAGE_SIZE, "INT32", [2]),
    tensor(SCALE, "FP64", [1]),
]


def preprocess(images: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> dict[str, np.ndarray]:
    """One request's B x H x W x 3 uint8 images and B x 1 focal lengths -> CANVAS (B x 3 x 616 x 1064
    float32, what predict feeds the network), IMAGE_SIZE (B x 2) and SCALE (B x 1, metres per canonical
    unit). InputError for a bad image or focal length, before the plan runs."""
    batch = canvases_from_arrays(list(images), torch.device("cpu"))
    scales = metric_scales(batch.canvases, fx.reshape(-1), fy.reshape(-1))
    return {
        CANVAS: np.ascontiguousarray(batch.pixels.numpy()),
        IMAGE_SIZE: np.array([canvas.image_hw for canvas in batch.canvases], dtype=np.int32),
        SCALE: np.array(scales, dtype=np.float64)[:, None],
    }


def postprocess(canvas_outputs: dict[str, np.ndarray], image_size: np.ndarray, scale: np.ndarray) -> dict:
    """The plan's depth, confidence and normal of one request (B x C x canvas, keyed by CANVAS_OUTPUTS'
    values) -> DEPTH, CONFIDENCE (B x H x W) and NORMAL (B x H x W x 3) at the images' size, as predict's
    Prediction fields."""
    depth, confidence, normal = (torch.from_numpy(canvas_outputs[name]) for name in CANVAS_OUTPUTS.values())
    check_finite_depth(
        depth,
        "the TensorRT plan",
        "the engine does not work on this GPU / TensorRT; rebuild it with trt-metric3d triton-repo on the "
        "serving machine",
    )
    out = Metric3DOutput(depth, confidence, normal, normal_iter1=None)  # not among the answers
    canvases = [fit_canvas(height, width) for height, width in image_size.tolist()]
    per_image = to_metric_images(out, canvases, scale[:, 0].tolist())
    return {
        DEPTH: np.stack([p["depth"].numpy() for p in per_image]),
        CONFIDENCE: np.stack([p["confidence"].numpy() for p in per_image]),
        NORMAL: np.stack([p["normal"].numpy() for p in per_image]),
    }
