"""Metric3D.predict: metric depth at the image size, faithful to the original's canonical depth."""

import numpy as np
import pytest
import torch

from support.reference import load_arrays
from support.stand_in_backends import RedDepth
from trt_metric3d import Metric3D


@pytest.fixture(scope="module")
def coffee():
    ref, meta = load_arrays("vit-small", "coffee", "model")
    return ref, meta


@pytest.fixture(scope="module")
def runtime(small_model):
    return Metric3D(model=small_model, device="cpu")


@pytest.fixture(scope="module")
def stand_in_runtime():
    """The pre- and post-processing around a stand-in network, for what does not depend on the network."""
    return Metric3D(backend=RedDepth(), device="cpu")


@pytest.fixture(scope="module")
def coffee_prediction(runtime, coffee):
    ref, _ = coffee
    return runtime.predict(ref["input_u8"], fx=1000.0, fy=1000.0)


def test_outputs_are_at_image_resolution(coffee_prediction, coffee):
    h, w = coffee[0]["input_u8"].shape[:2]
    p = coffee_prediction
    assert p.depth.shape == p.confidence.shape == p.canonical_depth.shape == (h, w)
    assert p.normal.shape == (h, w, 3)
    assert all(a.dtype == np.float32 for a in (p.depth, p.confidence, p.normal, p.canonical_depth))
    np.testing.assert_allclose(np.linalg.norm(p.normal, axis=2), 1.0, atol=1e-5)


def test_canonical_depth_is_the_originals_resized(coffee_prediction, coffee):
    ref, _ = coffee
    h, w = ref["input_u8"].shape[:2]
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(ref["depth"])[None], size=(h, w), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    rel = np.abs(coffee_prediction.canonical_depth - expected) / expected
    assert rel.max() <= 1e-4


def test_metric_depth_uses_focal_and_resize_scale(coffee_prediction):
    # coffee is 400 x 600: r = min(616/400, 1064/600) = 1.54; focal 1000 -> metres = canonical * 1.54
    p = coffee_prediction
    assert p.canvas.scale == pytest.approx(1.54)
    np.testing.assert_allclose(p.depth, p.canonical_depth * 1.54, rtol=1e-6)


def test_focal_length_scales_depth_linearly(stand_in_runtime, coffee):
    image = coffee[0]["input_u8"]
    a = stand_in_runtime.predict(image, fx=500.0, fy=700.0)  # focal 600
    np.testing.assert_allclose(a.depth, a.canonical_depth * 600 * 1.54 / 1000, rtol=1e-6)


@pytest.mark.parametrize(("fx", "fy"), [(0.0, 1000.0), (1000.0, -5.0), (float("nan"), 1000.0)])
def test_bad_focal_is_rejected(runtime, fx, fy):
    with pytest.raises(ValueError, match="focal length in pixels"):
        runtime.predict(np.zeros((32, 32, 3), np.uint8), fx=fx, fy=fy)


def test_list_of_images_of_different_sizes(stand_in_runtime, coffee):
    image = coffee[0]["input_u8"]
    small = np.ascontiguousarray(image[::2, ::3])
    results = stand_in_runtime.predict([image, small], fx=[1000.0, 400.0], fy=[1000.0, 400.0])
    assert [r.depth.shape for r in results] == [image.shape[:2], small.shape[:2]]
    scale_small = min(616 / small.shape[0], 1064 / small.shape[1])
    np.testing.assert_allclose(
        results[1].depth, results[1].canonical_depth * 400 * scale_small / 1000, rtol=1e-6
    )


def test_comfyui_tensor_batch_equals_the_array_path(stand_in_runtime, coffee):
    image = coffee[0]["input_u8"]
    batch = torch.from_numpy(np.stack([image, image]).astype(np.float32) / 255.0)  # B x H x W x 3 in 0..1
    result = stand_in_runtime.predict(batch, fx=1000.0)
    expected = stand_in_runtime.predict(image, fx=1000.0)
    assert result.depth.shape == (2, *image.shape[:2]) and result.normal.shape == (2, *image.shape[:2], 3)
    assert isinstance(result.depth, torch.Tensor) and result.depth.device.type == "cpu"
    for i in range(2):
        np.testing.assert_allclose(result.depth[i].numpy(), expected.depth, rtol=1e-4)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 32, 32), "B x H x W x 3"),
        (torch.full((1, 8, 8, 3), 2.0), r"\[0, 1\]"),
        (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.int32), "dtype"),
        ([], "no images"),
    ],
)
def test_bad_inputs_are_explained(runtime, images, message):
    with pytest.raises(ValueError, match=message):
        runtime.predict(images, fx=1000.0)


