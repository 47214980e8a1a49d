"""Reading images and writing results: never a half-written file (a partial file, then a rename)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

# where the package's writers import them from
from .output_files import atomic_write_bytes as atomic_write_bytes
from .output_files import writable_folder as writable_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIF_IFD = 0x8769
FOCAL_LENGTH_35MM_TAG = 0xA405


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
