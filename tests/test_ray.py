"""Metric depth on Ray Data: on a local CPU-only cluster with synthetic vit-small weights."""

import inspect
import logging
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from support import stand_in_backends
from trt_metric3d import Metric3D, checkpoint
from trt_metric3d.cli import main
from trt_metric3d.errors import BackendUnavailable, InputError, MissingDependency, WorkspaceError
from trt_metric3d.io import exif_focal_px, read_image
from trt_metric3d.ray import OUTPUTS, DepthPredictor, depth_dataset, run_depth_job

pytest.importorskip("ray", reason='the Ray extra is not installed: pip install "trt-metric3d[ray]"')
import ray.data  # noqa: E402  (comes with ray[data]: failing here is a broken install, not a skip)

FOCAL_35MM = {"wide.jpg": 28, "square.jpg": 50}  # tall.png has no EXIF
SIZES = {"wide.jpg": (48, 64), "square.jpg": (40, 40), "tall.png": (64, 48)}
GIVEN_FOCALS = (600.0, 700.0)  # what the tests pass for tall.png
# Measured against predict on each image alone: in a batch of two, depth moves by <= 1.5e-6 relative,
# confidence and normals by <= 3e-6 (float32 rounding; 2 torch threads instead of 1 move them as much);
# an image alone in its forward, on as many threads, is bit-identical. About 3x margin:
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def cluster():
    """A local CPU cluster whose workers can import the tests' support modules (`stand_in_predictor`)."""
    tests = str(Path(stand_in_backends.__file__).parents[1])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
    yield ray.cluster_resources()
    ray.shutdown()


@pytest.fixture(scope="module")
def stand_in_predictor():
    """Jobs map their batches with `StandInDepthPredictor`: a `stand_in_checkpoint` runs the stand-in
    network in the actors (the wiring tests); every other checkpoint the real one."""
    from support.ray_stand_ins import StandInDepthPredictor
    from trt_metric3d import ray as depth_ray

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(depth_ray, "DepthPredictor", StandInDepthPredictor)
        yield


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Images of three sizes, two with an EXIF focal length, and a file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, size in SIZES.items():
        exif = Image.Exif()
        if name in FOCAL_35MM:
            exif.get_ifd(0x8769)[0xA405] = FOCAL_35MM[name]  # FocalLengthIn35mmFilm
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name, exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg after all")
    return folder.resolve()  # as the results name the files


def _focal_lengths(photos) -> dict[str, tuple[float, float]]:
    """The focal lengths the tests use for each image: from EXIF, and GIVEN_FOCALS for tall.png."""
    focals = {name: (exif_focal_px(photos / name, *SIZES[name]),) * 2 for name in FOCAL_35MM}
    return {**focals, "tall.png": GIVEN_FOCALS}


def predict_each(photos, weights, names) -> dict:
    """Metric3D.predict on each image alone, with its `_focal_lengths`."""
    focals = _focal_lengths(photos)
    with Metric3D("vit-small", backend="torch", device="cpu", checkpoint=weights) as model:
        return {name: model.predict(read_image(photos / name), *focals[name]) for name in names}


@pytest.fixture(scope="module")
def expected(photos, stand_in_checkpoint):
    """predict_each image on the stand-in network, as Ray's workers run it for `stand_in_checkpoint`."""
    with pytest.MonkeyPatch.context() as patch:
        stand_in_loader = stand_in_backends.marked_stand_in_loader(checkpoint.load_model)
        patch.setattr(checkpoint, "load_model", stand_in_loader)
        return predict_each(photos, stand_in_checkpoint, SIZES)


