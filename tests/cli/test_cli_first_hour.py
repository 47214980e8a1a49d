"""A new user's mistakes and edge cases on the command line: nothing lost, one clear line each."""

import json
import resource
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from support.reference import reference_dir
from support.stand_in_backends import RedDepth, measure_on_stand_ins
from trt_metric3d.cli import main
from trt_metric3d.errors import WorkspaceError
from trt_metric3d.results import result_names
from trt_metric3d.workspace import ENGINE_DIR_ENV, EXPORT_DIR_ENV, default_calibration_dir, workspace_dir


def _photo(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(reference_dir() / "coffee.png")), (width, height)))
    return path


def _infer(*args: str, checkpoint: Path):
    return CliRunner().invoke(main, ["infer", *args, "--checkpoint", str(checkpoint)])


def test_result_names_are_distinct_and_plain_where_possible():
    paths = [Path("d1/photo.png"), Path("d1/photo.jpg"), Path("d2/photo.jpg"), Path("d2/cup.png")]
    assert result_names(paths) == ["photo_png", "d1_photo_jpg", "d2_photo_jpg", "cup"]
    # only the case differs (one file on macOS / Windows, two on Linux): still two names
    same_but_case = result_names([Path("a/Photo.jpg"), Path("a/photo.jpg")])
    assert len({n.lower() for n in same_but_case}) == 2


