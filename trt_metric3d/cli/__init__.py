"""The `trt-metric3d` command line: the group (`group.py`), the shared options (`options.py`) and one
module per group of commands.

Its start-up (and every --help) imports only click and the package's light modules: torch, OpenCV,
numpy and the optional extras load inside the command that needs them.
"""

from . import engines, images, ray, serving, system, video
from .group import main

for command in (
    images.infer,
    images.check,
    video.video,
    engines.export,
    engines.build,
    serving.serve,
    serving.triton_repo,
    ray.ray_job,
    system.doctor,
    system.bench,
):
    main.add_command(command)

__all__ = ["main"]
