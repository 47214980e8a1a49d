"""The backends and precisions a user chooses from: one list each for the runtime, the engine
builder, the command line and the ComfyUI nodes. Imports nothing, so the command line's options
(and --help) need neither torch nor OpenCV."""

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
# Calibrated Q/DQ graphs (export/quantize.py): TensorRT and ONNX Runtime only
QUANTIZED_PRECISIONS = ("int8", "fp8")
PRECISIONS = ("fp16", "fp32", *QUANTIZED_PRECISIONS)  # what Metric3D runs in
ENGINE_PRECISIONS = ("fp16", *QUANTIZED_PRECISIONS)  # what TensorRT engines are built in
