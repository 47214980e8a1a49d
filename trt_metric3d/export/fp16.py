"""FP32 ONNX -> mixed FP16 ONNX for strongly typed TensorRT (TensorRT 11, TensorRT-RTX).

Convolutions, matrix products and element-wise work run in FP16. These stay FP32, chosen by what
overflows or loses precision in half floats (no calibration needed, the same graph every time):
  - normalisations and reductions: LayerNorm, softmax, sums, powers, square roots, exp / elu;
  - the input normalisation and the position-embedding resize (its sampling positions, computed
    from the canvas shape, need FP32; TensorRT also wants shape tensors in FP32);
  - the decoder's own arithmetic: the depth-bin expectation (softmax over 256 bins times depths up
    to 200), the refinement state accumulated over the GRU iterations, the convex upsampling and
    the normal normalisation: cheap element-wise work at 1/4 resolution.
Inputs and outputs stay FP32, so every backend keeps one interface. A Cast is inserted wherever a
tensor crosses between the two precisions; FP16-only weights are stored in FP16.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_export import PROTOBUF_LIMIT, module_of
from .staging import save_staged

log = logging.getLogger("trt_metric3d")

# Quantize / dequantize pairs (calibrated graphs) run in the precision of the operation they feed, so
# that TensorRT fuses them into it rather than finding a Cast in between.
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
FP32_OPS = {"LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "Pow", "Sqrt", "Exp", "Elu"}
# Modules whose own (not their children's) operations stay FP32; names as in the exported wrapper.
FP32_SCOPES = {"", "network.depth_model.encoder", "network.depth_model.decoder"}
# Inputs ONNX requires in FP32 whatever the data type (Resize's roi and scales).
FLOAT32_ONLY_INPUTS = {"Resize": {1, 2}}
FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16


def _keeps_fp32(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], decided: dict[str, bool]) -> bool:
    if node.op_type in FP32_OPS:
        return True
    module = module_of(node)
    if module is None:  # no metadata: follow the node that feeds it
        feeding = [decided[producers[i].name] for i in node.input if i in producers]
        return bool(feeding) and all(feeding)
    return module in FP32_SCOPES


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    names = {v.name for v in infos if v.type.tensor_type.elem_type == FLOAT}
    return names | {t.name for t in model.graph.initializer if t.data_type == FLOAT}


def to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    floats = _float_tensors(model)
    producers = {out: node for node in graph.node for out in node.output}
    decided: dict[str, bool] = {}
    for node in graph.node:  # topological order: producers are decided first
        decided[node.name] = _keeps_fp32(node, producers, decided)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers[name].append((node, index))
    for node in reversed(graph.node):  # consumers first: a dequantize, then its quantize
        if node.op_type in QDQ_OPS:
            decided[node.name] = all(decided[user.name] for user, _ in consumers[node.output[0]])

    def wants_half(node: onnx.NodeProto, index: int) -> bool:
        return not decided[node.name] and index not in FLOAT32_ONLY_INPUTS.get(node.op_type, ())

    # Weights used only in FP16 become FP16; shared ones stay FP32 and get a Cast where needed.
    initializers = {t.name: t for t in graph.initializer}
    half_tensors = set()
    for name, tensor in initializers.items():
        if (
            tensor.data_type == FLOAT
            and consumers[name]
            and all(wants_half(n, i) for n, i in consumers[name])
        ):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name))
            half_tensors.add(name)
    # FP16 nodes produce FP16 floats: retype their Casts and float constants.
    for node in graph.node:
        if decided[node.name]:
            continue
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
            if attr.name == "value" and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        half_tensors.update(out for out in node.output if out in floats)

    new_nodes, casts = [], {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name not in floats and name not in half_tensors:
                continue
            is_half, want_half = name in half_tensors, wants_half(node, index)
            if is_half != want_half:
                key = (name, want_half)
                if key not in casts:
                    casts[key] = f"{name}__as_{'fp16' if want_half else 'fp32'}"
                    new_nodes.append(
                        helper.make_node(
                            "Cast", [name], [casts[key]], to=HALF if want_half else FLOAT, name=casts[key]
                        )
                    )
                node.input[index] = casts[key]
        new_nodes.append(node)
    for output in graph.output:  # graph outputs stay FP32
        if output.name in half_tensors:
            internal = f"{output.name}__fp16"
            for node in new_nodes:
                node.output[:] = [internal if o == output.name else o for o in node.output]
                node.input[:] = [internal if i == output.name else i for i in node.input]
            new_nodes.append(
                helper.make_node("Cast", [internal], [output.name], to=FLOAT, name=f"{output.name}__fp32")
            )
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale element types; consumers re-infer them
    return model


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the mixed-precision version of the FP32 ONNX `src` to `dst` (atomically)."""
    log.info("converting %s to mixed FP16", src)
    started = time.perf_counter()
    mixed = to_mixed_fp16(onnx.load(str(src)))
    external = sum(len(t.raw_data) for t in mixed.graph.initializer) > PROTOBUF_LIMIT
    save_staged(Path(dst), lambda staged: onnx.save(mixed, str(staged), save_as_external_data=external))
    log.info("mixed FP16 conversion done in %.0f s", time.perf_counter() - started)
    return Path(dst)
