"""ONNX export (FP32, dynamic shapes) and the mixed FP16 graph for strongly typed TensorRT."""

import importlib
from types import ModuleType

from ..errors import MissingDependency
from .onnx_export import INPUT_NAME, OUTPUT_NAMES, CanvasNetwork, export_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "CanvasNetwork", "export_onnx", "import_onnx_extra"]


def import_onnx_extra(name: str) -> ModuleType:
    """`name` (onnx, onnxscript, onnxruntime), or MissingDependency with the pip command for the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingDependency(f'{name} is not installed: pip install "trt-metric3d[onnx]"') from e
