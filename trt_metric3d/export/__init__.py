"""ONNX export (FP32, dynamic shapes) and the mixed FP16 graph for strongly typed TensorRT."""

from .onnx_export import INPUT_NAME, OUTPUT_NAMES, CanvasNetwork, export_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "CanvasNetwork", "export_onnx"]
