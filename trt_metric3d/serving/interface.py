"""The request both Triton models answer (`triton-repo`'s ensemble and `serve`), and its checks.

Inputs (each with the batch dimension first; a request of B images of one size):
  IMAGE  uint8   B x H x W x 3   RGB
  FX     float32 B x 1           focal lengths in pixels
  FY     float32 B x 1
Outputs, at the images' size:
  DEPTH       float32 B x H x W      metres
  CONFIDENCE  float32 B x H x W      depth confidence logit
  NORMAL      float32 B x H x W x 3  unit surface normals (camera frame)
"""

from __future__ import annotations

import numpy as np

from ..processing import fit_canvas, validate_image
from ..runtime.postprocess import metric_scales
from .model_config import tensor

MODEL_NAME = "metric3d"  # what clients call, on both servers
IMAGE, FX, FY = "IMAGE", "FX", "FY"
DEPTH, CONFIDENCE, NORMAL = "DEPTH", "CONFIDENCE", "NORMAL"
# `Prediction` field of each output
PREDICTION_FIELDS = {DEPTH: "depth", CONFIDENCE: "confidence", NORMAL: "normal"}


def request_inputs(ragged: bool = False) -> list[dict]:
    """The inputs' config entries. ragged: Triton's dynamic batcher may put images of different sizes
    in one batch (a Python model gets each request's tensors on their own anyway)."""
    image = tensor(IMAGE, "UINT8", [-1, -1, 3], **({"allow_ragged_batch": True} if ragged else {}))
    return [image, tensor(FX, "FP32", [1]), tensor(FY, "FP32", [1])]


def response_outputs() -> list[dict]:
    return [
        tensor(DEPTH, "FP32", [-1, -1]),
        tensor(CONFIDENCE, "FP32", [-1, -1]),
        tensor(NORMAL, "FP32", [-1, -1, 3]),
    ]


def check_request(images: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> None:
    """InputError naming what is wrong with one request (an empty or too elongated image, a focal length
    that is not > 0, ...), as predict would raise it; Triton has checked dtypes and ranks. Checked per
    request, so a bad one can be answered alone before its batch runs."""
    canvases = [fit_canvas(*validate_image(image).shape[:2]) for image in images]
    metric_scales(canvases, fx.reshape(-1), fy.reshape(-1))
