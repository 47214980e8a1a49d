"""`trt-metric3d ray`: metric depth of images on a Ray cluster, written here as the results arrive."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import FOCAL_OPTIONS, focal_options, folder_fix, runtime_options

if TYPE_CHECKING:
    from ..settings import RuntimeSettings


@click.command("ray")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["npy", "parquet"]),
    default="npy",
    show_default=True,
    help="A <name>_depth.npy per image, or parquet parts with every image's row.",
)
@click.option(
    "--overwrite", is_flag=True, help="With parquet: replace a non-empty --out folder whole at the end."
)
@click.option("--normal", is_flag=True, help="Also the surface normals (<name>_normal.npy, H x W x 3).")
@click.option("--confidence", is_flag=True, help="Also the depth confidence (<name>_confidence.npy).")
@click.option("--actors", type=click.IntRange(1), default=1, show_default=True, help="Model replicas.")
@click.option(
    "--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images per forward."
)
@click.option(
    "--cpus-per-actor",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="CPUs each actor holds (on the CPU, its torch threads).",
)
@click.option(
    "--gpus-per-actor",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="On CUDA; a fraction, e.g. 0.5, puts several actors on one GPU.",
)
@focal_options(from_exif=True)
@runtime_options()
@click.option(
    "--address",
    default=None,
    help="Ray cluster: auto (started here by `ray start`) or ray://HOST:10001 [default: a new local one].",
)
@click.pass_context
def ray_job(
    ctx: click.Context,
    paths: tuple[Path, ...],
    out_dir: Path,
    format_: str,
    overwrite: bool,
    normal: bool,
    confidence: bool,
    actors: int,
    batch_size: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    fx: float | None,
    fy: float | None,
    settings: RuntimeSettings,
    address: str | None,
) -> None:
    """Metric depth for images or folders of images on a Ray cluster (pip install "trt-metric3d[ray]").

    Each actor loads the model once and runs batches of images; the results come back here and are
    written to --out as they arrive. The files must be readable on every node. An image that fails
    is reported and the others go on; the exit status is then 1.
    """
    from ..focal import EXIF_SOURCE, resolve_focal_lengths
    from ..io import find_images, writable_folder
    from ..output_files import check_output_folder, refuse_inputs_as_outputs
    from ..ray import ImageResult, run_depth_job
    from ..raycluster import check_address, import_ray, ray_cluster
    from ..results import result_names

    given = resolve_focal_lengths(fx, fy, names=FOCAL_OPTIONS, optional=True)  # fy without fx: said first
    images = find_images(list(paths))
    if not images:
        raise click.UsageError("no images found in the given paths")
    outputs = ["depth", *(["normal"] if normal else []), *(["confidence"] if confidence else [])]
    # before Ray starts: parquet parts are one dataset, owned whole; npy files add to the folder
    if format_ == "parquet":
        refuse_inputs_as_outputs([], [*images, settings.checkpoint], {"--out": out_dir})
        check_output_folder(out_dir, overwrite, folder_fix("--out"))
    else:
        results = [("--out", out_dir / f"{n}_{o}.npy") for n in result_names(images) for o in outputs]
        refuse_inputs_as_outputs(results, [*images, settings.checkpoint])
        writable_folder(out_dir, "choose another folder with --out")
    import_ray()  # a missing extra or an address that cannot work is said first, before the header line
    check_address(address)
    source = EXIF_SOURCE if given is None else given.source
    click.echo(f"{len(images)} image(s), {actors} actor(s), batches of {batch_size} -> {out_dir}")
    done = 0

    def report(result: ImageResult) -> None:
        nonlocal done
        done += 1
        step = f"[{done}/{len(images)}]"
        if result.error:
            click.echo(f"{step} failed: {result.error}", err=True)
            return
        files = ", ".join(f.name for f in result.files)
        click.echo(f"{step} {result.path} -> {files}  fx={result.fx:.1f}, fy={result.fy:.1f} ({source})")

    debug = bool(ctx.meta.get("debug"))
    with ray_cluster(address, worker_logs=debug, verbose=bool(ctx.meta.get("verbose"))):
        if not debug:  # the per-image lines instead of Ray Data's log; its errors end in our last line
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        summary = run_depth_job(
            images,
            out_dir,
            format=format_,
            outputs=outputs,
            on_result=report,
            overwrite=overwrite,
            settings=settings,
            fx=fx,
            fy=fy,
            actors=actors,
            batch_size=batch_size,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
        )
    click.echo(
        f"wrote {summary.done} of {len(images)} result(s) to {out_dir} in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} images/s)"
    )
    if summary.failures:
        failures = "\n  ".join(summary.failures.values())
        raise click.ClickException(f"{len(summary.failures)} image(s) failed:\n  {failures}")
