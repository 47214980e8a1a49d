"""FP32 ONNX -> the INT8 graph ONNX Runtime's CPU provider runs in integer kernels (dynamic quantization).

modelopt's Q/DQ graph (export/quantize.py) is written for TensorRT: ONNX Runtime's CPU provider runs
most of it as FP32 products with the QuantizeLinear / DequantizeLinear pairs around them. This graph
holds int8 weights and MatMulInteger nodes instead, which ONNX Runtime fuses into
DynamicQuantizeMatMul: uint8 x int8 products in MLAS's integer kernels (AVX512-VNNI / AVX-VNNI / AMX
where the CPU has them, AVX2 or AVX-512 integer arithmetic elsewhere). Activations are quantized per
tensor at run time from their own range, so nothing is calibrated.

Quantized: the ViT encoder's weight MatMuls (qkv, attention projection, the MLP: 4 per block), nearly
all of the encoder's work. Kept FP32: the attention products (activation x activation), and the DPT
decoder and GRU convolutions: as ConvInteger they were slower than FP32 and missed the accuracy bar
(docs/benchmarks.md, "CPU: the candidates").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from .onnx_export import module_of
from .quantize import QUANTIZED_SCOPE
from .staging import save_staged

log = logging.getLogger("trt_metric3d")

RECIPE = "ort-dynamic/encoder-weight-matmul/s8-per-tensor/v1"  # part of the cache key


def integer_key() -> str:
    """What the integer graph depends on besides the checkpoint: the recipe and ONNX Runtime's quantizer."""
    record = {"recipe": RECIPE, "onnxruntime": version("onnxruntime")}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


def integer_nodes(model) -> list[str]:
    """Names of the encoder's MatMuls with a weight (an initializer) among their inputs."""
    weights = {tensor.name for tensor in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and QUANTIZED_SCOPE.fullmatch(module_of(node) or "")
        and any(name in weights for name in node.input)
    ]


class _NoPreprocessingHint(logging.Filter):
    """Drops the quantizer's advice to run its shape pre-processing first, which it logs at WARNING on
    the root logger: the graph it would change is ours, exported with its shapes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    hint = _NoPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def quantize_integer(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the integer INT8 graph of the FP32 ONNX `src` to `dst` (atomically, with a manifest)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    source = onnx.load(str(src), load_external_data=False)
    names = integer_nodes(source)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in source.graph.initializer)
    log.info("quantizing %s for ONNX Runtime's CPU: %d encoder MatMuls in int8", src.name, len(names))

    def save(staged: Path) -> None:
        with _without_preprocessing_hint():
            quantize_dynamic(
                src,
                staged,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=names,
                weight_type=QuantType.QInt8,  # uint8 activations x int8 weights: the VNNI kernels' pair
                use_external_data_format=external,
            )

    return save_staged(dst, save)
