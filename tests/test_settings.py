"""RuntimeSettings: one frozen value for which Metric3D to open, through the command line, Ray, Triton's
config parameters and the benchmark."""

import dataclasses
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from trt_metric3d.cli import main
from trt_metric3d.settings import RuntimeSettings


def test_settings_are_frozen_and_keep_paths_as_text():
    settings = RuntimeSettings("vit-large", checkpoint=Path("/w/v.pth"), engine_dir=Path("e"))
    assert settings.checkpoint == "/w/v.pth" and settings.engine_dir == "e"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.backend = "torch"
    assert pickle.loads(pickle.dumps(settings)) == settings  # what Ray's actors and bench's processes get


@pytest.mark.parametrize(
    "settings",
    [
        RuntimeSettings(),
        RuntimeSettings("vit-giant2", "tensorrt", "int8", "cuda:1", "/w.pth", True, True, "/e", "/x", "/c"),
    ],
)
def test_the_strings_of_triton_parameters_give_the_settings_back(settings):
    strings = settings.to_strings()
    assert all(isinstance(value, str) for value in strings.values())
    assert RuntimeSettings.from_strings(strings) == settings


def test_unset_settings_are_empty_strings_and_flags_read_as_words():
    strings = RuntimeSettings(backend="torch", cuda_graph=True).to_strings()
    assert strings["precision"] == strings["checkpoint"] == "" and strings["backend"] == "torch"
    assert (strings["compile"], strings["cuda_graph"]) == ("false", "true")
    assert RuntimeSettings.from_strings({"backbone": "vit-large"}) == RuntimeSettings("vit-large")


def test_metric3d_opens_what_the_settings_say(monkeypatch):
    from support.stand_in_backends import RedDepth
    from trt_metric3d.errors import InputError
    from trt_metric3d.runtime import Metric3D

    compiled = []

    def torch_backend(self, model, compile):
        compiled.append(compile)
        return RedDepth()

    monkeypatch.setattr(Metric3D, "_torch", torch_backend)
    settings = RuntimeSettings("vit-large", "torch", "fp32", "cpu", compile=True)
    with Metric3D.from_settings(settings) as m:
        assert (m.backbone, m.device.type, m.precision, compiled) == ("vit-large", "cpu", "fp32", [True])
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        Metric3D.from_settings(RuntimeSettings(backend="nope"))


def test_the_command_line_builds_one_settings_object_from_its_options(monkeypatch, tmp_path):
    from trt_metric3d import runtime

    opened = []

    class StandIn:
        @staticmethod
        def from_settings(settings):
            opened.append(settings)
            raise KeyboardInterrupt  # enough: how it was opened is what this test reads

    monkeypatch.setattr(runtime, "Metric3D", StandIn)
    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    args = ["infer", str(photo), "--fx", "9", "--backend", "torch", "--precision", "bf16", "--device", "cpu"]
    assert CliRunner().invoke(main, args).exit_code == 130
    assert opened == [RuntimeSettings("vit-small", "torch", "bf16", "cpu")]


def test_serves_model_opens_the_settings_its_config_parameters_carry(monkeypatch):
    """What `serve` writes into the model's config, the model inside Triton reads back whole."""
    import importlib
    import json
    import sys
    import types

    from trt_metric3d.runtime import Metric3D

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("pb_utils"))
    model = importlib.import_module("trt_metric3d.serving.triton_models")
    opened = []
    monkeypatch.setattr(Metric3D, "from_settings", staticmethod(lambda settings: opened.append(settings)))
    settings = RuntimeSettings("vit-large", "onnxruntime", "fp16", "cpu", "/w.pth", cuda_graph=True)
    parameters = {key: {"string_value": value} for key, value in settings.to_strings().items()}
    model.Metric3DModel().initialize({"model_config": json.dumps({"parameters": parameters})})
    assert opened == [settings]
