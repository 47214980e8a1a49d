"""Frames in from a video file or a camera, a depth video out: OpenCV's VideoCapture and VideoWriter.

OpenCV is already a dependency; its wheels read what FFmpeg reads and open cameras through the
platform's own API (V4L2, DirectShow, AVFoundation), so video needs nothing more to install. Its
pip wheels encode MPEG-4 Part 2 (`mp4v`) in .mp4 and Motion-JPEG in .avi (no H.264: licensing).
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class FrameSource:
    """RGB uint8 frames of a video file, or of a camera when `source` is an index (0 = first camera).

    A file that ends before the frame count its container declares (truncated or damaged) ends the
    iteration after its last readable frame; `ended_early` then says so (None otherwise).
    """

    def __init__(self, source: str | os.PathLike | int) -> None:
        self.is_camera = isinstance(source, int)
        if not self.is_camera and not Path(source).is_file():
            raise InputError(f"video {source} does not exist")
        self._capture = self._open(source)
        if not self._capture.isOpened():
            what = f"camera {source}" if self.is_camera else f"video {source}"
            fix = "check that it is connected and not in use" if self.is_camera else "is it a video file?"
            raise InputError(f"cannot open {what}: OpenCV could not read it ({fix})")
        self.source = source
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 30.0  # cameras and some containers report 0
        declared = 0 if self.is_camera else self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(declared) if declared > 0 else None  # 0 or -1: not known
        self.frames_read = 0
        self.ended_early: str | None = None
        first = self._capture.read()
        if not first[0]:
            self._capture.release()
            raise InputError(f"{source}: no frame could be decoded (empty, corrupt or unsupported codec)")
        self._first: np.ndarray | None = first[1]

    def _open(self, source: str | os.PathLike | int) -> cv2.VideoCapture:
        if not self.is_camera:
            return cv2.VideoCapture(str(source))
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # OpenCV's own "camera index out of range" lines; the error below says it
        try:
            return cv2.VideoCapture(source)
        finally:
            cv2.setLogLevel(level)

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                if self._first is not None:
                    bgr, self._first = self._first, None
                else:
                    ok, bgr = self._capture.read()
                    if not ok:
                        self._check_complete()
                        return
                self.frames_read += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            self._capture.release()

    def _check_complete(self) -> None:
        if self.declared_frames is not None and self.frames_read < self.declared_frames:
            self.ended_early = (
                f"{self.source} ended after {self.frames_read} of the {self.declared_frames} frames its "
                "container declares: the file is truncated or damaged"
            )


class VideoWriter:
    """An RGB video written under a temporary name and renamed into place when closed.

    Closing finalises the file (a playable video of the frames written so far), also after an error or
    Ctrl-C; nothing incomplete ever carries the final name.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC_BY_SUFFIX:
            raise InputError(
                f"{self.path}: unsupported video type; use one of {', '.join(sorted(FOURCC_BY_SUFFIX))}"
            )
        self.fps = fps
        self._partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append a frame; the first one sets the video's size, later ones of another size are resized
        to it (a video has one size, and OpenCV would silently drop mismatched frames)."""
        if self._writer is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            codec = FOURCC_BY_SUFFIX[self.path.suffix.lower()]
            fourcc = cv2.VideoWriter_fourcc(*codec)
            self._writer = cv2.VideoWriter(str(self._partial), fourcc, self.fps, self.size)
            if not self._writer.isOpened():
                raise InputError(f"cannot write video {self.path}: OpenCV has no {codec} encoder here")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finalise and move into place; None when no frame was written (then no file is left)."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self._partial, self.path)
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NpzWriter:
    """Every frame's float32 depth in one .npz (`frame_000000`, ...), added as frames come, so memory
    stays flat however long the video; `np.load` reads it. Renamed into place when closed."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._zip = zipfile.ZipFile(self._partial, "w", allowZip64=True)

    def add(self, index: int, depth: np.ndarray) -> None:
        with self._zip.open(f"frame_{index:06d}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.ascontiguousarray(depth), allow_pickle=False)

    def close(self) -> Path:
        self._zip.close()
        os.replace(self._partial, self.path)
        return self.path

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LiveStatus:
    """A live "frames, FPS, latency" line: redrawn in place on a terminal, once a second in a log."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.tty = sys.stderr.isatty()
        self.interval_s = interval_s
        self.start = self.last = time.perf_counter()

    def update(self, frames: int, dropped: int, latency_s: float) -> None:
        now = time.perf_counter()
        if not self.tty and now - self.last < self.interval_s:
            return
        self.last = now
        fps = frames / max(now - self.start, 1e-9)
        line = f"frame {frames}: {fps:.2f} fps, latency {1000 * latency_s:.0f} ms, dropped {dropped}"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)
