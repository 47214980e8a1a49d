"""`triton-repo`: every config.pbtxt parsed by protobuf as Triton's ModelConfig, the ensemble's wiring,
the refusals, the CLI without TensorRT, the pre / post-processing against predict, and the ensemble
answering in PyTriton's real tritonserver (a Python-backend double in place of the TensorRT plan)."""

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from support.tritonserver_support import (
    FX,
    FY,
    IMAGES,
    assert_like_predict,
    predict_each,
    send_together,
    started,
)
from trt_metric3d.checkpoint import load_model
from trt_metric3d.cli import main
from trt_metric3d.engine.builder import ShapeProfile
from trt_metric3d.engine.cache import EngineCache, EngineSpec
from trt_metric3d.errors import InputError, WorkspaceError
from trt_metric3d.export import INPUT_NAME, OUTPUT_NAMES
from trt_metric3d.output_files import OVERWRITE_FIX
from trt_metric3d.runtime.torch_backend import TorchBackend
from trt_metric3d.serving import ensemble_steps, write_repository
from trt_metric3d.serving.client import Metric3DClient
from trt_metric3d.serving.model_config import string_parameters, to_pbtxt
from trt_metric3d.serving.triton_repo import ENGINE, POSTPROCESS, PREPROCESS
from trt_metric3d.serving.tritonserver_process import TritonServer, free_ports

try:  # Triton's own ModelConfig message, from tritonclient (the serve extra)
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
except ImportError:
    model_config_pb2 = None
needs_tritonclient = pytest.mark.skipif(
    model_config_pb2 is None, reason='needs pip install "trt-metric3d[serve]"'
)

PROFILE = ShapeProfile(min=(1, 616, 616), opt=(2, 616, 1064), max=(4, 1064, 1064))
INSTANCES, QUEUE_DELAY_US = 2, 1500


def cached_engine(folder: Path, profile: ShapeProfile = PROFILE, flavour: str = "tensorrt") -> Path:
    """A stand-in engine file with the sidecar the engine cache writes for a real build."""
    spec = EngineSpec(
        "vit-small", "ab" * 32, "fp16", profile.as_dict(), flavour, "10.13.0", "NVIDIA H100", "90"
    )
    return EngineCache(folder).get_or_build(spec, lambda: b"serialized engine")


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("triton")
    return write_repository(work / "repo", cached_engine(work / "engines"), INSTANCES, QUEUE_DELAY_US)


@pytest.fixture(scope="module")
def configs(repository) -> dict:
    found = {path.parent.name: parse(path) for path in repository.glob("*/config.pbtxt")}
    assert set(found) == {"metric3d", PREPROCESS, ENGINE, POSTPROCESS}
    return found


def tensors(entries) -> dict:
    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in entries}


@needs_tritonclient
def test_the_plan_config_is_triton_tensorrt_with_dynamic_batching(configs, repository):
    plan = configs[ENGINE]
    assert plan.platform == "tensorrt_plan" and plan.max_batch_size == PROFILE.max[0]
    assert tensors(plan.input) == {INPUT_NAME: ("TYPE_FP32", [3, -1, -1])}
    channels = {"depth": 1, "confidence": 1, "normal": 4, "normal_iter1": 3}
    assert tensors(plan.output) == {name: ("TYPE_FP32", [channels[name], -1, -1]) for name in OUTPUT_NAMES}
    assert list(plan.dynamic_batching.preferred_batch_size) == [2, 4]
    assert plan.dynamic_batching.max_queue_delay_microseconds == QUEUE_DELAY_US
    (group,) = plan.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == INSTANCES
    assert (repository / ENGINE / "1" / "model.plan").read_bytes() == b"serialized engine"


