"""GPU paths: run by themselves wherever CUDA (and TensorRT for the engine tests) exist; skipped elsewhere.

pip install -e ".[test,tensorrt-cu12]" && python -m pytest tests/runtime/test_gpu.py
"""

import numpy as np
import pytest
import torch

from support.reference import REPO_ROOT
from trt_metric3d import Metric3D
from trt_metric3d.io import read_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PHOTOS = ["coffee.jpg", "rocket.jpg"]


@pytest.fixture(scope="module")
def reference_cpu(small_model):
    runtime = Metric3D(model=small_model, device="cpu")
    return {p: runtime.predict(read_image(REPO_ROOT / "calibration" / p), fx=1000.0) for p in PHOTOS}


@pytest.fixture(scope="module")
def tensorrt_runtime(small_checkpoint, tmp_path_factory):
    try:
        from trt_metric3d.engine.builder import import_tensorrt

        import_tensorrt()
    except ImportError:
        pytest.skip("TensorRT is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METRIC3D_ENGINE_DIR", str(tmp_path_factory.mktemp("engines")))
        mp.setenv("METRIC3D_EXPORT_DIR", str(tmp_path_factory.mktemp("export")))
        runtime = Metric3D("vit-small", backend="tensorrt", checkpoint=str(small_checkpoint), device="cuda")
        yield runtime
        runtime.close()


@pytest.mark.parametrize("photo", PHOTOS)
def test_torch_fp16_on_gpu_matches_cpu_fp32(small_model, reference_cpu, photo):
    runtime = Metric3D(model=small_model, device="cuda", precision="fp16")
    got = runtime.predict(read_image(REPO_ROOT / "calibration" / photo), fx=1000.0)
    expected = reference_cpu[photo].depth
    assert np.mean(np.abs(got.depth - expected) / expected) <= 1e-2


@pytest.mark.parametrize("photo", PHOTOS)
def test_tensorrt_engine_matches_cpu_fp32(tensorrt_runtime, reference_cpu, photo):
    got = tensorrt_runtime.predict(read_image(REPO_ROOT / "calibration" / photo), fx=1000.0)
    expected = reference_cpu[photo].depth
    rel = np.abs(got.depth - expected) / expected
    assert (
        rel.mean() <= 1e-2 and np.mean(np.maximum(got.depth / expected, expected / got.depth) < 1.25) >= 0.999
    )


def test_tensorrt_gpu_batch_stays_on_the_gpu_and_memory_is_stable(tensorrt_runtime):
    images = torch.rand(2, 300, 451, 3, device="cuda")
    first = tensorrt_runtime.predict(images, fx=1000.0)
    assert first.depth.device.type == "cuda" and first.depth.shape == (2, 300, 451)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(5):
        tensorrt_runtime.predict(images, fx=1000.0)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before + 1_000_000


def test_tensorrt_cuda_graph_replay_matches_plain_execution(tensorrt_runtime, small_checkpoint):
    images = torch.rand(2, 300, 451, 3, device="cuda")
    expected = tensorrt_runtime.predict(images, fx=1000.0).depth.clone()
    graphed = Metric3D(
        "vit-small", backend="tensorrt", checkpoint=str(small_checkpoint), device="cuda", cuda_graph=True
    )
    try:
        first, again = (graphed.predict(images, fx=1000.0).depth.clone() for _ in range(2))  # capture, replay
        other = graphed.predict(images.flip(2), fx=1000.0).depth
    finally:
        graphed.close()
    torch.testing.assert_close(first, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(again, expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(other, expected), "a replay must read the new input"


def test_torch_cuda_graph_replay_matches_eager(small_model):
    images = torch.rand(2, 300, 451, 3, device="cuda")
    expected = Metric3D(model=small_model, device="cuda").predict(images, fx=1000.0).depth.clone()
    graphed = Metric3D(model=small_model, device="cuda", cuda_graph=True)
    first, again = (graphed.predict(images, fx=1000.0).depth.clone() for _ in range(2))  # capture, replay
    other = graphed.predict(images.flip(2), fx=1000.0).depth
    assert list(graphed._backend.graphs) == [(2, 3, 616, 1064)], "captured, not fallen back to eager"
    torch.testing.assert_close(first, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(again, expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(other, expected), "a replay must read the new input"


def stream_frames() -> list[np.ndarray]:
    photos = [read_image(REPO_ROOT / "calibration" / p) for p in PHOTOS]
    return [*photos, photos[0][10:300, 20:500], *photos]  # a size change, and more frames than buffers


def assert_stream_equals_predict(runtime: Metric3D) -> None:
    """Same kernels on the same inputs: any difference is a race (a buffer overwritten too early)."""
    images = stream_frames()
    results = list(runtime.stream(images, fx=1000.0))
    assert [r.index for r in results] == list(range(len(images)))
    for result, image in zip(results, images, strict=True):
        expected = runtime.predict(image, fx=1000.0)
        for field in ("depth", "confidence", "normal", "canonical_depth"):
            np.testing.assert_allclose(getattr(result.prediction, field), getattr(expected, field), rtol=1e-5)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_stream_on_cuda_equals_predict(small_model, cuda_graph):
    assert_stream_equals_predict(Metric3D(model=small_model, device="cuda", cuda_graph=cuda_graph))


def test_tensorrt_stream_equals_predict(tensorrt_runtime):
    assert_stream_equals_predict(tensorrt_runtime)  # its output buffers are reused on every forward
