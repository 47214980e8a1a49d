"""The `trt-metric3d` click group: one-line errors, --verbose / --debug, and Ctrl-C ending in status 130.

The commands are added to it in `cli/__init__.py`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click

from ..errors import Metric3DError

DEBUG_ENV = "TRT_METRIC3D_DEBUG"
VERBOSE_ENV = "TRT_METRIC3D_VERBOSE"
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


@contextlib.contextmanager
def build_errors_in_one_line() -> Iterator[None]:
    """TensorRT could not parse or build the graph (build, triton-repo): its reason, no traceback."""
    try:
        yield
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e


class _FriendlyErrors(click.Group):
    """The package's errors (bad input, missing files or extras, unwritable folders) end in one line,
    and so does Ctrl-C, with the shell's status for it (130) in every command.

    --debug or TRT_METRIC3D_DEBUG=1 shows the traceback instead.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (Metric3DError, OSError) as e:
            if ctx.meta.get("debug"):
                raise
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt:
            if ctx.meta.get("debug"):
                import traceback

                traceback.print_exc()
            click.echo("interrupted (Ctrl-C)", err=True)
            ctx.exit(INTERRUPTED)


@click.group(cls=_FriendlyErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    envvar=VERBOSE_ENV,
    help="Also show the tools' own output: Triton's log, Ray's warnings, Model Optimizer's progress "
    f"(or set {VERBOSE_ENV}=1).",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=f"Show tracebacks and debug log lines, and what --verbose shows (or set {DEBUG_ENV}=1).",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool, debug: bool) -> None:
    """Metric3D v2 metric depth and surface normals: PyTorch, ONNX and TensorRT."""
    from ..logs import VERBOSE, show_logs

    ctx.meta["debug"] = debug
    ctx.meta["verbose"] = verbose or debug
    show_logs(logging.DEBUG if debug else VERBOSE if verbose else logging.INFO)
