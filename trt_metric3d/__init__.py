"""trt-metric3d: Metric3D v2 metric depth and surface normals, faithful and fast."""

from .annotator import controlnet_maps
from .inference import Prediction, predict_image
from .model import BACKBONES, Metric3DOutput, build_model
from .processing import Canvas, preprocess, to_metric_depth

__all__ = [
    "BACKBONES",
    "Canvas",
    "Metric3DOutput",
    "Prediction",
    "build_model",
    "controlnet_maps",
    "predict_image",
    "preprocess",
    "to_metric_depth",
]
