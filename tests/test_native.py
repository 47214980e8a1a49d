"""The native C++ runtime (native/) held against the Python package: canvases, post-processing, result
names, engines shared through one cache both ways, and the CLI's answers to bad input.

ctest runs this file with METRIC3D_TRT and METRIC3D_REFERENCE_TOOL naming a build's `metric3d-trt` and
`metric3d_reference_tool` (`.ci/run` builds them after the Python suite); without them it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from support.reference import REPO_ROOT, reference_dir
from trt_metric3d.engine.cache import EngineCache, EngineSpec
from trt_metric3d.io import read_image
from trt_metric3d.model import Metric3DOutput
from trt_metric3d.processing import fit_canvas, preprocess
from trt_metric3d.results import result_names
from trt_metric3d.runtime.postprocess import metric_scales, to_metric_images

CLI = os.environ.get("METRIC3D_TRT")
TOOL = os.environ.get("METRIC3D_REFERENCE_TOOL")
pytestmark = pytest.mark.skipif(
    not (CLI and TOOL),
    reason="no native build named (METRIC3D_TRT, METRIC3D_REFERENCE_TOOL): ctest runs this",
)
PHOTOS = sorted((REPO_ROOT / "calibration").glob("*.jpg"))


def run(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"metric3d-trt {args} failed:\n{done.stderr}")
    return done


def refused(*args: object, says: str) -> str:
    """The CLI's answer to bad input: a non-zero exit and one line on stderr that contains `says`."""
    done = run(*args, check=False)
    assert done.returncode != 0, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "terminate" not in done.stderr
    return lines[0]


def infer_refused(image: Path, engine: Path, out: Path, *options: object, says: str) -> str:
    return refused("infer", image, "--engine", engine, "--fx", 500, *options, "--out", out, says=says)


def cpp_canvas(image_file: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"{image_file.stem}_canvas.npy"
    run("canvas", image_file, "-o", out)
    return np.load(out)


# --- pre-processing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in PHOTOS] + ["coffee.png", "synth_289x451.png"])
def test_canvas_of_image_files_is_bit_exact(name, tmp_path):
    """JPEG through libjpeg-turbo, PNG through stb: the pixels cv2 decodes, then cv2's fixed-point resize."""
    path = REPO_ROOT / "calibration" / name if name.endswith(".jpg") else reference_dir() / name
    expected, _ = preprocess(read_image(path))
    np.testing.assert_array_equal(cpp_canvas(path, tmp_path), expected.numpy())


ODD_SIZES = [
    (1064, 616),
    (1, 50),
    (50, 1),
    (1, 1),
    (7, 1000),
    (3000, 17),
    (1232, 2128),
    (616, 1064),
    (333, 777),
]


@pytest.mark.parametrize("size", ODD_SIZES, ids=[f"{h}x{w}" for h, w in ODD_SIZES])
def test_canvas_of_odd_sizes_is_bit_exact(size, tmp_path):
    """Portrait, 1xN, Nx1, one pixel, cv2's exact-2x area shortcut (1232x2128), the canvas itself."""
    image = np.random.default_rng(size[0] * 7 + size[1]).integers(0, 256, (*size, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    expected, _ = preprocess(image)
    np.testing.assert_array_equal(cpp_canvas(tmp_path / "image.npy", tmp_path), expected.numpy())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_as_cv2_applies_it(orientation, tmp_path):
    from PIL import Image

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8))
    exif = photo.getexif()
    exif[0x0112] = orientation
    photo.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    expected, _ = preprocess(read_image(tmp_path / "photo.jpg"))
    np.testing.assert_array_equal(cpp_canvas(tmp_path / "photo.jpg", tmp_path), expected.numpy())


def test_canvas_refuses_to_overwrite_its_input(tmp_path):
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((4, 4, 3), np.uint8))
    refused("canvas", image, "-o", image, says="is the input image")
    assert np.load(image).shape == (4, 4, 3)


# --- post-processing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["coffee", "synth_289x451"])
def test_postprocessing_matches_the_package(image, tmp_path):
    """The reference's raw network outputs, put on a canvas whose padding is noise (so reading it would
    show), through the C++ reference and through trt_metric3d's post-processing.

    Not bit-exact: torch's CPU bilinear kernel is built with fused multiply-adds where the compiler chose
    them; measured: depth and confidence within 1.6e-6 relative, normals within 2e-6 absolute."""
    raw = np.load(reference_dir() / f"vit-small_{image}_model.npz")
    height, width = raw["input_u8"].shape[:2]
    canvas = fit_canvas(height, width)
    (top, _, left, _), (h, w) = canvas.pad, canvas.resized_hw
    rng = np.random.default_rng(0)
    planes = {}
    for key, channels in (("depth", 1), ("confidence", 1), ("normal_final", 4), ("normal_iter1", 3)):
        plane = rng.uniform(-50, 50, (channels, 616, 1064)).astype(np.float32)
        plane[:, top : top + h, left : left + w] = raw[key]
        planes[key] = plane
    np.save(tmp_path / "depth.npy", planes["depth"][0])
    np.save(tmp_path / "confidence.npy", planes["confidence"][0])
    np.save(tmp_path / "normal.npy", planes["normal_final"])
    fx, fy = 1000.0, 1300.0
    args = [
        "post",
        *(tmp_path / f"{k}.npy" for k in ("depth", "confidence", "normal")),
        height,
        width,
        fx,
        fy,
    ]
    subprocess.run([TOOL, *map(str, args), tmp_path / "cpp_"], check=True)

    names = ("depth", "confidence", "normal_final", "normal_iter1")
    out = Metric3DOutput(*(torch.from_numpy(planes[k])[None] for k in names))
    python = to_metric_images(out, [canvas], metric_scales([canvas], fx, fy))[0]
    for key, rtol, atol in (("depth", 1e-5, 0), ("confidence", 1e-5, 1e-6), ("normal", 0, 1e-5)):
        got, expected = np.load(tmp_path / f"cpp_{key}.npy"), python[key].numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=key)