def test_infer_gives_inputs_that_share_a_stem_their_own_results(small_checkpoint, tmp_path, stand_in_network):
    sizes = {"d1/photo.png": (40, 60), "d1/photo.jpg": (50, 70), "d2/photo.jpg": (30, 90)}
    for name, (height, width) in sizes.items():
        _photo(tmp_path / name, height, width)
    out = tmp_path / "out"
    result = _infer(
        str(tmp_path / "d1"),
        str(tmp_path / "d2"),
        "--fx",
        "100",
        "--out",
        str(out),
        checkpoint=small_checkpoint,
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 of 3 result set(s)" in result.output
    depths = sorted(out.glob("*_depth.npy"))
    assert len(depths) == 3 and len(list(out.iterdir())) == 12
    assert sorted(np.load(p).shape for p in depths) == sorted(sizes.values())


def test_infer_goes_on_past_a_bad_image_and_lists_it(small_checkpoint, tmp_path, stand_in_network):
    _photo(tmp_path / "in" / "a_good.png", 30, 40)
    (tmp_path / "in" / "b_broken.jpg").write_bytes(b"not an image")
    _photo(tmp_path / "in" / "c_good.png", 30, 40)
    out = tmp_path / "out"
    result = _infer(str(tmp_path / "in"), "--fx", "100", "--out", str(out), checkpoint=small_checkpoint)
    assert result.exit_code == 1
    assert "wrote 2 of 3 result set(s)" in result.output
    broken = tmp_path / "in" / "b_broken.jpg"
    assert f"1 image(s) failed:\n  {broken}: not a readable image" in result.output
    assert "not a readable image" in result.output and "Traceback" not in result.output
    assert {p.name for p in out.glob("*_depth.npy")} == {"a_good_depth.npy", "c_good_depth.npy"}


def test_infer_checks_the_output_folder_before_loading_the_model(tmp_path, monkeypatch):
    _photo(tmp_path / "a.png", 20, 30)
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a model load would fail on the missing checkpoint instead
    monkeypatch.setenv("METRIC3D_CHECKPOINT_DIR", str(tmp_path))
    args = ["infer", str(tmp_path / "a.png"), "--fx", "100", "--out", str(tmp_path / "file" / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"cannot write to the folder {tmp_path / 'file' / 'out'}" in result.output
    assert "choose another folder with --out" in result.output and "Traceback" not in result.output
    # --debug keeps the traceback for a bug report
    debug = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(debug.exception, WorkspaceError)


def test_infer_says_when_the_millimetre_png_clips(small_checkpoint, tmp_path, stand_in_network):
    _photo(tmp_path / "far.png", 30, 40)
    out = tmp_path / "out"
    result = _infer(str(tmp_path / "far.png"), "--fx", "1e6", "--out", str(out), checkpoint=small_checkpoint)
    assert result.exit_code == 0, result.output
    depth = np.load(out / "far_depth.npy")
    beyond = int(np.count_nonzero(np.rint(depth * 1000) > 65535))
    assert beyond > 0, "the test needs depths beyond 65.535 m"
    assert (
        f"note: {beyond} pixel(s)" in result.output and "clipped to 65535 in far_depth.png" in result.output
    )
    png = cv2.imread(str(out / "far_depth.png"), cv2.IMREAD_UNCHANGED)
    assert int(np.count_nonzero(png == 65535)) >= beyond


def test_bench_keeps_measured_rows_when_a_backend_fails_and_measures_each_alone(
    stand_in_checkpoint, tmp_path, monkeypatch
):
    """Each backend in a process of its own (running the stand-in network: what is timed does not
    matter here)."""
    from trt_metric3d import benchmark

    monkeypatch.setattr(benchmark, "measure", measure_on_stand_ins)
    ballast = np.ones(2**28, dtype=np.float64)  # 2 GiB touched here: this process's peak, not a backend's
    del ballast
    own_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = tmp_path / "bench.json"
    args = ["bench", "--backend", "torch", "--backend", "tensorrt", "--size", "40x60", "--warmup", "0"]
    args += ["--runs", "1", "--device", "cpu", "--checkpoint", str(stand_in_checkpoint), "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "| vit-small | torch | fp32 | cpu | 1 | 40x60 |" in result.output
    assert "tensorrt: failed: TensorRT runs on a CUDA GPU" in result.output
    assert "Traceback" not in result.output
    torch_row, tensorrt_row = json.loads(out.read_text())
    assert torch_row["backend"] == "torch" and torch_row["p50_ms"] > 0
    assert 0 < torch_row["peak_memory_mib"] < own_peak_mib - 1024
    assert tensorrt_row["backend"] == "tensorrt" and "CUDA GPU" in tensorrt_row["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--size", "100000x100000"], "larger than an image can be"),
        (["bench", "--backend", "banana"], "'banana' is not one of"),
        (["build", "--workspace", "-1"], "-1"),
    ],
)
def test_bad_options_are_refused_up_front(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_help_shows_the_real_default_folders():
    def unwrapped(text: str) -> str:  # click wraps long paths, also after a hyphen ("trt-\nmetric3d")
        return "".join(text.split())

    export_help = unwrapped(CliRunner().invoke(main, ["export", "--help"]).output)
    build_help = unwrapped(CliRunner().invoke(main, ["build", "--help"]).output)
    assert unwrapped(str(workspace_dir(EXPORT_DIR_ENV, "export"))) in export_help
    assert unwrapped(str(workspace_dir(ENGINE_DIR_ENV, "engines"))) in build_help


def test_check_says_where_it_looked_for_images(monkeypatch, tmp_path):
    monkeypatch.setenv("METRIC3D_CALIBRATION_DIR", str(tmp_path))
    assert default_calibration_dir() == tmp_path
    result = CliRunner().invoke(main, ["check", "--backend", "torch"])
    assert result.exit_code == 2 and f"no images to check with in {tmp_path}" in result.output


def test_check_defaults_to_the_calibration_photos(monkeypatch):
    from trt_metric3d import runtime

    monkeypatch.delenv("METRIC3D_CALIBRATION_DIR", raising=False)
    opened, real = [], runtime.Metric3D

    class StandIn:
        @staticmethod
        def from_settings(settings):  # how the command line opens a Metric3D
            opened.append((settings.backend, settings.precision))
            return real(backend=RedDepth(), device="cpu")

    monkeypatch.setattr(runtime, "Metric3D", StandIn)
    result = CliRunner().invoke(main, ["check", "--backend", "onnxruntime", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert f"on 4 image(s) from {default_calibration_dir()}" in result.output
    rows = [line.split(" | ") for line in result.output.splitlines() if line.startswith("| ")][1:]
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    assert [row[:2] for row in rows] == [
        [f"| {name}", output] for name in names for output in ("depth", "confidence", "normal")
    ]
    assert all(float(row[2]) == 0.0 for row in rows), "the stand-in agrees with itself"
    assert opened == [("torch", "fp32"), ("onnxruntime", "fp32")]  # the reference, then the backend


def test_doctor_names_unreadable_sidecars_and_goes_on(monkeypatch, tmp_path):
    monkeypatch.setenv("METRIC3D_ENGINE_DIR", str(tmp_path))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "spec.json").write_text('{"spec": "x"}')
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in ("broken.json", "list.json", "spec.json"):
        assert f"  {name}: unreadable sidecar" in result.output


def test_bench_checks_the_json_folder_before_measuring(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    result = CliRunner().invoke(main, ["bench", "--json", str(tmp_path / "file" / "bench.json")])
    assert result.exit_code == 1 and "choose another path with --json" in result.output, result.output


def test_infer_refuses_a_result_file_that_is_one_of_its_images(tmp_path, monkeypatch):
    _photo(tmp_path / "a.png", 20, 30)
    _photo(tmp_path / "a_depth.png", 20, 30)  # where a.png's millimetre PNG would go
    before = (tmp_path / "a_depth.png").read_bytes()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a model load would fail on the missing checkpoint instead
    monkeypatch.setenv("METRIC3D_CHECKPOINT_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["infer", str(tmp_path), "--fx", "100", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"Error: --out {tmp_path / 'a_depth.png'} is the input {tmp_path / 'a_depth.png'}" in result.output
    assert (tmp_path / "a_depth.png").read_bytes() == before


def test_bench_json_dash_is_standard_output_and_the_table_goes_to_stderr(tmp_path, monkeypatch):
    from trt_metric3d import benchmark

    def fails(request, log_level):
        raise RuntimeError("no such backend here")

    monkeypatch.setattr(benchmark, "measure_in_own_process", fails)
    result = CliRunner().invoke(main, ["bench", "--backend", "torch", "--json", "-"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"backend": "torch", "error": "RuntimeError: no such backend here"}]
    assert "torch: failed" in result.stderr
    assert not (tmp_path / "-").exists()
