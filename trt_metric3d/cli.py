"""The `trt-metric3d` command line.

Its start-up (and every --help) imports only click and the package's light modules: torch, OpenCV,
numpy and the optional extras load inside the command that needs them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .choices import BACKENDS, ENGINE_PRECISIONS, PRECISION_HELP, PRECISIONS
from .errors import InputError, Metric3DError
from .model import BACKBONES
from .serving.model_config import DEFAULT_QUEUE_DELAY_US
from .workspace import (
    CALIBRATION_DIR_ENV,
    ENGINE_DIR_ENV,
    EXPORT_DIR_ENV,
    default_calibration_dir,
    workspace_dir,
)

if TYPE_CHECKING:
    import numpy as np

DEBUG_ENV = "TRT_METRIC3D_DEBUG"
VERBOSE_ENV = "TRT_METRIC3D_VERBOSE"
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def _focal_lengths(
    path: Path, image: np.ndarray, fx: float | None, fy: float | None
) -> tuple[float, float, str]:
    """(fx, fy, where they came from): the options, else the image's EXIF 35 mm equivalent."""
    from .io import exif_focal_px

    if fx is not None:
        return fx, fx if fy is None else fy, "--fx/--fy"
    focal = exif_focal_px(path, *image.shape[:2])
    if focal is None:
        raise InputError(f"{path} has no EXIF focal length: pass --fx (and --fy) in pixels")
    return focal, focal, "EXIF 35 mm equivalent"


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
    from .logs import VERBOSE, show_logs

    ctx.meta["debug"] = debug
    ctx.meta["verbose"] = verbose or debug
    show_logs(logging.DEBUG if debug else VERBOSE if verbose else logging.INFO)


