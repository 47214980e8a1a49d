"""Images per second of `trt_metric3d.ray.run_depth_job` for a few actor layouts; a markdown table.

    python benchmarks/ray_throughput.py                     # 8 images, vit-small, CPU: 1x2, 2x1 actors x CPUs
    python benchmarks/ray_throughput.py --images 32 --layouts 1x1 2x1 4x1 --device cuda

The folder holds copies of the calibration photos (sizes differ; every image is one 616x1064 canvas
for the network). Weights do not change the arithmetic: without --checkpoint, untrained vit-small
weights (seed 0) are saved to a temporary checkpoint. Each layout runs on the same local Ray cluster
(all this machine's CPUs); its time is the whole job, from submitting it to the last file written:
starting the actors and loading the model included, so few images favour fewer actors.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import ray.data  # before quieting its logger: importing ray.data sets up its logging
import torch

from trt_metric3d.model import build_model
from trt_metric3d.ray import run_depth_job

CALIBRATION = Path(__file__).resolve().parent.parent / "calibration"


def untrained_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": build_model("vit-small").state_dict()}, path)
    return path


def photo_folder(folder: Path, count: int) -> Path:
    photos = sorted(CALIBRATION.glob("*.jpg"))
    folder.mkdir()
    for index in range(count):
        source = photos[index % len(photos)]
        shutil.copy(source, folder / f"{index:04d}_{source.name}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="ACTORSxCPUS_PER_ACTOR")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", help="official .pth (default: untrained weights)")
    args = parser.parse_args()
    rows = []
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the table, not Ray Data's progress log
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint(Path(tmp))
        images = photo_folder(Path(tmp) / "images", args.images)
        for layout in args.layouts:
            actors, cpus = layout.split("x")
            summary = run_depth_job(
                images,
                Path(tmp) / f"out_{layout}",
                backend="torch",
                device=args.device,
                checkpoint=checkpoint,
                fx=1000.0,
                actors=int(actors),
                cpus_per_actor=float(cpus),
                batch_size=args.batch_size,
            )
            assert not summary.failures, summary.failures
            rows.append((layout, summary))
            print(f"{layout}: {summary.images_per_second:.3f} images/s", flush=True)
    ray.shutdown()
    print(f"\nvit-small, {args.device}, {args.images} images, batches of {args.batch_size}\n")
    print("| actors x CPUs | images | seconds | images/s |")
    print("|---|---:|---:|---:|")
    for layout, summary in rows:
        print(f"| {layout} | {summary.done} | {summary.seconds:.1f} | {summary.images_per_second:.3f} |")


if __name__ == "__main__":
    main()
