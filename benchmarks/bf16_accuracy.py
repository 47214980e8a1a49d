"""Accuracy of the torch backend's bf16 against its fp32 on real photos, at the 616 x 1064 canvas; markdown.

    python benchmarks/bf16_accuracy.py                                  # the synthetic vit-small weights
    python benchmarks/bf16_accuracy.py --checkpoint metric_depth_vit_small_800k.pth

The images of benchmarks/quantization.py (the calibration photos and the two reference images; bf16
needs no calibration, so none is held out), the same metrics: depth AbsRel and delta<1.25 against
fp32, mean angular error of the normals. Without --checkpoint the weights are the reference's seeded
synthetic ones (tests/support/reference.py): a trained network's activations, and so its error, will differ.
The bar (issue 19): AbsRel <= 1 %, delta<1.25 >= 0.99.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from quantization import EXTRA, PHOTOS, _metrics

from trt_metric3d.checkpoint import load_model
from trt_metric3d.io import read_image
from trt_metric3d.model import build_model
from trt_metric3d.processing import make_canvas
from trt_metric3d.runtime.cpu import cpu_features
from trt_metric3d.runtime.torch_backend import TorchBackend

TESTS = Path(__file__).resolve().parent.parent / "tests"
MAX_ABSREL, MIN_DELTA = 0.01, 0.99


def synthetic_model(backbone: str) -> torch.nn.Module:
    sys.path.insert(0, str(TESTS))
    from support.reference import synthetic_state_dict

    model = build_model(backbone)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in synthetic_state_dict(backbone).items()})
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="vit-small")
    parser.add_argument("--checkpoint", default=None, help="[default: the synthetic weights]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (Ampere or newer)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.backbone, args.checkpoint) if args.checkpoint else synthetic_model(args.backbone)
    fp32, bf16 = (TorchBackend(model.eval(), device, p) for p in ("fp32", "bf16"))
    weights = args.checkpoint or "synthetic weights"
    print(
        f"{args.backbone} ({weights}), torch {torch.__version__}, {device}; CPU {cpu_features().summary()}\n"
    )
    print("| image | depth AbsRel | delta<1.25 | normal error (deg) | bar |")
    print("|---|---:|---:|---:|---|")
    for path in [*sorted(PHOTOS.glob("*.jpg")), *(p for p in EXTRA if p.is_file())]:
        canvas = make_canvas(read_image(path))[0]
        pixels = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].float().to(device)
        expected, got = ([t.cpu().numpy() for t in backend(pixels)] for backend in (fp32, bf16))
        absrel, delta, angle = _metrics(expected, got)
        held = "holds" if absrel <= MAX_ABSREL and delta >= MIN_DELTA else "FAILS"
        print(f"| {path.name} | {absrel:.2%} | {delta:.4f} | {angle:.2f} | {held} |", flush=True)


if __name__ == "__main__":
    main()