def _focal_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A focal length option checked as predict checks it, before any model loads."""
    from .processing import check_focal

    try:
        return None if value is None else check_focal(f"--{param.name}", value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


# The options of every command that runs or builds the model, each declared once here so that it
# means the same everywhere: model_options (which model), runtime_options (which model, run how).
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
# The engine a command builds (build, triton-repo)
_ENGINE_PRECISION_OPTION = click.option(
    "--precision",
    type=click.Choice(ENGINE_PRECISIONS),
    default="fp16",
    show_default=True,
    help="int8 / fp8: the ViT encoder calibrated and quantized, the rest FP16.",
)
_PLY_STRIDE_OPTION = click.option(
    "--ply-stride",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Every Nth pixel of each row and column in the point cloud.",
)


def _apply(command, options):
    """`command` with `options` (click decorators), listed in --help in their order."""
    for option in reversed(options):
        command = option(command)
    return command


def model_options(command):
    """--backbone and --checkpoint: which Metric3D (export, build, triton-repo)."""
    return _apply(command, (_BACKBONE_OPTION, _CHECKPOINT_OPTION))


def runtime_options(default_backend: str = "auto", several_backends: bool = False):
    """--backbone, --backend, --precision, --device and --checkpoint: which Metric3D, run how (infer,
    video, ray, serve, check, bench). several_backends: --backend may be repeated (bench compares
    them; the function gets `backends`)."""
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
    return lambda command: _apply(command, options)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@runtime_options()
@click.option(
    "--fx",
    type=float,
    default=None,
    callback=_focal_option,
    help="Horizontal focal length in pixels [default: from EXIF, 35 mm equivalent].",
)
@click.option(
    "--fy",
    type=float,
    default=None,
    callback=_focal_option,
    help="Vertical focal length in pixels [default: fx].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("depth_out"),
    show_default=True,
)
@click.option("--ply", is_flag=True, help="Also write <name>.ply, the coloured point cloud in metres.")
@_PLY_STRIDE_OPTION
def infer(
    paths: tuple[Path, ...],
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
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
    from .io import find_images, read_image, writable_folder
    from .logs import percent
    from .output_files import refuse_inputs_as_outputs
    from .results import MAX_DEPTH_MM, result_files, result_names, write_result_set
    from .runtime import Metric3D

    if fx is None and fy is not None:
        raise click.UsageError("--fy needs --fx")
    images = find_images(list(paths))
    if not images:
        raise click.UsageError("no images found in the given paths")
    names = result_names(images)
    # the folder may hold other files: each result set adds to it, replacing only its own files
    results = (("--out", path) for name in names for path in result_files(out_dir, name, ply))
    refuse_inputs_as_outputs(results, [*images, checkpoint])
    writable_folder(out_dir, "choose another folder with --out")  # before the model loads
    failures: list[str] = []
    click.echo(f"{len(images)} image(s) -> {out_dir}")  # the model's own line says which model
    with Metric3D(backbone, backend, precision, device, checkpoint) as runtime:
        for number, (path, name) in enumerate(zip(images, names, strict=True), start=1):
            step = f"[{number}/{len(images)}] {path}"
            start = time.perf_counter()
            try:
                image = read_image(path)
                focal_x, focal_y, source = _focal_lengths(path, image, fx, fy)
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


@main.command("ray")
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
@click.option(
    "--fx",
    type=float,
    default=None,
    callback=_focal_option,
    help="Horizontal focal length in pixels [default: from EXIF, 35 mm equivalent].",
)
@click.option("--fy", type=float, default=None, callback=_focal_option, help="[default: fx]")
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
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
    address: str | None,
) -> None:
    """Metric depth for images or folders of images on a Ray cluster (pip install "trt-metric3d[ray]").

    Each actor loads the model once and runs batches of images; the results come back here and are
    written to --out as they arrive. The files must be readable on every node. An image that fails
    is reported and the others go on; the exit status is then 1.
    """
    from .io import find_images, writable_folder
    from .output_files import check_output_folder, refuse_inputs_as_outputs
    from .ray import ImageResult, run_depth_job
    from .raycluster import check_address, import_ray, ray_cluster
    from .results import result_names

    if fx is None and fy is not None:
        raise click.UsageError("--fy needs --fx")
    images = find_images(list(paths))
    if not images:
        raise click.UsageError("no images found in the given paths")
    outputs = ["depth", *(["normal"] if normal else []), *(["confidence"] if confidence else [])]
    # before Ray starts: parquet parts are one dataset, owned whole; npy files add to the folder
    if format_ == "parquet":
        refuse_inputs_as_outputs([], [*images, checkpoint], {"--out": out_dir})
        check_output_folder(out_dir, overwrite, _folder_fix("--out"))
    else:
        results = [("--out", out_dir / f"{n}_{o}.npy") for n in result_names(images) for o in outputs]
        refuse_inputs_as_outputs(results, [*images, checkpoint])
        writable_folder(out_dir, "choose another folder with --out")
    import_ray()  # a missing extra or an address that cannot work is said first, before the header line
    check_address(address)
    source = "--fx/--fy" if fx is not None else "EXIF 35 mm equivalent"
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
            backbone=backbone,
            backend=backend,
            precision=precision,
            device=device,
            checkpoint=checkpoint,
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


@main.command()
@click.argument("source", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--camera", type=click.IntRange(0), default=None, help="Read camera N instead of a file.")
@click.option("--fx", type=float, required=True, callback=_focal_option, help="Focal length in pixels.")
@click.option("--fy", type=float, default=None, callback=_focal_option, help="[default: fx]")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Colourised depth video, .mp4 or .avi [default for a file: <name>_depth.mp4 here].",
)
@click.option("--side-by-side", is_flag=True, help="Input and depth next to each other in --out.")
@click.option(
    "--npz", "npz_path", type=click.Path(dir_okay=False, path_type=Path), help="Every frame's depth."
)
@click.option(
    "--frames", "frames_dir", type=click.Path(file_okay=False, path_type=Path), help="A .npy per frame."
)
@click.option(
    "--ply", "ply_dir", type=click.Path(file_okay=False, path_type=Path), help="A point cloud per frame."
)
@_PLY_STRIDE_OPTION
@click.option("--overwrite", is_flag=True, help="Replace non-empty --frames / --ply folders whole.")
@click.option(
    "--latest/--every-frame",
    default=None,
    help="Drop frames that arrive while the model is busy [default: on for a camera, off for a file].",
)
@click.option("--max-frames", type=click.IntRange(1), default=None)
@runtime_options()
@click.pass_context
def video(
    ctx: click.Context,
    source: Path | None,
    camera: int | None,
    fx: float,
    fy: float | None,
    out: Path | None,
    side_by_side: bool,
    npz_path: Path | None,
    frames_dir: Path | None,
    ply_dir: Path | None,
    ply_stride: int,
    overwrite: bool,
    latest: bool | None,
    max_frames: int | None,
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
) -> None:
    """Metric depth of a video file or a live camera, frame by frame in a pipelined stream.

    Prints a live FPS / latency line and, at the end (also after Ctrl-C, which finalises every
    output), frames, dropped frames, p50/p90 latency and FPS. The outputs replace earlier ones when
    the run ends or Ctrl-C stops it; a run that fails leaves them as they were. --frames and --ply
    are folders owned by the run: a non-empty one is replaced whole only with --overwrite.
    """
    import contextlib
    import itertools

    import numpy as np

    from . import io
    from .output_files import FolderOfFiles, refuse_inputs_as_outputs
    from .pointcloud import write_ply
    from .results import SteadyDepthPreview
    from .runtime import Metric3D
    from .runtime.metric3d import resolve_device
    from .video import FrameSource, LiveStatus, NpzWriter, VideoWriter

    if (source is None) == (camera is None):
        raise click.UsageError("give a video file or --camera N (not both)")
    if out is None and source is not None and not (npz_path or frames_dir or ply_dir):
        out = Path(f"{source.stem}_depth.mp4")
    files, folders = {"--out": out, "--npz": npz_path}, {"--frames": frames_dir, "--ply": ply_dir}
    refuse_inputs_as_outputs(files.items(), [source, checkpoint], folders)
    for option, path in files.items():
        if path is not None:
            io.writable_folder(path.parent, f"choose another with {option}")  # before the model loads
    fy = fx if fy is None else fy
    frames = FrameSource(source if camera is None else camera)
    latest = frames.is_camera if latest is None else latest
    preview = SteadyDepthPreview()
    status = LiveStatus()
    interrupted = False
    with contextlib.ExitStack() as outputs:
        writer = outputs.enter_context(VideoWriter(out, frames.fps)) if out is not None else None
        npz = outputs.enter_context(NpzWriter(npz_path)) if npz_path is not None else None
        frame_files = {
            option: outputs.enter_context(FolderOfFiles(folder, overwrite, fix=_folder_fix(option)))
            for option, folder in folders.items()
            if folder is not None
        }
        # every frame has the same canvas: on a GPU one captured CUDA graph serves the whole stream
        on_gpu = resolve_device(device).type == "cuda"
        runtime = outputs.enter_context(
            Metric3D(backbone, backend, precision, device, checkpoint, cuda_graph=on_gpu)
        )
        click.echo(f"{frames.source}: {backbone} ({runtime.backend}, {runtime.precision}, {runtime.device})")
        results = outputs.enter_context(
            runtime.stream(itertools.islice(frames, max_frames), fx, fy, latest=latest)
        )
        try:
            for result in results:
                depth = result.prediction.depth
                if writer is not None:
                    image = preview(depth)
                    writer.write(np.hstack([result.frame, image]) if side_by_side else image)
                if npz is not None:
                    npz.add(result.index, depth)
                name = f"frame_{result.index:06d}"
                if "--frames" in frame_files:
                    frame_files["--frames"].write(f"{name}_depth.npy", io.write_npy, depth)
                if "--ply" in frame_files:
                    cloud = result.prediction.point_cloud(stride=ply_stride, image=result.frame)
                    frame_files["--ply"].write(f"{name}.ply", write_ply, cloud)
                status.update(results.frames_done, results.dropped, result.latency_s)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            status.finish()
    summary = results.summary()
    click.echo(
        f"{summary['frames']} frame(s), {summary['dropped']} dropped, latency p50 {summary['p50_ms']:.0f} ms "
        f"/ p90 {summary['p90_ms']:.0f} ms, {summary['fps']:.2f} fps"
        + (f"; wrote {out}" if out is not None and writer.written else "")
    )
    if interrupted:
        click.echo("interrupted: the outputs hold the frames done so far", err=True)
        ctx.exit(130)
    if frames.ended_early:  # every frame the file holds was done: a warning, not a failure (README)
        click.echo(f"warning: {frames.ended_early}; the outputs hold the frames read", err=True)


def _folder_fix(option: str) -> str:
    return f"pass --overwrite to replace it whole, or choose another folder with {option}"


def _parse_size(value: str) -> tuple[int, int]:
    from .processing import MAX_PIXELS, MAX_SIDE

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


@main.command()
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
    """Latency (p50/p90), throughput and peak memory of predict, per backend.

    Each backend runs in a fresh process, so its peak memory is its own; one that fails is reported
    with the reason, after the table of those that ran (exit status 1).
    """
    import json

    from .benchmark import BenchRequest, format_table, measure_in_own_process
    from .io import writable_folder
    from .output_files import STDOUT, refuse_inputs_as_outputs, write_output

    image_hw = _parse_size(size)
    to_stdout = json_path is not None and str(json_path) == STDOUT
    if json_path is not None and not to_stdout:  # found now, not after the measurements
        refuse_inputs_as_outputs([("--json", json_path)], [checkpoint])
        writable_folder(json_path.parent, "choose another path with --json")
    log_level = logging.getLogger("trt_metric3d").getEffectiveLevel()
    results, failures = [], []
    for backend in backends:
        request = BenchRequest(
            backbone,
            backend,
            precision,
            device,
            checkpoint,
            compile_,
            cuda_graph,
            image_hw,
            batch,
            warmup,
            runs,
        )
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


def _profile_option(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        batch, height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected BxHxW, e.g. 1x616x1064") from None
    return batch, height, width


def _shape_profile(min_shape: str | None, opt_shape: str | None, max_shape: str | None):
    """The engine profile of --min / --opt / --max, each defaulting to ShapeProfile's."""
    from .engine.builder import ShapeProfile

    defaults = ShapeProfile()
    shapes = [
        _profile_option(s) or d
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


# Triton's dynamic batching (triton-repo, serve)
_QUEUE_DELAY_OPTION = click.option(
    "--max-queue-delay-us",
    type=click.IntRange(0),
    default=DEFAULT_QUEUE_DELAY_US,
    show_default=True,
    help="How long Triton holds a request for others to share its batch.",
)


def _profile_options(command):
    """--min / --opt / --max on `command` (build, triton-repo)."""
    for option in reversed(_PROFILE_OPTIONS):
        command = option(command)
    return command


# The real defaults (a source checkout's export/ and engines/, else the user cache), shown in --help.
_EXPORT_HELP = f"[default: {workspace_dir(EXPORT_DIR_ENV, 'export')}, or ${EXPORT_DIR_ENV}]"
_ENGINES_HELP = f"[default: {workspace_dir(ENGINE_DIR_ENV, 'engines')}, or ${ENGINE_DIR_ENV}]"
_CALIBRATION_OPTION = click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help=f"Folder of photos like yours to calibrate int8 / fp8 on [default: {default_calibration_dir()}].",
)


