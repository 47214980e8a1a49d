"""Time the PyTorch model forward on CPU per backbone and print a table.

    python benchmarks/model_forward_cpu.py --backbones vit-small vit-large --repeats 3

Weights do not change the arithmetic, so the untrained network is timed (no checkpoint needed).
The original implementation's figures on this project's 2-core CI machine are in the reference
README (vit-small min 7.35 s, vit-large 58.6 s, vit-giant2 181 s at 616x1064, 2 threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trt_metric3d.model import BACKBONES, build_model


def time_forward(backbone: str, height: int, width: int, repeats: int) -> list[float]:
    model = build_model(backbone).eval()
    x = torch.randn(1, 3, height, width)
    samples = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator and kernel selection
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["vit-small"], choices=BACKBONES)
    parser.add_argument("--size", default="616x1064", help="canvas HxW (multiples of 28)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} threads, canvas {height}x{width}, fp32, batch 1")
    print("| backbone | runs | min s | median s | max s |")
    print("|---|---:|---:|---:|---:|")
    for backbone in args.backbones:
        s = time_forward(backbone, height, width, args.repeats)
        print(f"| {backbone} | {len(s)} | {min(s):.2f} | {statistics.median(s):.2f} | {max(s):.2f} |")


if __name__ == "__main__":
    main()
