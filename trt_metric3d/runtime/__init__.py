"""Inference runtime: one `Metric3D` API over the TensorRT, ONNX Runtime and PyTorch backends."""

from .batching import DepthBatch, Prediction
from .metric3d import BACKENDS, Metric3D
from .stream import FrameStream, StreamResult

__all__ = ["BACKENDS", "DepthBatch", "FrameStream", "Metric3D", "Prediction", "StreamResult"]
