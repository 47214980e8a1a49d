"""Frames in from a video file or a camera, a depth video out: OpenCV's VideoCapture and VideoWriter.

OpenCV is already a dependency; its wheels read what FFmpeg reads and open cameras through the
platform's own API (V4L2, DirectShow, AVFoundation), so video needs nothing more to install. Its
pip wheels encode MPEG-4 Part 2 (`mp4v`) in .mp4 and Motion-JPEG in .avi (no H.264: licensing).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, WorkspaceError
from .output_files import OutputFile, StreamOutput, naming

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


class VideoWriter(StreamOutput):
    """An RGB video written under a partial name of its own (output_files) and moved into place when
    closed: a playable video of the frames written so far."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.name = self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC_BY_SUFFIX:
            raise InputError(
                f"{self.path}: unsupported video type; use one of {', '.join(sorted(FOURCC_BY_SUFFIX))}"
            )
        self.fps = fps
        self._output = OutputFile(self.path)
        self._writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray) -> None:
        """Append a frame; the first one sets the video's size, later ones of another size are resized
        to it (a video has one size, and OpenCV would silently drop mismatched frames)."""
        if self._writer is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            codec = FOURCC_BY_SUFFIX[self.path.suffix.lower()]
            fourcc = cv2.VideoWriter_fourcc(*codec)
            self._writer = cv2.VideoWriter(str(self._output.path), fourcc, self.fps, self.size)
            if not self._writer.isOpened():
                self.discard()
                raise InputError(f"cannot write video {self.path}: OpenCV has no {codec} encoder here")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.written += 1

    def _finish(self) -> Path:
        self._writer.release()
        self._writer = None
        if not self._output.direct and not _is_readable_video(self._output.path):
            # OpenCV only warns when a frame cannot be written (a full disk)
            raise WorkspaceError(f"cannot write {self.path}: the video could not be finished (disk full?)")
        return self._output.commit()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._output.discard()


def _is_readable_video(path: Path) -> bool:
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


class NpzWriter(StreamOutput):
    """Every frame's float32 depth in one .npz (`frame_000000`, ...), added as frames come, so memory
    stays flat however long the video; `np.load` reads it. Moved into place when closed, if it holds
    a frame."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.name = self.path = Path(path)
        self._output = OutputFile(self.path)
        with naming(self.path):
            self._file = open(self._output.path, "wb")  # noqa: SIM115 (closed in close / discard)
            # a device or FIFO: a stream, so zipfile writes no offsets it took from seeking there
            file = _WriteOnly(self._file) if self._output.direct else self._file
            self._zip = zipfile.ZipFile(file, "w", allowZip64=True)

    def add(self, index: int, depth: np.ndarray) -> None:
        with naming(self.path), self._zip.open(f"frame_{index:06d}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.ascontiguousarray(depth), allow_pickle=False)
        self.written += 1

    def _finish(self) -> Path:
        self._zip.close()
        self._file.close()
        return self._output.commit()

    def discard(self) -> None:
        for closable in (self._zip, self._file):
            with contextlib.suppress(OSError, ValueError):  # what a full disk broke is dropped anyway
                closable.close()
        self._output.discard()


class _WriteOnly:
    """A file seen as a stream: it can only be written."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


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