# --- result names ---------------------------------------------------------------------------------------


def test_result_names_are_the_python_clis(tmp_path):
    files = [
        "a/photo.png",
        "a/photo.jpg",
        "b/photo.jpg",
        "b/other.jpg",
        "c/d/x.png",
        "e/d/x.png",
        "A/PHOTO.JPG",
    ]
    paths = []
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        paths.append(path)
    done = subprocess.run([TOOL, "names", *map(str, paths)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == result_names(paths)


# --- one engine cache for both --------------------------------------------------------------------------


@cache
def native_version() -> tuple[str, str]:
    """(flavour, version) of the TensorRT the native build links."""
    flavour, version = run("--version").stdout.split()
    return flavour, version


@pytest.fixture(scope="module")
def rtx():
    """The Python TensorRT-RTX, which must be the version the native build links (pyproject pins it)."""
    trt = pytest.importorskip("tensorrt_rtx")
    flavour, version = native_version()
    if flavour != "tensorrt_rtx":
        pytest.skip(f"the native build is the {flavour} flavour")
    assert trt.__version__ == version, (
        f"Python has tensorrt_rtx {trt.__version__}, metric3d-trt links {version}"
    )
    return trt


def test_the_python_cache_takes_the_cpp_engine_and_the_cpp_loader_takes_pythons(
    rtx, small_checkpoint, small_onnx, tmp_path, monkeypatch
):
    """The C++ builder writes the very engine name and sidecar the Python cache looks for (Python does not
    rebuild it); an engine Python built is accepted by the C++ loader up to the missing GPU."""
    from trt_metric3d.engine import pipeline

    fp16 = small_onnx[1]
    built = Path(
        run(
            "build",
            fp16,
            "--engines",
            tmp_path / "cpp",
            "--checkpoint",
            small_checkpoint,
            "--compute-capability",
            "SM86",
        ).stdout.strip()
    )
    sidecar = json.loads(built.with_suffix(".json").read_text())
    assert sidecar["spec"]["trt_version"] == rtx.__version__, "native build and Python use other TensorRT-RTX"

    def python_build(engines: Path) -> Path:
        return pipeline.build(
            "vit-small",
            small_checkpoint,
            flavour="tensorrt_rtx",
            compute_capability="SM86",
            engine_dir=engines,
            export_dir=fp16.parent,
            progress=lambda *a: None,
        )

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the Python cache rebuilt the C++ engine")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "build_engine", no_rebuild)
        found = python_build(tmp_path / "cpp")
    assert found == built
    # byte for byte the sidecar Python writes for that record
    assert built.with_suffix(".json").read_text() == json.dumps(sidecar, indent=1)

    python_built = python_build(tmp_path / "py")
    assert python_built.name == built.name
    info = run("info", python_built).stdout
    assert "plan matches sidecar: yes" in info and "magic vtrt" in info
    assert "runs here:          no: no GPU" in info or "runs here:          yes" in info
    if not torch.cuda.is_available():
        image = tmp_path / "image.npy"
        np.save(image, np.zeros((30, 40, 3), np.uint8))
        infer_refused(image, python_built, tmp_path / "out", says="no GPU")
        assert not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_cpp_builder_builds_the_int8_qdq_graph_for_sm89(rtx, small_checkpoint, small_onnx, tmp_path, request):
    """TensorRT-RTX 1.6.1 (the headers CI has) rejects this graph in Myelin, from Python too (1.7.1
    builds it): expected to fail there, and flagged as soon as it passes."""
    from trt_metric3d.engine import pipeline

    if native_version()[1].startswith("1.6."):
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="TensorRT-RTX 1.6.1 Myelin rejects INT8 Q/DQ")
        )
    _, mixed, _, key = pipeline.quantized_onnx(
        "vit-small", "int8", small_checkpoint, small_onnx[0].parent, canvas_hw=(112, 168)
    )
    profile = ["--min", "1x112x112", "--opt", "1x112x168", "--max", "1x168x224"]  # as test_quantize's
    args = ["--engines", tmp_path, "--checkpoint", small_checkpoint, "--compute-capability", "SM89", *profile]
    built = Path(run("build", mixed, *args).stdout.strip())
    spec = json.loads(built.with_suffix(".json").read_text())["spec"]
    assert (spec["precision"], spec["quantization"], spec["compute_capability"]) == ("int8", key, "89")
    assert built.stat().st_size > 1_000_000


