"""The `trt-metric3d` command line."""

from __future__ import annotations

import os
from pathlib import Path

import click
import cv2
import numpy as np

from .model import BACKBONES

MAX_DEPTH_MM = np.iinfo(np.uint16).max


def depth_preview(depth: np.ndarray) -> np.ndarray:
    """Coloured RGB preview of a depth map: near is warm, far is cool (turbo on inverse depth)."""
    inverse = 1.0 / np.maximum(depth, 1e-6)
    lo, hi = np.percentile(inverse, (1, 99))
    scaled = np.clip((inverse - lo) / max(hi - lo, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _focal_lengths(
    path: Path, image: np.ndarray, fx: float | None, fy: float | None
) -> tuple[float, float, str]:
    """(fx, fy, where they came from): the options, else the image's EXIF 35 mm equivalent."""
    from .io import exif_focal_px

    if fx is not None:
        return fx, fx if fy is None else fy, "--fx/--fy"
    focal = exif_focal_px(path, *image.shape[:2])
    if focal is None:
        raise click.UsageError(f"{path} has no EXIF focal length: pass --fx (and --fy) in pixels")
    return focal, focal, "EXIF 35 mm equivalent"


def _write_results(stem: Path, prediction) -> None:
    from .io import write_npy, write_png
    from .visualize import normal_to_image

    millimetres = np.clip(np.rint(prediction.depth * 1000), 0, MAX_DEPTH_MM).astype(np.uint16)
    write_npy(f"{stem}_depth.npy", prediction.depth)
    write_png(f"{stem}_depth.png", millimetres)
    write_png(f"{stem}_depth_preview.png", depth_preview(prediction.depth))
    write_png(f"{stem}_normal.png", normal_to_image(prediction.normal))


class _FriendlyErrors(click.Group):
    """Bad input and missing files end in a one-line message, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_FriendlyErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Metric3D v2 metric depth and surface normals: PyTorch, ONNX and TensorRT."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True)
@click.option(
    "--fx",
    type=float,
    default=None,
    help="Horizontal focal length in pixels [default: from EXIF, 35 mm equivalent].",
)
@click.option("--fy", type=float, default=None, help="Vertical focal length in pixels [default: fx].")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Official .pth file [default: METRIC3D_CHECKPOINT_DIR, then Hugging Face].",
)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda or cuda:1.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("depth_out"),
    show_default=True,
)
def infer(
    paths: tuple[Path, ...],
    backbone: str,
    fx: float | None,
    fy: float | None,
    checkpoint: str | None,
    device: str,
    out_dir: Path,
) -> None:
    """Metric depth for images or folders of images.

    Writes, per image: <name>_depth.npy (float32 metres), <name>_depth.png (uint16 millimetres),
    <name>_depth_preview.png (colour) and <name>_normal.png (surface normals as RGB).
    """
    from .io import find_images, read_image
    from .runtime import Metric3D

    if fx is None and fy is not None:
        raise click.UsageError("--fy needs --fx")
    images = find_images(list(paths))
    if not images:
        raise click.UsageError("no images found in the given paths")
    runtime = Metric3D(backbone, backend="torch", device=device, checkpoint=checkpoint)
    used: list[str] = []
    label = f"{backbone} ({runtime.backend}, {runtime.precision}, {runtime.device})"
    with runtime, click.progressbar(images, label=label, item_show_func=lambda p: p and p.name) as bar:
        for path in bar:
            image = read_image(path)
            focal_x, focal_y, source = _focal_lengths(path, image, fx, fy)
            prediction = runtime.predict(image, focal_x, focal_y)
            used.append(f"{path.name}: fx={focal_x:.1f}, fy={focal_y:.1f} ({source})")
            _write_results(out_dir / path.stem, prediction)
    click.echo("\n".join(used))
    click.echo(f"wrote {len(images)} result set(s) to {out_dir}")


def _parse_size(value: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HxW, e.g. 480x640") from None
    if height < 1 or width < 1:
        raise click.BadParameter(f"{value!r}: sides must be positive")
    return height, width


@main.command()
@click.option("--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    default=("auto",),
    show_default=True,
    help="Repeat to compare backends.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    default=None,
    help="[default: fp16 on CUDA, else fp32]",
)
@click.option("--size", default="616x1064", show_default=True, help="Input image HxW.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--device", default=None, help="torch device [default: cuda if available].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the PyTorch backend.")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs in the TensorRT backend.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench(
    backbone: str,
    backends: tuple[str, ...],
    precision: str | None,
    size: str,
    batch: int,
    warmup: int,
    runs: int,
    device: str | None,
    checkpoint: str | None,
    compile_: bool,
    cuda_graph: bool,
    json_path: Path | None,
) -> None:
    """Latency (p50/p90), throughput and peak memory of predict, per backend."""
    import dataclasses
    import json

    from .benchmark import format_table, run_benchmark
    from .io import atomic_write_bytes
    from .runtime import Metric3D

    image_hw = _parse_size(size)
    results = []
    for backend in backends:
        options = {"compile": compile_, "cuda_graph": cuda_graph}
        with Metric3D(backbone, backend, precision, device, checkpoint, **options) as runtime:
            result = run_benchmark(runtime, image_hw, batch, warmup, runs)
        label = result.backend  # what really ran ("auto" resolved); options only where they apply
        label += "+compile" if compile_ and label == "torch" else ""
        label += "+cuda-graph" if cuda_graph and label == "tensorrt" else ""
        results.append(dataclasses.replace(result, backend=label))
    click.echo(format_table(results))
    if json_path is not None:
        atomic_write_bytes(json_path, json.dumps([r.as_dict() for r in results], indent=1).encode())


def _profile_option(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        batch, height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected BxHxW, e.g. 1x616x1064") from None
    return batch, height, width


@main.command()
@click.option("--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--out", "export_dir", type=click.Path(file_okay=False), default=None, help="[default: export/]"
)
def export(backbone: str, checkpoint: str | None, export_dir: str | None) -> None:
    """ONNX with dynamic batch/height/width (FP32) and its mixed FP16 version for TensorRT."""
    from .engine.pipeline import exported_onnx

    fp32, fp16, _ = exported_onnx(backbone, checkpoint, export_dir)
    click.echo(f"{fp32}\n{fp16}")


@main.command()
@click.option("--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--min", "min_shape", default=None, help="Profile minimum BxHxW [default: 1x616x616].")
@click.option("--opt", "opt_shape", default=None, help="Profile optimum BxHxW [default: 1x616x1064].")
@click.option("--max", "max_shape", default=None, help="Profile maximum BxHxW [default: 4x1064x1064].")
@click.option(
    "--flavour",
    type=click.Choice(["tensorrt", "tensorrt_rtx"]),
    default=None,
    help="[default: tensorrt if installed, else tensorrt_rtx]",
)
@click.option("--workspace", type=float, default=4.0, show_default=True, help="Builder workspace limit, GiB.")
@click.option("--compute-capability", default=None, help="TensorRT-RTX ahead-of-time target, e.g. SM86.")
@click.option(
    "--engines", "engine_dir", type=click.Path(file_okay=False), default=None, help="[default: engines/]"
)
@click.option("--export-dir", type=click.Path(file_okay=False), default=None, help="[default: export/]")
def build(
    backbone: str,
    checkpoint: str | None,
    min_shape: str | None,
    opt_shape: str | None,
    max_shape: str | None,
    flavour: str | None,
    workspace: float,
    compute_capability: str | None,
    engine_dir: str | None,
    export_dir: str | None,
) -> None:
    """Checkpoint -> ONNX -> FP16 ONNX -> strongly typed TensorRT engine (each step cached)."""
    from .engine import builder, pipeline

    defaults = builder.ShapeProfile()
    shapes = [
        _profile_option(s) or d
        for s, d in zip(
            (min_shape, opt_shape, max_shape), (defaults.min, defaults.opt, defaults.max), strict=True
        )
    ]
    profile = builder.ShapeProfile(*shapes)
    try:
        engine = pipeline.build(
            backbone,
            checkpoint,
            profile,
            flavour=flavour,
            engine_dir=engine_dir,
            export_dir=export_dir,
            workspace_gib=workspace,
            compute_capability=compute_capability,
        )
    except (builder.TensorRTNotInstalled, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(str(engine))


def _agreement(got: np.ndarray, expected: np.ndarray) -> tuple[float, float, float]:
    """(AbsRel, fraction with max(got/exp, exp/got) < 1.25, max absolute error)."""
    ratio = np.maximum(got / expected, expected / got)
    return (
        float(np.mean(np.abs(got - expected) / np.abs(expected))),
        float(np.mean(ratio < 1.25)),
        float(np.max(np.abs(got - expected))),
    )


@main.command()
@click.option("--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True)
@click.option("--backend", type=click.Choice(["tensorrt", "onnxruntime", "torch"]), default="onnxruntime")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16"]), default=None, help="[default: fp16 on CUDA]"
)
@click.option("--device", default=None, help="torch device of the backend [default: cuda if available].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--images", "image_paths", multiple=True, type=click.Path(exists=True), help="[default: calibration/]"
)
def check(
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
    image_paths: tuple[str, ...],
) -> None:
    """Compare a backend with PyTorch fp32 on the CPU: AbsRel, delta<1.25 and max error per output."""
    from .io import find_images, read_image
    from .runtime import Metric3D

    paths = list(image_paths) or [Path(__file__).resolve().parents[1] / "calibration"]
    images = [(p.name, read_image(p)) for p in find_images(paths)]
    if not images:
        raise click.UsageError("no images to check with: pass --images")
    with Metric3D(backbone, "torch", "fp32", "cpu", checkpoint) as reference:
        expected = {name: reference.predict(image, fx=1000.0) for name, image in images}
    click.echo("| image | output | AbsRel | delta<1.25 | max abs error |\n|---|---|---:|---:|---:|")
    with Metric3D(backbone, backend, precision, device, checkpoint) as runtime:
        for name, image in images:
            got = runtime.predict(image, fx=1000.0)
            for output in ("depth", "confidence", "normal"):
                absrel, delta, worst = _agreement(getattr(got, output), getattr(expected[name], output))
                click.echo(f"| {name} | {output} | {absrel:.2e} | {delta:.4f} | {worst:.2e} |")


@main.command()
def doctor() -> None:
    """Backends, versions and GPU here; cached checkpoints and engines; what to install."""
    import importlib.metadata
    import json
    import platform

    import torch

    from .checkpoint import CHECKPOINT_DIR_ENV, HF_REPO, checkpoint_filename
    from .engine.builder import INSTALL_HINT, import_tensorrt
    from .engine.cache import EngineCache

    click.echo(
        f"trt-metric3d {importlib.metadata.version('trt-metric3d')}, Python {platform.python_version()}"
    )
    click.echo(f"torch {torch.__version__}")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        click.echo(f"GPU: {torch.cuda.get_device_name()} (compute capability {major}.{minor})")
    else:
        click.echo("GPU: none found by torch (CPU only)")
    try:
        import onnxruntime

        click.echo(
            f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}"
        )
    except ImportError:
        click.echo("onnxruntime: not installed (pip install 'trt-metric3d[onnx]')")
    try:
        trt, flavour = import_tensorrt()
        click.echo(f"{flavour} {trt.__version__}")
    except ImportError:
        click.echo(INSTALL_HINT)
    import huggingface_hub

    local = os.environ.get(CHECKPOINT_DIR_ENV)
    for backbone in BACKBONES:
        name = checkpoint_filename(backbone)
        found = Path(local) / name if local and (Path(local) / name).is_file() else None
        cached = huggingface_hub.try_to_load_from_cache(HF_REPO, name)
        where = found or (cached if isinstance(cached, str) else None)
        click.echo(f"checkpoint {backbone}: {where or 'not downloaded yet (fetched on first use)'}")
    cache = EngineCache()
    sidecars = sorted(cache.folder.glob("*.json")) if cache.folder.is_dir() else []
    click.echo(f"engines in {cache.folder}: {len(sidecars)}")
    for sidecar in sidecars:
        spec = json.loads(sidecar.read_text()).get("spec", {})
        click.echo(
            f"  {spec.get('backbone')} {spec.get('precision')} {spec.get('flavour')} "
            f"{spec.get('trt_version')} on {spec.get('gpu_name')} (sm{spec.get('compute_capability')})"
        )
