"""ComfyUI entry point: clone this repository into ComfyUI/custom_nodes/ to get the Metric3D nodes.

ComfyUI (0.3.64 and later) loads V3 node packs through `comfy_entrypoint`.
"""

from .trt_metric3d.comfyui.extension import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
