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
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from ..io import atomic_write_bytes, writable_folder
from ..workspace import ENGINE_DIR_ENV, workspace_dir

log = logging.getLogger("trt_metric3d")

ENGINE_DIR_FIX = f"choose another with --engines or {ENGINE_DIR_ENV}"


def file_sha256(path: str | os.PathLike, chunk: int = 2**24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temps(path: Path) -> None:
    """Remove what interrupted writes of `path` left: `.<name>.XXXXXXXX.tmp` files (atomic writes) and
    `.<name>.XXXXXXXX/` folders (staged exports). Call only under the lock every writer of `path` holds,
    so that whatever is found belongs to a writer that died."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[^.]+(\.tmp)?")
    for entry in [e for e in path.parent.iterdir() if pattern.fullmatch(e.name)]:
        log.warning("removing %s, left by an interrupted write of %s", entry, path.name)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


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
    quantization: str = ""  # the Q/DQ graph's key (calibration set, recipe) for int8 / fp8

    def as_json(self) -> dict:
        """The spec as it reads back from a sidecar (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def stem(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        trt = f"{self.flavour}{self.trt_version.replace('.', '_')}"
        return f"{self.backbone}-{self.precision}-{trt}-{gpu}-sm{self.compute_capability}-{self.key()}"


def _read_record(sidecar: Path) -> dict | None:
    """A sidecar's {"spec": {...}, "engine_sha256": "..."}, or None when unreadable or of another shape."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):  # ValueError: bad JSON or bytes that are not text
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("spec"), dict) or not isinstance(record.get("engine_sha256"), str):
        return None
    return record


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The spec recorded in an engine sidecar (a dict of EngineSpec's fields as JSON), or None when the
    file is unreadable or not an engine sidecar."""
    record = _read_record(Path(path))
    return record["spec"] if record is not None else None


class EngineCache:
    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else workspace_dir(ENGINE_DIR_ENV, "engines")

    def writable_folder(self) -> Path:
        """The cache folder, created if needed; WorkspaceError saying how to choose another otherwise."""
        return writable_folder(self.folder, ENGINE_DIR_FIX)

    def paths(self, spec: EngineSpec) -> tuple[Path, Path]:
        stem = self.folder / spec.stem()
        return stem.with_suffix(".engine"), stem.with_suffix(".json")

    def lookup(self, spec: EngineSpec) -> Path | None:
        """The cached engine for `spec`, or None (with the reason logged) if it must be built."""
        engine, sidecar = self.paths(spec)
        if not engine.is_file() or not sidecar.is_file():
            return None
        recorded = _read_record(sidecar)
        if recorded is None:
            log.warning("engine sidecar %s is unreadable or not an engine record: rebuilding", sidecar)
            return None
        if recorded["spec"] != spec.as_json():
            log.warning("engine %s was built for another configuration: rebuilding", engine.name)
            return None
        if recorded["engine_sha256"] != file_sha256(engine):
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
        self.writable_folder()
        engine, sidecar = self.paths(spec)
        with FileLock(str(engine) + ".lock"):
            remove_stale_temps(engine)
            remove_stale_temps(sidecar)
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
