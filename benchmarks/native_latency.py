"""Per-frame latency of the native C++ path vs the Python TensorRT backend on the same engine (GPU only).

    cmake -S . -B build/native -G Ninja -DMETRIC3D_FLAVOUR=tensorrt -DTensorRT_ROOT=/opt/TensorRT
    cmake --build build/native
    python benchmarks/native_latency.py --build build/native --backbones vit-small vit-large

For each backbone an untrained network (weights do not change the timing) is exported to FP16 ONNX and
`metric3d-trt build` makes one engine for this GPU; then, on a 616 x 1064 uint8 frame:
  C++     metric3d_latency: Engine::infer, its stages timed with CUDA events (upload, pre-processing,
          engine, post-processing, download) and its wall time
  Python  Metric3D(backend="tensorrt", cuda_graph=True).predict, wall time, on the same engine (the
          Python cache finds the C++ engine: same name, same sidecar)
Target: the C++ path adds under 1 ms to the engine's own time (column "C++ over engine").
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HEADER = (
    "| path | frame x batch | wall ms | upload | pre | engine | post | download | C++ over engine |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


def untrained_checkpoint(backbone: str, folder: Path) -> Path:
    from trt_metric3d.model import build_model

    path = folder / f"{backbone}-untrained.pth"
    torch.save({"model_state_dict": build_model(backbone).state_dict()}, path)
    return path


def python_row(backbone: str, checkpoint: Path, work: Path, frame: np.ndarray, frames: int) -> str:
    from trt_metric3d import Metric3D

    model = Metric3D(
        backbone,
        backend="tensorrt",
        device="cuda",
        checkpoint=str(checkpoint),
        cuda_graph=True,
        engine_dir=work / "engines",
        export_dir=work / "export",
    )
    for _ in range(10):
        model.predict(frame, fx=1000.0)
    wall = []
    for _ in range(frames):
        start = time.perf_counter()
        model.predict(frame, fx=1000.0)  # returns host arrays: the copy back is included
        wall.append(1000 * (time.perf_counter() - start))
    height, width = frame.shape[:2]
    return f"| Python {backbone} fp16 | {height}x{width} x1 | {statistics.median(wall):.3f} | | | | | | |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("build/native"), help="the CMake build folder")
    parser.add_argument("--backbones", nargs="+", default=["vit-small", "vit-large"])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", default="616x1064", help="frame HxW")
    parser.add_argument("--work", type=Path, default=None, help="keep exports and engines here")
    parser.add_argument(
        "--engine-only", action="store_true", help="build the first backbone's engine, print its path, stop"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("native_latency: no CUDA GPU here; this benchmark needs one")
    cli, latency = args.build / "native" / "metric3d-trt", args.build / "native" / "metric3d_latency"
    for tool in (cli, latency):
        if not tool.is_file():
            raise SystemExit(f"native_latency: {tool} not found; build the native part (docs/native.md)")
    linked = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True)
    flavour, version = linked.stdout.split()
    python_trt = flavour  # the Python module has the flavour's name
    try:
        same_trt = __import__(python_trt).__version__ == version
    except ImportError:
        same_trt = False
    height, width = (int(v) for v in args.size.lower().split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    from trt_metric3d.engine import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.engine_only:
            print(f"{torch.cuda.get_device_name()}, native {flavour} {version}\n")
            print(HEADER)
        for backbone in args.backbones:
            checkpoint = untrained_checkpoint(backbone, work)
            _, fp16, _ = pipeline.exported_onnx(backbone, checkpoint, work / "export")
            built = subprocess.run(
                [cli, "build", fp16, "--engines", work / "engines", "--checkpoint", checkpoint],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if args.engine_only:
                print(built)
                return
            row = subprocess.run(
                [latency, built, "--frames", str(args.frames), "--size", args.size],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(row, flush=True)
            if same_trt:
                print(python_row(backbone, checkpoint, work, frame, args.frames), flush=True)
            else:
                print(f"| Python {backbone} | skipped: Python has no {python_trt} {version} | | | | | | | |")


if __name__ == "__main__":
    main()