def assert_equal_to_predict(got: dict, prediction, outputs=OUTPUTS):
    for output in outputs:
        np.testing.assert_allclose(got[output], getattr(prediction, output), **TOLERANCE, err_msg=output)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def exif_job(cluster, stand_in_predictor, photos, stand_in_checkpoint, tmp_path_factory):
    """The folder through run_depth_job without fx (EXIF focal lengths), 2 actors, batches of 2; the
    map_batches arguments, warnings and Ray Data log lines of the run recorded."""
    out = tmp_path_factory.mktemp("exif_job")
    calls, map_batches = [], ray.data.Dataset.map_batches

    def recording_map_batches(self, fn, **kwargs):
        calls.append(kwargs)
        return map_batches(self, fn, **kwargs)

    ray_data_log = _Records()
    logging.getLogger("ray.data").addHandler(ray_data_log)
    try:
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patch.setattr(ray.data.Dataset, "map_batches", recording_map_batches)
            arrived = []
            summary = run_depth_job(
                photos,
                out,
                outputs=OUTPUTS,
                on_result=arrived.append,
                backend="torch",
                device="cpu",
                checkpoint=stand_in_checkpoint,
                actors=2,
                batch_size=2,
            )
    finally:
        logging.getLogger("ray.data").removeHandler(ray_data_log)
    return dict(summary=summary, arrived=arrived, out=out, calls=calls, warnings=caught, log=ray_data_log)


def test_every_image_gets_exactly_one_result(exif_job, photos):
    summary = exif_job["summary"]
    inputs = sorted(photos.iterdir())
    assert [r.path for r in summary.results] == inputs  # input order
    assert sorted(r.path for r in exif_job["arrived"]) == inputs  # each reported once, as it arrived
    assert summary.done == 2 and summary.seconds > 0


def test_results_equal_predict_on_each_image(exif_job, photos, expected):
    out = exif_job["out"]
    results = {r.path.name: r for r in exif_job["summary"].results}
    for name in FOCAL_35MM:
        focal = exif_focal_px(photos / name, *SIZES[name])
        assert (results[name].fx, results[name].fy) == (focal, focal)
        stem = name.split(".")[0]
        assert results[name].files == [out / f"{stem}_{output}.npy" for output in OUTPUTS]
        got = {output: np.load(out / f"{stem}_{output}.npy") for output in OUTPUTS}
        assert all(array.dtype == np.float32 for array in got.values())
        assert_equal_to_predict(got, expected[name])
    written = {f.name for f in out.iterdir()}
    assert written == {f"{name.split('.')[0]}_{output}.npy" for name in FOCAL_35MM for output in OUTPUTS}


def test_bad_images_are_reported_and_the_others_finish(exif_job, photos):
    failures = exif_job["summary"].failures
    assert set(failures) == {photos / "broken.jpg", photos / "tall.png"}
    assert failures[photos / "broken.jpg"].startswith(f"{photos / 'broken.jpg'}: not a readable image")
    assert (
        failures[photos / "tall.png"]
        == f"{photos / 'tall.png'} has no EXIF focal length: pass fx (and fy) in pixels"
    )
    failed = [r for r in exif_job["summary"].results if r.error]
    assert all(r.files == [] and math.isnan(r.fx) and math.isnan(r.fy) for r in failed)


def test_cpu_actors_ask_for_no_gpu_through_the_current_ray_api(exif_job, cluster):
    assert cluster.get("GPU", 0) == 0  # and the job finished: a GPU request would wait forever
    (call,) = [c for c in exif_job["calls"] if c.get("fn_constructor_kwargs")]
    assert call["num_gpus"] == 0 and call["fn_constructor_kwargs"]["settings"].device == "cpu"
    assert isinstance(call["compute"], ray.data.ActorPoolStrategy) and "concurrency" not in call
    # Ray attributes a deprecated call's warning to the caller (its own internal ones, e.g. on
    # copying its DataContext, to itself), and logs the deprecated `concurrency=` on ray.data.
    ours = [w for w in exif_job["warnings"] if w.filename == inspect.getfile(run_depth_job)]
    assert not [str(w.message) for w in ours if issubclass(w.category, DeprecationWarning)]
    assert not [m for m in exif_job["log"].messages if "deprecat" in m.lower()]


