"""Bad arguments are InputErrors naming the problem and the fix; odd but valid ones just work."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from trt_metric3d import BackendUnavailable, InputError, Metric3D
from trt_metric3d.model import Metric3DOutput
from trt_metric3d.processing import MAX_CANONICAL_DEPTH
from trt_metric3d.runtime.metric3d import resolve_device
from trt_metric3d.runtime.postprocess import output_buffers
from trt_metric3d.runtime.preprocess import canvases_from_tensor

CPU = torch.device("cpu")


class ConstantDepth:
    """A stand-in backend: the network's largest canonical depth everywhere, NaN in one image if asked."""

    name = "stub"

    def __init__(self, nan_in_image: int | None = None):
        self.nan_in_image = nan_in_image

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        out = output_buffers(tuple(pixels.shape), pixels.device)
        for t in out:
            t.fill_(1.0)
        out[0].fill_(MAX_CANONICAL_DEPTH)
        if self.nan_in_image is not None:
            out[0][self.nan_in_image, 0, 300, 500] = math.nan
        return Metric3DOutput(*out)

    def close(self) -> None:
        pass


@pytest.fixture
def runtime_with():
    def make(backend: ConstantDepth) -> Metric3D:
        return Metric3D(backend=backend, device="cpu")

    return make


@pytest.fixture
def runtime(runtime_with) -> Metric3D:
    return runtime_with(ConstantDepth())


IMAGE = np.zeros((40, 60, 3), np.uint8)  # r = min(616 / 40, 1064 / 60) = 15.4
SCALE = 15.4


# --- focal lengths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fx",
    [
        1400,
        1400.0,
        np.float32(1400),
        np.int64(1400),
        np.array(1400.0),
        torch.tensor(1400.0),
        torch.tensor(1400),
    ],
    ids=["int", "float", "np.float32", "np.int64", "0-d array", "0-d tensor", "0-d int tensor"],
)
def test_numbers_of_any_real_kind_are_focal_lengths(runtime, fx):
    depth = runtime.predict(IMAGE, fx=fx).depth
    np.testing.assert_allclose(depth, MAX_CANONICAL_DEPTH * 1400 * SCALE / 1000, rtol=1e-6)


@pytest.mark.parametrize("fx", [[1000.0, 500.0], np.array([1000.0, 500.0]), torch.tensor([1000.0, 500.0])])
def test_one_focal_length_per_image(runtime, fx):
    results = runtime.predict([IMAGE, IMAGE], fx=fx)
    for result, focal in zip(results, (1000.0, 500.0), strict=True):
        np.testing.assert_allclose(result.depth, MAX_CANONICAL_DEPTH * focal * SCALE / 1000, rtol=1e-6)


@pytest.mark.parametrize(
    ("fx", "named"),
    [
        (True, "True (a bool)"),
        (np.bool_(True), "(a numpy.bool"),
        (torch.tensor(True), "a torch.Tensor of shape () and dtype torch.bool"),
        (None, "None (a NoneType)"),
        ("1400", "'1400' (a str)"),
        (1400 + 0j, "(1400+0j) (a complex)"),
        (np.array(1400 + 0j), "a numpy.ndarray of shape () and dtype complex128"),
        (Image.new("RGB", (4, 4)), "(a PIL.Image.Image)"),
        (np.full((2, 2), 1400.0), "a numpy.ndarray of shape (2, 2) and dtype float64"),
        (torch.full((1, 1), 1400.0), "a torch.Tensor of shape (1, 1) and dtype torch.float32"),
    ],
    ids=[
        "bool",
        "numpy bool",
        "bool tensor",
        "None",
        "str",
        "complex",
        "complex array",
        "PIL",
        "2-d",
        "2-d t",
    ],
)
def test_things_that_are_not_focal_lengths_are_named(runtime, fx, named):
    with pytest.raises(InputError, match="fx must be a real number, the focal length in pixels, got") as info:
        runtime.predict(IMAGE, fx=fx)
    assert named in str(info.value) and "fx=1400.0" in str(info.value)


def test_the_bad_value_of_a_batch_is_named(runtime):
    with pytest.raises(InputError, match=r"fy\[1\] must be a real number.*None \(a NoneType\)"):
        runtime.predict([IMAGE, IMAGE], fx=1000.0, fy=[1000.0, None])


