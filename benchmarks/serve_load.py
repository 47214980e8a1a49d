"""Load on `trt-metric3d serve`: requests/s and p50 / p99 latency at 1, 4 and 16 concurrent clients, with
Triton's dynamic batching (max batch 4) and without (max batch 1); a markdown table.

    python benchmarks/serve_load.py                        # vit-small, 480x640, torch on the CPU
    python benchmarks/serve_load.py --backend tensorrt --device cuda --requests 20

Each client sends its requests one after the other over gRPC (tritonclient's HTTP client gives up
after 60 s, which a CPU queue of 16 clients exceeds), with a bad one (fx = -1) after its first: the
bad ones must be refused while the others are answered. Every answer is compared with predict on the
same frame: "lost" counts requests that got no answer, "mismatched" answers whose depth differs from
predict's by more than 1 mm + 0.1 % (batched forwards move the last float32 bits: up to 0.04 %).
Latency is per good request, from sending it to its answer.
Frames come from the calibration photos (benchmarks/stream.py's pan); without --checkpoint, untrained
vit-small weights (seed 0): the arithmetic does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from stream import panned_clip, untrained_checkpoint
from tritonclient.utils import InferenceServerException

from trt_metric3d import Metric3D
from trt_metric3d.serving import Metric3DClient, serve
from trt_metric3d.serving.tritonserver_process import free_ports

FX = 500.0
REFUSAL = "fx[0] must be a finite focal length"  # what the server answers a bad request


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} CPU cores"


class Tally:
    """What the clients of one load level saw; each client adds its own, under the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.lost = self.mismatched = self.refused = self.bad_answered = 0


def run_client(url: str, requests: int, first: int, frames: list, expected: list, tally: Tally) -> None:
    """`requests` good requests, frames from number `first` on, and one bad request after the first."""
    latencies, lost, mismatched, refused, bad_answered = [], 0, 0, 0, 0
    with Metric3DClient(url, "grpc") as client:
        for number in range(requests):
            index = (first + number) % len(frames)
            start = time.perf_counter()
            try:
                depth = client.predict(frames[index], fx=FX).depth
            except InferenceServerException:
                lost += 1
                continue
            latencies.append(time.perf_counter() - start)
            # predict on a batch of 4 frames vs one at a time: up to 4e-4 relative, 5e-5 m apart here
            if not np.allclose(depth, expected[index], rtol=1e-3, atol=1e-3):
                mismatched += 1
            if number == 0:  # a bad request between the good ones
                try:
                    client.predict(frames[index], fx=-1.0)
                    bad_answered += 1
                except InferenceServerException as e:
                    refused += REFUSAL in e.message()
    with tally.lock:
        tally.latencies += latencies
        tally.lost += lost
        tally.mismatched += mismatched
        tally.refused += refused
        tally.bad_answered += bad_answered


def load(url: str, clients: int, requests: int, frames: list, expected: list) -> dict:
    tally = Tally()
    threads = [
        threading.Thread(target=run_client, args=(url, requests, number, frames, expected, tally))
        for number in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    p50, p99 = np.percentile(tally.latencies, [50, 99]) if tally.latencies else (float("nan"),) * 2
    return {
        "requests": clients * requests,
        "rps": len(tally.latencies) / wall,
        "p50": p50,
        "p99": p99,
        "lost": tally.lost,
        "mismatched": tally.mismatched,
        "bad": f"{tally.refused}/{clients}"
        + (f" ({tally.bad_answered} answered!)" if tally.bad_answered else ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--backbone", default="vit-small")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="480x640", help="frame HxW")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="good requests per client")
    parser.add_argument("--max-batch-size", type=int, default=4, help="with batching (without: 1)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--checkpoint", help="official .pth (default: untrained weights)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    frames = panned_clip(4, height, width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint(Path(tmp))
        runtime_args = (args.backbone, args.backend, None, args.device, str(checkpoint))
        with Metric3D(*runtime_args) as runtime:
            expected = [runtime.predict(frame, fx=FX).depth for frame in frames]
        for batching, max_batch in (("on", args.max_batch_size), ("off", 1)):
            options = {"max_batch_size": max_batch, "max_queue_delay_us": args.max_queue_delay_us}
            log = Path(tmp) / f"tritonserver-{batching}.log"
            with serve(
                *runtime_args, ports=free_ports(), address="127.0.0.1", log_path=log, **options
            ) as server:
                for clients in args.clients:
                    row = load(server.url("grpc"), clients, args.requests, frames, expected)
                    rows.append({"batching": f"{batching} (max {max_batch})", "clients": clients, **row})
                    print(rows[-1], flush=True)
    print(f"\n{args.backbone}, {args.backend}, {args.device}, {height}x{width} frames, {machine()}\n")
    print(
        "| dynamic batching | clients | requests | req/s | p50 s | p99 s | lost | mismatched | bad refused |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['rps']:.3f} | {r['p50']:.2f} "
            f"| {r['p99']:.2f} | {r['lost']} | {r['mismatched']} | {r['bad']} |"
        )


if __name__ == "__main__":
    main()
