"""Engine cache: keys, sidecars, rebuild decisions, damaged files, concurrent and interrupted builds."""

import dataclasses
import json
import multiprocessing
import time

import pytest
from click.testing import CliRunner

from trt_metric3d.cli import main
from trt_metric3d.engine.builder import ShapeProfile
from trt_metric3d.engine.cache import EngineCache, EngineSpec, read_sidecar
from trt_metric3d.errors import WorkspaceError

SPEC = EngineSpec(
    backbone="vit-small",
    checkpoint_sha256="ab" * 32,
    precision="fp16",
    profile=ShapeProfile().as_dict(),
    flavour="tensorrt",
    trt_version="10.13.0",
    gpu_name="NVIDIA GeForce RTX 4090",
    compute_capability="89",
)


def counting_builder(calls: list, data: bytes = b"engine-bytes"):
    def build() -> bytes:
        calls.append(1)
        return data

    return build


def test_key_and_name_carry_every_field():
    engine, sidecar = EngineCache("/c").paths(SPEC)
    assert engine.name.startswith("vit-small-fp16-tensorrt10_13_0-nvidia-geforce-rtx-4090-sm89-")
    assert sidecar == engine.with_suffix(".json")
    for field, value in [
        ("trt_version", "11.0.0"),
        ("gpu_name", "H100"),
        ("checkpoint_sha256", "cd" * 32),
        ("profile", ShapeProfile(max=(8, 1064, 1064)).as_dict()),
        ("flavour", "tensorrt_rtx"),
    ]:
        assert dataclasses.replace(SPEC, **{field: value}).key() != SPEC.key(), field


def test_build_once_then_hit(tmp_path):
    cache, calls = EngineCache(tmp_path), []
    engine = cache.get_or_build(SPEC, counting_builder(calls))
    assert engine.read_bytes() == b"engine-bytes" and calls == [1]
    record = json.loads(engine.with_suffix(".json").read_text())
    assert (
        record["spec"]["gpu_name"] == "NVIDIA GeForce RTX 4090"
        and record["spec"]["compute_capability"] == "89"
    )
    assert cache.get_or_build(SPEC, counting_builder(calls)) == engine and calls == [1]


def test_sidecar_for_another_configuration_triggers_rebuild(tmp_path, caplog):
    cache, calls = EngineCache(tmp_path), []
    engine = cache.get_or_build(SPEC, counting_builder(calls))
    sidecar = engine.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["spec"]["trt_version"] = "10.0.0"
    sidecar.write_text(json.dumps(record))
    cache.get_or_build(SPEC, counting_builder(calls))
    assert calls == [1, 1] and "another configuration: rebuilding" in caplog.text


@pytest.mark.parametrize("damage", ["engine", "sidecar"])
def test_damaged_files_trigger_rebuild(tmp_path, caplog, damage):
    cache, calls = EngineCache(tmp_path), []
    engine = cache.get_or_build(SPEC, counting_builder(calls))
    target = engine if damage == "engine" else engine.with_suffix(".json")
    target.write_bytes(target.read_bytes()[:5])
    assert cache.get_or_build(SPEC, counting_builder(calls)).read_bytes() == b"engine-bytes"
    assert calls == [1, 1] and "rebuilding" in caplog.text


UNEXPECTED_SIDECARS = {
    "a list": b"[1, 2]",
    "null": b"null",
    "spec not an object": b'{"spec": "x"}',
    "no engine hash": json.dumps({"spec": SPEC.as_json()}).encode(),
    "engine hash not text": json.dumps({"spec": SPEC.as_json(), "engine_sha256": 5}).encode(),
    "not text": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("content", UNEXPECTED_SIDECARS)
def test_unexpected_sidecar_triggers_rebuild(tmp_path, caplog, content):
    cache, calls = EngineCache(tmp_path), []
    sidecar = cache.get_or_build(SPEC, counting_builder(calls)).with_suffix(".json")
    sidecar.write_bytes(UNEXPECTED_SIDECARS[content])
    assert read_sidecar(sidecar) is None
    cache.get_or_build(SPEC, counting_builder(calls))
    assert calls == [1, 1] and f"engine sidecar {sidecar} is unreadable" in caplog.text
    assert read_sidecar(sidecar) == SPEC.as_json()


def test_read_sidecar_of_a_missing_file_or_a_folder(tmp_path):
    assert read_sidecar(tmp_path / "missing.json") is None
    assert read_sidecar(tmp_path) is None


def test_leftovers_of_interrupted_builds_are_removed(tmp_path, caplog):
    cache, calls = EngineCache(tmp_path), []
    engine, sidecar = cache.paths(SPEC)
    leftovers = [tmp_path / f".{engine.name}.u8z_3kq1.tmp", tmp_path / f".{sidecar.name}.0a9b8c7d.tmp"]
    others = [tmp_path / f".{engine.name}.json.0a9b8c7d.tmp", tmp_path / ".other.engine.0a9b8c7d.tmp"]
    for path in leftovers + others:
        path.write_bytes(b"half an engine")
    cache.get_or_build(SPEC, counting_builder(calls))
    assert calls == [1] and not any(p.exists() for p in leftovers) and all(p.exists() for p in others)
    assert all(f"removing {p}, left by an interrupted write" in caplog.text for p in leftovers)


def test_engine_folder_under_a_file_is_reported(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "engines"
    with pytest.raises(WorkspaceError, match="--engines or METRIC3D_ENGINE_DIR") as raised:
        EngineCache(folder).get_or_build(SPEC, lambda: pytest.fail("built into an unwritable folder"))
    assert str(folder) in str(raised.value)


def test_engine_that_fails_to_deserialise_is_rebuilt(tmp_path, caplog):
    cache, calls = EngineCache(tmp_path), []
    cache.get_or_build(SPEC, counting_builder(calls, b"old"))
    engine = cache.get_or_build(
        SPEC, counting_builder(calls, b"new"), loads=lambda path: path.read_bytes() != b"old"
    )
    assert engine.read_bytes() == b"new" and calls == [1, 1]
    assert "failed to deserialise: rebuilding" in caplog.text
    assert cache.get_or_build(SPEC, counting_builder(calls), loads=lambda path: True) == engine and calls == [
        1,
        1,
    ]


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def failing() -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build(SPEC, failing)
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def _build_in_process(folder: str, log: str) -> str:
    def slow_build() -> bytes:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        return b"x" * 1_000_000

    return str(EngineCache(folder).get_or_build(SPEC, slow_build))


def test_concurrent_builders_build_once(tmp_path):
    log = tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        paths = pool.starmap(_build_in_process, [(str(tmp_path / "engines"), str(log))] * 2)
    assert paths[0] == paths[1]
    assert log.read_text() == "built\n"
    assert (tmp_path / "engines" / paths[0].rsplit("/", 1)[-1]).stat().st_size == 1_000_000


def test_profile_validation():
    with pytest.raises(ValueError, match="multiples of 28"):
        ShapeProfile(min=(1, 600, 616))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(min=(1, 1064, 1064), opt=(1, 616, 1064))


def test_build_without_tensorrt_names_the_install_command(small_checkpoint):
    pytest.importorskip("tensorrt_rtx")  # only `tensorrt` is missing here, so asking for it fails
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    result = CliRunner().invoke(
        main, ["build", "--flavour", "tensorrt", "--checkpoint", str(small_checkpoint)]
    )
    assert result.exit_code != 0
    assert "pip install tensorrt-cu12" in result.output and "pip install tensorrt-rtx" in result.output
