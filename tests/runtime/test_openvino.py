"""The OpenVINO backend: agreement with torch fp32 (fp32 tight, bf16 within its bar), "auto" choosing
it on a CPU with bf16 units where installed, the one-line install message where not, and compiled
models kept per shape and cached on disk (synthetic vit-small, 224 x 336 canvases)."""

import logging
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from support.fake_cpus import ZEN4
from support.reference import reference_dir
from trt_metric3d import Metric3D
from trt_metric3d.cli import main
from trt_metric3d.errors import InputError, MissingDependency
from trt_metric3d.io import read_image
from trt_metric3d.runtime import cpu, openvino_backend
from trt_metric3d.runtime.openvino_backend import OpenVINOBackend
from trt_metric3d.runtime.torch_backend import TorchBackend

CANVAS = (224, 336)  # multiples of the ViT's 14 px patches (and of the decoder's 28)


@pytest.fixture(scope="module")
def photo_pixels() -> torch.Tensor:
    image = cv2.resize(read_image(reference_dir() / "coffee.png"), CANVAS[::-1], interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()


@pytest.fixture(scope="session")
def needs_openvino() -> None:
    """Skips where openvino is absent: session-scoped and listed first, so before the ONNX export."""
    pytest.importorskip("openvino")


@pytest.fixture
def on_zen4(monkeypatch):
    """A CPU with AVX512-BF16 units (the tests' own CPU has oneDNN capped below them: conftest.py)."""
    monkeypatch.setattr(cpu, "cpu_features", lambda: ZEN4)


@pytest.fixture
def no_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError


def _runtime_precisions(backend: OpenVINOBackend, shape: tuple) -> set[str]:
    """The precisions OpenVINO's CPU plugin runs the matrix products of `shape`'s model in."""
    runtime_model = backend.request(shape).get_compiled_model().get_runtime_model()
    products = ("FullyConnected", "MatMul", "Convolution")
    return {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runtime_model.get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) in products
    }


def test_openvino_matches_torch_fp32(needs_openvino, small_onnx, small_model, photo_pixels, tmp_path):
    """fp32: as ONNX Runtime's FP32 does (depth within 0.1 %); bf16: the bar, depth AbsRel <= 1 %,
    delta<1.25 >= 0.99, normals within 2 degrees. Both share one cache folder, as runtimes do: bf16
    from fp32's blob ran 19 % off under the tests' oneDNN cap before each precision had its own."""
    expected = TorchBackend(small_model, torch.device("cpu"), "fp32")(photo_pixels)
    fp32 = OpenVINOBackend(small_onnx[0], "fp32", tmp_path)(photo_pixels)
    assert (torch.abs(fp32.depth - expected.depth) / expected.depth).max() <= 1e-3
    torch.testing.assert_close(fp32.normal, expected.normal, atol=1e-3, rtol=0)
    bf16_backend = OpenVINOBackend(small_onnx[0], "bf16", tmp_path)
    got = bf16_backend(photo_pixels)
    depth, reference = got.depth.numpy(), expected.depth.numpy()
    absrel = np.mean(np.abs(depth - reference) / reference)
    delta = np.mean(np.maximum(depth / reference, reference / depth) < 1.25)
    cosine = torch.clamp((got.normal[:, :3] * expected.normal[:, :3]).sum(1), -1, 1)
    angle = float(torch.rad2deg(torch.arccos(cosine)).mean())
    assert absrel <= 0.01 and delta >= 0.99 and angle < 2.0, (absrel, delta, angle)
    capabilities = bf16_backend.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in capabilities:  # the bf16 units are used, not a float32 run under another name
        assert "bf16" in _runtime_precisions(bf16_backend, tuple(photo_pixels.shape))


def test_compiled_once_per_shape_and_loaded_from_the_cache_again(
    needs_openvino, small_onnx, photo_pixels, tmp_path
):
    first = OpenVINOBackend(small_onnx[0], "fp32", tmp_path)
    shape = tuple(photo_pixels.shape)
    request = first.request(shape)
    assert not request.get_compiled_model().get_property("LOADED_FROM_CACHE")
    assert first.request(shape) is request  # kept for the next forward of that shape
    batch = first.request((2, *shape[1:]))  # another batch: its own static shape
    assert batch is not request and list(batch.get_compiled_model().input(0).shape) == [2, *shape[1:]]
    again = OpenVINOBackend(small_onnx[0], "fp32", tmp_path)  # e.g. the next process
    assert again.request(shape).get_compiled_model().get_property("LOADED_FROM_CACHE")
    other = OpenVINOBackend(small_onnx[0], "bf16", tmp_path)  # a blob per precision (see the module)
    assert not other.request(shape).get_compiled_model().get_property("LOADED_FROM_CACHE")


