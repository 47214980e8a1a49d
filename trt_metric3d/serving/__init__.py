"""Metric3D behind NVIDIA Triton Inference Server.

- `triton_repo`: a model repository for a real `tritonserver`: the TensorRT plan between Python-backend
  pre- and post-processing models, joined by an ensemble (`trt-metric3d triton-repo`).
- `metric3d_server`: `serve()`, a Triton server running `Metric3D` (any backend) with dynamic batching,
  on the `tritonserver` bundled in PyTriton's wheel (`trt-metric3d serve`).
- `client`: `Metric3DClient`, requests to either of them over HTTP or gRPC.
- `triton_models`: what runs inside Triton's Python backend (the models of both), and
  `tritonserver_process`: the bundled `tritonserver` binary run as a process.

Both answer the same request (`interface`): IMAGE (uint8 H x W x 3), FX and FY in, DEPTH (metres),
CONFIDENCE and NORMAL out, at the image's size. Nothing here imports the optional `[serve]` packages
until it needs them, and the names below load on first use (the command line starts without torch).
"""

from ..lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "Metric3DClient": ".client",
        "serve": ".metric3d_server",
        "build_repository": ".triton_repo",
        "write_repository": ".triton_repo",
    },
)

__all__ = ["Metric3DClient", "build_repository", "serve", "write_repository"]
