"""Export cache and build inputs: damaged exports, temp leftovers, missing extras, unwritable folders,
compute capability and workspace checks, all before any model is loaded or exported."""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from trt_metric3d.engine import builder, pipeline
from trt_metric3d.errors import InputError, MissingDependency, WorkspaceError
from trt_metric3d.export import stages, staging

pytest.importorskip("onnxscript")


def fail(what: str):
    def call(*args, **kwargs):
        pytest.fail(what)

    return call


def _writing(content: bytes):
    """An export step (`export_onnx`, `convert_fp16`) that saves `content`, the way the real steps save."""

    def step(_, path) -> Path:
        return staging.save_staged(Path(path), lambda staged: staged.write_bytes(content))

    return step


@pytest.fixture(scope="module")
def stand_in_onnx(small_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(FP32, FP16) as exported_onnx names and records them for the synthetic checkpoint, small files
    standing in for the graphs: the cache is under test here, not the graphs (the real ones are
    hundreds of MB to copy and hash per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "load_model", lambda *args: None)
        patch.setattr(stages, "export_onnx", _writing(b"the FP32 graph " * 1000))
        patch.setattr("trt_metric3d.export.fp16.convert_fp16", _writing(b"the FP16 graph " * 1000))
        fp32, fp16, _ = stages.exported_onnx("vit-small", small_checkpoint, tmp_path_factory.mktemp("export"))
    return fp32, fp16


def copy_of(exported: tuple[Path, Path], folder: Path) -> Path:
    """`folder` holding a copy of both ONNX of `exported` and their manifests, free to damage."""
    folder.mkdir()
    for onnx in exported:
        for path in (onnx, staging.manifest_path(onnx)):
            shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture
def export_dir(stand_in_onnx, tmp_path) -> Path:
    return copy_of(stand_in_onnx, tmp_path / "export")


@pytest.fixture
def exports(stand_in_onnx, monkeypatch) -> list[str]:
    """Names of the files exported (or converted) from now on; the work itself writes what
    `stand_in_onnx` holds, saved the way the real steps save it."""
    written: list[str] = []

    def copying(original: Path):
        def step(source, path) -> Path:
            written.append(Path(path).name)
            return _writing(original.read_bytes())(source, path)

        return step

    monkeypatch.setattr(stages, "load_model", lambda *args: None)
    monkeypatch.setattr(stages, "export_onnx", copying(stand_in_onnx[0]))
    monkeypatch.setattr("trt_metric3d.export.fp16.convert_fp16", copying(stand_in_onnx[1]))
    return written


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:1000]),
    "byte flipped": flip_a_byte,
    "deleted": Path.unlink,
    "manifest deleted": lambda p: staging.manifest_path(p).unlink(),
    "manifest not JSON": lambda p: staging.manifest_path(p).write_text("{"),
    "manifest a list": lambda p: staging.manifest_path(p).write_text("[1, 2]"),
    "manifest of another file": lambda p: staging.manifest_path(p).write_text(
        json.dumps({"files": {"other.onnx": {"size": 1, "sha256": "0"}}})
    ),
}


@pytest.mark.parametrize(
    "which, damage",
    [("fp16", damage) for damage in DAMAGES] + [("fp32", "truncated"), ("fp32", "manifest deleted")],
)
def test_damaged_export_is_exported_again(
    export_dir, exports, stand_in_onnx, small_checkpoint, caplog, damage, which
):
    damaged = export_dir / stand_in_onnx[which == "fp16"].name
    DAMAGES[damage](damaged)
    fp32, fp16, _ = stages.exported_onnx("vit-small", small_checkpoint, export_dir)
    assert exports == ([fp32.name, fp16.name] if which == "fp32" else [fp16.name])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(damaged) in warnings[0] and "exporting it again" in warnings[0]
    for repaired, original in zip((fp32, fp16), stand_in_onnx, strict=True):
        assert staging.damage(repaired) is None
        assert repaired.read_bytes() == original.read_bytes()
    stages.exported_onnx("vit-small", small_checkpoint, export_dir)
    assert len(exports) == (2 if which == "fp32" else 1), "a repaired export is used as it is"


