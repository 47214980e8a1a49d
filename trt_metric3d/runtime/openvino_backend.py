"""OpenVINO backend: Intel's CPU runtime on the exported FP32 ONNX, in f32 or bf16 (an optional extra).

On a CPU with bf16 units (AMX-BF16, AVX512-BF16) its bf16 forward is the fastest CPU path that holds
the accuracy bar (docs/benchmarks.md), so "auto" runs it on the CPU where `openvino` is installed.
OpenVINO's CPU plugin cannot compile this graph with dynamic sizes, so it is compiled once per input
shape (canvas and batch) and kept; compiled models are cached on disk too (OpenVINO's CACHE_DIR,
under the engine folder), so a second process, or a second runtime, loads them instead of compiling.
One cache folder per precision: OpenVINO keys a blob by graph and shape, not by the precision hint,
and a bf16 model loaded from an f32 compile's blob ran wrong here (depth 29 % off) with oneDNN capped.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

import torch

from ..errors import InputError, MissingDependency
from ..export import OUTPUT_NAMES
from ..model import Metric3DOutput
from ..workspace import ENGINE_DIR_ENV, workspace_dir

log = logging.getLogger("trt_metric3d")

INSTALL = 'pip install "trt-metric3d[openvino]"'
# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def openvino_installed() -> bool:
    """Whether `openvino` imports here."""
    try:
        import_openvino()
    except MissingDependency:
        return False
    return True


def import_openvino() -> ModuleType:
    """The `openvino` module, or MissingDependency with the pip command for the extra."""
    try:
        return importlib.import_module("openvino")
    except ImportError as e:
        raise MissingDependency(f"openvino is not installed: {INSTALL}") from e


class OpenVINOBackend:
    name = "openvino"

    def __init__(
        self,
        onnx_path: str | Path,
        precision: str,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        """precision: fp32 or bf16 (OpenVINO's inference precision hint); cache_dir: where OpenVINO's
        compiled-model cache goes, in its <precision>/ (None: none); threads: its inference threads
        (default: its own, one per core)."""
        openvino = import_openvino()
        if precision not in INFERENCE_PRECISIONS:
            raise InputError(f"OpenVINO runs fp32 or bf16, not {precision!r}")
        self.core = openvino.Core()
        if cache_dir is not None:
            folder = Path(cache_dir) / precision
            folder.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(folder)})
        self.onnx_path = Path(onnx_path)
        self.config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time: all threads on it
            "NUM_STREAMS": 1,
        }
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self._requests: dict[tuple[int, ...], object] = {}  # input shape -> its compiled model's request
        self._graph = None  # the ONNX as OpenVINO read it, on the first forward

    def request(self, shape: tuple[int, ...]):
        """The infer request for B x 3 x H x W inputs of `shape`, compiled on first use and kept."""
        if shape not in self._requests:
            if self._graph is None:  # parsed once; each shape compiles a reshaped copy
                self._graph = self.core.read_model(str(self.onnx_path))
            model = self._graph.clone()
            model.reshape({0: list(shape)})  # static: the CPU plugin does not compile it dynamic
            compiled = self.core.compile_model(model, "CPU", self.config)
            from_cache = compiled.get_property("LOADED_FROM_CACHE")
            log.info(
                "Metric3D: OpenVINO %s for %s, %s",
                "loaded" if from_cache else "compiled",
                "x".join(map(str, shape)),
                self.config["INFERENCE_PRECISION_HINT"],
            )
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def __call__(self, pixels: torch.Tensor) -> Metric3DOutput:
        """B x 3 x H x W RGB canvases (0..255) on the CPU -> float32 outputs on the CPU."""
        pixels = pixels.float().contiguous()
        request = self.request(tuple(pixels.shape))
        results = request.infer({0: pixels.numpy()}, share_inputs=True)  # outputs: fresh copies
        return Metric3DOutput(*(torch.from_numpy(results[name]) for name in OUTPUT_NAMES))

    def close(self) -> None:
        self._requests.clear()
        self._graph = None


def open_openvino(
    backbone: str,
    precision: str,
    device: torch.device,
    checkpoint: str | os.PathLike | None = None,
    export_dir: str | os.PathLike | None = None,
    engine_dir: str | os.PathLike | None = None,
) -> OpenVINOBackend:
    """An OpenVINOBackend on the cached FP32 ONNX (exported if needed), its compiled models cached in
    `engine_dir`/openvino; MissingDependency before any export where openvino is absent."""
    if device.type != "cpu":
        raise InputError(f"OpenVINO runs on the CPU here, and this runtime's device is {device}")
    import_openvino()
    from ..export.stages import exported_onnx

    onnx = exported_onnx(backbone, checkpoint, export_dir)[0]
    engines = Path(engine_dir) if engine_dir is not None else workspace_dir(ENGINE_DIR_ENV, "engines")
    log.info("Metric3D: OpenVINO runs the FP32 graph in %s: %s", precision, onnx.name)
    return OpenVINOBackend(onnx, precision, engines / "openvino")
