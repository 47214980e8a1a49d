"""`trt-metric3d video`: metric depth of a video file or a live camera in a pipelined stream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .group import INTERRUPTED
from .options import focal_options, folder_fix, ply_stride_option, runtime_options

if TYPE_CHECKING:
    from ..settings import RuntimeSettings


@click.command()
@click.argument("source", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--camera", type=click.IntRange(0), default=None, help="Read camera N instead of a file.")
@focal_options(from_exif=False)
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
@ply_stride_option
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
    settings: RuntimeSettings,
) -> None:
    """Metric depth of a video file or a live camera, frame by frame in a pipelined stream.

    Prints a live FPS / latency line and, at the end (also after Ctrl-C, which finalises every
    output), frames, dropped frames, p50/p90 latency and FPS. The outputs replace earlier ones when
    the run ends or Ctrl-C stops it; a run that fails leaves them as they were. --frames and --ply
    are folders owned by the run: a non-empty one is replaced whole only with --overwrite.
    """
    import contextlib
    import itertools
    from dataclasses import replace

    import numpy as np

    from .. import io
    from ..output_files import (
        FolderOfFiles,
        check_output_folder,
        folder_can_be_made,
        refuse_inputs_as_outputs,
    )
    from ..pointcloud import write_ply
    from ..results import SteadyDepthPreview
    from ..runtime import Metric3D
    from ..runtime.metric3d import resolve_device
    from ..video import FrameSource, LiveStatus, NpzWriter, VideoWriter

    if (source is None) == (camera is None):
        raise click.UsageError("give a video file or --camera N (not both)")
    if out is None and source is not None and not (npz_path or frames_dir or ply_dir):
        out = Path(f"{source.stem}_depth.mp4")
    files, folders = {"--out": out, "--npz": npz_path}, {"--frames": frames_dir, "--ply": ply_dir}
    refuse_inputs_as_outputs(files.items(), [source, settings.checkpoint], folders)
    for option, path in files.items():
        if path is not None:
            # before the model loads; made by the writer, so a failed run leaves no empty folder
            folder_can_be_made(path.parent, f"choose another with {option}")
    for option, folder in folders.items():
        if folder is not None:
            check_output_folder(folder, overwrite, folder_fix(option))
    frames = FrameSource(source if camera is None else camera)
    latest = frames.is_camera if latest is None else latest
    preview = SteadyDepthPreview()
    status = LiveStatus()
    interrupted = False
    written = [str(path) for path in (*files.values(), *folders.values()) if path is not None]
    click.echo(f"{frames.source} -> {', '.join(written)}")  # the model's own line says which model
    with contextlib.ExitStack() as outputs:
        # every frame has the same canvas: on a GPU one captured CUDA graph serves the whole stream
        on_gpu = resolve_device(settings.device).type == "cuda"
        runtime = outputs.enter_context(Metric3D.from_settings(replace(settings, cuda_graph=on_gpu)))
        # opened once the model is: a model that cannot load leaves no file or folder behind
        writer = outputs.enter_context(VideoWriter(out, frames.fps)) if out is not None else None
        npz = outputs.enter_context(NpzWriter(npz_path)) if npz_path is not None else None
        frame_files = {
            option: outputs.enter_context(FolderOfFiles(folder, overwrite, fix=folder_fix(option)))
            for option, folder in folders.items()
            if folder is not None
        }
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
        ctx.exit(INTERRUPTED)
    if frames.ended_early:  # every frame the file holds was done: a warning, not a failure (README)
        click.echo(f"warning: {frames.ended_early}; the outputs hold the frames read", err=True)
