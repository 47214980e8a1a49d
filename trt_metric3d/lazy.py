"""Package attributes imported on first use (PEP 562 module __getattr__).

`import trt_metric3d.cli` runs the `__init__` of every package on the way; if those imported their
submodules eagerly, the command line's start-up (and `--help`) would load torch and OpenCV.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_attributes(package: str, sources: dict[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for `package`: each name in `sources` is imported from its relative
    submodule (e.g. {"Metric3D": ".runtime"}) when first asked for, then kept in the package."""

    def __getattr__(name: str) -> object:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *sources})

    return __getattr__, __dir__
