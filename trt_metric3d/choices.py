"""The backends and precisions a user chooses from: one list each for the runtime, the engine
builder, the command line and the ComfyUI nodes. Imports nothing, so the command line's options
(and --help) need neither torch nor OpenCV."""

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
# Calibrated Q/DQ graphs (export/quantize.py): TensorRT and ONNX Runtime only
QUANTIZED_PRECISIONS = ("int8", "fp8")
ENGINE_PRECISIONS = ("fp16", *QUANTIZED_PRECISIONS)  # what TensorRT engines are built in
# What each backend runs; the default for a device is runtime/precision.py's
BACKEND_PRECISIONS = {
    "tensorrt": ENGINE_PRECISIONS,
    "onnxruntime": ("fp32", "fp16", *QUANTIZED_PRECISIONS),
    "openvino": ("fp32", "bf16"),  # the CPU only, on the FP32 ONNX
    "torch": ("fp32", "fp16", "bf16"),  # autocast; PyTorch runs no Q/DQ graph
}
PRECISIONS = ("fp16", "fp32", "bf16", *QUANTIZED_PRECISIONS)  # what Metric3D runs in
PRECISION_HELP = (
    "[default: fp16 on CUDA; on the CPU bf16 where it has bf16 units (openvino, torch), else fp32]"
)
