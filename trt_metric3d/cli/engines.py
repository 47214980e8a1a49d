"""The engine commands: `export` (checkpoint -> ONNX) and `build` (ONNX -> TensorRT engine)."""

from __future__ import annotations

import click

from .group import build_errors_in_one_line
from .options import (
    EXPORT_HELP,
    calibration_option,
    engine_precision_option,
    engines_option,
    export_dir_option,
    model_options,
    profile_options,
    shape_profile,
)


@click.command()
@model_options
@click.option("--out", "export_dir", type=click.Path(file_okay=False), default=None, help=EXPORT_HELP)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="Also the calibrated Q/DQ graph and its mixed FP16 version [default: none].",
)
@calibration_option
def export(
    backbone: str,
    checkpoint: str | None,
    export_dir: str | None,
    precision: str | None,
    calibration: str | None,
) -> None:
    """ONNX with dynamic batch/height/width (FP32) and its mixed FP16 version for TensorRT."""
    from ..export.stages import exported_onnx, quantized_onnx

    fp32, fp16, _ = exported_onnx(backbone, checkpoint, export_dir)
    click.echo(f"{fp32}\n{fp16}")
    if precision is not None:
        qdq, mixed, *_ = quantized_onnx(backbone, precision, checkpoint, export_dir, calibration)
        click.echo(f"{qdq}\n{mixed}")


@click.command()
@model_options
@profile_options
@click.option(
    "--flavour",
    type=click.Choice(["tensorrt", "tensorrt_rtx"]),
    default=None,
    help="[default: tensorrt if installed, else tensorrt_rtx]",
)
@click.option(
    "--workspace",
    type=click.FloatRange(0, min_open=True),
    default=4.0,
    show_default=True,
    help="Builder workspace limit, GiB.",
)
@click.option("--compute-capability", default=None, help="TensorRT-RTX ahead-of-time target, e.g. SM86.")
@engines_option
@export_dir_option
@engine_precision_option
@calibration_option
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
    precision: str,
    calibration: str | None,
) -> None:
    """Checkpoint -> ONNX -> FP16 (or calibrated INT8 / FP8) ONNX -> strongly typed TensorRT engine
    (each step cached)."""
    from ..engine import pipeline

    profile = shape_profile(min_shape, opt_shape, max_shape)
    with build_errors_in_one_line():
        engine = pipeline.build(
            backbone,
            checkpoint,
            profile,
            flavour=flavour,
            engine_dir=engine_dir,
            export_dir=export_dir,
            workspace_gib=workspace,
            compute_capability=compute_capability,
            precision=precision,
            calibration=calibration,
        )
    click.echo(str(engine))
