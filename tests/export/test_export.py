"""ONNX export (dynamic shapes), parity with PyTorch on ONNX Runtime, FP16 graph, TensorRT-RTX build."""

import functools
import logging
import re

import numpy as np
import pytest
import torch

from support.reference import load_arrays

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from trt_metric3d.export import (  # noqa: E402
    INPUT_NAME,
    OUTPUT_NAMES,
    CanvasNetwork,
    stages,  # noqa: E402
)

TOLERANCE = 1e-4
FP16_MAX_REL = 1e-2  # depth, FP16 vs FP32 graph on ONNX Runtime CPU; measured 1.4e-3 (synthetic weights)
FP16_ABS_REL = 1e-3  # mean relative error; measured 2.3e-4 (landscape), 1.7e-4 (portrait)


@pytest.fixture(scope="module")
def onnx_files(small_onnx):
    return small_onnx


@pytest.fixture(scope="module")
def coffee_canvas():
    ref, meta = load_arrays("vit-small", "coffee", "model")
    return torch.from_numpy(ref["canvas_u8"]).permute(2, 0, 1).float()[None], meta[
        "crop_top_bottom_left_right"
    ]


def run_onnx(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES
    return dict(zip(OUTPUT_NAMES, session.run(None, {INPUT_NAME: x.numpy()}), strict=True))


def canvases(coffee):
    canvas, _ = coffee
    return {
        "616x1064": canvas,
        "1064x616-portrait": torch.nn.functional.interpolate(canvas, size=(1064, 616)),
        "224x280-batch2": torch.cat([canvas[:, :, :224, :280], canvas[:, :, 300:524, 500:780]]),
    }


@pytest.fixture(scope="module")
def fp32_outputs(onnx_files, coffee_canvas):
    """run_onnx of the FP32 graph on one of the `canvases`, run once per canvas (seconds each here)."""

    @functools.cache
    def outputs(size: str) -> dict[str, np.ndarray]:
        return run_onnx(onnx_files[0], canvases(coffee_canvas)[size])

    return outputs


@pytest.mark.parametrize("size", ["616x1064", "1064x616-portrait", "224x280-batch2"])
def test_fp32_onnx_matches_pytorch(fp32_outputs, small_model, coffee_canvas, size):
    x = canvases(coffee_canvas)[size]
    with torch.inference_mode():
        expected = dict(zip(OUTPUT_NAMES, (t.numpy() for t in CanvasNetwork(small_model)(x)), strict=True))
    got = fp32_outputs(size)
    for name in ("depth", "confidence"):
        assert got[name].shape == expected[name].shape
        assert (np.abs(got[name] - expected[name]) / np.abs(expected[name])).max() <= TOLERANCE, name
    for name in ("normal", "normal_iter1"):
        diff = np.linalg.norm(got[name][:, :3] - expected[name][:, :3], axis=1)
        assert diff.max() <= TOLERANCE, name


@pytest.mark.parametrize("size", ["616x1064", "1064x616-portrait"])
def test_fp16_graph_is_close_to_fp32(onnx_files, fp32_outputs, coffee_canvas, size):
    """Over the whole canvas, padding included; both orientations of the real canvas."""
    fp16 = run_onnx(onnx_files[1], canvases(coffee_canvas)[size])
    d32, d16 = fp32_outputs(size)["depth"], fp16["depth"]
    rel = np.abs(d16 - d32) / d32
    assert rel.max() <= FP16_MAX_REL and rel.mean() <= FP16_ABS_REL
    assert fp16["depth"].dtype == np.float32  # the interface stays FP32


def test_fp16_graph_really_is_half_precision(onnx_files):
    import onnx

    model = onnx.load(str(onnx_files[1]), load_external_data=False)
    types = {t.data_type for t in model.graph.initializer if t.dims and np.prod(t.dims) > 1000}
    assert onnx.TensorProto.FLOAT16 in types
    kept = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    half_weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert kept and not any(i in half_weights for n in kept for i in n.input), "LayerNorm must stay FP32"


def test_export_is_cached_per_checkpoint(onnx_files, small_checkpoint, monkeypatch):
    monkeypatch.setattr(stages, "export_onnx", lambda *a: pytest.fail("exported again"))
    again = stages.exported_onnx("vit-small", small_checkpoint, onnx_files[0].parent)
    assert again[:2] == onnx_files


def test_tensorrt_rtx_builds_the_fp16_graph_on_cpu(onnx_files, tmp_path):
    """Proof that the graph parses and builds in a TensorRT builder with its dynamic profile."""
    pytest.importorskip("tensorrt_rtx")
    from trt_metric3d.engine.builder import ShapeProfile, build_engine

    profile = ShapeProfile(min=(1, 224, 224), opt=(1, 224, 280), max=(2, 336, 336))
    cache = tmp_path / "timing.cache"
    engine = build_engine(
        onnx_files[1], profile, flavour="tensorrt_rtx", compute_capability="SM86", timing_cache=cache
    )
    assert len(engine) > 1_000_000
    assert not cache.exists(), "TensorRT-RTX has no timing cache; none must be written for it"


def test_exporter_chatter_is_kept_out_of_the_host_log(caplog):
    """ComfyUI logs at INFO: the ~700 INFO lines onnxscript writes during an export must not reach it."""
    import logging

    from trt_metric3d.export.onnx_export import _quiet_exporter

    chatty = logging.getLogger("onnxscript.optimizer._constant_folding")
    with caplog.at_level(logging.INFO):
        with _quiet_exporter():
            chatty.info("Replaced initializer")
            chatty.warning("a real problem")
        chatty.info("after the export")
    assert [r.getMessage() for r in caplog.records] == ["a real problem", "after the export"]


class TinyNetwork(torch.nn.Module):
    """Four outputs shaped like Metric3D's, from one convolution: exports in about a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 9, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(image)
        return y[:, :1].exp(), y[:, 1:2].sigmoid(), y[:, 2:6], y[:, 6:9]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def torch_log():
    """What reaches the ONNX exporter's own stderr handler (its logger does not propagate to the root)."""
    handler, torch_logger = Collect(), logging.getLogger("torch.onnx")
    torch_logger.addHandler(handler)
    yield handler.messages
    torch_logger.removeHandler(handler)


def test_export_reports_progress_and_no_torchvision_lines(tmp_path, caplog, torch_log):
    from trt_metric3d.export import export_onnx
    from trt_metric3d.export.fp16 import convert_fp16

    fp32, fp16 = tmp_path / "tiny.onnx", tmp_path / "tiny.fp16.onnx"
    with caplog.at_level(logging.INFO, logger="trt_metric3d"):
        export_onnx(TinyNetwork(), fp32)
        convert_fp16(fp32, fp16)
    ours = [r.getMessage() for r in caplog.records if r.name == "trt_metric3d"]
    assert ours[0] == "tracing the network and converting it to ONNX"
    assert re.fullmatch(r"network traced and converted to ONNX in \d+ s", ours[1])
    assert re.fullmatch(rf"saved {re.escape(str(fp32))} \(\d+\.\d MB\)", ours[2])
    assert ours[3] == f"converting {fp32} to mixed FP16"
    assert re.fullmatch(rf"saved {re.escape(str(fp16))} \(\d+\.\d MB\)", ours[4])
    assert re.fullmatch(r"mixed FP16 conversion done in \d+ s", ours[5]) and len(ours) == 6
    assert not [m for m in torch_log + [r.getMessage() for r in caplog.records] if "torchvision" in m]


def test_quiet_exporter_keeps_the_registry_s_other_warnings(torch_log):
    from trt_metric3d.export.onnx_export import REGISTRY_LOGGER, _quiet_exporter

    registry = logging.getLogger(REGISTRY_LOGGER)
    with _quiet_exporter():
        registry.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
        registry.warning("'%s' does not have a 'default' overload", "aten::foo")
    registry.warning("torchvision is not installed. Skipping %s", "after the export")
    assert torch_log == [
        "'aten::foo' does not have a 'default' overload",
        "torchvision is not installed. Skipping after the export",
    ]