@needs_tritonclient
def test_the_python_steps_and_the_ensemble_take_the_request(configs):
    for name in (PREPROCESS, POSTPROCESS):
        step = configs[name]
        assert step.backend == "python" and step.max_batch_size == PROFILE.max[0]
        (group,) = step.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == INSTANCES
    ensemble = configs["metric3d"]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == PROFILE.max[0]
    request = {"IMAGE": ("TYPE_UINT8", [-1, -1, 3]), "FX": ("TYPE_FP32", [1]), "FY": ("TYPE_FP32", [1])}
    answer = {
        "DEPTH": ("TYPE_FP32", [-1, -1]),
        "CONFIDENCE": ("TYPE_FP32", [-1, -1]),
        "NORMAL": ("TYPE_FP32", [-1, -1, 3]),
    }
    assert tensors(ensemble.input) == tensors(configs[PREPROCESS].input) == request
    assert tensors(ensemble.output) == tensors(configs[POSTPROCESS].output) == answer


@needs_tritonclient
def test_ensemble_steps_feed_each_model_what_its_config_declares(configs):
    """Every step maps all its model's inputs from tensors that exist (request inputs or earlier steps'
    outputs) with the same type and dims, and the ensemble's outputs all come out of some step."""
    ensemble = configs["metric3d"]
    available = tensors(ensemble.input)  # ensemble tensor -> (type, dims)
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [PREPROCESS, ENGINE, POSTPROCESS]
    for step in steps:
        model = configs[step.model_name]
        inputs, outputs = tensors(model.input), tensors(model.output)
        assert set(step.input_map) == set(inputs), step.model_name
        for model_input, ensemble_tensor in step.input_map.items():
            assert available[ensemble_tensor] == inputs[model_input], (step.model_name, model_input)
        assert set(step.output_map) <= set(outputs), step.model_name
        for model_output, ensemble_tensor in step.output_map.items():
            assert ensemble_tensor not in available, f"{ensemble_tensor} is produced twice"
            available[ensemble_tensor] = outputs[model_output]
    for name, spec in tensors(ensemble.output).items():
        assert available[name] == spec


class _StandInBackendUtils:
    """What Triton's Python-backend stub provides as `triton_python_backend_utils`, for running a step
    model here: requests hold named arrays, responses hold tensors or an error."""

    class TritonError:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message, code):
            self.message, self.code = message, code

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, tensors=(), error=None):
            self.tensors, self.error = {t.name: t.array for t in tensors}, error

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return _StandInBackendUtils.Tensor(name, request[name])


def _step_model(repository: Path, name: str, monkeypatch):
    """The class that the repository's model.py of step `name` imports as TritonPythonModel, imported here."""
    import sys

    source = (repository / name / "1" / "model.py").read_text()
    ((module, model),) = re.findall(r"^from (\S+) import (\w+) as TritonPythonModel\b", source, re.MULTILINE)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _StandInBackendUtils)
    if module in sys.modules:  # imported again, with the stand-in utils
        monkeypatch.delitem(sys.modules, module)
    return getattr(importlib.import_module(module), model)()


def test_python_steps_run_the_package_models_on_requests(repository, monkeypatch):
    """Each step's model.py imports a model class of the package; run on requests, they answer what
    ensemble_steps computes, and a bad request gets its own error while the others are answered."""
    image = np.random.default_rng(5).integers(0, 256, (1, 40, 60, 3), dtype=np.uint8)
    good = {"IMAGE": image, "FX": np.array([[500.0]]), "FY": np.array([[500.0]])}
    bad = {**good, "FX": np.array([[-1.0]])}
    pre = _step_model(repository, PREPROCESS, monkeypatch)
    answered, refused = pre.execute([good, bad])
    expected = ensemble_steps.preprocess(good["IMAGE"], good["FX"], good["FY"])
    assert answered.error is None and answered.tensors.keys() == expected.keys()
    for key, array in expected.items():
        np.testing.assert_array_equal(answered.tensors[key], array)
    assert refused.error.code == "INVALID_ARG" and "fx[0]" in refused.error.message

    post = _step_model(repository, POSTPROCESS, monkeypatch)
    canvas_hw = expected[ensemble_steps.CANVAS].shape[-2:]
    plan_outputs = {  # what the plan would answer: 2.0 everywhere
        step: np.full((1, ensemble_steps.PLAN_CHANNELS[plan], *canvas_hw), 2.0, np.float32)
        for plan, step in ensemble_steps.CANVAS_OUTPUTS.items()
    }
    request = {**plan_outputs, "IMAGE_SIZE": expected["IMAGE_SIZE"], "SCALE": expected["SCALE"]}
    (response,) = post.execute([request])
    assert response.error is None
    assert response.tensors["DEPTH"].shape == (1, 40, 60)
    assert response.tensors["NORMAL"].shape == (1, 40, 60, 3)
    np.testing.assert_allclose(response.tensors["DEPTH"], 2.0 * expected["SCALE"][0, 0], rtol=1e-6)


