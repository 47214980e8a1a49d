"""CPUs as `runtime.cpu.cpu_features` reports them, for tests of what runs where (no such CPU needed)."""

from trt_metric3d.runtime import cpu

SAPPHIRE_RAPIDS = cpu.CpuFeatures(
    "Intel Xeon",
    frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}),
    "AVX512",
)
ZEN4 = cpu.CpuFeatures("AMD EPYC", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), "AVX512")
AVX2_ONLY = cpu.CpuFeatures("AMD EPYC 7B12", frozenset({"avx2", "fma"}), "AVX2")