def test_absurdly_large_focal_length_is_refused_short_of_overflow(runtime):
    with pytest.raises(InputError, match=r"fx=1e\+308 is absurdly large for a focal length in pixels"):
        runtime.predict(IMAGE, fx=1e308)
    with pytest.raises(InputError, match=r"fy=1e\+39 is absurdly large"):
        runtime.predict(IMAGE, fx=1000.0, fy=1e39)
    largest = 0.999 * float(np.finfo(np.float32).max) * 1000 / (MAX_CANONICAL_DEPTH * SCALE) * 2 - 1000.0
    depth = runtime.predict(IMAGE, fx=1000.0, fy=largest).depth
    assert np.isfinite(depth).all() and depth.max() > 1e38


def test_non_finite_depth_from_a_backend_names_the_image(runtime_with):
    runtime = runtime_with(ConstantDepth(nan_in_image=1))
    with pytest.raises(BackendUnavailable, match="stub backend .* returned NaN or inf depth for image 1"):
        runtime.predict([IMAGE, IMAGE, IMAGE], fx=1000.0)


# --- image tensors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_float_image_tensors_are_accepted(dtype):
    images = torch.rand(2, 20, 30, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = canvases_from_tensor(images, CPU)
    expected = canvases_from_tensor(images.float(), CPU)
    assert torch.equal(got.pixels, expected.pixels) and got.canvases == expected.canvases


def test_image_tensor_that_requires_grad_is_accepted(runtime):
    images = torch.rand(1, 20, 30, 3, requires_grad=True)
    got = canvases_from_tensor(images, CPU)
    assert torch.equal(got.pixels, canvases_from_tensor(images.detach(), CPU).pixels)
    batch = runtime.predict(images.to(torch.bfloat16), fx=1000.0)
    assert batch.depth.shape == (1, 20, 30) and not batch.depth.requires_grad


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.bool, torch.int16, torch.complex64, torch.float8_e4m3fn]
)
def test_unsupported_image_tensor_dtypes_are_named(runtime, dtype):
    with pytest.raises(InputError, match=f"image tensor dtype {dtype} is not supported; use float in"):
        runtime.predict(torch.zeros(1, 8, 8, 3).to(dtype), fx=1000.0)


# --- devices -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["banana", "cuda:x", "", 3.5])
def test_invalid_device_says_what_is_valid(device):
    with pytest.raises(InputError, match=rf"device {device!r} is not valid: use one of cpu, cuda, cuda:N"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["meta", "hpu"])
def test_devices_metric3d_cannot_run_on_are_refused(device):
    with pytest.raises(InputError, match=f"device '{device}' is not available here: use one of cpu, cuda"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_to_use_the_cpu(small_model):
    with pytest.raises(InputError) as info:
        Metric3D(model=small_model, device="cuda")
    message = str(info.value)
    assert "device 'cuda' needs a CUDA GPU, but torch sees none" in message and "use device='cpu'" in message
    if torch.version.cuda is None:
        assert "this torch is a CPU-only build (torch.version.cuda is None)" in message
    assert resolve_device(None) == CPU and resolve_device(torch.device("cpu")) == CPU


def test_cuda_index_beyond_the_gpus_names_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(
        InputError, match=r"'cuda:2' does not exist: torch sees 2 CUDA GPU\(s\), cuda:0 to cuda:1"
    ):
        resolve_device("cuda:2")


def test_other_runtime_arguments(small_model):
    with pytest.raises(
        InputError, match="unknown precision 'int4': choose one of fp16, fp32, bf16, int8, fp8"
    ):
        Metric3D(model=small_model, device="cpu", precision="int4")
    with pytest.raises(InputError, match="'fp8' runs on the tensorrt and onnxruntime backends, not torch"):
        Metric3D(model=small_model, device="cpu", precision="fp8")
    with pytest.raises(InputError, match="fp16 on the CPU"):
        Metric3D(model=small_model, device="cpu", precision="fp16")
    with pytest.raises(InputError, match="unknown backend"):
        Metric3D(backend="tflite")


@pytest.mark.parametrize(
    "images", [None, 3.0, "photo.jpg", Image.new("RGB", (60, 40))], ids=["None", "float", "path", "PIL"]
)
def test_predict_names_what_it_got_instead_of_images(runtime, images):
    with pytest.raises(InputError, match="images must be a numpy array, a list of them or a B x H x W x 3"):
        runtime.predict(images, fx=500.0)


def test_a_backend_object_needs_the_protocol():
    with pytest.raises(InputError, match="neither a backend name nor a Backend object"):
        Metric3D(backend=object(), device="cpu")
    with pytest.raises(InputError, match="unknown backend 'tensorflow'"):
        Metric3D(backend="tensorflow", device="cpu")
