"""A stand-in for ComfyUI's `comfy_api.latest` (the V3 node API), for the tests that load the pack
without ComfyUI: it keeps what a node declares (schema, inputs, outputs) so the tests can read it.
The real API is exercised by tests/comfyui/test_comfyui_real.py where a ComfyUI checkout is given."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field


@dataclass
class Input:
    id: str
    optional: bool = False
    default: object = None
    options: list | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    kind: str = ""


@dataclass
class Output:
    id: str | None = None
    display_name: str | None = None
    kind: str = ""


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False


class NodeOutput:
    def __init__(self, *args, ui=None):
        self.args, self.ui = args, ui


def _comfy_type(kind: str) -> type:
    class Kind:
        @staticmethod
        def Input(id, **options):  # noqa: N802 (ComfyUI's spelling)
            return Input(id, kind=kind, **options)

        @staticmethod
        def Output(id=None, display_name=None):  # noqa: N802
            return Output(id, display_name, kind=kind)

    return Kind


class FolderType:
    output = "output"


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: str):
        super().__init__(filename=filename, subfolder=subfolder, type=type)


class SavedImages:
    def __init__(self, results: list):
        self.results = results


class ComfyNode:
    pass


class ComfyExtension:
    pass


def install(monkeypatch) -> None:
    """Put the stand-in where the pack imports `comfy_api.latest` from."""
    io = types.SimpleNamespace(
        ComfyNode=ComfyNode,
        Schema=Schema,
        NodeOutput=NodeOutput,
        FolderType=FolderType,
        **{name: _comfy_type(name.upper()) for name in ("Image", "Mask", "Int", "Float", "String", "Combo")},
    )
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ComfyExtension = io, ComfyExtension
    latest.ui = types.SimpleNamespace(SavedResult=SavedResult, SavedImages=SavedImages)
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
