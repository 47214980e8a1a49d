"""Time the model forward along several execution paths and print a markdown table.

    python benchmarks/model_paths.py --backbones vit-small vit-large --batches 1 4 --device cuda
    python benchmarks/model_paths.py --backbones vit-small --device cpu --repeats 3

Paths:
  original-style     fp32 eager, re-creating on top of our model the extra work the original
                     implementation does: naive attention (q * scale @ k^T, softmax, @ v, instead of
                     scaled_dot_product_attention) and a convex upsampling of the full state at every
                     GRU iteration (the original builds per-iteration prediction lists). The extra
                     work is re-created here from a description, not copied from the original code.
  ours-fp32          our model as is: fp32 eager, SDPA, only the returned outputs upsampled.
  ours-fp16          our model under torch.autocast fp16 (CUDA only).
  ours-fp16-compile  torch.compile(model) under autocast fp16 (CUDA only; warm-up compiles).
  ours-fp16-cudagraph  the torch backend's fp16 forward captured as one CUDA graph and replayed
                     (`Metric3D(backend="torch", cuda_graph=True)`; CUDA only).

All paths run under torch.inference_mode(). Weights do not change the arithmetic, so the untrained
network is timed (no checkpoint needed). Before timing, a tiny input checks that original-style
gives the same outputs as ours-fp32, so the comparison is apples to apples. The original
implementation's own CPU numbers on this project's 2-core CI machine are in
../shared/reference/README.md and timing.json (vit-small min 7.35 s, vit-large min 58.6 s at
616x1064, 2 threads) for comparison with the original-style row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from trt_metric3d.benchmark import synchronize
from trt_metric3d.model import BACKBONES, Metric3DNet, build_model
from trt_metric3d.model.raft import convex_upsample
from trt_metric3d.model.vit import Attention
from trt_metric3d.runtime.torch_backend import TorchBackend

PATHS = ("original-style", "ours-fp32", "ours-fp16", "ours-fp16-compile", "ours-fp16-cudagraph")
CUDA_ONLY = ("ours-fp16", "ours-fp16-compile", "ours-fp16-cudagraph")


class NaiveAttention(Attention):
    """Attention computed explicitly, as the original's pure-torch path does (no fused kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        head_dim = c // self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


@contextlib.contextmanager
def original_style(model: Metric3DNet) -> Iterator[None]:
    """Within the block, `model` does the original's extra work; restored on exit."""
    swapped = [m for m in model.modules() if type(m) is Attention]
    for m in swapped:
        m.__class__ = NaiveAttention
    factor = model.cfg.decoder.upsample_factor

    def upsample_every_iteration(module: nn.Module, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _net, _zqr, state = inputs
        delta, mask = output
        convex_upsample(state + delta, mask, factor)  # computed and discarded

    handle = model.depth_model.decoder.update_block.register_forward_hook(upsample_every_iteration)
    try:
        yield
    finally:
        handle.remove()
        for m in swapped:
            m.__class__ = Attention


def time_path(
    forward: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], float | None]:
    """Per-forward wall times in ms, and the peak allocated device memory in MiB (CUDA only)."""
    for _ in range(warmup):
        forward()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        forward()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return samples, peak


def check_original_style(model: Metric3DNet, device: torch.device) -> float:
    """Max abs output difference of original-style vs ours-fp32 on a tiny canvas; asserts closeness."""
    x = torch.randn(1, 3, 112, 168, device=device)
    ours = model(x)
    with original_style(model):
        orig = model(x)
    for name, a, b in zip(ours._fields, ours, orig, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3, msg=lambda m, n=name: f"{n}: {m}")
    return max((a - b).abs().max().item() for a, b in zip(ours, orig, strict=True))


def bench_backbone(
    backbone: str,
    paths: list[str],
    device: torch.device,
    size: tuple[int, int],
    batch: int,
    warmup: int,
    repeats: int,
) -> list[dict[str, Any]]:
    model = build_model(backbone).eval().to(device)
    x = torch.randn(batch, 3, *size, device=device)
    rows = []
    with torch.inference_mode():
        if "original-style" in paths:
            diff = check_original_style(model, device)
            print(f"{backbone}: original-style vs ours-fp32 on 112x168, max abs diff {diff:.2e} (ok)")
        for path in paths:
            if path in CUDA_ONLY and device.type != "cuda":
                print(f"{backbone}: skipping {path} (fp16 paths need CUDA)")
                continue
            if path == "original-style":
                with original_style(model):
                    samples, peak = time_path(lambda: model(x), device, warmup, repeats)
            elif path == "ours-fp32":
                samples, peak = time_path(lambda: model(x), device, warmup, repeats)
            elif path == "ours-fp16-cudagraph":
                backend = TorchBackend(model, device, "fp16", cuda_graph=True)
                pixels = torch.rand(batch, 3, *size, device=device) * 255  # its input: the 0..255 canvas
                samples, peak = time_path(partial(backend, pixels), device, warmup, repeats)
            else:  # fp16 paths, CUDA only
                run = torch.compile(model) if path == "ours-fp16-compile" else model

                def forward(run: Callable[[torch.Tensor], object] = run) -> object:
                    with torch.autocast("cuda", dtype=torch.float16):
                        return run(x)

                samples, peak = time_path(forward, device, max(warmup, 1), repeats)
            rows.append(
                {
                    "backbone": backbone,
                    "batch": batch,
                    "path": path,
                    "device": device.type,
                    "samples_ms": samples,
                    "p50_ms": float(np.percentile(samples, 50)),
                    "p90_ms": float(np.percentile(samples, 90)),
                    "peak_mib": peak,
                }
            )
    base = next((r["p50_ms"] for r in rows if r["path"] == "original-style"), None)
    for r in rows:
        r["speedup"] = base / r["p50_ms"] if base else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["vit-small", "vit-large"], choices=BACKBONES)
    parser.add_argument("--size", default="616x1064", help="canvas HxW (multiples of 28)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1], help="batch sizes to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per path (compile: >= 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per path")
    parser.add_argument("--json", type=str, default=None, metavar="PATH", help="also write results here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    header = f"torch {torch.__version__}, {name}, canvas {height}x{width}"
    print(header)

    rows = []
    for backbone in args.backbones:
        for batch in args.batches:
            rows += bench_backbone(
                backbone, args.paths, device, (height, width), batch, args.warmup, args.repeats
            )

    print()
    print(header)
    print()
    print("| backbone | batch | path | device | p50 ms | p90 ms | speed-up vs original-style | peak MiB |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(
            f"| {r['backbone']} | {r['batch']} | {r['path']} | {r['device']} | {r['p50_ms']:.1f} "
            f"| {r['p90_ms']:.1f} | {speedup} | {peak} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "size": [height, width], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
