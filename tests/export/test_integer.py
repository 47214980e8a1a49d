"""ONNX Runtime's integer INT8 graph for the CPU: integer kernels, accuracy against FP32, caching, and
the runtime choosing it for precision int8 on the CPU (small canvases, synthetic vit-small)."""

import collections
import logging

import cv2
import numpy as np
import pytest
import torch

from support.reference import reference_dir
from trt_metric3d import Metric3D
from trt_metric3d.export import integer, stages
from trt_metric3d.io import read_image
from trt_metric3d.runtime.torch_backend import TorchBackend

ort = pytest.importorskip("onnxruntime")

ENCODER_WEIGHT_MATMULS = 48  # vit-small: 12 blocks x (qkv, attention projection, 2 MLP)


@pytest.fixture(scope="module")
def integer_small(small_checkpoint, small_onnx) -> tuple:
    """stages.integer_onnx(...) for the synthetic vit-small, next to its FP32 export."""
    return stages.integer_onnx("vit-small", small_checkpoint, small_onnx[0].parent)


def _op_counts(model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def test_the_graph_holds_integer_matmuls_that_onnxruntime_fuses(integer_small, tmp_path):
    import onnx

    path, *_ = integer_small
    ops = _op_counts(onnx.load(str(path), load_external_data=False))
    assert ops["MatMulInteger"] == ENCODER_WEIGHT_MATMULS
    assert ops["ConvInteger"] == 0 and ops["QuantizeLinear"] == 0  # decoder FP32; no Q/DQ pairs
    # What the CPU provider runs: its optimized graph, in which each becomes one integer kernel.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = _op_counts(onnx.load(options.optimized_model_filepath, load_external_data=False))
    assert optimized["DynamicQuantizeMatMul"] == ENCODER_WEIGHT_MATMULS
    assert optimized["MatMulInteger"] == 0


def test_the_integer_graph_holds_the_int8_bar_on_a_photo(integer_small, small_model):
    """Against the torch backend's FP32 on a photo never calibrated on (nothing is): depth AbsRel
    <= 2 % and delta<1.25 >= 0.99 (measured here: 0.24 %, 1.0000), normals within 2 degrees (0.40)."""
    path, *_ = integer_small
    image = cv2.resize(read_image(reference_dir() / "coffee.png"), (336, 224), interpolation=cv2.INTER_AREA)
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    expected = [t.numpy() for t in TorchBackend(small_model, torch.device("cpu"), "fp32")(pixels)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": pixels.numpy()})
    depth, reference = got[0], expected[0]
    absrel = np.mean(np.abs(depth - reference) / reference)
    delta = np.mean(np.maximum(depth / reference, reference / depth) < 1.25)
    cosine = np.clip(np.sum(got[2][:, :3] * expected[2][:, :3], axis=1), -1, 1)
    angle = np.degrees(np.arccos(cosine)).mean()
    assert absrel <= 0.02 and delta >= 0.99 and angle < 2.0, (absrel, delta, angle)


def test_the_integer_graph_is_made_once(integer_small, small_checkpoint, small_onnx, monkeypatch):
    def fail(*args):
        raise AssertionError("quantized again")

    monkeypatch.setattr(integer, "quantize_integer", fail)
    assert stages.integer_onnx("vit-small", small_checkpoint, small_onnx[0].parent) == integer_small
    assert integer_small[0].name.endswith(f".int8-cpu-{integer.integer_key()}.onnx")


def test_int8_on_the_cpu_runs_the_integer_graph_and_says_so(
    integer_small, small_checkpoint, small_onnx, monkeypatch, caplog
):
    """No calibration (and so no Model Optimizer) is involved: the Q/DQ stage must not be asked."""

    def no_qdq(*args, **kwargs):
        raise AssertionError("the Q/DQ graph was asked for")

    monkeypatch.setattr(stages, "quantized_onnx", no_qdq)
    caplog.set_level(logging.INFO, logger="trt_metric3d")
    folder = small_onnx[0].parent
    with Metric3D(
        "vit-small", "onnxruntime", "int8", "cpu", str(small_checkpoint), export_dir=folder
    ) as runtime:
        assert runtime._backend.session._model_path == str(integer_small[0])
        image = read_image(reference_dir() / "coffee.png")[:112, :168]
        assert np.isfinite(runtime.predict(image, fx=500.0).depth).all()
    assert any("ONNX Runtime runs the integer int8 graph" in r.getMessage() for r in caplog.records)
