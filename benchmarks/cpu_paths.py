"""The CPU forward paths side by side, interleaved over rounds in one process; a markdown table.

    python benchmarks/cpu_paths.py                         # vit-small and vit-large, 616x1064, 2 threads
    python benchmarks/cpu_paths.py --backbones vit-small --rounds 3
    python benchmarks/cpu_paths.py --onednn-isa AVX2       # also with oneDNN capped: AVX2-only CPUs

Paths (all under torch.inference_mode(), batch 1, untrained weights: the arithmetic is the same):
  original-style  fp32 eager with the original implementation's extra work (benchmarks/model_paths.py)
  ours-fp32       the torch backend in fp32 (`Metric3D(backend="torch", precision="fp32")`)
  ours-bf16       the torch backend in bf16: CPU autocast, products in oneDNN on AMX-BF16 /
                  AVX512-BF16 units where the CPU has them (`precision="bf16"`, the default there)
  ort-fp32        the onnxruntime backend's CPU provider on the exported FP32 ONNX
  ort-int8        the onnxruntime backend on the CPU in int8: the integer graph (export/integer.py;
                  the encoder's MatMuls as DynamicQuantizeMatMul, MLAS's VNNI / AVX2 integer kernels)
  openvino-fp32   the openvino backend (runtime/openvino_backend.py): OpenVINO's CPU plugin on the
  openvino-bf16   FP32 ONNX in f32 / bf16, compiled for the canvas (bf16: "auto" on a CPU with bf16
                  units where openvino is installed); offered when `openvino` imports
The ONNX paths export the network once into --export-dir (cached there, by checkpoint); all paths run
the reference's synthetic weights (tests/support/reference.py), which time as a trained checkpoint does.

Each round runs every path once, in turn, so a noisy machine (other tenants) weighs on all paths
alike; the table gives the min and median over rounds of the wall time and of the process's CPU
time (both threads together: what the forward costs when the machine is shared), and the ratio of
the original-style path's median to each path's, in wall and in CPU time. The header says which ISA
the CPU offers (/proc/cpuinfo, torch's capability and oneDNN's cap): the bf16 figures mean little
without it.
--onednn-isa repeats the whole measurement in a child process with ONEDNN_MAX_CPU_ISA set (oneDNN
reads it once, at start): what a CPU without those units gets. It caps PyTorch's oneDNN only: ONNX
Runtime's MLAS picks its kernels from the CPU's own flags and has no such cap, so its rows there are
this CPU's.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bf16_accuracy import synthetic_model
from model_paths import check_original_style, original_style

from trt_metric3d.io import writable_folder
from trt_metric3d.model import BACKBONES, build_model
from trt_metric3d.runtime.cpu import cpu_features
from trt_metric3d.runtime.openvino_backend import OpenVINOBackend, openvino_installed
from trt_metric3d.runtime.torch_backend import TorchBackend
from trt_metric3d.workspace import EXPORT_DIR_ENV, workspace_dir

PATHS = ("original-style", "ours-fp32", "ours-bf16", "ort-fp32", "ort-int8", "openvino-fp32", "openvino-bf16")


def onnx_forwards(
    model: torch.nn.Module,
    backbone: str,
    pixels: torch.Tensor,
    paths: list[str],
    export_dir: Path | None,
    threads: int,
) -> dict[str, Callable[[], object]]:
    """The asked ONNX paths (ort-*, openvino-*) on `pixels`, on `model` exported once into `export_dir`."""
    from trt_metric3d.export import stages
    from trt_metric3d.runtime.onnxruntime_backend import OnnxRuntimeBackend

    asked = [path for path in paths if path.startswith(("ort-", "openvino-"))]
    if not asked:
        return {}
    folder = writable_folder(
        export_dir or workspace_dir(EXPORT_DIR_ENV, "export"), "choose another with --export-dir"
    )
    checkpoint = folder / f"{backbone}-synthetic.pth"
    if not checkpoint.is_file():
        torch.save({"model_state_dict": model.state_dict()}, checkpoint)
    fp32 = stages.exported_onnx(backbone, checkpoint, folder)[0]
    cpu, providers = torch.device("cpu"), ["CPUExecutionProvider"]
    runs: dict[str, Callable[[], object]] = {}
    for path in asked:
        if path.startswith("openvino-"):
            backend = OpenVINOBackend(fp32, path.removeprefix("openvino-"), folder / "openvino", threads)
            runs[path] = functools.partial(backend, pixels)
        else:
            onnx = fp32 if path == "ort-fp32" else stages.integer_onnx(backbone, checkpoint, folder)[0]
            runs[path] = functools.partial(OnnxRuntimeBackend(onnx, cpu, providers, threads), pixels)
    return runs


def forwards(
    backbone: str, size: tuple[int, int], paths: list[str], export_dir: Path | None, threads: int
) -> dict[str, Callable[[], object]]:
    """One zero-argument forward per path, on the same network and the same canvas."""
    model = synthetic_model(backbone).eval().requires_grad_(False)
    cpu = torch.device("cpu")
    pixels = torch.rand(1, 3, *size) * 255  # the backend's input: the 0..255 canvas
    normalised = (pixels - 127.5) / 60.0  # the raw network's input (scale is irrelevant to the time)
    fp32, bf16 = TorchBackend(model, cpu, "fp32"), TorchBackend(model, cpu, "bf16")

    def original() -> object:
        with original_style(model):
            return model(normalised)

    runs = {"original-style": original, "ours-fp32": lambda: fp32(pixels), "ours-bf16": lambda: bf16(pixels)}
    return runs | onnx_forwards(model, backbone, pixels, paths, export_dir, threads)


def measure(
    backbone: str,
    size: tuple[int, int],
    paths: list[str],
    rounds: int,
    export_dir: Path | None,
    threads: int,
    warmups: int = 1,
) -> list[dict]:
    """Per path: wall and CPU seconds of each round (after `warmups` untimed forwards)."""
    runs = forwards(backbone, size, paths, export_dir, threads)
    with torch.inference_mode():
        if "original-style" in paths:
            diff = check_original_style(build_model(backbone).eval(), torch.device("cpu"))
            print(
                f"{backbone}: original-style vs ours-fp32 on 112x168, max abs diff {diff:.2e} (ok)",
                flush=True,
            )
        for _ in range(warmups):
            for path in paths:
                runs[path]()
        samples: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in paths}
        for number in range(1, rounds + 1):
            for path in paths:
                wall, cpu = time.perf_counter(), time.process_time()
                runs[path]()
                samples[path][0].append(time.perf_counter() - wall)
                samples[path][1].append(time.process_time() - cpu)
            line = ", ".join(f"{p} {samples[p][0][-1]:.2f} s" for p in paths)
            print(f"{backbone} round {number}/{rounds}: {line}", flush=True)
    return [{"backbone": backbone, "path": p, "wall": w, "cpu": c} for p, (w, c) in samples.items()]


def table(rows: list[dict]) -> str:
    lines = [
        "| backbone | path | wall min s | wall median s | CPU min s | CPU median s "
        "| vs original-style, wall | vs original-style, CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = next(
            (r for r in rows if r["backbone"] == row["backbone"] and r["path"] == "original-style"), None
        )
        ratios = [  # of the medians
            f"{statistics.median(base[kind]) / statistics.median(row[kind]):.2f}x" if base else "-"
            for kind in ("wall", "cpu")
        ]
        wall, cpu = (f"{min(row[k]):.2f} | {statistics.median(row[k]):.2f}" for k in ("wall", "cpu"))
        lines.append(f"| {row['backbone']} | {row['path']} | {wall} | {cpu} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["vit-small", "vit-large"], choices=BACKBONES)
    parser.add_argument("--size", default="616x1064", help="canvas HxW (multiples of 28)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (each path once per round)")
    parser.add_argument("--warmups", type=int, default=1, help="untimed forwards per path first")
    offered = [path for path in PATHS if openvino_installed() or not path.startswith("openvino-")]
    parser.add_argument("--paths", nargs="+", default=offered, choices=PATHS)
    parser.add_argument(
        "--onednn-isa", default=None, help="then again with ONEDNN_MAX_CPU_ISA set, e.g. AVX2"
    )
    parser.add_argument("--export-dir", type=Path, help="where the ort-* paths' ONNX files are cached")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    header = (
        f"torch {torch.__version__}, {args.threads} threads, canvas {height}x{width}, {args.rounds} rounds "
        f"after {args.warmups} warm-up(s)\n"
        f"CPU {cpu_features().summary()}; bf16 units oneDNN may use: {cpu_features().bf16_units or 'none'}"
    )
    print(header, flush=True)
    rows = [
        row
        for backbone in args.backbones
        for row in measure(
            backbone, (height, width), args.paths, args.rounds, args.export_dir, args.threads, args.warmups
        )
    ]
    print(f"\n{header}\n\n{table(rows)}", flush=True)
    if args.onednn_isa:
        child = ["--backbones", *args.backbones, "--size", args.size, "--threads", str(args.threads)]
        child += ["--rounds", str(args.rounds), "--warmups", str(args.warmups), "--paths", *args.paths]
        child += ["--export-dir", str(args.export_dir)] if args.export_dir else []
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.onednn_isa}
        print(f"\nagain with ONEDNN_MAX_CPU_ISA={args.onednn_isa}:\n", flush=True)
        subprocess.run([sys.executable, __file__, *child], env=env, check=True)


if __name__ == "__main__":
    main()
