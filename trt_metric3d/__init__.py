"""trt-metric3d: Metric3D v2 metric depth and surface normals, faithful and fast.

The names below load on first use, so that the command line starts without torch.
"""

from .lazy import lazy_attributes

_SOURCES = {
    "controlnet_maps": ".annotator",
    "CheckpointError": ".checkpoint",
    "CheckpointNotFoundError": ".checkpoint",
    "load_model": ".checkpoint",
    "BackendUnavailable": ".errors",
    "InputError": ".errors",
    "Metric3DError": ".errors",
    "MissingDependency": ".errors",
    "WorkspaceError": ".errors",
    "BACKBONES": ".model",
    "Metric3DOutput": ".model",
    "build_model": ".model",
    "Canvas": ".processing",
    "preprocess": ".processing",
    "to_metric_depth": ".processing",
    "DepthBatch": ".runtime",
    "Metric3D": ".runtime",
    "Prediction": ".runtime",
}
__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