@main.command()
@model_options
@click.option("--out", "export_dir", type=click.Path(file_okay=False), default=None, help=_EXPORT_HELP)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="Also the calibrated Q/DQ graph and its mixed FP16 version [default: none].",
)
@_CALIBRATION_OPTION
def export(
    backbone: str,
    checkpoint: str | None,
    export_dir: str | None,
    precision: str | None,
    calibration: str | None,
) -> None:
    """ONNX with dynamic batch/height/width (FP32) and its mixed FP16 version for TensorRT."""
    from .export.stages import exported_onnx, quantized_onnx

    fp32, fp16, _ = exported_onnx(backbone, checkpoint, export_dir)
    click.echo(f"{fp32}\n{fp16}")
    if precision is not None:
        qdq, mixed, *_ = quantized_onnx(backbone, precision, checkpoint, export_dir, calibration)
        click.echo(f"{qdq}\n{mixed}")


@main.command()
@model_options
@_profile_options
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
@click.option("--engines", "engine_dir", type=click.Path(file_okay=False), default=None, help=_ENGINES_HELP)
@click.option("--export-dir", type=click.Path(file_okay=False), default=None, help=_EXPORT_HELP)
@_ENGINE_PRECISION_OPTION
@_CALIBRATION_OPTION
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
    from .engine import pipeline

    profile = _shape_profile(min_shape, opt_shape, max_shape)
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
            precision=precision,
            calibration=calibration,
        )
    except RuntimeError as e:  # TensorRT could not parse or build the graph: its reason, no traceback
        raise click.ClickException(str(e)) from e
    click.echo(str(engine))


