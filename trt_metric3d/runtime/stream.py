"""`Metric3D.stream`: depth of a video or camera, with the steps of `predict` overlapped in threads.

Four threads, joined by small bounded channels, carry each frame through the same functions as
`predict` (so a result equals `predict` on that frame exactly):

  read     takes frames from the source
  prepare  checks the frame and puts it on its canvas on the host (`host_canvases`)
  infer    uploads the canvas and runs the network (`Metric3D.forward`)
  finish   un-pads and resizes to the frame, scales to metres, copies to the host (`Metric3D.to_images`,
           `to_predictions`)

torch ops and ONNX Runtime release the GIL, so the stages really run at the same time, also on the CPU.
On CUDA the canvases go through two pinned buffers used in turn and are uploaded on their own stream,
and the finishing runs on another, so frame n+1's upload and frame n-1's download overlap frame n's
forward on the GPU.

With `latest=True` (a live source) the source is read as fast as it delivers, and the channels in front
of the network keep only the newest frame: a frame replaced before the network took it is dropped and
counted, so the results follow the camera instead of falling behind it.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from ..focal import resolve_focal_lengths
from ..model import Metric3DOutput
from ..processing import CANVAS_HW, Canvas, validate_image
from .postprocess import metric_scales, to_predictions
from .prediction import Prediction
from .preprocess import check_image_tensor, host_canvases, upload

if TYPE_CHECKING:
    from .metric3d import Metric3D

log = logging.getLogger("trt_metric3d")

THREAD_PREFIX = "trt_metric3d-stream"
# close() waits this long for the read thread: a source blocked in a read (a stalled camera) cannot be
# interrupted; its daemon thread ends with the next frame.
SOURCE_JOIN_S = 1.0


@dataclass(frozen=True)
class StreamResult:
    """One frame's result: `prediction` equals `Metric3D.predict(frame)`."""

    index: int  # position of the frame in the source (counting dropped frames)
    frame: np.ndarray  # the RGB uint8 H x W x 3 frame, for side-by-side video and point-cloud colours
    prediction: Prediction
    latency_s: float  # from the frame being taken from the source to its result being ready


@dataclass
class _Frame:
    """A frame on its way through the stages; each fills in what the next needs and drops the rest."""

    index: int
    taken: float  # time.perf_counter() when the source gave it
    source: np.ndarray | torch.Tensor | None
    rgb: np.ndarray | None = None
    canvases_u8: torch.Tensor | None = None
    canvas: Canvas | None = None
    scale: float = 0.0
    out: Metric3DOutput | None = None
    ready: torch.cuda.Event | None = None  # CUDA: recorded when `out` is computed


_END = object()  # follows the source's last frame


@dataclass(frozen=True)
class _Failed:
    """A stage's exception, passed down in frame order and raised to the consumer."""

    error: Exception


class _Stopped(Exception):
    """The stream was closed: a waiting stage leaves its loop."""


class _Channel:
    """Items between two stages, oldest first: `put` waits while `size` items wait. With newest=True
    `put` never waits: a frame replaces a frame still waiting, which is dropped and counted."""

    def __init__(self, size: int, newest: bool = False) -> None:
        self._items: deque = deque()
        self._size = size
        self._newest = newest
        self._changed = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: object) -> None:
        with self._changed:
            if not self._newest:
                self._changed.wait_for(lambda: self._closed or len(self._items) < self._size)
            elif isinstance(item, _Frame) and self._items and isinstance(self._items[-1], _Frame):
                self._items.pop()
                self.dropped += 1
            if self._closed:
                raise _Stopped
            self._items.append(item)
            self._changed.notify_all()

    def get(self) -> object:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._items)
            if self._closed:
                raise _Stopped
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._items.clear()  # frees the canvases and device tensors of frames never finished
            self._changed.notify_all()