def test_readme_names_the_engine_and_how_to_start(repository):
    readme = (repository / "README.txt").read_text()
    assert "TensorRT 10.13.0" in readme and "tritonserver --model-repository" in readme
    assert "pip install trt-metric3d" in readme


@needs_tritonclient
def test_parameter_strings_survive_the_protobuf_parser():
    odd = 'C:\\weights "v2"\\tab\there/café.pth'
    config = {"name": "m", "backend": "python", "parameters": string_parameters({"checkpoint": odd})}
    assert (
        text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())
        .parameters["checkpoint"]
        .string_value
        == odd
    )


def test_refuses_engines_triton_cannot_serve(tmp_path):
    rtx = cached_engine(tmp_path / "rtx", flavour="tensorrt_rtx")
    with pytest.raises(InputError, match="tensorrt_rtx engine.*not TensorRT-RTX"):
        write_repository(tmp_path / "out", rtx)
    small = cached_engine(
        tmp_path / "small", ShapeProfile(min=(1, 616, 616), opt=(1, 616, 616), max=(4, 616, 616))
    )
    with pytest.raises(InputError, match="width range 616..616 misses the 616x1064 canvas"):
        write_repository(tmp_path / "out", small)
    batched = cached_engine(tmp_path / "batched", ShapeProfile(min=(2, 616, 616), opt=(2, 616, 1064)))
    with pytest.raises(InputError, match="minimum batch is 2"):
        write_repository(tmp_path / "out", batched)
    assert not (tmp_path / "out").exists(), "nothing is written for a refused engine"


