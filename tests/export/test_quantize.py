"""INT8 / FP8 Q/DQ graphs: calibration on the CPU, agreement with FP32, TensorRT-RTX builds, caching."""

import shutil
import sys
from functools import partial

import cv2
import numpy as np
import pytest
import torch

from support.reference import reference_dir
from trt_metric3d.engine import pipeline
from trt_metric3d.errors import InputError, MissingDependency
from trt_metric3d.export import quantize, stages
from trt_metric3d.io import read_image

pytest.importorskip("modelopt.onnx.quantization")
ort = pytest.importorskip("onnxruntime")

CANVAS_HW = (112, 168)  # small canvases keep calibration fast on 2 cores
PHOTOS = quantize.default_calibration_dir()


@pytest.fixture(scope="module", params=quantize.PRECISIONS)
def quantized(request, small_checkpoint, small_onnx) -> tuple[str, tuple]:
    """(precision, quantized_onnx(...)) for the synthetic vit-small, calibrated on the bundled photos."""
    folder = small_onnx[0].parent
    files = stages.quantized_onnx("vit-small", request.param, small_checkpoint, folder, canvas_hw=CANVAS_HW)
    return request.param, files


def _session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _outputs(path, image: np.ndarray) -> list[np.ndarray]:
    return _session(path).run(None, {"image": image})


def _canvas(path) -> np.ndarray:
    return quantize.calibration_canvases([path], CANVAS_HW)[0]["image"]


def test_qdq_graph_runs_on_onnxruntime_cpu_close_to_fp32(quantized, small_onnx):
    """Held-out images (not calibrated on): depth within 5 % AbsRel (measured at this canvas: <= 3.5 %),
    normals within 5 degrees on average (measured: <= 2.6)."""
    precision, (qdq, mixed, *_) = quantized
    reference, *graphs = (_session(path) for path in (small_onnx[0], qdq, mixed))
    for image in (reference_dir() / "coffee.png", reference_dir() / "synth_289x451.png"):
        canvas = {"image": _canvas(image)}
        expected = reference.run(None, canvas)
        for graph, session in zip((qdq, mixed), graphs, strict=True):
            got = session.run(None, canvas)
            absrel = np.mean(np.abs(got[0] - expected[0]) / expected[0])
            assert absrel < 0.05, (precision, graph.name, image.name, absrel)
            cosine = np.sum(got[2][:, :3] * expected[2][:, :3], axis=1)
            angle = np.degrees(np.arccos(np.clip(cosine, -1, 1))).mean()
            assert angle < 5.0, (precision, graph.name, image.name, angle)


