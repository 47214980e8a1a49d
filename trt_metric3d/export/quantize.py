"""FP32 ONNX -> calibrated INT8 / FP8 Q/DQ ONNX, with NVIDIA Model Optimizer (modelopt) on the CPU.

TensorRT 11 and TensorRT-RTX have no INT8 / FP8 builder flags or calibrators: low precision must be
written into the graph as QuantizeLinear / DequantizeLinear pairs. modelopt calibrates them with plain
ONNX Runtime on the CPU. The recipe (measured on the calibration photos, see docs/benchmarks.md):
  - quantized: the ViT encoder's matrix products and the patch-embedding convolution, which hold
    nearly all of the encoder's work;
  - kept high precision: everything else. LayerNorm, softmax and the position-embedding resize are
    never quantized (ViTs lose accuracy there); quantizing the DPT decoder and the GRU refinement too
    costs up to ~1 point of depth AbsRel in INT8 and doubles the worst case in FP8 (docs/benchmarks.md).
The Q/DQ graph keeps FP32 elsewhere (ONNX Runtime runs it); export/fp16.py turns it into the mixed
FP16 graph strongly typed TensorRT builds, each Q/DQ pair in the precision of the operation it feeds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from ..choices import QUANTIZED_PRECISIONS as PRECISIONS
from ..errors import InputError, MissingDependency
from ..io import find_images, read_image
from ..logs import shows_tool_output
from ..processing import make_canvas
from ..workspace import default_calibration_dir, file_sha256
from . import staging
from .onnx_export import module_of
from .staging import save_staged

log = logging.getLogger("trt_metric3d")

MIN_CALIBRATION_IMAGES = 4
MAX_CALIBRATION_IMAGES = 32  # each image is calibrated at two 616 x 1064 canvases, held in memory
INSTALL = 'pip install "trt-metric3d[quantize]"'
# Operations quantized, inside the modules below. modelopt's FP8 mode has no ConvTranspose.
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
# The encoder's blocks and patch embedding; not the encoder's own operations (the position-embedding
# resize, computed from the canvas shape), nor the decoder (see the module docstring).
QUANTIZED_SCOPE = re.compile(r"network\.depth_model\.encoder\..+")
RECIPE = "encoder-matmul-conv/entropy/v1"  # part of the cache key: change it when the recipe changes
# Where the calibration prints a line and a progress bar per canvas (modelopt 0.3x, onnxruntime 1.2x)
CHATTY_MODULES = ("modelopt.onnx.quantization.ort_patching", "onnxruntime.quantization.calibrate")
_QUIET = threading.Lock()  # one quieted calibration at a time: the silencing is module-wide


def import_modelopt() -> ModuleType:
    """modelopt's ONNX quantizer, or MissingDependency with the pip command for the `quantize` extra."""
    try:
        return importlib.import_module("modelopt.onnx.quantization")
    except ImportError as e:
        raise MissingDependency(f"NVIDIA Model Optimizer is not installed ({e}): {INSTALL}") from e


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"cannot quantize to {precision!r}: choose one of {', '.join(PRECISIONS)}")


def calibration_images(folder: str | os.PathLike | None = None) -> list[Path]:
    """The calibration photos in `folder` (default: default_calibration_dir()), sorted; at most
    MAX_CALIBRATION_IMAGES of them. InputError for a missing folder or fewer than the minimum."""
    folder = Path(folder) if folder is not None else default_calibration_dir()
    if not folder.is_dir():
        raise InputError(f"calibration folder {folder} does not exist: pass --calibration DIR of photos")
    files = find_images([folder])
    if len(files) < MIN_CALIBRATION_IMAGES:
        raise InputError(
            f"calibration needs at least {MIN_CALIBRATION_IMAGES} photos, found {len(files)} in {folder}: "
            "add photos like the ones you will run on"
        )
    if len(files) > MAX_CALIBRATION_IMAGES:
        log.info("calibrating on the first %d of %d photos in %s", MAX_CALIBRATION_IMAGES, len(files), folder)
    return files[:MAX_CALIBRATION_IMAGES]


