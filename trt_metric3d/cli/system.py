"""The system commands: `doctor` (what is installed, cached and missing here) and `bench` (latency,
throughput and memory per backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import Metric3DError
from ..model import BACKBONES
from .options import runtime_options

if TYPE_CHECKING:
    from ..settings import RuntimeSettings


def _parse_size(value: str) -> tuple[int, int]:
    from ..processing import MAX_PIXELS, MAX_SIDE

    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HxW, e.g. 480x640") from None
    if height < 1 or width < 1:
        raise click.BadParameter(f"{value!r}: sides must be positive")
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise click.BadParameter(
            f"{value!r}: larger than an image can be ({MAX_SIDE} per side, {MAX_PIXELS // 10**6} megapixels)"
        )
    return height, width


@click.command()
@runtime_options(several_backends=True)
@click.option("--size", default="616x1064", show_default=True, help="Input image HxW.")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the PyTorch backend.")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs in the TensorRT backend.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Also the rows as JSON in this file; - for standard output (the table then goes to stderr).",
)
@click.pass_context
def bench(
    ctx: click.Context,
    settings: RuntimeSettings,
    backends: tuple[str, ...],
    size: str,
    batch: int,
    warmup: int,
    runs: int,
    compile_: bool,
    cuda_graph: bool,
    json_path: Path | None,
) -> None:
    """Latency (p50/p90), throughput and peak memory of predict, per backend.

    Each backend runs in a fresh process, so its peak memory is its own; one that fails is reported
    with the reason, after the table of those that ran (exit status 1).
    """
    import json
    from dataclasses import replace

    from ..benchmark import BenchRequest, format_table, measure_in_own_process
    from ..io import writable_folder
    from ..output_files import STDOUT, refuse_inputs_as_outputs, write_output

    image_hw = _parse_size(size)
    to_stdout = json_path is not None and str(json_path) == STDOUT
    if json_path is not None and not to_stdout:  # found now, not after the measurements
        refuse_inputs_as_outputs([("--json", json_path)], [settings.checkpoint])
        writable_folder(json_path.parent, "choose another path with --json")
    log_level = logging.getLogger("trt_metric3d").getEffectiveLevel()
    results, failures = [], []
    for backend in backends:
        asked = replace(settings, backend=backend, compile=compile_, cuda_graph=cuda_graph)
        request = BenchRequest(asked, image_hw, batch, warmup, runs)
        try:
            results.append(measure_in_own_process(request, log_level))
        except Exception as e:  # a measuring harness: report the backend and go on with the next
            if ctx.meta.get("debug"):
                raise
            reason = str(e) if isinstance(e, Metric3DError) else f"{type(e).__name__}: {e}"
            failures.append({"backend": backend, "error": reason})
    if results:
        click.echo(format_table(results), err=to_stdout)  # standard output is the JSON's then
    for failure in failures:
        click.echo(f"{failure['backend']}: failed: {failure['error']}", err=True)
    if json_path is not None:
        rows = [r.as_dict() for r in results] + failures
        write_output(json_path, (json.dumps(rows, indent=1) + "\n").encode())
    if failures:
        ctx.exit(1)


@click.command()
def doctor() -> None:
    """Backends, versions and GPU here; cached checkpoints and engines; what to install."""
    import importlib.metadata
    import platform

    import torch

    from ..checkpoint import local_checkpoint
    from ..engine.builder import INSTALL_HINT, import_tensorrt
    from ..engine.cache import EngineCache, read_sidecar

    click.echo(
        f"trt-metric3d {importlib.metadata.version('trt-metric3d')}, Python {platform.python_version()}"
    )
    click.echo(f"torch {torch.__version__}")
    from ..runtime.cpu import cpu_features
    from ..runtime.precision import cpu_path_lines

    features = cpu_features()
    click.echo(f"CPU: {features.summary()}")
    try:
        import openvino

        openvino_version: str | None = openvino.__version__
    except ImportError:
        openvino_version = None
    for line in cpu_path_lines(features, openvino_version):
        click.echo(line)
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
    for backbone in BACKBONES:
        where = local_checkpoint(backbone)
        click.echo(f"checkpoint {backbone}: {where or 'not downloaded yet (fetched on first use)'}")
    cache = EngineCache()
    found = sorted(cache.folder.glob("*.json")) if cache.folder.is_dir() else []
    sidecars = [p for p in found if not p.name.endswith(".manifest.json")]  # ONNX manifests, if shared
    click.echo(f"engines in {cache.folder}: {len(sidecars)}")
    for sidecar in sidecars:
        spec = read_sidecar(sidecar)
        if spec is None:
            click.echo(f"  {sidecar.name}: unreadable sidecar (its engine is rebuilt on next use)")
            continue
        click.echo(
            f"  {spec.get('backbone')} {spec.get('precision')} {spec.get('flavour')} "
            f"{spec.get('trt_version')} on {spec.get('gpu_name')} (sm{spec.get('compute_capability')})"
        )
