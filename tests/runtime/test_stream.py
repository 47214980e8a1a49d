"""Metric3D.stream: pipelined frames give predict's results in order; live mode drops; failures and early
exits stop every thread."""

import logging
import threading
import time

import numpy as np
import pytest
import torch

from support.reference import REPO_ROOT
from support.stand_in_backends import RedDepth
from trt_metric3d import InputError, Metric3D
from trt_metric3d.io import read_image
from trt_metric3d.runtime.stream import THREAD_PREFIX

FIELDS = ("depth", "confidence", "normal", "canonical_depth")


@pytest.fixture
def runtime_with():
    def make(backend: RedDepth) -> Metric3D:
        return Metric3D(backend=backend, device="cpu")

    return make


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.fixture(autouse=True)
def no_threads_left():
    yield
    assert stream_threads() == [], "a stream left threads running"


def frames(n: int, hw: tuple[int, int] = (40, 60)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def assert_same(got, expected) -> None:
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    assert got.canvas == expected.canvas


def photos() -> list[np.ndarray]:
    """One photo for the real networks (a forward here costs seconds): a crop, so its canvas is padded.
    Order, drops and size changes over many frames are the stand-in backend's tests below."""
    coffee = read_image(REPO_ROOT / "calibration" / "coffee.jpg")
    return [coffee[20:300, 40:500]]


def check_equals_predict(runtime: Metric3D, images: list[np.ndarray]) -> None:
    results = list(runtime.stream(images, fx=900.0, fy=1100.0))
    assert [r.index for r in results] == list(range(len(images)))
    for result, image in zip(results, images, strict=True):
        np.testing.assert_array_equal(result.frame, image)
        assert_same(result.prediction, runtime.predict(image, fx=900.0, fy=1100.0))
        assert result.latency_s > 0


def test_stream_equals_predict_in_order_on_torch(small_model):
    check_equals_predict(Metric3D(model=small_model, device="cpu"), photos())


def test_stream_equals_predict_in_order_on_onnxruntime(small_onnx, small_checkpoint, monkeypatch):
    monkeypatch.setenv("METRIC3D_EXPORT_DIR", str(small_onnx[0].parent))
    with Metric3D("vit-small", backend="onnxruntime", checkpoint=str(small_checkpoint), device="cpu") as ort:
        check_equals_predict(ort, photos())


def test_float_arrays_and_tensors_are_converted_as_predict_converts_them(runtime_with):
    runtime = runtime_with(RedDepth())
    image = frames(1)[0]
    as_float = image.astype(np.float32) / 255
    sources = [as_float, torch.from_numpy(as_float), torch.from_numpy(image)[None]]
    expected = runtime.predict(as_float, fx=1000.0)
    results = list(runtime.stream(sources, fx=1000.0))
    assert len(results) == 3
    for result in results:
        assert result.frame.dtype == np.uint8 and result.frame.shape == image.shape
        assert_same(result.prediction, expected)


def test_results_come_in_frame_order_with_summary(runtime_with):
    runtime = runtime_with(RedDepth())
    images = frames(6)
    with runtime.stream(images, fx=1000.0, queue_size=1) as stream:
        results = list(stream)
        summary = stream.summary()
    assert [r.index for r in results] == list(range(6))
    for result, image in zip(results, images, strict=True):
        assert_same(result.prediction, runtime.predict(image, fx=1000.0))
    assert summary["frames"] == stream.frames_done == 6 and summary["dropped"] == 0
    assert summary["p90_ms"] >= summary["p50_ms"] > 0 and summary["fps"] > 0


def test_latest_drops_frames_a_busy_model_cannot_take(runtime_with):
    def camera():  # 25 frames at ~100 fps, a model at ~10 fps
        for image in frames(25):
            time.sleep(0.01)
            yield image

    runtime = runtime_with(RedDepth(delay_s=0.1))
    with runtime.stream(camera(), fx=1000.0, latest=True) as stream:
        indices = [r.index for r in stream]
    assert stream.dropped > 0 and stream.frames_done + stream.dropped == 25
    assert indices == sorted(indices) and indices[-1] == 24, "the newest frame is never dropped"
    assert stream.summary()["dropped"] == stream.dropped


def test_a_size_change_is_logged_once_per_change(runtime_with, caplog):
    runtime = runtime_with(RedDepth())
    images = frames(2) + frames(2, (30, 50)) + frames(1)
    with caplog.at_level(logging.INFO, logger="trt_metric3d"):
        results = list(runtime.stream(images, fx=1000.0))
    assert [r.prediction.depth.shape for r in results] == [(40, 60)] * 2 + [(30, 50)] * 2 + [(40, 60)]
    changes = [r.getMessage() for r in caplog.records if "frame size changed" in r.getMessage()]
    assert changes == [
        "frame size changed from 40x60 to 30x50 at frame 2",
        "frame size changed from 30x50 to 40x60 at frame 4",
    ]


class CameraUnplugged(OSError):
    pass


def test_an_exception_in_the_source_reaches_the_consumer_after_the_frames_before_it(runtime_with):
    def camera():
        yield from frames(2)
        raise CameraUnplugged("camera 0 is gone")

    got = []
    with pytest.raises(CameraUnplugged, match="camera 0 is gone"):
        for result in runtime_with(RedDepth()).stream(camera(), fx=1000.0):
            got.append(result.index)
    assert got == [0, 1]


@pytest.mark.parametrize(
    ("source", "backend", "error", "match"),
    [
        (frames(1) + [np.zeros((40, 60), np.uint8)], RedDepth(), InputError, "grayscale"),
        (frames(3), RedDepth(fail_at_call=2), RuntimeError, "the backend broke"),
    ],
)
def test_a_failing_stage_raises_its_exception_type(runtime_with, source, backend, error, match):
    stream = runtime_with(backend).stream(source, fx=1000.0)
    assert next(stream).index == 0
    with pytest.raises(error, match=match):
        next(stream)
    with pytest.raises(StopIteration):  # closed
        next(stream)


def endless():
    image = frames(1)[0]
    while True:
        yield image


def test_breaking_out_of_the_loop_stops_the_threads(runtime_with):
    for _ in runtime_with(RedDepth()).stream(endless(), fx=1000.0):
        break
    assert stream_threads() == []


def test_close_stops_promptly_with_a_slow_model_and_a_reference_kept(runtime_with):
    stream = runtime_with(RedDepth(delay_s=0.3)).stream(endless(), fx=1000.0, latest=True)
    next(stream)
    start = time.perf_counter()
    stream.close()
    assert time.perf_counter() - start < 2.0 and stream_threads() == []
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"fx": 0.0}, "fx must be a finite focal length"),
        ({"fx": "1400"}, "fx must be a real number"),
        ({"fx": 1000.0, "fy": float("nan")}, "fy must be a finite focal length"),
        ({"fx": 1000.0, "queue_size": 0}, "queue_size must be a whole number"),
    ],
)
def test_bad_options_are_refused_before_any_work(runtime_with, options, match):
    pulled = []

    def source():
        pulled.append(True)
        yield from frames(1)

    backend = RedDepth()
    with pytest.raises(InputError, match=match):
        runtime_with(backend).stream(source(), **options)
    assert pulled == [] and backend.calls == 0


@pytest.mark.parametrize(
    ("source", "match"),
    [("clip.mp4", "got the path"), (frames(1)[0], "N x H x W x 3"), (42, "iterable of RGB frames")],
)
def test_sources_that_are_no_frame_iterables_are_refused(runtime_with, source, match):
    with pytest.raises(InputError, match=match):
        runtime_with(RedDepth()).stream(source, fx=1000.0)
