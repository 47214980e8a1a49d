"""Exported files land whole or not at all, with a manifest to tell a complete export from a damaged one.

An ONNX (and its external weights, for the largest models) is saved into a hidden temp folder next to
its destination and moved into place, the .onnx itself last; then `<name>.manifest.json` records
each file's size and sha256. A file that disagrees with its manifest is exported again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..io import atomic_write_bytes
from ..workspace import file_sha256

log = logging.getLogger("trt_metric3d")

MB = 1e6


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def save_staged(path: Path, save: Callable[[Path], None]) -> Path:
    """`save(staged)` writes the ONNX to a temp path; what it wrote is moved to `path`'s folder, then
    recorded in the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        save(staged)
        produced = sorted(Path(tmp).iterdir(), key=lambda p: p == staged)  # the .onnx itself last
        for file in produced:
            os.replace(file, path.parent / file.name)
    placed = [path.parent / file.name for file in produced]
    files = {file.name: {"size": file.stat().st_size, "sha256": file_sha256(file)} for file in placed}
    atomic_write_bytes(manifest_path(path), json.dumps({"files": files}, indent=1).encode())
    log.info("saved %s (%.1f MB)", path, sum(f["size"] for f in files.values()) / MB)
    return path


def _recorded_files(path: Path) -> dict[str, dict] | None:
    """The manifest's {file name: {"size", "sha256"}}, or None when it is unreadable or malformed."""
    try:
        record = json.loads(manifest_path(path).read_text())
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or path.name not in files:
        return None
    for entry in files.values():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            return None
    return files


def recorded_files(path: Path) -> list[str]:
    """Names of the files that make up the export at `path` (the .onnx and any external weights)."""
    return list(_recorded_files(path) or [path.name])


def damage(path: Path) -> str | None:
    """Why the export at `path` cannot be used (missing, no valid manifest, changed files), or None."""
    if not path.is_file():
        return "missing"
    files = _recorded_files(path)
    if files is None:
        return f"no valid manifest {manifest_path(path).name}"
    for name, recorded in files.items():
        file = path.parent / name
        if not file.is_file() or file.stat().st_size != recorded["size"]:  # sizes first: cheap
            return f"{name} is missing or truncated"
    for name, recorded in files.items():
        if file_sha256(path.parent / name) != recorded["sha256"]:
            return f"{name} does not match its manifest"
    return None