class _HostTransfers:
    """Devices other than CUDA: the upload of `predict`, and the outputs handed on as they are (the
    torch and ONNX Runtime backends allocate new ones per call)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def upload(self, canvases_u8: torch.Tensor) -> torch.Tensor:
        return upload(canvases_u8, self.device)

    def hand_over(self, out: Metric3DOutput) -> tuple[Metric3DOutput, None]:
        return out, None

    def finishing(self, frame: _Frame) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class _CudaTransfers:
    """Uploads on their own stream from two pinned buffers used in turn; finishing (resize, download)
    on another stream; events order them around the forward on the infer thread's current stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.staging = [torch.empty((1, *CANVAS_HW, 3), dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self.copied: list[torch.cuda.Event | None] = [None, None]  # the last upload from each buffer
        self.turn = 0
        self.upload_stream = torch.cuda.Stream(device)
        self.finish_stream = torch.cuda.Stream(device)

    def upload(self, canvases_u8: torch.Tensor) -> torch.Tensor:
        i, self.turn = self.turn, 1 - self.turn
        if self.copied[i] is not None:
            self.copied[i].synchronize()  # the upload that last read this buffer must be done
        self.staging[i].copy_(canvases_u8)
        with torch.cuda.stream(self.upload_stream):
            pixels = upload(self.staging[i], self.device)
        self.copied[i] = self.upload_stream.record_event()
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(self.copied[i])
        pixels.record_stream(compute)  # allocated on the upload stream, read by the forward
        return pixels

    def hand_over(self, out: Metric3DOutput) -> tuple[Metric3DOutput, torch.cuda.Event]:
        # TensorRT and CUDA graphs overwrite their output buffers on the next forward, which runs while
        # this frame is finished on the other stream: the finishing reads a copy.
        copies = Metric3DOutput(*(t.clone() for t in out))
        return copies, torch.cuda.current_stream(self.device).record_event()

    @contextlib.contextmanager
    def finishing(self, frame: _Frame) -> Iterator[None]:
        self.finish_stream.wait_event(frame.ready)
        for t in frame.out:
            t.record_stream(self.finish_stream)  # allocated on the forward's stream
        with torch.cuda.stream(self.finish_stream):  # to_host waits for this stream only
            yield