def test_auto_on_a_bf16_cpu_runs_openvino_bf16(
    needs_openvino, on_zen4, small_onnx, small_checkpoint, tmp_path, caplog
):
    folders = {"export_dir": small_onnx[0].parent, "engine_dir": tmp_path}
    caplog.set_level(logging.INFO, logger="trt_metric3d")
    with Metric3D("vit-small", device="cpu", checkpoint=str(small_checkpoint), **folders) as runtime:
        assert (runtime.backend, runtime.precision) == ("openvino", "bf16")
        assert runtime._backend.onnx_path == small_onnx[0]  # the cached export, not a new one
    assert "auto on the CPU: the openvino backend (installed; the fastest CPU path)" in caplog.text
    assert "OpenVINO runs the FP32 graph in bf16" in caplog.text


def test_auto_without_openvino_runs_torch_and_says_what_to_install(
    on_zen4,
    no_openvino,
    small_checkpoint,
    caplog,
):
    caplog.set_level(logging.INFO, logger="trt_metric3d")
    with Metric3D("vit-small", device="cpu", checkpoint=str(small_checkpoint)) as runtime:
        assert (runtime.backend, runtime.precision) == ("torch", "bf16")
    assert (
        'auto on the CPU: the torch backend (OpenVINO is faster: pip install "trt-metric3d[openvino]")'
        in caplog.text
    )


def test_auto_with_onednn_capped_runs_torch(needs_openvino, monkeypatch, small_checkpoint, caplog):
    """Capped, OpenVINO's oneDNN fails to compile the graph (AVX2) or, from a blob, ran bf16 wrong."""
    capped = cpu.CpuFeatures("AMD EPYC", ZEN4.flags, "AVX512", "AVX2")
    monkeypatch.setattr(cpu, "cpu_features", lambda: capped)
    caplog.set_level(logging.INFO, logger="trt_metric3d")
    with Metric3D("vit-small", device="cpu", checkpoint=str(small_checkpoint)) as runtime:
        assert (runtime.backend, runtime.precision) == ("torch", "fp32")
    assert "auto on the CPU: the torch backend (oneDNN capped, ONEDNN_MAX_CPU_ISA=AVX2)" in caplog.text


def test_missing_openvino_is_one_line_with_the_install_command(no_openvino, small_checkpoint, tmp_path):
    with pytest.raises(
        MissingDependency, match=r'openvino is not installed: pip install "trt-metric3d\[openvino\]"'
    ):
        Metric3D("vit-small", "openvino", device="cpu", checkpoint=str(small_checkpoint), export_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before any export
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((56, 84, 3), np.uint8))
    args = [
        "infer",
        str(image),
        "--fx",
        "500",
        "--backend",
        "openvino",
        "--checkpoint",
        str(small_checkpoint),
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert 'pip install "trt-metric3d[openvino]"' in result.output


def test_openvino_runs_on_the_cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="OpenVINO runs on the CPU here, and this runtime's device is cuda"):
        Metric3D("vit-small", "openvino", "fp32", "cuda")
    with pytest.raises(InputError, match="precision 'fp16' runs on the .* backends, not openvino"):
        Metric3D("vit-small", "openvino", "fp16", "cpu")


def test_doctor_says_whether_openvino_is_installed(on_zen4, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", SimpleNamespace(__version__="2026.4.1"))
    installed = CliRunner().invoke(main, ["doctor"]).output
    assert "openvino 2026.4.1" in installed
    assert (
        "CPU precision by default: bf16 on AVX512-BF16 (openvino backend: installed; the fastest CPU path)"
        in installed
    )
    monkeypatch.setitem(sys.modules, "openvino", None)
    absent = CliRunner().invoke(main, ["doctor"]).output
    assert "openvino: not installed" in absent
    assert f"(torch backend: OpenVINO is faster: {openvino_backend.INSTALL})" in absent
    monkeypatch.setitem(sys.modules, "openvino", SimpleNamespace(__version__="2026.4.1"))
    monkeypatch.setattr(cpu, "cpu_features", lambda: cpu.CpuFeatures("x", ZEN4.flags, "AVX512", "AVX2"))
    assert (
        "(torch backend: oneDNN capped, ONEDNN_MAX_CPU_ISA=AVX2; no bf16 units"
        in CliRunner().invoke(main, ["doctor"]).output
    )


def test_the_nodes_offer_openvino():
    from trt_metric3d.comfyui import nodes

    assert "openvino" in nodes.BACKENDS  # the backend input's options (comfyui/extension.py)


def test_a_capped_onednn_wins_over_a_missing_openvino_in_the_runtime_and_in_doctor(monkeypatch):
    """One rule (precision.cpu_auto_backend): installing OpenVINO would not help while oneDNN is capped."""
    from trt_metric3d.runtime.precision import cpu_auto_backend, cpu_path_lines

    capped = cpu.CpuFeatures("x", ZEN4.flags, "AVX512", "AVX2")
    assert cpu_auto_backend(capped, openvino_installed=False) == (
        "torch",
        "oneDNN capped, ONEDNN_MAX_CPU_ISA=AVX2",
    )
    assert cpu_auto_backend(capped, openvino_installed=True)[0] == "torch"
    assert "(torch backend: oneDNN capped, ONEDNN_MAX_CPU_ISA=AVX2; " in cpu_path_lines(capped, None)[1]
    assert cpu_auto_backend(ZEN4, openvino_installed=True)[0] == "openvino"
