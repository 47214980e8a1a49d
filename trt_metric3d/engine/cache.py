"""Engine cache: one engine per (backbone, weights, precision, profile, TensorRT, GPU), with a sidecar.

`<folder>/<backbone>-<precision>-<flavour><version>-<gpu>-<key>.engine` + `.json` describing it.
Writes go through a temp file and a rename, under a file lock, so concurrent builders never see
(or leave) half an engine; a sidecar that disagrees with the request means "build again".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from ..io import atomic_write_bytes

log = logging.getLogger("trt_metric3d")

ENGINE_DIR_ENV = "METRIC3D_ENGINE_DIR"


def workspace_dir(env: str, name: str) -> Path:
    """$env, else the `name/` workspace of a source checkout, else ~/.cache/trt-metric3d/<name>."""
    if os.environ.get(env):
        return Path(os.environ[env])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trt-metric3d" / name


def file_sha256(path: str | os.PathLike, chunk: int = 2**24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine depends on; two specs are the same engine if and only if they are equal."""

    backbone: str
    checkpoint_sha256: str
    precision: str
    profile: dict
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str
    gpu_name: str
    compute_capability: str

    def as_json(self) -> dict:
        """The spec as it reads back from a sidecar (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def stem(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        trt = f"{self.flavour}{self.trt_version.replace('.', '_')}"
        return f"{self.backbone}-{self.precision}-{trt}-{gpu}-sm{self.compute_capability}-{self.key()}"


class EngineCache:
    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else workspace_dir(ENGINE_DIR_ENV, "engines")

    def paths(self, spec: EngineSpec) -> tuple[Path, Path]:
        stem = self.folder / spec.stem()
        return stem.with_suffix(".engine"), stem.with_suffix(".json")

    def lookup(self, spec: EngineSpec) -> Path | None:
        """The cached engine for `spec`, or None (with the reason logged) if it must be built."""
        engine, sidecar = self.paths(spec)
        if not engine.is_file() or not sidecar.is_file():
            return None
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("engine sidecar %s is unreadable: rebuilding", sidecar)
            return None
        if recorded.get("spec") != spec.as_json():
            log.warning("engine %s was built for another configuration: rebuilding", engine.name)
            return None
        if recorded.get("engine_sha256") != file_sha256(engine):
            log.warning("engine %s does not match its sidecar (damaged or replaced): rebuilding", engine.name)
            return None
        return engine

    def get_or_build(
        self, spec: EngineSpec, build: Callable[[], bytes], loads: Callable[[Path], bool] | None = None
    ) -> Path:
        """The engine for `spec`, built (once, even across processes) when missing or stale.

        loads: checks that a cached engine deserialises here (a driver or TensorRT update can break
        an engine whose sidecar still matches); one that does not is rebuilt.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        engine, sidecar = self.paths(spec)
        with FileLock(str(engine) + ".lock"):
            found = self.lookup(spec)
            if found is not None and (loads is None or loads(found)):
                return found
            if found is not None:
                log.warning("engine %s failed to deserialise: rebuilding", engine.name)
            log.info("building TensorRT engine %s", engine.name)
            data = build()
            atomic_write_bytes(engine, data)
            record = {"spec": spec.as_json(), "engine_sha256": hashlib.sha256(data).hexdigest()}
            atomic_write_bytes(sidecar, json.dumps(record, indent=1).encode())
            return engine
