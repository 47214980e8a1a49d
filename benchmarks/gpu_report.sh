#!/usr/bin/env bash
# Every GPU check of the project in one go, one markdown file out: the GPU tests, the model-forward
# paths (original-style fp32 vs ours fp32 / fp16 / compile / CUDA graph) for vit-small and vit-large
# at 616x1064, batch 1 and 4, with peak memory, the stream's frames per second, and, where TensorRT
# is installed, the whole predict path per backend; where the native part is built (build/native, or
# METRIC3D_NATIVE_BUILD; with TensorRT_ROOT set it is built here), its ctest GPU tests and the C++ path's
# latency next to the Python TensorRT backend.
#
# Needs only the project and a PyTorch install with CUDA (no registry access):
#   pip install --no-deps --no-build-isolation -e . && bash benchmarks/gpu_report.sh [REPORT.md]
#
# Each step has a time limit, so the report is always written (about 10 minutes in all); a step
# that fails or runs out of time is recorded as such and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
report="${1:-docs/gpu_report.md}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

gpu="$(python -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"
if [ -z "$gpu" ]; then
    echo "gpu_report: torch sees no CUDA GPU here; nothing to measure" >&2
    exit 1
fi

step() {  # step TITLE SECONDS COMMAND...: run it, keep its output (the tables) for the report
    local title="$1" seconds="$2"
    shift 2
    echo "== $title" >&2
    local started=$SECONDS
    timeout "$seconds" "$@" >"$work/out" 2>"$work/err"
    local status=$?
    {
        echo "## $title"
        echo
        echo "\`$*\` (exit status $status, $((SECONDS - started)) s$([ $status -eq 124 ] && echo ", stopped at the ${seconds} s limit"))"
        echo
        grep '^|' "$work/out" || { echo '```'; tail -q -n 15 "$work/out" "$work/err"; echo '```'; }
        echo
    } >>"$work/report.md"
}

{
    echo "# GPU report: $gpu"
    echo
    echo "$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
        "$(python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')," \
        "$(python -c 'import tensorrt as t; print("TensorRT", t.__version__)' 2>/dev/null || echo "no TensorRT")"
    echo
} >"$work/report.md"

step "GPU tests" 180 python -m pytest tests/runtime/test_gpu.py -q -rs -p no:cacheprovider
step "Model forward paths, vit-small" 120 \
    python benchmarks/model_paths.py --backbones vit-small --batches 1 4 --device cuda --repeats 10
step "Model forward paths, vit-large" 240 \
    python benchmarks/model_paths.py --backbones vit-large --batches 1 4 --device cuda --repeats 5
step "Stream vs predict loop (vit-small, 480x640)" 90 \
    python benchmarks/stream.py --frames 60 --backends torch --device cuda
if python -c 'import tensorrt' 2>/dev/null; then
    step "predict per backend (vit-large, 616x1064)" 240 \
        trt-metric3d bench --backbone vit-large --backend tensorrt --backend torch --size 616x1064 --cuda-graph
fi

native="${METRIC3D_NATIVE_BUILD:-build/native}"
if [ -n "${TensorRT_ROOT:-}" ] && [ ! -x "$native/native/metric3d-trt" ]; then
    step "Native build (${METRIC3D_FLAVOUR:-tensorrt})" 600 bash -c "cmake -S . -B '$native' -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DMETRIC3D_FLAVOUR='${METRIC3D_FLAVOUR:-tensorrt}' \
        -DTensorRT_ROOT='$TensorRT_ROOT' && cmake --build '$native'"
fi
if [ -x "$native/native/metric3d-trt" ]; then
    engine="$(timeout 600 python benchmarks/native_latency.py --build "$native" --work "$work/native" \
        --backbones vit-small --engine-only 2>/dev/null | tail -n 1)"
    step "Native tests (ctest; GPU engine tests on $(basename "${engine:-no engine}"))" 600 \
        env METRIC3D_TEST_ENGINE="$engine" ctest --test-dir "$native" --output-on-failure
    step "Native C++ path vs Python TensorRT backend (616x1064)" 600 \
        python benchmarks/native_latency.py --build "$native" --backbones vit-small vit-large
fi

mkdir -p "$(dirname "$report")"
mv "$work/report.md" "$report"
echo "gpu_report: wrote $report" >&2
