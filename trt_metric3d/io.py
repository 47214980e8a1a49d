"""Reading images and writing results: never a half-written file (temp file, then rename)."""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, WorkspaceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIF_IFD = 0x8769
FOCAL_LENGTH_35MM_TAG = 0xA405


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; a result file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def writable_folder(path: str | os.PathLike, fix: str) -> Path:
    """`path` as a folder this process can write to (created if missing), checked before any long work.

    WorkspaceError naming the folder, the reason and `fix` (e.g. "choose another with --out") otherwise.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise WorkspaceError(f"cannot write to the folder {path} ({e.strerror or e}): {fix}") from e
    return path


def folder_can_be_made(path: str | os.PathLike, fix: str) -> Path:
    """`path` checked as `writable_folder` checks it, creating nothing (for a check long before the first
    file is written): a folder this process can write to, or a missing one whose nearest existing
    parent is. WorkspaceError naming the folder, the reason and `fix` otherwise."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    else:
        return path
    raise WorkspaceError(f"cannot write to the folder {path} ({reason}): {fix}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 H x W x 3 (alpha dropped, grey expanded)."""
    return decode_image(np.fromfile(path, dtype=np.uint8), path)  # also handles non-ASCII paths


def decode_image(data: bytes | np.ndarray, name: str | os.PathLike) -> np.ndarray:
    """An image file's content (bytes, or a uint8 array of them) as RGB uint8 H x W x 3; `name` (its
    path) is what an InputError names."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise InputError(f"{name}: not a readable image; supported: {', '.join(IMAGE_SUFFIXES)}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """uint8 RGB (H x W x 3) or uint16 / uint8 single-channel (H x W) PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, encoded.tobytes())


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return atomic_write_bytes(path, buffer.getvalue())


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found (sorted, non-recursive) in the named folders, each file once
    (named twice, or once directly and once through its folder), as first named."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 35 mm equivalents are defined on the diagonal (CIPA)


def exif_focal_px(source: str | os.PathLike | bytes, height: int, width: int) -> float | None:
    """Focal length in pixels from EXIF FocalLengthIn35mmFilm, or None when the file has none.

    source: the image file's path, or its content.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            focal_35mm = image.getexif().get_ifd(EXIF_IFD).get(FOCAL_LENGTH_35MM_TAG)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if not focal_35mm or float(focal_35mm) <= 0:
        return None
    return float(focal_35mm) * math.hypot(height, width) / FULL_FRAME_DIAGONAL_MM
