"""The Triton commands: `serve` (Metric3D behind tritonserver) and `triton-repo` (a model repository
with the TensorRT engine between Python pre- and post-processing)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .group import build_errors_in_one_line
from .options import (
    calibration_option,
    engine_precision_option,
    engines_option,
    export_dir_option,
    model_options,
    profile_options,
    queue_delay_option,
    runtime_options,
    shape_profile,
)

if TYPE_CHECKING:
    from ..settings import RuntimeSettings


@click.command("triton-repo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@model_options
@engine_precision_option
@profile_options
@click.option(
    "--instances",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Copies of each model working at once (the engine's on every GPU).",
)
@queue_delay_option
@engines_option
@export_dir_option
@calibration_option
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUT whole.")
def triton_repo(
    out: Path,
    backbone: str,
    precision: str,
    min_shape: str | None,
    opt_shape: str | None,
    max_shape: str | None,
    checkpoint: str | None,
    instances: int,
    max_queue_delay_us: int,
    engine_dir: str | None,
    export_dir: str | None,
    calibration: str | None,
    overwrite: bool,
) -> None:
    """A Triton model repository in OUT: the TensorRT engine between Python-backend pre- and
    post-processing, joined as the ensemble model `metric3d` (IMAGE, FX, FY -> DEPTH, CONFIDENCE,
    NORMAL at the image's size, as predict returns them).

    The engine is built with TensorRT (Triton cannot load TensorRT-RTX engines) for this machine's GPU,
    or taken from the cache. OUT/README.txt says how to start tritonserver and what to send.
    """
    from ..serving.triton_repo import build_repository

    profile = shape_profile(min_shape, opt_shape, max_shape)
    with build_errors_in_one_line():
        repository = build_repository(
            out,
            backbone,
            precision,
            profile,
            checkpoint,
            engine_dir=engine_dir,
            export_dir=export_dir,
            calibration=calibration,
            instances=instances,
            max_queue_delay_us=max_queue_delay_us,
            overwrite=overwrite,
        )
    click.echo(f"wrote {repository}; start it with: tritonserver --model-repository {repository}")


@click.command()
@runtime_options()
@click.option(
    "--host", default="0.0.0.0", show_default=True, help="Where to listen (127.0.0.1: this machine)."
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option(
    "--max-batch-size",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Images per predict, of any sizes (1: no batching).",
)
@queue_delay_option
@click.pass_context
def serve(
    ctx: click.Context,
    settings: RuntimeSettings,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    max_batch_size: int,
    max_queue_delay_us: int,
) -> None:
    """Serve Metric3D with NVIDIA Triton over HTTP and gRPC, with dynamic batching, until Ctrl-C or
    SIGTERM (needs the serve extra: PyTriton's tritonserver).

    Model `metric3d`; inputs (batch dimension first): IMAGE uint8 1 x H x W x 3 RGB, FX and FY float32
    1 x 1 (pixels); outputs at the image's size: DEPTH (metres), CONFIDENCE, NORMAL (x 3). A bad
    request gets an error answer naming the problem; the others go on.
    """
    from ..serving import metric3d_server as server
    from ..serving.tritonserver_process import Ports

    ports = Ports(http_port, grpc_port, metrics_port)
    verbose = ctx.meta.get("verbose", False)
    # no time limit on loading: a first start may export ONNX or build an engine (Ctrl-C stops it)
    options = {
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us,
        "ready_timeout_s": None,
        "verbose": verbose,  # Triton's own log (some 50 lines at start), else a temp file
    }
    if not verbose:
        click.echo(
            f"starting tritonserver with Metric3D {settings.backbone} (a first start may export ONNX or "
            "build an engine; --verbose shows Triton's log)"
        )
    with (
        server.stop_signals(),
        server.serve(settings=settings, ports=ports, address=host, **options) as running,
    ):
        click.echo(
            f"serving Metric3D {settings.backbone} as model 'metric3d': HTTP {running.url('http')}, "
            f"gRPC {running.url('grpc')}, metrics {running.url('metrics')}; Ctrl-C stops"
        )
        stopped = server.wait_for_stop(running)
        if not stopped:
            raise click.ClickException(f"tritonserver ended by itself: {running.exit_reason()}")
    click.echo("tritonserver stopped")
