"""Frames per second of `Metric3D.stream` against a plain loop of `predict`, per backend; a markdown table.

    python benchmarks/stream.py                       # vit-small, 30 frames of 480x640, torch + onnxruntime
    python benchmarks/stream.py --frames 10 --backends torch --device cuda

The clip is made from the calibration photos: each is scaled to cover the frame with room to spare and
a 480x640 window pans across it, so consecutive frames differ as a slow camera pan does. Weights do not
change the arithmetic: without --checkpoint, untrained vit-small weights (seed 0) are saved to a
temporary checkpoint, from which the ONNX file is exported too. Both modes see the same frames on the
same warm runtime; latency is, per frame, from taking it from the source to its result: for the loop
that is one predict, for the stream it includes the time a frame waits in the stage queues.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from trt_metric3d import Metric3D
from trt_metric3d.io import read_image
from trt_metric3d.model import build_model

CALIBRATION = Path(__file__).resolve().parent.parent / "calibration"
PHOTOS = ("coffee.jpg", "astronaut.jpg", "chelsea.jpg", "rocket.jpg")
FX = 500.0  # a typical webcam's focal length in pixels at 640 px width


def panned_clip(frames: int, height: int, width: int) -> list[np.ndarray]:
    """`frames` RGB frames: a window of height x width panning across each calibration photo in turn."""
    per_photo = math.ceil(frames / len(PHOTOS))
    clip = []
    for name in PHOTOS:
        photo = read_image(CALIBRATION / name)
        cover = 1.25 * max(height / photo.shape[0], width / photo.shape[1])  # room to pan
        photo = cv2.resize(photo, None, fx=cover, fy=cover, interpolation=cv2.INTER_AREA)
        for step in np.linspace(0.0, 1.0, per_photo):
            top = int(step * (photo.shape[0] - height))
            left = int(step * (photo.shape[1] - width))
            clip.append(np.ascontiguousarray(photo[top : top + height, left : left + width]))
    return clip[:frames]


def untrained_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": build_model("vit-small").state_dict()}, path)
    return path


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float]:
    p50, p90 = np.percentile(np.array(latencies_s) * 1000.0, [50, 90])
    return float(p50), float(p90)


def time_loop(runtime: Metric3D, clip: list[np.ndarray]) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for frame in clip:
        taken = time.perf_counter()
        runtime.predict(frame, fx=FX)
        latencies.append(time.perf_counter() - taken)
    fps = len(clip) / (time.perf_counter() - start)
    p50, p90 = percentiles_ms(latencies)
    return {"frames": len(clip), "dropped": 0, "p50_ms": p50, "p90_ms": p90, "fps": fps}


def time_stream(runtime: Metric3D, clip: list[np.ndarray], queue_size: int) -> dict[str, float]:
    with runtime.stream(clip, fx=FX, queue_size=queue_size) as stream:
        for _ in stream:
            pass
        return stream.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", default="480x640", help="frame HxW")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on the CPU")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--checkpoint", help="official .pth (default: untrained weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    clip = panned_clip(args.frames, height, width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint(Path(tmp))
        for backend in args.backends:
            with Metric3D(
                "vit-small", backend, device=args.device, checkpoint=str(checkpoint), export_dir=tmp
            ) as runtime:
                runtime.predict(clip[0], fx=FX)  # warm-up: allocations, ONNX Runtime's first-run set-up
                loop = time_loop(runtime, clip)
                stream = time_stream(runtime, clip, args.queue_size)
            rows += [(backend, "predict loop", loop), (backend, "stream", stream)]
            print(f"{backend}: loop {loop['fps']:.3f} fps, stream {stream['fps']:.3f} fps", flush=True)
    print(f"\nvit-small, {args.device}, {len(clip)} frames of {height}x{width}, {args.threads} threads\n")
    print("| backend | mode | frames | fps | p50 latency ms | p90 latency ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for backend, mode, r in rows:
        base = next(loop["fps"] for b, m, loop in rows if b == backend and m == "predict loop")
        print(
            f"| {backend} | {mode} | {r['frames']} | {r['fps']:.3f} | {r['p50_ms']:.0f} "
            f"| {r['p90_ms']:.0f} | {r['fps'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
