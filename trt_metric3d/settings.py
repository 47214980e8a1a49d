"""`RuntimeSettings`: which Metric3D to open and how it runs, as one frozen value.

The command line builds it once from its options; `Metric3D.from_settings` opens it; Ray's actors,
`serve`'s Triton model and the benchmark's processes get it whole, the Triton model through its
config's string parameters (`to_strings` / `from_strings`, the one place that text form is written).
Imports no torch, so the command line can build it before any model loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class RuntimeSettings:
    """The plain-value arguments of `Metric3D` (see its docstring for each); paths are kept as str."""

    backbone: str = "vit-small"
    backend: str = "auto"
    precision: str | None = None
    device: str | None = None
    checkpoint: str | None = None
    compile: bool = False
    cuda_graph: bool = False
    engine_dir: str | None = None
    export_dir: str | None = None
    calibration: str | None = None

    def __post_init__(self) -> None:
        # a Path given for a folder or file is kept as its str: the settings pickle and serialise alike
        for name in ("checkpoint", "engine_dir", "export_dir", "calibration"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, os.fspath(value))

    def keywords(self) -> dict[str, object]:
        """The settings as `Metric3D`'s keyword arguments."""
        return asdict(self)

    def to_strings(self) -> dict[str, str]:
        """Each setting as text (None: "", flags: "true" / "false"), e.g. for a Triton config's parameters."""

        def text(value: str | bool | None) -> str:
            if isinstance(value, bool):
                return "true" if value else "false"
            return "" if value is None else value

        return {name: text(value) for name, value in asdict(self).items()}

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> RuntimeSettings:
        """The settings `to_strings` gave; a setting left out keeps its default."""
        flags = {f.name for f in fields(cls) if f.default is False}
        return cls(
            **{
                f.name: values[f.name] == "true" if f.name in flags else values[f.name] or None
                for f in fields(cls)
                if f.name in values
            }
        )