def test_cuda_on_a_cluster_without_gpus_is_refused(cluster, photos):
    with pytest.raises(InputError, match="needs GPUs, but the Ray cluster has none"):
        depth_dataset(photos, device="cuda", fx=500.0)


def test_per_row_focal_lengths(cluster, photos, small_checkpoint):
    """DepthPredictor in a plain map_batches: each row's own fx / fy, a row's fy without fx refused. The
    real network end to end: the worker's result equals predict's."""
    rows = [
        {"path": str(photos / "tall.png"), "fx": GIVEN_FOCALS[0], "fy": GIVEN_FOCALS[1]},
        {"path": str(photos / "square.jpg"), "fx": None, "fy": 5.0},
    ]
    for row in rows:
        with open(row["path"], "rb") as f:
            row["bytes"] = f.read()
    predictor_args = dict(backend="torch", device="cpu", checkpoint=str(small_checkpoint))
    dataset = ray.data.from_items(rows).map_batches(
        DepthPredictor,
        fn_constructor_kwargs=predictor_args,
        batch_size=2,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    got = {row["path"]: row for row in dataset.take_all()}
    tall = got[str(photos / "tall.png")]
    assert tall["error"] == "" and (tall["fx"], tall["fy"]) == GIVEN_FOCALS
    assert_equal_to_predict(tall, predict_each(photos, small_checkpoint, ["tall.png"])["tall.png"])
    square = got[str(photos / "square.jpg")]
    assert "fy was given without fx" in square["error"] and square["depth"].shape == (0, 0)


def test_cli_writes_parquet_reports_each_image_and_exits_1(
    cluster, stand_in_predictor, photos, expected, stand_in_checkpoint, tmp_path
):
    fx, fy = GIVEN_FOCALS
    images = [str(photos / "tall.png"), str(photos / "broken.jpg")]
    args = ["ray", *images, "--out", str(tmp_path), "--format", "parquet", "--fx", str(fx), "--fy", str(fy)]
    options = ["--normal", "--backend", "torch", "--device", "cpu", "--checkpoint", str(stand_in_checkpoint)]
    result = CliRunner().invoke(main, [*args, *options])
    assert result.exit_code == 1, result.output
    tall = re.escape(str(photos / "tall.png"))
    assert re.search(rf"\[\d/2\] {tall} -> part-\d{{5}}\.parquet  fx=600\.0, fy=700\.0 \(--fx", result.output)
    assert f"failed: {photos / 'broken.jpg'}: not a readable image" in result.output
    assert "wrote 1 of 2 result(s)" in result.output and "1 image(s) failed" in result.output
    assert "Traceback" not in result.output
    rows = {row["path"]: row for row in ray.data.read_parquet(str(tmp_path)).take_all()}
    assert set(rows) == set(images)
    assert_equal_to_predict(rows[images[0]], expected["tall.png"], outputs=("depth", "normal"))
    assert "confidence" not in rows[images[0]]
    assert rows[images[1]]["error"] and rows[images[1]]["depth"].size == 0
    assert not list(tmp_path.glob(".*tmp")), "temp files left behind"


def test_an_actor_that_cannot_open_the_model_fails_the_job_in_one_line(cluster, photos, tmp_path):
    with pytest.raises(BackendUnavailable, match="could not open the model: .*TensorRT runs on a CUDA GPU"):
        run_depth_job(photos / "tall.png", tmp_path, fx=500.0, backend="tensorrt", device="cpu")


def test_without_ray_every_entry_point_asks_for_the_extra(photos, tmp_path, monkeypatch):
    for module in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, module, None)  # `import ray` now raises ImportError
    for entry_point in (lambda: depth_dataset(photos, fx=500.0), lambda: run_depth_job(photos, tmp_path)):
        with pytest.raises(MissingDependency, match=r'pip install "trt-metric3d\[ray\]"'):
            entry_point()
    result = CliRunner().invoke(main, ["ray", str(photos), "--out", str(tmp_path), "--fx", "500"])
    assert result.exit_code == 1 and 'pip install "trt-metric3d[ray]"' in result.output
    assert "Traceback" not in result.output and "actor(s)" not in result.output  # said before the job