def test_mismatched_focal_lists_are_explained(runtime):
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="2 fx and 2 fy values for 1 images"):
        runtime.predict([image], fx=[1.0, 2.0], fy=[1.0, 2.0])


def test_closed_runtime_refuses_to_predict(small_model):
    with Metric3D(model=small_model, device="cpu") as m:
        assert m.backend == "torch"
    with pytest.raises(RuntimeError, match="closed"):
        m.predict(np.zeros((8, 8, 3), np.uint8), fx=100.0)


@pytest.fixture
def one_gpu(monkeypatch):
    """torch sees one CUDA GPU (nothing runs on it: the backends opened are stand-ins or fail first)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_tries_tensorrt_then_onnxruntime_then_torch_on_a_gpu(small_model, monkeypatch, caplog, one_gpu):
    from trt_metric3d.runtime.torch_backend import TorchBackend

    tried = []

    def open_backend(self, name, compile, cuda_graph, build_progress):
        tried.append(name)
        if name == "tensorrt":
            raise ImportError("TensorRT is not installed. Install one of: ...")
        if name == "onnxruntime":
            raise RuntimeError("ONNX Runtime has no CUDA provider here")
        return TorchBackend(small_model, torch.device("cpu"), "fp32")

    monkeypatch.setattr(Metric3D, "_open", open_backend)
    with caplog.at_level("WARNING", logger="trt_metric3d"):
        runtime = Metric3D("vit-small", device="cuda")  # a GPU device: nothing runs on it here
    assert tried == ["tensorrt", "onnxruntime", "torch"] and runtime.backend == "torch"
    assert runtime.precision == "fp16"
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 2 and "TensorRT is not installed" in reasons[0] and "CUDA provider" in reasons[1]

    tried.clear()
    Metric3D("vit-small", device="cuda", precision="fp32")
    assert tried == ["onnxruntime", "torch"], "FP16 engines are not tried for fp32"
    tried.clear()
    Metric3D("vit-small", device="cpu")
    assert tried == ["torch"]


def test_unknown_backend_and_backbone(small_model):
    with pytest.raises(ValueError, match="unknown backend"):
        Metric3D(backend="tflite")
    with pytest.raises(ValueError, match="unknown backbone"):
        Metric3D("vit-huge")


def test_onnxruntime_and_torch_backends_agree(runtime, small_onnx, small_checkpoint, monkeypatch):
    """A square photo: padded left and right on the landscape canvas. (The graphs' parity on both
    canvas orientations is test_export's.)"""
    from support.reference import REPO_ROOT
    from trt_metric3d.io import read_image

    monkeypatch.setenv("METRIC3D_EXPORT_DIR", str(small_onnx[0].parent))
    image = read_image(REPO_ROOT / "calibration" / "astronaut.jpg")
    with Metric3D("vit-small", backend="onnxruntime", checkpoint=str(small_checkpoint), device="cpu") as ort:
        assert ort.backend == "onnxruntime"
        got = ort.predict(image, fx=900.0, fy=1100.0)
    expected = runtime.predict(image, fx=900.0, fy=1100.0)
    assert (np.abs(got.depth - expected.depth) / expected.depth).max() <= 1e-3
    np.testing.assert_allclose(got.normal, expected.normal, atol=1e-3)


def test_onnxruntime_providers_prefer_tensorrt_then_cuda_on_a_gpu(tmp_path):
    from trt_metric3d.runtime.onnxruntime_backend import execution_providers

    cpu = execution_providers(torch.device("cpu"), ["CPUExecutionProvider"], tmp_path)
    assert cpu == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    names = [name for name, _ in execution_providers(torch.device("cuda:1"), gpu, tmp_path / "ort")]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    options = dict(execution_providers(torch.device("cuda:1"), gpu, tmp_path / "ort"))
    assert options["TensorrtExecutionProvider"]["trt_engine_cache_path"] == str(tmp_path / "ort")
    assert options["CUDAExecutionProvider"]["device_id"] == 1 and (tmp_path / "ort").is_dir()
    with pytest.raises(RuntimeError, match="pip install onnxruntime-gpu"):
        execution_providers(torch.device("cuda"), ["CPUExecutionProvider"], tmp_path)


def test_onnxruntime_without_cuda_provider_fails_before_exporting(monkeypatch, one_gpu):
    pytest.importorskip("onnxruntime")
    import trt_metric3d.export.stages as stages

    monkeypatch.setattr(stages, "exported_onnx", lambda *a: pytest.fail("exported for nothing"))
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="pip install onnxruntime-gpu"):
        Metric3D("vit-small", backend="onnxruntime", device="cuda")