def test_truncated_fp16_is_really_converted_again(small_onnx, small_checkpoint, tmp_path, monkeypatch):
    """The real graphs, and the real FP16 conversion."""
    onnx = pytest.importorskip("onnx")
    monkeypatch.setattr(stages, "export_onnx", fail("the FP32 ONNX is fine: no export needed"))
    export_dir = copy_of(small_onnx, tmp_path / "export")
    fp16 = export_dir / small_onnx[1].name
    fp16.write_bytes(fp16.read_bytes()[: fp16.stat().st_size // 2])
    stages.exported_onnx("vit-small", small_checkpoint, export_dir)
    onnx.checker.check_model(str(fp16))
    assert fp16.stat().st_size == small_onnx[1].stat().st_size and staging.damage(fp16) is None


def test_leftovers_of_interrupted_exports_are_removed(
    export_dir, exports, stand_in_onnx, small_checkpoint, caplog
):
    fp32, fp16 = (export_dir / path.name for path in stand_in_onnx)
    staged = export_dir / f".{fp32.name}.k3j9x0_q"  # a staging folder of a killed export
    staged.mkdir()
    (staged / fp32.name).write_bytes(b"\0" * 1000)
    leftovers = [
        staged,
        export_dir / f".{fp16.name}.a1b2c3d4",
        export_dir / f".{fp16.name}.manifest.json.zz.tmp",
    ]
    for path in leftovers[1:]:
        path.write_bytes(b"half")
    others = [export_dir / f".{fp32.name}x.abcdefgh", export_dir / ".vit-large-0123.onnx.abcdefgh"]
    for path in others:
        path.write_bytes(b"someone else's")
    stages.exported_onnx("vit-small", small_checkpoint, export_dir)
    assert exports == [], "the export itself is intact"
    assert not any(path.exists() for path in leftovers) and all(path.exists() for path in others)
    removed = [r.getMessage() for r in caplog.records if "interrupted write" in r.getMessage()]
    assert len(removed) == 3 and all(any(str(p) in line for line in removed) for p in leftovers)


@pytest.mark.parametrize("module", ["onnx", "onnxscript"])
def test_export_without_the_onnx_extra_says_what_to_install(module, small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(stages, "load_model", fail("model loaded before the dependency check"))
    with pytest.raises(
        MissingDependency, match=rf'^{module} is not installed: pip install "trt-metric3d\[onnx\]"$'
    ):
        stages.exported_onnx("vit-small", small_checkpoint, tmp_path)


def test_onnxruntime_backend_without_onnxruntime_says_what_to_install(monkeypatch):
    import torch

    from trt_metric3d.runtime.onnxruntime_backend import onnxruntime_providers

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        MissingDependency, match=r'onnxruntime is not installed: pip install "trt-metric3d\[onnx\]"'
    ):
        onnxruntime_providers(torch.device("cpu"))


def test_missing_tensorrt_is_a_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency, match="pip install tensorrt-rtx") as raised:
        builder.import_tensorrt("tensorrt")
    assert isinstance(raised.value, builder.TensorRTNotInstalled) and isinstance(raised.value, ImportError)


@pytest.fixture
def regular_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def test_export_folder_under_a_file_is_reported_before_any_work(regular_file, small_checkpoint, monkeypatch):
    monkeypatch.setattr(stages, "load_model", fail("model loaded for an unwritable folder"))
    folder = regular_file / "export"
    with pytest.raises(WorkspaceError, match="--out") as raised:
        stages.exported_onnx("vit-small", small_checkpoint, folder)
    message = str(raised.value)
    assert str(folder) in message and "METRIC3D_EXPORT_DIR" in message and "\n" not in message


def test_engine_folder_under_a_file_is_reported_before_the_export(regular_file, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setattr(pipeline, "exported_onnx", fail("exported for an unwritable engine folder"))
    folder = regular_file / "engines"
    with pytest.raises(WorkspaceError, match="--engines") as raised:
        pipeline.build("vit-small", flavour="tensorrt_rtx", compute_capability="SM86", engine_dir=folder)
    assert str(folder) in str(raised.value) and "METRIC3D_ENGINE_DIR" in str(raised.value)


@pytest.mark.skipif(getattr(os, "geteuid", lambda: 1)() == 0, reason="root writes to read-only folders")
def test_read_only_export_folder_is_reported(tmp_path, small_checkpoint):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    with pytest.raises(WorkspaceError, match="--out"):
        stages.exported_onnx("vit-small", small_checkpoint, folder)


def test_unknown_compute_capability_lists_the_valid_ones_before_the_export(monkeypatch):
    trt = pytest.importorskip("tensorrt_rtx")
    monkeypatch.setattr(pipeline, "exported_onnx", fail("exported for a bad option"))
    with pytest.raises(InputError, match="'banana'") as raised:
        pipeline.build("vit-small", flavour="tensorrt_rtx", compute_capability="banana")
    valid = [name for name in trt.ComputeCapability.__members__ if name.startswith("SM")]
    assert "SM86" in valid and f"choose one of {', '.join(valid)}" in str(raised.value)
    assert "NONE" not in str(raised.value) and "CURRENT" not in str(raised.value)


@pytest.mark.parametrize("spelling", ["SM86", "sm86", "86", "8.6", " Sm86 "])
def test_compute_capability_spellings(spelling):
    trt = pytest.importorskip("tensorrt_rtx")
    assert pipeline.target_gpu(trt, spelling) == ("aot", "86")
    assert builder.compute_capability_target(trt, spelling) == "SM86"


@pytest.mark.parametrize("workspace", [0, -1.0, float("nan")])
def test_workspace_must_be_positive(workspace, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setattr(pipeline, "exported_onnx", fail("exported for a bad option"))
    with pytest.raises(InputError, match="--workspace"):
        pipeline.build(
            "vit-small", flavour="tensorrt_rtx", compute_capability="SM86", workspace_gib=workspace
        )
    with pytest.raises(InputError, match="--workspace"):
        builder.build_engine(
            tmp_path / "never-read.onnx",
            builder.ShapeProfile(),
            flavour="tensorrt_rtx",
            workspace_gib=workspace,
        )