def test_importing_the_package_does_not_import_ray():
    code = "import sys, trt_metric3d, trt_metric3d.ray; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- a parquet dataset folder is one output (no Ray needed: a stand-in dataset) --------------------------


class _Batches:
    """A stand-in for the dataset run_depth_job iterates: its rows as pyarrow tables, one per batch,
    then optionally an error (a node lost part-way)."""

    def __init__(self, files, fail_after: int | None = None):
        self.files, self.fail_after = files, fail_after

    def iter_batches(self, batch_size, batch_format):
        import pyarrow

        assert batch_format == "pyarrow"
        for number, path in enumerate(self.files):
            if number == self.fail_after:
                raise RuntimeError("a node was lost")
            yield pyarrow.table({"path": [str(path)], "fx": [500.0], "fy": [500.0], "error": [""]})


@pytest.fixture
def stand_in_dataset(monkeypatch):
    from trt_metric3d import ray as depth_ray

    made, fail_after = [], [None]  # the datasets built; after how many batches the next one fails

    def depth_dataset(files, **options):
        made.append(files)
        return _Batches(files, fail_after[0])

    monkeypatch.setattr(depth_ray, "depth_dataset", depth_dataset)
    return made, fail_after


def _earlier_parts(folder):
    folder.mkdir()
    for part in range(3):
        (folder / f"part-{part:05d}.parquet").write_bytes(b"an earlier run's rows")


def test_parquet_into_a_folder_of_an_earlier_run_is_refused_before_any_work(
    photos, tmp_path, stand_in_dataset
):
    made, _ = stand_in_dataset
    _earlier_parts(tmp_path / "out")
    with pytest.raises(WorkspaceError, match=r"out is not empty \(3 entries: part-00000.parquet, "):
        run_depth_job([photos / "tall.png"], tmp_path / "out", format="parquet", fx=500.0)
    assert made == [], "the dataset was built before the refusal"
    result = CliRunner().invoke(
        main, ["ray", str(photos), "--out", str(tmp_path / "out"), "--format", "parquet"]
    )
    assert result.exit_code == 1 and "pass --overwrite to replace it whole" in result.output, result.output


def test_parquet_with_overwrite_replaces_the_folder_whole_when_the_job_ends(
    photos, tmp_path, stand_in_dataset
):
    _earlier_parts(tmp_path / "out")
    images = [photos / "tall.png", photos / "wide.jpg"]
    summary = run_depth_job(images, tmp_path / "out", format="parquet", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert [r.files for r in summary.results] == [
        [tmp_path / "out" / f"part-0000{i}.parquet"] for i in (0, 1)
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_parquet_job_that_fails_leaves_the_earlier_dataset(photos, tmp_path, stand_in_dataset):
    _, fail_after = stand_in_dataset
    fail_after[0] = 1
    _earlier_parts(tmp_path / "out")
    with pytest.raises(RuntimeError, match="a node was lost"):
        run_depth_job(
            [photos / "tall.png", photos / "wide.jpg"], tmp_path / "out", format="parquet", overwrite=True
        )
    assert {p.read_bytes() for p in (tmp_path / "out").iterdir()} == {b"an earlier run's rows"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_new_cluster_starts_without_rays_warnings():
    """Ray warns at every start that token authentication is on: noise to a user, shown with --verbose."""
    code = "from trt_metric3d.raycluster import ray_cluster\nwith ray_cluster(): pass\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr and "Token authentication" not in result.stderr, result.stderr
