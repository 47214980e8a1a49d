"""ComfyUI node pack (loaded through the repository root's `__init__.py`)."""

from . import detector
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "detector"]
