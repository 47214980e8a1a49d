"""Triton model folders: config.pbtxt written from plain dicts (protobuf text format), and the model.py
of a Python-backend model.

A config is a dict of ModelConfig fields: scalars, `Enum` values, lists (repeated fields) and dicts
(messages). Map fields (an ensemble step's input_map, parameters) are repeated key / value entries,
made with `map_entries`.
"""

from __future__ import annotations

import json
from pathlib import Path

VERSION = "1"  # the one version folder of each model
DEFAULT_QUEUE_DELAY_US = 2000  # how long Triton's dynamic batcher holds a request for others to join


class Enum(str):
    """A protobuf enum value, written bare: TYPE_FP32, KIND_GPU."""


def tensor(name: str, data_type: str, dims: list[int], **fields: object) -> dict:
    """A ModelInput / ModelOutput: data_type without its TYPE_ prefix ("FP32"), dims without the batch
    dimension (-1 for a variable size); `fields` adds e.g. allow_ragged_batch=True."""
    return {"name": name, "data_type": Enum(f"TYPE_{data_type}"), "dims": dims, **fields}


def map_entries(mapping: dict[str, object]) -> list[dict]:
    """A protobuf map field's entries: {"IMAGE": "image"} -> [{"key": "IMAGE", "value": "image"}]."""
    return [{"key": key, "value": value} for key, value in mapping.items()]


def string_parameters(values: dict[str, str]) -> list[dict]:
    """A config's `parameters` map (what a Python-backend model reads in initialize)."""
    return map_entries({key: {"string_value": value} for key, value in values.items()})


def _scalar(value: object) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes (\" \\ \n) are protobuf's too
    raise TypeError(f"no protobuf text form for {value!r}")


def _fields(message: dict, depth: int) -> list[str]:
    pad = "  " * depth
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_fields(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            items = [[f"{pad}  {{", *_fields(item, depth + 2), f"{pad}  }}"] for item in value]
            lines.append(f"{pad}{key} [")
            for number, item in enumerate(items):
                lines += item[:-1] + [item[-1] + ("," if number < len(items) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(item) for item in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_pbtxt(config: dict) -> str:
    """The config.pbtxt text of a ModelConfig given as a dict."""
    return "\n".join(_fields(config, 0)) + "\n"


def write_model(repository: Path, config: dict, python_model: str | None = None) -> Path:
    """`<repository>/<name>/config.pbtxt` and, for a Python-backend model, `1/model.py`, which loads the
    class `python_model` (a dotted name, e.g. "trt_metric3d.serving.triton_models.PreprocessModel", of
    trt_metric3d installed where Triton runs it) as `TritonPythonModel`, the name Triton looks up.
    Each file is written whole or not at all. Returns the model's folder."""
    from ..io import atomic_write_bytes  # here: io loads OpenCV, and the CLI reads this module at start-up

    folder = repository / config["name"]
    atomic_write_bytes(folder / "config.pbtxt", to_pbtxt(config).encode())
    (folder / VERSION).mkdir(exist_ok=True)  # Triton needs the version folder, even an ensemble's empty one
    if python_model is not None:
        module, _, name = python_model.rpartition(".")
        source = (
            f'"""Triton Python-backend model {config["name"]} (trt-metric3d): {python_model}."""\n\n'
            f"from {module} import {name} as TritonPythonModel  # noqa: F401  (the class Triton looks up)\n"
        )
        atomic_write_bytes(folder / VERSION / "model.py", source.encode())
    return folder