def test_only_the_encoder_is_quantized(quantized):
    import onnx

    _, (qdq, *_) = quantized
    model = onnx.load(str(qdq), load_external_data=False)
    consumers = {i: node for node in model.graph.node for i in node.input}
    fed = [consumers[n.output[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert fed and {n.op_type for n in fed} <= set(quantize.QUANTIZED_OPS)
    assert {n.name for n in fed} <= set(quantize.quantized_nodes(model))


def test_quantized_graph_is_cached(quantized, small_checkpoint, small_onnx, monkeypatch):
    precision, files = quantized
    monkeypatch.setattr(quantize, "quantize_onnx", lambda *a: pytest.fail("calibrated again"))
    again = stages.quantized_onnx(
        "vit-small", precision, small_checkpoint, small_onnx[0].parent, canvas_hw=CANVAS_HW
    )
    assert again == files


def test_cache_key_changes_with_precision_calibration_and_canvas(tmp_path):
    photos = quantize.calibration_images(PHOTOS)
    key = stages.quantization_key("int8", photos, CANVAS_HW)
    assert key == stages.quantization_key("int8", list(photos), CANVAS_HW)
    assert key != stages.quantization_key("fp8", photos, CANVAS_HW)
    assert key != stages.quantization_key("int8", photos, None)
    shutil.copytree(PHOTOS, tmp_path / "photos")
    (tmp_path / "photos" / "coffee.jpg").write_bytes((tmp_path / "photos" / "rocket.jpg").read_bytes())
    other = quantize.calibration_images(tmp_path / "photos")
    assert key != stages.quantization_key("int8", other, CANVAS_HW)


@pytest.mark.parametrize("count", [0, 1, quantize.MIN_CALIBRATION_IMAGES - 1])
def test_too_few_calibration_photos_name_the_minimum(tmp_path, count):
    for path in sorted(PHOTOS.glob("*.jpg"))[:count]:
        shutil.copy(path, tmp_path)
    with pytest.raises(InputError, match=f"at least {quantize.MIN_CALIBRATION_IMAGES} photos, found {count}"):
        quantize.calibration_images(tmp_path)


def test_missing_calibration_folder_and_unknown_precision(tmp_path, small_checkpoint):
    with pytest.raises(InputError, match="--calibration"):
        quantize.calibration_images(tmp_path / "nowhere")
    with pytest.raises(InputError, match="int8, fp8"):
        stages.quantized_onnx("vit-small", "int4", small_checkpoint, tmp_path)


def test_large_calibration_sets_are_capped(tmp_path):
    photo = (PHOTOS / "coffee.jpg").read_bytes()
    for index in range(quantize.MAX_CALIBRATION_IMAGES + 3):
        (tmp_path / f"{index:03d}.jpg").write_bytes(photo)
    assert len(quantize.calibration_images(tmp_path)) == quantize.MAX_CALIBRATION_IMAGES


def test_real_calibration_canvases_are_landscape_and_portrait():
    image = read_image(PHOTOS / "coffee.jpg")  # 400 x 600: fills the portrait canvas's width
    landscape, portrait = (c["image"][0] for c in quantize.calibration_canvases([PHOTOS / "coffee.jpg"]))
    assert landscape.shape == (3, 616, 1064) and portrait.shape == (3, 1064, 616)
    rows = np.flatnonzero(np.ptp(portrait, axis=2).max(axis=0) > 0)  # padding rows are one colour
    photo = portrait[:, rows[0] : rows[-1] + 1].transpose(1, 2, 0)
    upright = cv2.resize(image, photo.shape[1::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(photo - upright).mean() < 3  # upright, not turned on its side


def test_missing_modelopt_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", None)
    with pytest.raises(MissingDependency, match=r'pip install "trt-metric3d\[quantize\]"'):
        quantize.import_modelopt()


@pytest.fixture
def calibrated_small(quantized, monkeypatch):
    """quantized_onnx answers with the small-canvas graphs (real canvases take minutes here), for the
    engine pipeline and for the runtime's ONNX Runtime backend (which take it from export.stages)."""
    precision, files = quantized
    for module in (pipeline, stages):
        monkeypatch.setattr(module, "quantized_onnx", lambda backbone, asked, *a, **k: files)
    return precision, files


def test_onnxruntime_backend_runs_the_qdq_graph(calibrated_small, small_checkpoint, tmp_path):
    from trt_metric3d import Metric3D

    precision, (qdq, *_) = calibrated_small
    if precision == "int8":
        pytest.skip("int8 on the CPU runs ONNX Runtime's integer graph instead (tests/test_integer.py)")
    with Metric3D("vit-small", "onnxruntime", precision, "cpu", str(small_checkpoint)) as runtime:
        assert runtime.precision == precision
        assert runtime._backend.session._model_path == str(qdq)
        canvas = _canvas(PHOTOS / "chelsea.jpg")  # the network stage alone: a full canvas costs seconds
        got = runtime.forward(torch.from_numpy(canvas))
    for ours, direct in zip(got, _outputs(qdq, canvas), strict=True):
        np.testing.assert_allclose(ours.numpy(), direct, rtol=1e-4, atol=1e-4)


RTX_PROFILE = ((1, 112, 112), (1, 112, 168), (1, 168, 224))  # the smallest canvases: a cheap build


def _build_ahead_of_time(precision: str, checkpoint, export_dir, engine_dir):
    """pipeline.build's TensorRT-RTX engine for an RTX 40xx (SM89), built here without a GPU."""
    from trt_metric3d.engine.builder import ShapeProfile

    return pipeline.build(
        "vit-small",
        checkpoint,
        ShapeProfile(*RTX_PROFILE),
        flavour="tensorrt_rtx",
        engine_dir=engine_dir,
        export_dir=export_dir,
        compute_capability="SM89",
        precision=precision,
        progress=lambda *_: None,
    )


@pytest.fixture(scope="module")
def fp16_rtx_engine(small_checkpoint, small_onnx, tmp_path_factory):
    """The FP16 engine of the same network, profile and target as the quantized ones."""
    pytest.importorskip("tensorrt_rtx")
    engines = tmp_path_factory.mktemp("fp16-engines")
    return _build_ahead_of_time("fp16", small_checkpoint, small_onnx[0].parent, engines)


def _quantized_weights(graph) -> int:
    """How many weights of `graph` are stored quantized: initializers that feed a DequantizeLinear,
    directly or through a QuantizeLinear."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    weights = set()
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source not in sizes and getattr(producers.get(source), "op_type", "") == "QuantizeLinear":
            source = producers[source].input[0]
        if source in sizes:
            weights.add(source)
    return sum(sizes[name] for name in weights)


def test_tensorrt_rtx_builds_the_quantized_graph_ahead_of_time(
    calibrated_small, fp16_rtx_engine, small_checkpoint, small_onnx, tmp_path
):
    """The engine of the Q/DQ graph holds its weights in 8 bits and its sidecar says which precision
    and calibration it was built from.

    The plan's layer precisions cannot be read here: TensorRT-RTX's engine inspector needs the engine
    deserialised, and deserialising needs a CUDA device. Nor do the bytes of two plans tell: builds of
    one graph differ byte for byte (same size). So the test weighs the plan: every weight stored in 8
    bits instead of FP16 saves a byte, and the INT8 / FP8 plan must be smaller than the FP16 plan of
    the same network and profile by at least half its quantized weights (measured for INT8: 14.4 MB
    saved for 21.5 M quantized weights; an INT8 engine built from the FP16 graph saves 0)."""
    from trt_metric3d.engine.cache import read_sidecar

    precision, (_, mixed, *_, key) = calibrated_small
    engine = _build_ahead_of_time(precision, small_checkpoint, small_onnx[0].parent, tmp_path)
    spec = read_sidecar(engine.with_suffix(".json"))
    assert engine.name.startswith(f"vit-small-{precision}-")
    assert spec["precision"] == precision and spec["quantization"] == key
    assert spec["flavour"] == "tensorrt_rtx" and spec["compute_capability"] == "89"
    saved = fp16_rtx_engine.stat().st_size - engine.stat().st_size
    quantized = _quantized_weights(mixed)
    assert quantized > 1_000_000  # the encoder's matrices, so the weighing can tell
    assert saved >= quantized / 2, (precision, saved, quantized)


def test_precisions_that_a_backend_cannot_run_are_named(small_checkpoint, tmp_path):
    from trt_metric3d import Metric3D

    with pytest.raises(InputError, match="tensorrt and onnxruntime backends, not torch"):
        Metric3D("vit-small", "torch", "int8", "cpu", str(small_checkpoint))
    with pytest.raises(InputError, match="fp16, int8, fp8, not 'fp32'"):
        pipeline.build("vit-small", small_checkpoint, precision="fp32", engine_dir=tmp_path)


def test_cli_and_nodes_offer_int8_and_fp8():
    from click.testing import CliRunner

    from trt_metric3d.cli import main
    from trt_metric3d.comfyui import nodes

    for command in ("build", "export", "check", "bench"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "int8" in help_text and "fp8" in help_text, command
    assert {"int8", "fp8"} <= set(nodes.PRECISIONS)
    assert nodes.resolve_precision(torch.device("cpu"), "int8") == "int8"


def _tiny_graph(path) -> None:
    """A Conv and a MatMul on a 1 x 3 x 16 x 16 "image": calibrates in a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.random((8, 3, 3, 3), np.float32), "w"),
        numpy_helper.from_array(rng.random((16, 16), np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["c", "m"], ["depth"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 8, 16, 16])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)


@pytest.mark.parametrize("level", ["INFO", "VERBOSE"])
def test_calibration_says_its_progress_and_hides_the_tools_bars_unless_verbose(tmp_path, capsys, level):
    import logging
    import re

    from trt_metric3d.logs import LOGGER, VERBOSE, show_logs

    _tiny_graph(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(1)
    inputs = [{"image": rng.random((1, 3, 16, 16), np.float32)} for _ in range(8)]
    show_logs(logging.INFO if level == "INFO" else VERBOSE)
    try:
        quantize.quantize_onnx(tmp_path / "tiny.onnx", tmp_path / "q.onnx", "int8", inputs, re.compile(".*"))
    finally:
        logging.getLogger(LOGGER).setLevel(logging.NOTSET)
    out, err = capsys.readouterr()
    assert (tmp_path / "q.onnx").is_file()
    assert "calibration: 4 of 8 canvases" in err and "calibration: 8 of 8 canvases" in err
    tools = "Collecting tensor data" in out or "it/s]" in err  # ONNX Runtime's prints, modelopt's bars
    assert tools == (level == "VERBOSE"), out + err
    for module in (sys.modules[name] for name in quantize.CHATTY_MODULES):  # quiet for the calibration only
        assert "print" not in vars(module) and not isinstance(getattr(module, "tqdm", None), partial)
