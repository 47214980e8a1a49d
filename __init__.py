"""ComfyUI entry point: clone this repository into ComfyUI/custom_nodes/ to get the Metric3D nodes."""

from .trt_metric3d.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
