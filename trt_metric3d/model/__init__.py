"""The Metric3D v2 network."""

from .config import BACKBONES, CANVAS_MULTIPLE, CONFIGS, Metric3DConfig, get_config
from .network import Metric3DNet, build_model
from .output import Metric3DOutput

__all__ = [
    "BACKBONES",
    "CANVAS_MULTIPLE",
    "CONFIGS",
    "Metric3DConfig",
    "Metric3DNet",
    "Metric3DOutput",
    "build_model",
    "get_config",
]
