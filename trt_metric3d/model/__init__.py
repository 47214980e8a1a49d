"""The Metric3D v2 network (the configs load without torch; the network on first use)."""

from ..lazy import lazy_attributes
from .config import BACKBONES, CANVAS_MULTIPLE, CONFIGS, Metric3DConfig, get_config

__getattr__, __dir__ = lazy_attributes(
    __name__, {"Metric3DNet": ".network", "build_model": ".network", "Metric3DOutput": ".output"}
)
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
