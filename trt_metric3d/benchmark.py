"""Latency, throughput and memory of a backend's predict, each backend measured in its own process."""

from __future__ import annotations

import logging
import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import BackendUnavailable
from .logs import show_logs
from .runtime import Metric3D
from .settings import RuntimeSettings


@dataclass(frozen=True)
class BenchResult:
    backbone: str
    backend: str
    precision: str
    device: str
    batch: int
    image_hw: tuple[int, int]
    runs: int
    p50_ms: float
    p90_ms: float
    images_per_s: float
    peak_memory_mib: float  # device memory on CUDA, the measuring process's peak RSS on the CPU

    def as_dict(self) -> dict:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux keeps ru_maxrss across exec, so a spawned worker
    would report its parent's peak: VmHWM belongs to this process's own address space."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mib()


def run_benchmark(
    runtime: Metric3D, image_hw: tuple[int, int], batch: int, warmup: int, runs: int
) -> BenchResult:
    """Time `runtime.predict` end to end (pre-processing, forward, post-processing) on random images."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((batch, *image_hw, 3), dtype=np.float32)).to(runtime.device)
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    for _ in range(warmup):
        runtime.predict(images, fx=1000.0)
    samples = []
    for _ in range(runs):
        synchronize(runtime.device)
        start = time.perf_counter()
        runtime.predict(images, fx=1000.0)
        synchronize(runtime.device)
        samples.append(time.perf_counter() - start)
    p50 = statistics.median(samples)
    return BenchResult(
        backbone=runtime.backbone,
        backend=runtime.backend,
        precision=runtime.precision,
        device=str(runtime.device),
        batch=batch,
        image_hw=image_hw,
        runs=runs,
        p50_ms=p50 * 1000,
        p90_ms=float(np.percentile(samples, 90)) * 1000,
        images_per_s=batch / p50,
        peak_memory_mib=_peak_memory_mib(runtime.device),
    )


@dataclass(frozen=True)
class BenchRequest:
    """One backend to open and time: its settings and the arguments of `run_benchmark`."""

    settings: RuntimeSettings
    image_hw: tuple[int, int]
    batch: int
    warmup: int
    runs: int


def measure(request: BenchRequest, log_level: int = logging.WARNING) -> BenchResult:
    """Open the backend, time it, close it; the row names what really ran ("auto" resolved)."""
    show_logs(log_level)
    settings = request.settings
    with Metric3D.from_settings(settings) as runtime:
        result = run_benchmark(runtime, request.image_hw, request.batch, request.warmup, request.runs)
    label = result.backend  # options only where they apply
    label += "+compile" if settings.compile and label == "torch" else ""
    label += (
        "+cuda-graph" if settings.cuda_graph and result.device.startswith("cuda") else ""
    )  # ignored on CPU
    return replace(result, backend=label)


def measure_in_own_process(request: BenchRequest, log_level: int = logging.WARNING) -> BenchResult:
    """`measure` in a fresh process: the peak memory is this backend's alone, and a crash stays there."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(measure, request, log_level).result()
        except BrokenProcessPool as e:
            raise BackendUnavailable(f"the {request.settings.backend} benchmark process died ({e})") from e


def format_table(results: list[BenchResult]) -> str:
    lines = [
        "| backbone | backend | precision | device | batch | image | p50 ms | p90 ms | img/s | peak MiB |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backbone} | {r.backend} | {r.precision} | {r.device} | {r.batch} "
            f"| {r.image_hw[0]}x{r.image_hw[1]} | {r.p50_ms:.1f} | {r.p90_ms:.1f} "
            f"| {r.images_per_s:.2f} | {r.peak_memory_mib:.0f} |"
        )
    return "\n".join(lines)
