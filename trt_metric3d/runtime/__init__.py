"""Inference runtime: one `Metric3D` API over the TensorRT, ONNX Runtime and PyTorch backends."""

from .batching import DepthBatch, Prediction
from .metric3d import BACKENDS, Metric3D

__all__ = ["BACKENDS", "DepthBatch", "Metric3D", "Prediction"]