# --- bad input ------------------------------------------------------------------------------------------


def stand_in_engine(folder: Path, **changes) -> Path:
    """An engine file that is no real plan, with the sidecar the Python cache writes for it."""
    flavour, version = native_version()
    fields = dict(
        backbone="vit-small",
        checkpoint_sha256="0" * 64,
        precision="fp16",
        profile={"min": [1, 616, 616], "opt": [1, 616, 1064], "max": [4, 1064, 1064]},
        flavour=flavour,
        trt_version=version,
        gpu_name="aot",
        compute_capability="86",
    )
    fields.update(changes)
    return EngineCache(folder).get_or_build(EngineSpec(**fields), lambda: b"vtrt not a real plan")


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "image.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return path


def test_a_missing_or_damaged_plan_is_refused(tmp_path, image_file):
    engine, out = stand_in_engine(tmp_path), tmp_path / "o"
    infer_refused(image_file, tmp_path / "none.engine", out, says="not found")
    engine.write_bytes(b"vtrt damaged")
    infer_refused(image_file, engine, out, says="does not match its sidecar")
    engine.with_suffix(".json").write_text("{half")
    infer_refused(image_file, engine, out, says="not valid JSON")
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    ("changes", "options", "says"),
    [
        ({"trt_version": "0.9.0.1"}, [], "was built with "),
        ({"flavour": "other", "trt_version": "10.16.0.72"}, [], "was built with other 10.16.0.72"),
        ({"backbone": "vit-large"}, ["--backbone", "vit-small"], "is a vit-large engine, not vit-small"),
        (
            {"profile": {"min": [1, 616, 616], "opt": [1, 616, 616], "max": [1, 616, 616]}},
            [],
            "does not hold",
        ),
    ],
    ids=["version", "flavour", "backbone", "profile"],
)
def test_a_sidecar_of_another_engine_is_refused(changes, options, says, tmp_path, image_file):
    engine = stand_in_engine(tmp_path, **changes)
    line = infer_refused(image_file, engine, tmp_path / "o", *options, says=says)
    assert "rebuild" in line or "drop --backbone" in line


@pytest.mark.parametrize(
    ("focal", "says"),
    [
        (["--fx", 0], "fx must be a finite"),
        (["--fx", "nan"], "fx must be a finite"),
        (["--fx", -3], "fx must be"),
        (["--fx", "abc"], "is not a number"),
        (["--fx", 500, "--fy", 0], "fy must be"),
        ([], "missing --fx"),
    ],
)
def test_bad_focal_lengths_are_refused_before_the_engine(focal, says, tmp_path, image_file):
    args = ["infer", image_file, "--engine", tmp_path / "any.engine", *focal, "--out", tmp_path / "o"]
    refused(*args, says=says)


def test_bad_images_and_outputs_are_refused(tmp_path, image_file):
    engine, out = stand_in_engine(tmp_path), tmp_path / "o"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    blank = tmp_path / "blank.npy"
    np.save(blank, np.zeros((0, 5, 3), np.uint8))
    for bad, says in (
        (empty, "empty file"),
        (text, "not a readable image"),
        (blank, "image is empty"),
        (tmp_path / "gone.png", "no such file"),
    ):
        infer_refused(bad, engine, out, says=says)
    blocker = tmp_path / "file"
    blocker.write_text("")
    infer_refused(image_file, engine, blocker / "sub", says="cannot be written")
    refused("canvas", text, "-o", tmp_path / "c.npy", says="not a readable image")
    assert not (tmp_path / "c.npy").exists() and not list(out.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_without_a_gpu_infer_says_so_in_one_line(tmp_path, image_file):
    infer_refused(image_file, stand_in_engine(tmp_path), tmp_path / "o", says="no GPU")
    assert not list((tmp_path / "o").iterdir())


# --- on a GPU -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpp_engine_run_matches_the_python_tensorrt_backend(rtx, small_checkpoint, small_onnx, tmp_path):
    """Built here by the C++ builder, run by both: depth within 1e-3 relative."""
    from trt_metric3d import Metric3D

    built = run(
        "build", small_onnx[1], "--engines", tmp_path, "--checkpoint", small_checkpoint
    ).stdout.strip()
    images = [reference_dir() / "coffee.png", reference_dir() / "synth_289x451.png"]
    run("infer", *images, "--engine", built, "--fx", 1000, "--fy", 1100, "--out", tmp_path / "out")
    model = Metric3D(
        "vit-small",
        backend="tensorrt",
        device="cuda",
        checkpoint=str(small_checkpoint),
        engine_dir=tmp_path,
        export_dir=small_onnx[1].parent,
    )
    for image in images:
        expected = model.predict(read_image(image), fx=1000.0, fy=1100.0).depth
        got = np.load(tmp_path / "out" / f"{image.stem}_depth.npy")
        np.testing.assert_allclose(got, expected, rtol=1e-3)
