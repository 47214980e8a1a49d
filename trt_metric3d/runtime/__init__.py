"""Inference runtime: one `Metric3D` API over the TensorRT, ONNX Runtime and PyTorch backends."""

from .backend import Backend
from .metric3d import BACKENDS, Metric3D
from .prediction import DepthBatch, Prediction
from .stream import FrameStream, StreamResult

__all__ = ["BACKENDS", "Backend", "DepthBatch", "FrameStream", "Metric3D", "Prediction", "StreamResult"]