def test_cli_without_tensorrt_fails_in_one_line(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "new" / "repo"
    result = CliRunner().invoke(main, ["triton-repo", str(out), "--backbone", "vit-large"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: TensorRT is not installed; Triton's tensorrt_plan backend loads engines")
    assert "pip install tensorrt-cu12" in line
    assert not (tmp_path / "new").exists(), "a refused repository leaves no folder behind"


def test_an_out_folder_that_cannot_be_made_is_refused_before_anything(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(main, ["triton-repo", str(tmp_path / "file" / "repo")])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot write to the folder {tmp_path / 'file' / 'repo'} ({tmp_path / 'file'} is not a "
        f"folder): {OVERWRITE_FIX}\n"
    )


@pytest.fixture(scope="module")
def expected(small_checkpoint) -> list:
    return predict_each(small_checkpoint)


def test_pre_and_post_processing_around_the_network_is_predict(small_checkpoint, stand_in_network):
    expected = predict_each(small_checkpoint)
    cpu = torch.device("cpu")
    network = TorchBackend(load_model("vit-small", small_checkpoint, device=cpu), cpu, "fp32")
    image = IMAGES[1]
    fx, fy = np.array([[FX]], np.float32), np.array([[FY]], np.float32)
    steps = ensemble_steps.preprocess(image[None], fx, fy)
    out = network(torch.from_numpy(steps[ensemble_steps.CANVAS]))
    canvas = {
        ensemble_steps.CANVAS_OUTPUTS[name]: getattr(out, name).numpy()
        for name in ensemble_steps.CANVAS_OUTPUTS
    }
    answer = ensemble_steps.postprocess(canvas, steps[ensemble_steps.IMAGE_SIZE], steps[ensemble_steps.SCALE])
    for name, field in (("DEPTH", "depth"), ("CONFIDENCE", "confidence"), ("NORMAL", "normal")):
        np.testing.assert_array_equal(answer[name][0], getattr(expected[1], field))
    with pytest.raises(InputError, match=r"fy\[0\] must be a finite focal length"):
        ensemble_steps.preprocess(image[None], fx, np.array([[0.0]], np.float32))


def plan_double(repository: Path, checkpoint: Path) -> None:
    """The plan swapped for tests/support/triton_plan_double.py: its config is the generated one,
    on the Python backend and the CPU."""
    config = parse(repository / ENGINE / "config.pbtxt")
    config.platform, config.backend = "", "python"
    config.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    config.instance_group[0].count = 1
    config.parameters["checkpoint"].string_value = str(checkpoint)
    (repository / ENGINE / "config.pbtxt").write_text(text_format.MessageToString(config))
    (repository / ENGINE / "1" / "model.plan").unlink()
    shutil.copy(
        Path(__file__).parents[1] / "support" / "triton_plan_double.py",
        repository / ENGINE / "1" / "model.py",
    )


@needs_tritonclient
def test_the_ensemble_in_tritonserver_answers_like_predict(tmp_path, small_checkpoint, expected):
    """Concurrent requests of two image sizes batch in the plan's stand-in; a bad one among them is refused
    on its own. Tolerance: the double runs the network on a batch of canvases, predict on one."""
    repository = write_repository(tmp_path / "repo", cached_engine(tmp_path / "engines"), 1, 1_000_000)
    plan_double(repository, small_checkpoint)
    server = TritonServer(repository, free_ports(), "127.0.0.1", log_path=tmp_path / "tritonserver.log")
    requests = [(0, "http"), (1, "grpc"), (0, "grpc")]  # (image, protocol)

    def ask_badly() -> Exception:
        from tritonclient.utils import InferenceServerException

        with Metric3DClient(running.url("http")) as client, pytest.raises(InferenceServerException) as e:
            client.predict(IMAGES[1], fx=-1.0)
        return e.value

    with started(server) as running:
        answers, refusal = send_together(running, requests, ask_badly)
        with Metric3DClient(running.url("http")) as client:
            stats = client.client.get_inference_statistics(ENGINE)["model_stats"][0]
    assert len(refusal) == 1
    assert "fx[0] must be a finite focal length in pixels > 0" in refusal[0].message()
    assert refusal[0].status() == "400"
    assert int(stats["inference_count"]) == len(requests) > int(stats["execution_count"]), "no batching"
    assert_like_predict(answers, requests, expected)


def test_a_repository_folder_is_replaced_whole_only_with_overwrite(tmp_path):
    engine = cached_engine(tmp_path / "engines")
    out = tmp_path / "repo"
    write_repository(out, engine)
    (out / "metric3d_old_step").mkdir()  # what an earlier layout left
    with pytest.raises(WorkspaceError, match=r"repo is not empty \(6 entries: README.txt, metric3d, "):
        write_repository(out, engine)
    write_repository(out, engine, overwrite=True)
    assert not (out / "metric3d_old_step").exists() and (out / ENGINE / "1" / "model.plan").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_repository_that_fails_part_way_leaves_the_earlier_one(tmp_path, monkeypatch):
    from trt_metric3d.serving import triton_repo

    engine = cached_engine(tmp_path / "engines")
    out = write_repository(tmp_path / "repo", engine, instances=1)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def no_readme(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton_repo, "_readme", no_readme)
    with pytest.raises(OSError, match="No space left on device"):
        write_repository(out, engine, instances=2, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_repository_folder_holding_its_engine_is_refused(tmp_path):
    engine = cached_engine(tmp_path / "engines")
    with pytest.raises(InputError, match="holds the input .*engine"):
        write_repository(tmp_path / "engines", engine, overwrite=True)
    assert engine.is_file()


def test_cli_without_tensorrt_leaves_no_folder(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    result = CliRunner().invoke(main, ["triton-repo", str(tmp_path / "repo")])
    assert result.exit_code == 1 and "TensorRT is not installed" in result.output
    assert list(tmp_path.iterdir()) == []
