"""The image commands: `infer` (metric depth and the result files of images or folders) and `check`
(a backend's agreement with PyTorch fp32)."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import Metric3DError
from ..workspace import CALIBRATION_DIR_ENV, default_calibration_dir
from .options import FOCAL_OPTIONS, focal_options, ply_stride_option, runtime_options

if TYPE_CHECKING:
    import numpy as np

    from ..settings import RuntimeSettings


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@runtime_options()
@focal_options(from_exif=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("depth_out"),
    show_default=True,
)
@click.option("--ply", is_flag=True, help="Also write <name>.ply, the coloured point cloud in metres.")
@ply_stride_option
def infer(
    paths: tuple[Path, ...],
    settings: RuntimeSettings,
    fx: float | None,
    fy: float | None,
    out_dir: Path,
    ply: bool,
    ply_stride: int,
) -> None:
    """Metric depth for images or folders of images.

    Writes, per image: <name>_depth.npy (float32 metres), <name>_depth.png (uint16 millimetres),
    <name>_depth_preview.png (colour), <name>_normal.png (surface normals as RGB) and, with --ply,
    <name>.ply (binary PLY: x right, y down, z forward, metres, with colours; every --ply-stride-th
    pixel of each row and column). <name> is the file's stem; where two inputs share it, the
    extension and then folder names are added. An image that fails is reported and the others go on;
    the exit status is then 1.
    """
    from ..focal import resolve_focal_lengths
    from ..io import exif_focal_px, find_images, read_image
    from ..logs import percent
    from ..output_files import folder_can_be_made, refuse_inputs_as_outputs
    from ..results import MAX_DEPTH_MM, result_files, result_names, write_result_set
    from ..runtime import Metric3D

    resolve_focal_lengths(fx, fy, names=FOCAL_OPTIONS, optional=True)  # fy without fx: said first
    images = find_images(list(paths))
    if not images:
        raise click.UsageError("no images found in the given paths")
    names = result_names(images)
    # the folder may hold other files: each result set adds to it, replacing only its own files
    results = (("--out", path) for name in names for path in result_files(out_dir, name, ply))
    refuse_inputs_as_outputs(results, [*images, settings.checkpoint])
    # before the model loads; made with the first result, so a failed run leaves no empty folder
    folder_can_be_made(out_dir, "choose another folder with --out")
    failures: list[str] = []
    click.echo(f"{len(images)} image(s) -> {out_dir}")  # the model's own line says which model
    with Metric3D.from_settings(settings) as runtime:
        for number, (path, name) in enumerate(zip(images, names, strict=True), start=1):
            step = f"[{number}/{len(images)}] {path}"
            start = time.perf_counter()
            try:
                image = read_image(path)
                exif = functools.partial(exif_focal_px, path, *image.shape[:2])
                focal_x, focal_y, source = resolve_focal_lengths(
                    fx, fy, names=FOCAL_OPTIONS, exif=exif, image=path
                )
                prediction = runtime.predict(image, focal_x, focal_y)
                cloud = prediction.point_cloud(stride=ply_stride, image=image) if ply else None
                written = write_result_set(out_dir, name, prediction, cloud)
            except (Metric3DError, OSError) as e:
                failures.append(str(e) if str(path) in str(e) else f"{path}: {e}")
                click.echo(f"{step}: failed: {e}", err=True)
                continue
            click.echo(
                f"{step} -> {out_dir / name}_*  fx={focal_x:.1f}, fy={focal_y:.1f} ({source}), "
                f"{time.perf_counter() - start:.1f} s"
            )
            if written.clipped_pixels:
                share = percent(written.clipped_pixels / image.shape[0] / image.shape[1])
                click.echo(
                    f"  note: {written.clipped_pixels} pixel(s) ({share}) lie beyond "
                    f"{MAX_DEPTH_MM / 1000:.3f} m and are clipped to {MAX_DEPTH_MM} in {name}_depth.png; "
                    f"{name}_depth.npy keeps their depth",
                    err=True,
                )
    click.echo(f"wrote {len(images) - len(failures)} of {len(images)} result set(s) to {out_dir}")
    if failures:
        raise click.ClickException(f"{len(failures)} image(s) failed:\n  " + "\n  ".join(failures))


def _agreement(got: np.ndarray, expected: np.ndarray) -> tuple[float, float, float]:
    """(AbsRel, fraction with max(got/exp, exp/got) < 1.25, max absolute error)."""
    import numpy as np

    ratio = np.maximum(got / expected, expected / got)
    return (
        float(np.mean(np.abs(got - expected) / np.abs(expected))),
        float(np.mean(ratio < 1.25)),
        float(np.max(np.abs(got - expected))),
    )


@click.command()
@runtime_options(default_backend="onnxruntime")  # compared with PyTorch: another backend by default
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True),
    help=f"Images or folders [default: {default_calibration_dir()}, or ${CALIBRATION_DIR_ENV}].",
)
def check(
    settings: RuntimeSettings,
    image_paths: tuple[str, ...],
) -> None:
    """Compare a backend with PyTorch fp32 on the CPU: AbsRel, delta<1.25 and max error per output.

    Each image is compared with its own reference; its rows are named as `infer` names its results.
    """
    from ..io import find_images, read_image
    from ..results import result_names
    from ..runtime import Metric3D
    from ..runtime.precision import check_backend_precision

    if settings.precision is not None:  # before the reference predictions
        check_backend_precision(settings.backend, settings.precision)

    paths = list(image_paths) or [default_calibration_dir()]
    files = find_images(paths)
    if not files:
        looked = ", ".join(map(str, paths))
        raise click.UsageError(f"no images to check with in {looked}: pass --images FILE_OR_FOLDER")
    # one entry per input file, in order: two files may share a name (a/x.jpg, b/x.jpg)
    names = result_names(files)
    images = [read_image(path) for path in files]
    click.echo(
        f"checking {settings.backend} against PyTorch fp32 on {len(images)} image(s) "
        f"from {', '.join(map(str, paths))}"
    )
    pytorch_fp32 = dataclasses.replace(settings, backend="torch", precision="fp32", device="cpu")
    with Metric3D.from_settings(pytorch_fp32) as reference:
        expected = [reference.predict(image, fx=1000.0) for image in images]
    click.echo("| image | output | AbsRel | delta<1.25 | max abs error |\n|---|---|---:|---:|---:|")
    with Metric3D.from_settings(settings) as runtime:
        for name, image, want in zip(names, images, expected, strict=True):
            got = runtime.predict(image, fx=1000.0)
            for output in ("depth", "confidence", "normal"):
                absrel, delta, worst = _agreement(getattr(got, output), getattr(want, output))
                click.echo(f"| {name} | {output} | {absrel:.2e} | {delta:.4f} | {worst:.2e} |")
