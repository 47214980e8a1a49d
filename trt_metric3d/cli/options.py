"""The options several commands share, each declared once here so that it means the same everywhere.

model_options (which model), runtime_options (which model, run how), focal_options (the camera),
the engine's precision, profile and folders, the point cloud's stride and Triton's queue delay.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import click

from ..choices import BACKENDS, ENGINE_PRECISIONS, PRECISION_HELP, PRECISIONS
from ..model import BACKBONES
from ..serving.model_config import DEFAULT_QUEUE_DELAY_US
from ..settings import RuntimeSettings
from ..workspace import ENGINE_DIR_ENV, EXPORT_DIR_ENV, default_calibration_dir, workspace_dir

Decorator = Callable[[Callable], Callable]


def _apply(command: Callable, options: Sequence[Decorator]) -> Callable:
    """`command` with `options` (click decorators), listed in --help in their order."""
    for option in reversed(options):
        command = option(command)
    return command


_BACKBONE_OPTION = click.option(
    "--backbone", type=click.Choice(BACKBONES), default="vit-small", show_default=True
)
_CHECKPOINT_OPTION = click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Official .pth file [default: $METRIC3D_CHECKPOINT_DIR, then Hugging Face].",
)
_PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, help=PRECISION_HELP
)
_DEVICE_OPTION = click.option(
    "--device",
    default=None,
    help="torch device: cpu, cuda, cuda:1 [default: cuda where there is a GPU, else cpu].",
)


def model_options(command: Callable) -> Callable:
    """--backbone and --checkpoint: which Metric3D (export, build, triton-repo)."""
    return _apply(command, (_BACKBONE_OPTION, _CHECKPOINT_OPTION))


def runtime_options(default_backend: str = "auto", several_backends: bool = False) -> Decorator:
    """--backbone, --backend, --precision, --device and --checkpoint: which Metric3D, run how (infer,
    video, ray, serve, check, bench); the command gets them as one `settings` (RuntimeSettings).
    several_backends: --backend may be repeated (bench compares them; the command also gets
    `backends`, and `settings` has the default backend)."""
    backend = click.option(
        "--backend",
        "backends" if several_backends else "backend",
        type=click.Choice(BACKENDS),
        multiple=several_backends,
        default=(default_backend,) if several_backends else default_backend,
        show_default=True,
        help="Repeat to compare backends; each is measured in its own process." if several_backends else None,
    )
    options = (_BACKBONE_OPTION, backend, _PRECISION_OPTION, _DEVICE_OPTION, _CHECKPOINT_OPTION)

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def with_settings(*args, backbone, precision, device, checkpoint, **kwargs):
            chosen = default_backend if several_backends else kwargs.pop("backend")
            settings = RuntimeSettings(backbone, chosen, precision, device, checkpoint)
            return command(*args, settings=settings, **kwargs)

        return _apply(with_settings, options)

    return decorate


def _focal_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A focal length option checked as predict checks it, before any model loads."""
    from ..processing import check_focal

    try:
        return None if value is None else check_focal(f"--{param.name}", value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


FOCAL_OPTIONS = ("--fx", "--fy")  # what messages call fx and fy (resolve_focal_lengths' names)


def focal_options(from_exif: bool) -> Decorator:
    """--fx and --fy (pixels; fy defaults to fx). from_exif: --fx may be left out for each image's EXIF
    35 mm equivalent (infer, ray); else --fx is required (video)."""
    fx = click.option(
        "--fx",
        type=float,
        required=not from_exif,
        default=None,
        callback=_focal_option,
        help="Horizontal focal length in pixels [default: from EXIF, 35 mm equivalent]."
        if from_exif
        else "Focal length in pixels.",
    )
    fy = click.option(
        "--fy",
        type=float,
        default=None,
        callback=_focal_option,
        help="Vertical focal length in pixels [default: fx].",
    )
    return lambda command: _apply(command, (fx, fy))


ply_stride_option = click.option(
    "--ply-stride",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Every Nth pixel of each row and column in the point cloud.",
)


def folder_fix(option: str) -> str:
    """The fix for a non-empty output folder that `option` names and the command owns whole."""
    return f"pass --overwrite to replace it whole, or choose another folder with {option}"


# The engine a command builds (build, triton-repo)
engine_precision_option = click.option(
    "--precision",
    type=click.Choice(ENGINE_PRECISIONS),
    default="fp16",
    show_default=True,
    help="int8 / fp8: the ViT encoder calibrated and quantized, the rest FP16.",
)


def _profile_shape(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        batch, height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected BxHxW, e.g. 1x616x1064") from None
    return batch, height, width


def shape_profile(min_shape: str | None, opt_shape: str | None, max_shape: str | None):
    """The engine profile of --min / --opt / --max, each defaulting to ShapeProfile's."""
    from ..engine.builder import ShapeProfile

    defaults = ShapeProfile()
    shapes = [
        _profile_shape(s) or d
        for s, d in zip(
            (min_shape, opt_shape, max_shape), (defaults.min, defaults.opt, defaults.max), strict=True
        )
    ]
    return ShapeProfile(*shapes)


_PROFILE_OPTIONS = (
    click.option("--min", "min_shape", default=None, help="Profile minimum BxHxW [default: 1x616x616]."),
    click.option("--opt", "opt_shape", default=None, help="Profile optimum BxHxW [default: 1x616x1064]."),
    click.option("--max", "max_shape", default=None, help="Profile maximum BxHxW [default: 4x1064x1064]."),
)


def profile_options(command: Callable) -> Callable:
    """--min / --opt / --max on `command` (build, triton-repo); `shape_profile` reads them."""
    return _apply(command, _PROFILE_OPTIONS)


# Triton's dynamic batching (triton-repo, serve)
queue_delay_option = click.option(
    "--max-queue-delay-us",
    type=click.IntRange(0),
    default=DEFAULT_QUEUE_DELAY_US,
    show_default=True,
    help="How long Triton holds a request for others to share its batch.",
)

# The real defaults (a source checkout's export/ and engines/, else the user cache), shown in --help.
EXPORT_HELP = f"[default: {workspace_dir(EXPORT_DIR_ENV, 'export')}, or ${EXPORT_DIR_ENV}]"
engines_option = click.option(
    "--engines",
    "engine_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"[default: {workspace_dir(ENGINE_DIR_ENV, 'engines')}, or ${ENGINE_DIR_ENV}]",
)
export_dir_option = click.option(
    "--export-dir", type=click.Path(file_okay=False), default=None, help=EXPORT_HELP
)
calibration_option = click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help=f"Folder of photos like yours to calibrate int8 / fp8 on [default: {default_calibration_dir()}].",
)
