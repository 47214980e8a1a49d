"""Access to the original implementation's reference outputs (`../shared/reference/`)."""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDS = {"vit-small": 1, "vit-large": 2, "vit-giant2": 3}
IMAGES = ("coffee", "synth_289x451")


def reference_dir() -> Path:
    """METRIC3D_REFERENCE_DIR, else <repo>/../shared/reference. Missing: fail in CI, skip elsewhere."""
    path = Path(os.environ.get("METRIC3D_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
    if not (path / "init_weights.py").is_file():
        message = f"reference data not found at {path} (set METRIC3D_REFERENCE_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@cache
def _init_weights() -> ModuleType:
    spec = importlib.util.spec_from_file_location("init_weights", reference_dir() / "init_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key_entries(backbone: str) -> list[tuple[str, list[int], str]]:
    return json.loads((reference_dir() / f"keys_{backbone}.json").read_text())


def synthetic_state_dict(backbone: str) -> dict[str, np.ndarray]:
    """The deterministic synthetic weights the reference outputs were made with."""
    entries = key_entries(backbone)
    shapes = {k: tuple(s) for k, s, _ in entries}
    dtypes = {k: d for k, _, d in entries}
    return _init_weights().make_state_dict(shapes, seed=SEEDS[backbone], dtypes=dtypes)


def load_arrays(backbone: str, image: str, level: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, json sidecar) of `<backbone>_<image>_<level>` with level "model" or "node"."""
    stem = reference_dir() / f"{backbone}_{image}_{level}"
    with np.load(stem.with_suffix(".npz")) as npz:
        arrays = dict(npz)
    return arrays, json.loads(stem.with_suffix(".json").read_text())
