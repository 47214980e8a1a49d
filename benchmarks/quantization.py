"""Accuracy of the FP16, INT8 and FP8 graphs against PyTorch FP32, and ONNX Runtime CPU speed; markdown.

    python benchmarks/quantization.py --checkpoint metric_depth_vit_small_800k.pth
    python benchmarks/quantization.py --checkpoint ... --recipes   # also quantize decoder / GRU

Calibration uses the real 616 x 1064 canvases (landscape and portrait) of the calibration photos
except the held-out ones (HELD_OUT), which are evaluated with the rest and with images from
../shared/reference (never calibrated on). Each graph is evaluated on ONNX Runtime's CPU provider, in
its two forms: the Q/DQ graph with FP32 elsewhere, and the mixed FP16 graph that TensorRT builds (ONNX
Runtime's FP8 Q/DQ kernels round as ml_dtypes' float8_e4m3fn does: checked here on one tensor).
Metrics per image at the canvas: depth AbsRel and delta<1.25, mean angular error of the normals.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from trt_metric3d.checkpoint import load_model
from trt_metric3d.engine.pipeline import exported_onnx
from trt_metric3d.export import CanvasNetwork, quantize
from trt_metric3d.export.fp16 import convert_fp16
from trt_metric3d.io import read_image
from trt_metric3d.processing import make_canvas

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "calibration"
HELD_OUT = ("coffee.jpg",)
EXTRA = (
    REPO.parent / "shared" / "reference" / "coffee.png",
    REPO.parent / "shared" / "reference" / "synth_289x451.png",
)
# Other recipes than quantize.QUANTIZED_SCOPE (the encoder), for --recipes.
RECIPES = {
    "encoder + decoder": re.compile(
        r"network\.depth_model\.(encoder\..+|decoder\.(?!update_block|context_zqr).+)"
    ),
    "encoder + decoder + GRU": re.compile(r"network\.depth_model\.(encoder|decoder)\..+"),
}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _metrics(expected: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float, float]:
    depth, reference = got[0], expected[0]
    absrel = float(np.mean(np.abs(depth - reference) / reference))
    delta = float(np.mean(np.maximum(depth / reference, reference / depth) < 1.25))
    cosine = np.clip(np.sum(got[2][:, :3] * expected[2][:, :3], axis=1), -1, 1)
    return absrel, delta, float(np.degrees(np.arccos(cosine)).mean())


def fp8_rounds_as_ml_dtypes() -> bool:
    """ONNX Runtime's FP8 QuantizeLinear -> DequantizeLinear equals ml_dtypes' float8_e4m3fn rounding."""
    x = np.random.default_rng(0).normal(scale=100, size=(4, 1000)).astype(np.float32)
    scale = np.float32(0.05)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fp8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(scale, "s"), helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    expected = np.clip(x / scale, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * scale
    return bool(np.array_equal(y, expected))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="vit-small")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per graph")
    parser.add_argument("--recipes", action="store_true", help="also quantize the decoder and the GRU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="quantization-"))
    fp32, fp16, _ = exported_onnx(args.backbone, args.checkpoint, work)
    photos = sorted(PHOTOS.glob("*.jpg"))
    calibration = [p for p in photos if p.name not in HELD_OUT]
    inputs = quantize.calibration_canvases(calibration)
    graphs = {"fp16 (mixed)": fp16}
    scopes = {"": quantize.QUANTIZED_SCOPE, **(RECIPES if args.recipes else {})}
    for precision in quantize.PRECISIONS:
        for recipe, scope in scopes.items():
            name = f"{precision}{' ' + recipe if recipe else ''}"
            qdq = work / f"{re.sub(r'[^a-z0-9]+', '-', name)}.onnx"
            started = time.perf_counter()
            quantize.quantize_onnx(fp32, qdq, precision, inputs, scope)
            print(f"{name}: calibrated in {time.perf_counter() - started:.0f} s")
            graphs[f"{name} Q/DQ"] = qdq
            graphs[f"{name} (mixed FP16)"] = convert_fp16(qdq, qdq.with_suffix(".fp16.onnx"))

    network = CanvasNetwork(load_model(args.backbone, args.checkpoint)).eval()
    images = {p.name: read_image(p) for p in [*photos, *EXTRA] if p.is_file()}
    canvases = {
        name: make_canvas(image)[0].transpose(2, 0, 1)[None].astype(np.float32)
        for name, image in images.items()
    }
    with torch.no_grad():
        expected = {name: [t.numpy() for t in network(torch.from_numpy(c))] for name, c in canvases.items()}
    held = {*HELD_OUT, *(p.name for p in EXTRA)}
    print(f"\nFP8 Q/DQ on ONNX Runtime CPU rounds as ml_dtypes float8_e4m3fn: {fp8_rounds_as_ml_dtypes()}")
    print(
        f"calibrated on {', '.join(p.name for p in calibration)} (landscape + portrait 616 x 1064 canvases)\n"
    )
    print("| graph | image | held out | depth AbsRel | delta<1.25 | normal error (deg) |")
    print("|---|---|---|---:|---:|---:|")
    for graph, path in graphs.items():
        session = _session(path, args.threads)
        for name, canvas in canvases.items():
            absrel, delta, angle = _metrics(expected[name], session.run(None, {"image": canvas}))
            held_out = "yes" if name in held else "no"
            print(f"| {graph} | {name} | {held_out} | {absrel:.2%} | {delta:.4f} | {angle:.2f} |")

    print(f"\nONNX Runtime CPU, {args.threads} threads, batch 1 at 616 x 1064, median of {args.runs} runs:\n")
    print("| graph | ms |\n|---|---:|")
    canvas = next(iter(canvases.values()))
    for graph, path in {
        "fp32": fp32,
        **{g: p for g, p in graphs.items() if "Q/DQ" in g and "+" not in g},
    }.items():
        session = _session(path, args.threads)
        session.run(None, {"image": canvas})  # warm-up
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            session.run(None, {"image": canvas})
            times.append(time.perf_counter() - started)
        print(f"| {graph} | {statistics.median(times) * 1e3:.0f} |")


if __name__ == "__main__":
    main()