@main.command("triton-repo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@model_options
@_ENGINE_PRECISION_OPTION
@_profile_options
@click.option(
    "--instances",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Copies of each model working at once (the engine's on every GPU).",
)
@_QUEUE_DELAY_OPTION
@click.option("--engines", "engine_dir", type=click.Path(file_okay=False), default=None, help=_ENGINES_HELP)
@click.option("--export-dir", type=click.Path(file_okay=False), default=None, help=_EXPORT_HELP)
@_CALIBRATION_OPTION
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
    from .serving.triton_repo import build_repository

    profile = _shape_profile(min_shape, opt_shape, max_shape)
    try:
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
    except RuntimeError as e:  # TensorRT could not parse or build the graph: its reason, no traceback
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {repository}; start it with: tritonserver --model-repository {repository}")


@main.command()
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
@_QUEUE_DELAY_OPTION
@click.pass_context
def serve(
    ctx: click.Context,
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
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
    from .serving import server
    from .serving.tritonserver import Ports

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
            f"starting tritonserver with Metric3D {backbone} (a first start may export ONNX or build an "
            "engine; --verbose shows Triton's log)"
        )
    with (
        server.stop_signals(),
        server.serve(
            backbone, backend, precision, device, checkpoint, ports=ports, address=host, **options
        ) as running,
    ):
        click.echo(
            f"serving Metric3D {backbone} as model 'metric3d': HTTP {running.url('http')}, "
            f"gRPC {running.url('grpc')}, metrics {running.url('metrics')}; Ctrl-C stops"
        )
        stopped = server.wait_for_stop(running)
        if not stopped:
            raise click.ClickException(f"tritonserver ended by itself: {running.exit_reason()}")
    click.echo("tritonserver stopped")


def _agreement(got: np.ndarray, expected: np.ndarray) -> tuple[float, float, float]:
    """(AbsRel, fraction with max(got/exp, exp/got) < 1.25, max absolute error)."""
    import numpy as np

    ratio = np.maximum(got / expected, expected / got)
    return (
        float(np.mean(np.abs(got - expected) / np.abs(expected))),
        float(np.mean(ratio < 1.25)),
        float(np.max(np.abs(got - expected))),
    )


@main.command()
@runtime_options(default_backend="onnxruntime")  # compared with PyTorch: another backend by default
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True),
    help=f"Images or folders [default: {default_calibration_dir()}, or ${CALIBRATION_DIR_ENV}].",
)
def check(
    backbone: str,
    backend: str,
    precision: str | None,
    device: str | None,
    checkpoint: str | None,
    image_paths: tuple[str, ...],
) -> None:
    """Compare a backend with PyTorch fp32 on the CPU: AbsRel, delta<1.25 and max error per output.

    Each image is compared with its own reference; its rows are named as `infer` names its results.
    """
    from .io import find_images, read_image
    from .results import result_names
    from .runtime import Metric3D
    from .runtime.precision import check_backend_precision

    if precision is not None:  # before the reference predictions
        check_backend_precision(backend, precision)

    paths = list(image_paths) or [default_calibration_dir()]
    files = find_images(paths)
    if not files:
        looked = ", ".join(map(str, paths))
        raise click.UsageError(f"no images to check with in {looked}: pass --images FILE_OR_FOLDER")
    # one entry per input file, in order: two files may share a name (a/x.jpg, b/x.jpg)
    names = result_names(files)
    images = [read_image(path) for path in files]
    click.echo(
        f"checking {backend} against PyTorch fp32 on {len(images)} image(s) from {', '.join(map(str, paths))}"
    )
    with Metric3D(backbone, "torch", "fp32", "cpu", checkpoint) as reference:
        expected = [reference.predict(image, fx=1000.0) for image in images]
    click.echo("| image | output | AbsRel | delta<1.25 | max abs error |\n|---|---|---:|---:|---:|")
    with Metric3D(backbone, backend, precision, device, checkpoint) as runtime:
        for name, image, want in zip(names, images, expected, strict=True):
            got = runtime.predict(image, fx=1000.0)
            for output in ("depth", "confidence", "normal"):
                absrel, delta, worst = _agreement(getattr(got, output), getattr(want, output))
                click.echo(f"| {name} | {output} | {absrel:.2e} | {delta:.4f} | {worst:.2e} |")


@main.command()
def doctor() -> None:
    """Backends, versions and GPU here; cached checkpoints and engines; what to install."""
    import importlib.metadata
    import platform

    import torch

    from .checkpoint import local_checkpoint
    from .engine.builder import INSTALL_HINT, import_tensorrt
    from .engine.cache import EngineCache, read_sidecar

    click.echo(
        f"trt-metric3d {importlib.metadata.version('trt-metric3d')}, Python {platform.python_version()}"
    )
    click.echo(f"torch {torch.__version__}")
    from .runtime.cpu import cpu_features
    from .runtime.precision import cpu_path_lines

    features = cpu_features()
    click.echo(f"CPU: {features.summary()}")
    for line in cpu_path_lines(features):
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