def _rgb_frame(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """A source frame as the H x W x 3 uint8 array `predict` sees (tensors converted as predict does)."""
    if isinstance(frame, torch.Tensor):
        images = check_image_tensor(frame[None] if frame.ndim == 3 else frame)
        if images.shape[0] != 1:
            raise InputError(
                f"a stream frame is one image, got a batch of {images.shape[0]}; yield the frames one by one"
            )
        frame = images[0].cpu().numpy()  # a GPU tensor too: the result carries the frame on the host
    return validate_image(frame)


def _source_iterator(frames: Iterable) -> Iterator:
    if isinstance(frames, str | bytes | os.PathLike):
        raise InputError(
            f"frames must be an iterable of RGB frames, got the path {frames!r}; read the video into "
            "frames first, e.g. with trt_metric3d.video.FrameSource(path)"
        )
    if isinstance(frames, np.ndarray | torch.Tensor) and frames.ndim != 4:
        raise InputError(
            f"frames as one array must be N x H x W x 3, got shape {tuple(frames.shape)}; "
            "for a single image use predict"
        )
    try:
        return iter(frames)
    except TypeError:
        raise InputError(
            f"frames must be an iterable of RGB frames (a list, a generator, a video reader), "
            f"got {type(frames).__qualname__}"
        ) from None


class _Pipeline:
    """The threads and channels of one stream. It holds no reference to its `FrameStream`, so an
    abandoned stream is collected and its finaliser stops the threads."""

    def __init__(
        self, runtime: Metric3D, frames: Iterator, fx: float, fy: float, latest: bool, queue_size: int
    ) -> None:
        self.runtime = runtime
        self.fx, self.fy = fx, fy
        cuda = runtime.device.type == "cuda"
        self.transfers = _CudaTransfers(runtime.device) if cuda else _HostTransfers(runtime.device)
        # In live mode a single newest-frame slot in front of each host stage, so the network always
        # takes the freshest frame; otherwise every frame waits its turn.
        self.read = _Channel(1 if latest else queue_size, newest=latest)
        self.prepared = _Channel(1 if latest else queue_size, newest=latest)
        self.inferred = _Channel(queue_size)
        self.results = _Channel(queue_size)
        self.size: tuple[int, int] | None = None  # of the last prepared frame
        stages = [
            ("prepare", self._prepare, self.read, self.prepared),
            ("infer", self._infer, self.prepared, self.inferred),
            ("finish", self._finish, self.inferred, self.results),
        ]
        self.reader = threading.Thread(target=self._read, args=(frames,), name=f"{THREAD_PREFIX}-read")
        self.workers = [
            threading.Thread(target=self._stage, args=(work, inbox, outbox), name=f"{THREAD_PREFIX}-{name}")
            for name, work, inbox, outbox in stages
        ]
        self.started = time.perf_counter()
        for thread in [self.reader, *self.workers]:
            thread.daemon = True  # a source blocked forever must not keep the interpreter alive
            thread.start()

    @property
    def dropped(self) -> int:
        return self.read.dropped + self.prepared.dropped

    def _read(self, frames: Iterator) -> None:
        try:
            for index in itertools.count():
                try:
                    frame = next(frames)
                except StopIteration:
                    self.read.put(_END)
                    return
                except Exception as e:
                    self.read.put(_Failed(e))
                    return
                self.read.put(_Frame(index, time.perf_counter(), frame))
        except _Stopped:
            pass
        finally:
            if inspect.isgenerator(frames):
                frames.close()  # runs the source's cleanup (e.g. releasing a camera) now

    def _stage(self, work: Callable[[_Frame], object], inbox: _Channel, outbox: _Channel) -> None:
        """Apply `work` to each frame; the end or a failure is passed on (in order) and ends the stage."""
        try:
            while True:
                item = inbox.get()
                if isinstance(item, _Frame):
                    try:
                        item = work(item)
                    except Exception as e:
                        item = _Failed(e)
                outbox.put(item)
                if item is _END or isinstance(item, _Failed):
                    return
        except _Stopped:
            return

    def _prepare(self, frame: _Frame) -> _Frame:
        frame.rgb = _rgb_frame(frame.source)
        frame.source = None
        self._note_size(frame)
        frame.canvases_u8, canvases = host_canvases([frame.rgb])
        (frame.canvas,), (frame.scale,) = canvases, metric_scales(canvases, self.fx, self.fy)
        return frame

    def _note_size(self, frame: _Frame) -> None:
        size = frame.rgb.shape[:2]
        if self.size is not None and size != self.size:
            log.info("frame size changed from %dx%d to %dx%d at frame %d", *self.size, *size, frame.index)
        self.size = size

    def _infer(self, frame: _Frame) -> _Frame:
        pixels = self.transfers.upload(frame.canvases_u8)
        frame.canvases_u8 = None
        frame.out, frame.ready = self.transfers.hand_over(self.runtime.forward(pixels))
        return frame

    def _finish(self, frame: _Frame) -> StreamResult:
        with self.transfers.finishing(frame):
            per_image = self.runtime.to_images(frame.out, [frame.canvas], [frame.scale])
            (prediction,) = to_predictions(per_image, [frame.canvas], [(self.fx, self.fy)])
        return StreamResult(frame.index, frame.rgb, prediction, time.perf_counter() - frame.taken)

    def close(self) -> None:
        for channel in (self.read, self.prepared, self.inferred, self.results):
            channel.close()
        self.reader.join(SOURCE_JOIN_S)
        for thread in self.workers:  # at most the frame in progress is finished
            thread.join()


class FrameStream:
    """The results of `Metric3D.stream`, in frame order: an iterator and a context manager.

    Leaving a `for` loop early stops the threads once the stream is no longer referenced; with a
    reference kept, use `with` or call close().
    """

    def __init__(
        self,
        runtime: Metric3D,
        frames: Iterable[np.ndarray | torch.Tensor],
        fx: float,
        fy: float | None = None,
        *,
        latest: bool = False,
        queue_size: int = 2,
    ) -> None:
        fx, fy, _ = resolve_focal_lengths(fx, fy)  # before any work
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InputError(f"queue_size must be a whole number >= 1, got {queue_size!r}; the default is 2")
        self._pipeline = _Pipeline(runtime, _source_iterator(frames), fx, fy, latest, queue_size)
        self._stop = weakref.finalize(self, self._pipeline.close)
        self.frames_done = 0
        self._latencies: list[float] = []
        self._last_result = self._pipeline.started

    @property
    def dropped(self) -> int:
        """Frames of a live source (latest=True) replaced by newer ones before the network took them."""
        return self._pipeline.dropped

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> StreamResult:
        try:
            item = self._pipeline.results.get()
        except _Stopped:  # closed
            raise StopIteration from None
        if isinstance(item, StreamResult):
            self.frames_done += 1
            self._latencies.append(item.latency_s)
            self._last_result = time.perf_counter()
            return item
        self.close()
        if isinstance(item, _Failed):
            raise item.error
        raise StopIteration

    def summary(self) -> dict[str, float]:
        """frames, dropped, p50_ms / p90_ms latency, fps (frames / seconds from the start to the last)."""
        latencies_ms = np.array(self._latencies) * 1000.0
        wall_s = self._last_result - self._pipeline.started
        return {
            "frames": self.frames_done,
            "dropped": self.dropped,
            "p50_ms": float(np.percentile(latencies_ms, 50)) if self.frames_done else float("nan"),
            "p90_ms": float(np.percentile(latencies_ms, 90)) if self.frames_done else float("nan"),
            "fps": self.frames_done / wall_s if self.frames_done else 0.0,
        }

    def close(self) -> None:
        """Stop the threads: frames in flight are abandoned (the one in the network is finished first)."""
        self._stop()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
