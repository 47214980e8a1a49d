"""Metric depth over Ray Data: a pool of actors, each with one `Metric3D`, fed batches of image files.

    pip install "trt-metric3d[ray]"

`DepthPredictor` is the callable class for `Dataset.map_batches`; `depth_dataset` builds the lazy
read -> predict dataset; `run_depth_job` runs it and writes each result as it arrives. An image that
cannot be read, or has no focal length, is reported on its own row; the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import BackendUnavailable, InputError, Metric3DError
from .focal import FocalLengths, resolve_focal_lengths
from .io import atomic_write_bytes, decode_image, exif_focal_px, find_images, writable_folder, write_npy
from .output_files import OVERWRITE_FIX, FolderOfFiles, check_output_folder
from .raycluster import import_ray
from .results import result_names
from .runtime import Metric3D, Prediction
from .settings import RuntimeSettings

if TYPE_CHECKING:
    import pyarrow
    import ray.data

log = logging.getLogger("trt_metric3d")

OUTPUTS = ("depth", "confidence", "normal")
FORMATS = ("npy", "parquet")
# What a failed row holds in each output column: an array of the right rank, with nothing in it.
_EMPTY = {
    "depth": np.zeros((0, 0), np.float32),
    "confidence": np.zeros((0, 0), np.float32),
    "normal": np.zeros((0, 0, 3), np.float32),
}


def _check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown or not outputs:
        raise InputError(f"outputs {list(outputs)} are not valid: choose some of {', '.join(OUTPUTS)}")
    return tuple(dict.fromkeys(outputs))


def _given(value: object) -> object:
    """A per-row focal length, None where it is missing: None (Python rows) or NaN (numpy / Arrow)."""
    return None if isinstance(value, float | np.floating) and math.isnan(value) else value


@dataclass
class _Row:
    """One input row on its way through the predictor."""

    path: str
    image: np.ndarray | None = None
    fx: float = math.nan
    fy: float = math.nan
    prediction: Prediction | None = None
    error: str = ""

    def fail(self, error: Exception) -> None:
        message = str(error)
        self.error = message if self.path in message else f"{self.path}: {message}"


class DepthPredictor:
    """Callable class for `ray.data.Dataset.map_batches`: one `Metric3D` per actor, one forward per batch.

    Input columns: "bytes" (an image file's content) and "path", as `read_binary_files(...,
    include_paths=True)` gives them; optionally "fx" and "fy" in pixels per row (None / NaN: not given).
    Output: one row per input row, in order: "path", "fx", "fy", the asked `outputs` ("depth" H x W
    metres, "confidence" H x W, "normal" H x W x 3, float32) and "error": "" when the image was done,
    else why it failed (its arrays are then empty and fx / fy NaN).
    Focal lengths per row: its own fx / fy, else the constructor's, else the file's EXIF 35 mm
    equivalent; fy defaults to fx. Needs no Ray itself: it can run on any dict of such columns.
    """

    def __init__(
        self,
        backbone: str = "vit-small",
        backend: str = "auto",
        precision: str | None = None,
        device: str | None = None,
        checkpoint: str | None = None,
        fx: float | None = None,
        fy: float | None = None,
        outputs: Sequence[str] = OUTPUTS,
        *,
        settings: RuntimeSettings | None = None,
    ) -> None:
        """settings: the Metric3D to open, instead of backbone ... checkpoint (what depth_dataset passes)."""
        self.focal = resolve_focal_lengths(fx, fy, optional=True)  # None: each file's EXIF
        self.outputs = _check_outputs(outputs)
        settings = settings or RuntimeSettings(backbone, backend, precision, device, checkpoint)
        self.runtime = Metric3D.from_settings(settings)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths, contents = batch["path"], batch["bytes"]
        no_focal = [None] * len(paths)
        focals = zip(batch.get("fx", no_focal), batch.get("fy", no_focal), strict=True)
        rows = [
            self._read(str(path), data, fx, fy)
            for path, data, (fx, fy) in zip(paths, contents, focals, strict=True)
        ]
        self._predict([row for row in rows if not row.error])
        return self._columns(rows)

    def _read(self, path: str, data: bytes, fx: object, fy: object) -> _Row:
        row = _Row(path)
        try:
            row.image = decode_image(data, path)
            row.fx, row.fy, _ = self._focal_lengths(row, data, fx, fy)
        except Metric3DError as e:
            row.fail(e)
        return row

    def _focal_lengths(self, row: _Row, data: bytes, fx: object, fy: object) -> FocalLengths:
        """The row's own fx / fy, else the constructor's, else the file's EXIF."""
        given = resolve_focal_lengths(_given(fx), _given(fy), optional=True) or self.focal
        exif = functools.partial(exif_focal_px, data, *row.image.shape[:2])
        return given or resolve_focal_lengths(None, None, exif=exif, image=row.path)

    def _predict(self, rows: list[_Row]) -> None:
        """One forward for all readable images. If the batch fails (an image the network cannot take),
        each image runs alone, so that the error lands on its own row and the others are done."""
        if not rows:
            return
        try:
            predictions = self.runtime.predict(
                [row.image for row in rows], [row.fx for row in rows], [row.fy for row in rows]
            )
        except Metric3DError as e:
            if len(rows) == 1:
                rows[0].fail(e)
                return
            for row in rows:
                self._predict([row])
            return
        for row, prediction in zip(rows, predictions, strict=True):
            row.prediction = prediction

    def _columns(self, rows: list[_Row]) -> dict[str, np.ndarray]:
        columns = {
            "path": np.array([row.path for row in rows], dtype=object),
            "fx": np.array([math.nan if row.error else row.fx for row in rows]),
            "fy": np.array([math.nan if row.error else row.fy for row in rows]),
            "error": np.array([row.error for row in rows], dtype=object),
        }
        for name in self.outputs:
            arrays = [_EMPTY[name] if row.error else getattr(row.prediction, name) for row in rows]
            column = np.empty(len(rows), dtype=object)  # one array per row: the images' sizes differ
            for index, array in enumerate(arrays):
                column[index] = array  # one by one: np.array() would stack arrays of one shape
            columns[name] = column
        return columns


def image_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Absolute paths of the images named or found in the named folders (as `infer` finds them),
    each file once."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return [path.resolve() for path in find_images(paths)]


def _actor_device(device: str | None, gpus_per_actor: float, cluster_gpus: float) -> tuple[str, float]:
    """(the device each actor opens, the GPUs it asks Ray for): GPUs only for a CUDA device, and only
    on a cluster that has some, since Ray would wait forever for a GPU that no node offers."""
    if device is None:
        device = "cuda" if cluster_gpus else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device {device!r} is not valid: use cpu or cuda") from e
    if kind.type != "cuda":
        return device, 0
    if kind.index is not None:
        raise InputError(
            f"device {device!r}: Ray gives each actor its own GPU (CUDA_VISIBLE_DEVICES), which the "
            "actor sees as cuda:0; pass device 'cuda'"
        )
    if not cluster_gpus:
        raise InputError(
            f"device {device!r} needs GPUs, but the Ray cluster has none: use device 'cpu', or "
            "connect to a cluster with GPU nodes (ray.init(address=...), or --address)"
        )
    if not gpus_per_actor > 0:
        raise InputError(f"gpus_per_actor must be > 0 on CUDA, got {gpus_per_actor}; e.g. 1, or 0.5")
    return device, gpus_per_actor


def depth_dataset(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    backbone: str = "vit-small",
    backend: str = "auto",
    precision: str | None = None,
    device: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    fx: float | None = None,
    fy: float | None = None,
    outputs: Sequence[str] = OUTPUTS,
    actors: int = 1,
    batch_size: int = 4,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 1.0,
    settings: RuntimeSettings | None = None,
) -> ray.data.Dataset:
    """The lazy Ray dataset of `DepthPredictor` rows for the images in `paths` (files or folders).

    Starts a local Ray cluster unless Ray is already initialised (ray.init(address=...) first to use
    another); the files must be readable from every node (a shared file system).
    device: "cpu" or "cuda" [default: cuda when the cluster has GPUs]; each CUDA actor asks Ray for
    `gpus_per_actor` GPUs (fractions share a GPU), CPU actors ask for none.
    fx / fy: focal lengths in pixels for every image [default: each file's EXIF 35 mm equivalent].
    actors: model replicas, each loading the model once; cpus_per_actor: CPUs each one holds (on the
    CPU, torch's threads). batch_size: images per forward.
    settings: the Metric3D each actor opens, instead of backbone ... checkpoint.
    """
    settings = settings or RuntimeSettings(backbone, backend, precision, device, checkpoint)
    files = image_files(paths)
    if not files:
        raise InputError(f"no images found in {paths}: name image files or folders holding them")
    if actors < 1 or batch_size < 1:
        raise InputError(f"actors and batch_size must be >= 1, got {actors} and {batch_size}")
    resolve_focal_lengths(fx, fy, optional=True)  # checked here, before any actor starts
    outputs = _check_outputs(outputs)
    ray = import_ray()
    if not ray.is_initialized():
        ray.init()  # what Ray Data would start on first use; now, to see the cluster's resources
    cluster = ray.cluster_resources()
    device, gpus = _actor_device(settings.device, gpus_per_actor, cluster.get("GPU", 0))
    actors = min(actors, math.ceil(len(files) / batch_size))  # an actor without a batch: a model for nothing
    for kind, per_actor in (("CPU", cpus_per_actor), ("GPU", gpus)):
        if actors * per_actor > cluster.get(kind, 0):
            log.warning(
                "%d actor(s) x %g %s ask for more than the cluster's %g: the job waits for more nodes",
                actors,
                per_actor,
                kind,
                cluster.get(kind, 0),
            )
    # Reading is only file I/O (the actors decode), so it asks for no CPU: reads then never wait
    # behind actors that hold every CPU, which deadlocks a small cluster. ray.data.read_images would
    # decode here, and fail the whole dataset on one corrupt file.
    images = ray.data.read_binary_files([str(f) for f in files], include_paths=True, num_cpus=0)
    return images.map_batches(
        DepthPredictor,
        fn_constructor_kwargs=dict(
            settings=dataclasses.replace(
                settings,
                device=device,
                # absolute: an actor may work in another folder than this process
                checkpoint=settings.checkpoint and str(Path(settings.checkpoint).expanduser().absolute()),
            ),
            fx=fx,
            fy=fy,
            outputs=outputs,
        ),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus,
    )


@dataclass(frozen=True)
class ImageResult:
    """One input image's outcome in `run_depth_job`."""

    path: Path
    fx: float  # the focal lengths used, in pixels; NaN when it failed
    fy: float
    files: list[Path]  # the files holding its results; [] when it failed
    error: str = ""  # why it failed; "" when it was done


@dataclass(frozen=True)
class DepthJobSummary:
    """What `run_depth_job` did: one result per input image, in input order."""

    results: list[ImageResult]
    seconds: float

    @property
    def done(self) -> int:
        return sum(not result.error for result in self.results)

    @property
    def failures(self) -> dict[Path, str]:
        """Each failed image and why."""
        return {result.path: result.error for result in self.results if result.error}

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def _write_npy(
    batch: Mapping[str, np.ndarray], out_dir: Path, names: Mapping[str, str], outputs: Sequence[str]
) -> list[ImageResult]:
    results = []
    for index, path in enumerate(batch["path"]):
        error = str(batch["error"][index])
        files = []
        if not error:
            for output in outputs:
                files.append(write_npy(out_dir / f"{names[path]}_{output}.npy", batch[output][index]))
        fx, fy = float(batch["fx"][index]), float(batch["fy"][index])
        results.append(ImageResult(Path(path), fx, fy, files, error))
    return results


def _write_parquet(table: pyarrow.Table, parts: FolderOfFiles, name: str) -> list[ImageResult]:
    import pyarrow
    import pyarrow.parquet

    sink = pyarrow.BufferOutputStream()
    pyarrow.parquet.write_table(table, sink)
    path = parts.write(name, atomic_write_bytes, sink.getvalue().to_pybytes())  # where it is once done
    return [
        ImageResult(Path(row["path"]), row["fx"], row["fy"], [] if row["error"] else [path], row["error"])
        for row in table.select(["path", "fx", "fy", "error"]).to_pylist()
    ]


@contextlib.contextmanager
def _model_errors_in_one_line() -> Iterator[None]:
    """An actor that cannot open the model (a backend missing on the workers, a bad checkpoint) fails
    the job with the reason in one line instead of Ray's remote traceback."""
    ray = import_ray()
    try:
        yield
    except ray.exceptions.RayActorError as e:
        if not e.actor_init_failed:
            raise
        reason = str(e).strip().splitlines()[-1]  # the traceback's last line: "SomeError: message"
        raise BackendUnavailable(f"the Ray actors could not open the model: {reason}") from e


def run_depth_job(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    format: str = "npy",
    outputs: Sequence[str] = ("depth",),
    on_result: Callable[[ImageResult], None] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> DepthJobSummary:
    """Depth for the images in `paths` (files or folders) on Ray actors, written to `out_dir`.

    format "npy": per image <name>_depth.npy (float32 metres), plus <name>_confidence.npy and
    <name>_normal.npy (H x W x 3) when they are in `outputs`; <name> as `infer` names it.
    format "parquet": part-NNNNN.parquet, one per block of results, with `DepthPredictor`'s columns
    (failed rows included); read them back with ray.data.read_parquet(out_dir). The folder is the
    job's: it must be new or empty, or `overwrite` replaces it whole; the parts go to a partial folder
    beside it, which becomes `out_dir` when the job ends (or Ctrl-C stops it), so a job that fails
    leaves an earlier dataset as it was.
    on_result: called with each image's `ImageResult` as it arrives.
    options: `depth_dataset`'s keyword arguments (backbone, device, fx, actors, batch_size, ...).
    The results stream back to this process, which writes each file whole (a partial, then a rename)
    and reports each image as it arrives; Ray's own writers (write_parquet) would write on the
    workers, could leave a partial file when stopped, and say nothing per image.
    """
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    outputs = _check_outputs(outputs)
    if format == "parquet":
        check_output_folder(out_dir, overwrite, OVERWRITE_FIX)
    else:  # named files, as infer writes them: the folder may hold others
        out_dir = writable_folder(out_dir, "choose another folder for the results")
    files = image_files(paths)
    names = dict(zip(map(str, files), result_names(files), strict=True))
    dataset = depth_dataset(files, outputs=outputs, **options)
    start = time.perf_counter()
    arrived: dict[str, ImageResult] = {}
    batch_format = "pyarrow" if format == "parquet" else "numpy"
    batches = dataset.iter_batches(batch_size=None, batch_format=batch_format)
    parts = FolderOfFiles(out_dir, overwrite, OVERWRITE_FIX) if format == "parquet" else None
    with parts or contextlib.nullcontext(), _model_errors_in_one_line():
        for part, batch in enumerate(batches):
            if parts is not None:
                results = _write_parquet(batch, parts, f"part-{part:05d}.parquet")
            else:
                results = _write_npy(batch, out_dir, names, outputs)
            for result in results:
                arrived[str(result.path)] = result
                if on_result is not None:
                    on_result(result)
    return DepthJobSummary([arrived[str(f)] for f in files], time.perf_counter() - start)
