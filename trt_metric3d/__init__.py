"""trt-metric3d: Metric3D v2 metric depth and surface normals, faithful and fast."""

from .annotator import controlnet_maps
from .checkpoint import CheckpointError, CheckpointNotFoundError, load_model
from .errors import BackendUnavailable, InputError, Metric3DError, MissingDependency, WorkspaceError
from .model import BACKBONES, Metric3DOutput, build_model
from .processing import Canvas, preprocess, to_metric_depth
from .runtime import DepthBatch, Metric3D, Prediction

__all__ = [
    "BACKBONES",
    "BackendUnavailable",
    "Canvas",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DepthBatch",
    "InputError",
    "Metric3D",
    "Metric3DError",
    "Metric3DOutput",
    "MissingDependency",
    "Prediction",
    "WorkspaceError",
    "build_model",
    "controlnet_maps",
    "load_model",
    "preprocess",
    "to_metric_depth",
]