def calibration_digest(files: list[Path]) -> str:
    """sha256 of the calibration set: file names and contents, in order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file_sha256(file)}\0".encode())
    return digest.hexdigest()


def calibration_canvases(files: list[Path], canvas_hw: tuple[int, int] | None = None) -> list[dict]:
    """Per photo, the float32 1 x 3 x H x W canvases the graph sees: the landscape one (make_canvas)
    and the portrait one of the same photo, as the engine profiles cover both. canvas_hw: instead one
    canvas per photo, the photo resized to (height, width) (quick tests)."""
    from . import INPUT_NAME

    inputs = []
    for file in files:
        image = read_image(file)
        if canvas_hw is not None:
            canvases = [cv2.resize(image, canvas_hw[::-1], interpolation=cv2.INTER_AREA)]
        else:
            portrait = np.rot90(make_canvas(np.rot90(image))[0], -1)  # fitted upright on 1064 x 616
            canvases = [make_canvas(image)[0], portrait]
        for canvas in canvases:
            inputs.append(
                {INPUT_NAME: np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)}
            )
    return inputs


def _data_reader(inputs: list[dict]):
    """ONNX Runtime's calibration reader over `inputs` (canvases of different shapes, one at a time),
    logging its progress at each quarter."""
    from onnxruntime.quantization import CalibrationDataReader

    quarters = {math.ceil(len(inputs) * q / 4) for q in range(1, 5)}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict | None:
            item = next(self.items, None)
            if item is not None:
                self.read += 1
                if self.read in quarters:
                    log.info("calibration: %d of %d canvases", self.read, len(inputs))
            return item

        def rewind(self) -> None:
            self.items = iter(inputs)
            self.read = 0

        def get_first(self) -> dict:  # modelopt's extension: a test run before the calibration
            return inputs[0]

    return Reader()


def _print_nothing(*args: object, **kwargs: object) -> None:
    pass


@contextlib.contextmanager
def _quiet_calibration() -> Iterator[None]:
    """The calibration's own prints and progress bars hidden, unless the log shows the tools' output
    (--verbose): the quarter lines of _data_reader stand for them. Its warnings (logging) still show."""
    if shows_tool_output():
        yield
        return
    with _QUIET:
        modules = [sys.modules[name] for name in CHATTY_MODULES if name in sys.modules]
        saved = [(module, vars(module).get("print"), vars(module).get("tqdm")) for module in modules]
        try:
            for module, _, bar in saved:
                module.print = _print_nothing  # shadows the builtin for that module's code only
                if bar is not None:
                    module.tqdm = functools.partial(bar, disable=True)
            yield
        finally:
            for module, printer, bar in saved:
                if printer is None:
                    del module.print
                else:
                    module.print = printer
                if bar is not None:
                    module.tqdm = bar


def quantized_nodes(model, scope: re.Pattern = QUANTIZED_SCOPE) -> list[str]:
    """Names of the nodes the recipe quantizes (see the module docstring): QUANTIZED_OPS in modules
    whose name fully matches `scope` (another scope: benchmarks/quantization.py's other recipes)."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZED_OPS and scope.fullmatch(module_of(node) or "")
    ]


def _with_scopes(quantized, source) -> None:
    """Copy the exporter's module scopes (which modelopt drops) back onto the nodes that carry them in
    `source`; the FP16 conversion decides precision by them."""
    props = {node.name: node.metadata_props for node in source.graph.node}
    for node in quantized.graph.node:
        if node.name in props:
            del node.metadata_props[:]
            node.metadata_props.extend(props[node.name])


def quantize_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    precision: str,
    inputs: list[dict],
    scope: re.Pattern = QUANTIZED_SCOPE,
) -> Path:
    """Calibrate the FP32 ONNX `src` on `inputs` (calibration_canvases) and write its `precision`
    Q/DQ graph to `dst` (atomically, with a manifest); scope: see quantized_nodes."""
    import onnx

    check_precision(precision)
    quantization = import_modelopt()
    src, dst = Path(src), Path(dst)
    source = onnx.load(str(src), load_external_data=False)
    names = quantized_nodes(source, scope)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in source.graph.initializer)
    log.info(
        "calibrating %s on %d canvases: %d operations in %s", src.name, len(inputs), len(names), precision
    )
    started = time.perf_counter()
    # modelopt writes intermediate files next to its input and output: give it a folder of its own,
    # named so that remove_stale_temps(dst) clears it after a crash.
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as work:
        for name in staging.recorded_files(src):  # copies: modelopt rewrites its input file in place
            shutil.copyfile(src.parent / name, Path(work) / name)
        output = Path(work) / dst.name
        with _quiet_calibration():
            quantization.quantize(
                str(Path(work) / src.name),
                quantize_mode=precision,
                calibration_data_reader=_data_reader(inputs),
                calibration_eps=["cpu"],
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_quantize=[re.escape(name) + "$" for name in names],  # patterns, matched at the start
                high_precision_dtype="fp32",  # export/fp16.py makes the FP16 graph, by its own rules
                use_external_data_format=external,
                output_path=str(output),
                log_level="WARNING",
            )
        quantized = onnx.load(str(output))
    _with_scopes(quantized, source)
    save_staged(dst, lambda staged: onnx.save(quantized, str(staged), save_as_external_data=external))
    log.info("%s calibration done in %.0f s", precision, time.perf_counter() - started)
    return dst
