"""The `trt-metric3d` command line on CPU with synthetic weights."""

import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from support.reference import reference_dir
from trt_metric3d.cli import main


@pytest.fixture(scope="module")
def infer_run(small_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("infer")
    image = cv2.resize(cv2.imread(str(reference_dir() / "coffee.png")), (150, 100))
    cv2.imwrite(str(work / "cup.png"), image)
    out = work / "out"
    args = ["infer", str(work), "--fx", "140", "--checkpoint", str(small_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    return result, out


def test_infer_writes_every_output(infer_run):
    result, out = infer_run
    assert result.exit_code == 0, result.output
    assert "wrote 1 of 1 result set(s)" in result.output
    line = f"[1/1] {out.parent / 'cup.png'} -> {out / 'cup'}_*  fx=140.0, fy=140.0 (--fx/--fy)"
    assert line in result.output
    assert result.output.count("vit-small") == 1, result.output  # the model is announced once
    depth = np.load(out / "cup_depth.npy")
    assert depth.shape == (100, 150) and depth.dtype == np.float32 and (depth > 0).all()
    millimetres = cv2.imread(str(out / "cup_depth.png"), cv2.IMREAD_UNCHANGED)
    assert millimetres.dtype == np.uint16
    np.testing.assert_array_equal(millimetres, np.clip(np.rint(depth * 1000), 0, 65535).astype(np.uint16))
    for name in ("cup_depth_preview.png", "cup_normal.png"):
        image = cv2.imread(str(out / name))
        assert image.shape == (100, 150, 3)
    assert not list(out.glob(".*tmp")), "temp files left behind"
    umask = os.umask(0)
    os.umask(umask)
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, f"results must get the usual file mode: {modes}"


def test_infer_bad_focal_is_a_clear_error(small_checkpoint, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    args = ["infer", str(tmp_path / "a.png"), "--fx", "-3", "--checkpoint", str(small_checkpoint)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "fx must be a finite focal length" in result.output
    assert "Traceback" not in result.output


def test_infer_unreadable_image_is_a_clear_error(small_checkpoint, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    args = ["infer", str(tmp_path / "broken.jpg"), "--fx", "500", "--checkpoint", str(small_checkpoint)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "not a readable image" in result.output


def test_infer_reads_the_focal_length_from_exif(small_checkpoint, tmp_path, stand_in_network):
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28  # FocalLengthIn35mmFilm: 28 mm
    Image.fromarray(np.full((60, 90, 3), 128, np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(tmp_path / "phone.jpg"),
            "--checkpoint",
            str(small_checkpoint),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = 28 * np.hypot(60, 90) / np.hypot(36, 24)
    assert f"fx={expected:.1f}, fy={expected:.1f} (EXIF 35 mm equivalent)" in result.output


def test_infer_without_focal_or_exif_asks_for_fx(small_checkpoint, tmp_path):
    cv2.imwrite(str(tmp_path / "plain.png"), np.zeros((20, 30, 3), np.uint8))
    result = CliRunner().invoke(
        main, ["infer", str(tmp_path / "plain.png"), "--checkpoint", str(small_checkpoint)]
    )
    assert result.exit_code != 0 and "has no EXIF focal length: pass --fx" in result.output


def test_bench_prints_a_table_and_writes_json(small_checkpoint, tmp_path, stand_in_network, monkeypatch):
    import json

    from trt_metric3d import benchmark

    # measured here, on the stand-in network (test_cli_first_hour.py measures in a process of its own)
    monkeypatch.setattr(benchmark, "measure_in_own_process", benchmark.measure)

    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--backend",
        "torch",
        "--size",
        "60x80",
        "--warmup",
        "0",
        "--runs",
        "2",
        "--device",
        "cpu",
        "--cuda-graph",  # a TensorRT option: accepted, and not claimed for the torch row
    ]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(small_checkpoint), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| vit-small | torch | fp32 | cpu | 1 | 60x80 |" in result.output
    (row,) = json.loads(out.read_text())
    assert row["runs"] == 2 and row["p90_ms"] >= row["p50_ms"] > 0 and row["images_per_s"] > 0


def test_bench_rejects_a_bad_size(small_checkpoint):
    result = CliRunner().invoke(main, ["bench", "--size", "big", "--checkpoint", str(small_checkpoint)])
    assert result.exit_code != 0 and "expected HxW" in result.output


def test_doctor_reports_backends_and_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("METRIC3D_ENGINE_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "torch " in result.output and "GPU:" in result.output
    assert "checkpoint vit-small:" in result.output and f"engines in {tmp_path}: 0" in result.output


def test_check_compares_a_backend_with_pytorch(small_checkpoint, tmp_path, stand_in_network):
    image = cv2.resize(cv2.imread(str(reference_dir() / "coffee.png")), (90, 60))
    cv2.imwrite(str(tmp_path / "small.png"), image)
    args = ["check", "--backend", "torch", "--precision", "fp32", "--device", "cpu"]
    result = CliRunner().invoke(
        main, [*args, "--checkpoint", str(small_checkpoint), "--images", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    # the torch backend against itself: zero error, every pixel within 1.25
    assert "| small | depth | 0.00e+00 | 1.0000 | 0.00e+00 |" in result.output


def test_check_compares_each_input_with_its_own_reference(small_checkpoint, tmp_path, stand_in_network):
    """Two files of one name in two folders, of different sizes: each against its own reference (not the
    other's, as when results were keyed by file name), its row named as infer names its results."""
    image = cv2.resize(cv2.imread(str(reference_dir() / "coffee.png")), (90, 60))
    for folder, picture in (("a", image), ("b", cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.png"), picture)
    args = ["check", "--backend", "torch", "--precision", "fp32", "--device", "cpu"]
    images = ["--images", str(tmp_path / "a" / "x.png"), "--images", str(tmp_path / "b" / "x.png")]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(small_checkpoint), *images])
    assert result.exit_code == 0, result.output
    for name in ("a_x_png", "b_x_png"):
        for output in ("depth", "confidence", "normal"):
            assert f"| {name} | {output} | 0.00e+00 | 1.0000 | 0.00e+00 |" in result.output


def test_infer_writes_a_point_cloud_with_ply(small_checkpoint, tmp_path, stand_in_network):
    plyfile = pytest.importorskip("plyfile")
    image = cv2.resize(cv2.imread(str(reference_dir() / "coffee.png")), (45, 30))
    cv2.imwrite(str(tmp_path / "cup.png"), image)
    out = tmp_path / "out"
    args = ["infer", str(tmp_path / "cup.png"), "--fx", "40", "--ply", "--ply-stride", "1", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(small_checkpoint)])
    assert result.exit_code == 0, result.output
    vertices = plyfile.PlyData.read(str(out / "cup.ply"))["vertex"]
    depth = np.load(out / "cup_depth.npy")
    assert len(vertices) == depth.size
    np.testing.assert_allclose(vertices["z"], depth.ravel())
    np.testing.assert_array_equal(vertices["red"], image[..., 2].ravel())  # cv2 wrote BGR


def test_a_run_whose_model_cannot_load_leaves_no_output_folder(tmp_path):
    """The output folders are checked before the model loads, and made with the first result."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    clip = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for _ in range(2):
        clip.write(np.zeros((24, 32, 3), np.uint8))
    clip.release()
    damaged = tmp_path / "metric_depth_vit_small_800k.pth"
    damaged.write_bytes(b"not a checkpoint")
    runs = {
        "infer": ["infer", str(tmp_path / "a.png"), "--fx", "500", "--out", str(tmp_path / "new" / "depth")],
        "video": ["video", str(tmp_path / "clip.avi"), "--out", str(tmp_path / "new" / "depth.mp4")],
    }
    for command, args in runs.items():
        result = CliRunner().invoke(main, [*args, "--checkpoint", str(damaged), "--backend", "torch"])
        assert result.exit_code == 1 and str(damaged) in result.output, (command, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "new").exists(), command
