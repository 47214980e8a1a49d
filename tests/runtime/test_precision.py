"""bf16 and the precision table: the CPU probe, the default per CPU (faked), bf16's agreement with fp32,
and the one-line refusals of combinations a backend or device cannot run."""

import logging
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from support.fake_cpus import AVX2_ONLY, SAPPHIRE_RAPIDS, ZEN4
from support.reference import load_arrays
from trt_metric3d import Metric3D
from trt_metric3d.cli import main
from trt_metric3d.errors import InputError
from trt_metric3d.runtime import cpu, precision
from trt_metric3d.runtime.torch_backend import TorchBackend


@pytest.fixture
def fake_cpu(monkeypatch):
    def use(features: cpu.CpuFeatures) -> None:
        monkeypatch.setattr(cpu, "cpu_features", lambda: features)

    return use


def test_cpuinfo_is_read_from_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
        "\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert cpu._cpuinfo(info) == (
        "Intel(R) Xeon(R) Platinum 8480+",
        frozenset({"fpu", "avx2", "amx_bf16", "avx512_bf16"}),
    )
    assert cpu._cpuinfo(tmp_path / "absent") == ("", frozenset())


def test_bf16_units_best_first_and_capped_by_onednn():
    assert SAPPHIRE_RAPIDS.bf16_units == "AMX-BF16"
    assert ZEN4.bf16_units == "AVX512-BF16"
    assert AVX2_ONLY.bf16_units is None
    capped = {
        cap: cpu.CpuFeatures("x", SAPPHIRE_RAPIDS.flags, "AVX512", cap).bf16_units
        for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI", "avx512_core_bf16", "AVX512_CORE_AMX", "ALL")
    }
    assert capped == {
        "AVX2": None,
        "avx512_core": None,
        "AVX512_CORE_VNNI": None,
        "avx512_core_bf16": "AMX-BF16",  # the cap names the ISA, the flags say which unit is there
        "AVX512_CORE_AMX": "AMX-BF16",
        "ALL": "AMX-BF16",
    }
    assert (
        SAPPHIRE_RAPIDS.summary()
        == "Intel Xeon: AVX-512, AMX-BF16, AVX512-BF16, AMX-INT8, AVX512-VNNI (torch: AVX512)"
    )
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in cpu.CpuFeatures("x", AVX2_ONLY.flags, "AVX2", "AVX2").summary()


@pytest.mark.parametrize(
    ("features", "backend", "expected"),
    [
        (SAPPHIRE_RAPIDS, "auto", "bf16"),
        (SAPPHIRE_RAPIDS, "torch", "bf16"),
        (ZEN4, "auto", "bf16"),
        (SAPPHIRE_RAPIDS, "onnxruntime", "fp32"),  # bf16 is PyTorch's and OpenVINO's
        (ZEN4, "openvino", "bf16"),
        (AVX2_ONLY, "openvino", "fp32"),
        (AVX2_ONLY, "auto", "fp32"),
        (AVX2_ONLY, "torch", "fp32"),
    ],
)
def test_default_cpu_precision_follows_the_units(fake_cpu, features, backend, expected):
    fake_cpu(features)
    assert precision.default_precision(torch.device("cpu"), backend) == expected
    assert precision.default_precision(torch.device("cuda"), backend) == "fp16"


def test_runtime_says_why_it_runs_bf16(fake_cpu, small_model, caplog):
    fake_cpu(SAPPHIRE_RAPIDS)
    with caplog.at_level(logging.INFO, logger="trt_metric3d"):
        runtime = Metric3D(model=small_model, device="cpu")
    assert runtime.precision == "bf16"
    assert "bf16 on the CPU's AMX-BF16 units" in caplog.text
    fake_cpu(AVX2_ONLY)
    assert Metric3D(model=small_model, device="cpu").precision == "fp32"


def test_bf16_asked_of_a_cpu_without_units_runs_with_a_warning(fake_cpu, small_model, caplog):
    fake_cpu(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="trt_metric3d"):
        runtime = Metric3D(model=small_model, device="cpu", precision="bf16")
    assert runtime.precision == "bf16"
    assert "bf16 is emulated and slower than fp32" in caplog.text


# Measured on this canvas (coffee, synthetic weights): depth AbsRel 0.26 %, normals 0.18 degrees mean.
BF16_DEPTH_ABSREL = 0.005
BF16_NORMAL_DEGREES = 1.0


def test_bf16_agrees_with_fp32_on_a_small_canvas(small_model):
    image = load_arrays("vit-small", "coffee", "model")[0]["input_u8"]
    pixels = torch.from_numpy(np.ascontiguousarray(image[:280:2, :448:2])).permute(2, 0, 1)[None].float()
    fp32 = TorchBackend(small_model, torch.device("cpu"), "fp32")(pixels)
    bf16 = TorchBackend(small_model, torch.device("cpu"), "bf16")(pixels)
    assert all(t.dtype == torch.float32 for t in bf16)
    absrel = ((bf16.depth - fp32.depth).abs() / fp32.depth).mean().item()
    cosine = (bf16.normal[:, :3] * fp32.normal[:, :3]).sum(1).clamp(-1, 1)
    degrees = torch.rad2deg(torch.arccos(cosine)).mean().item()
    assert 0 < absrel <= BF16_DEPTH_ABSREL, absrel  # > 0: bf16 really ran
    assert degrees <= BF16_NORMAL_DEGREES, degrees


def test_bf16_on_a_gpu_older_than_ampere_is_refused(monkeypatch, small_model):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(
        InputError, match=r"bf16 needs an Ampere or newer GPU .*Tesla T4 is 7.5: use precision='fp16'"
    ):
        Metric3D(model=small_model, device="cuda", precision="bf16")


@pytest.mark.parametrize(("backend", "device"), [("onnxruntime", "cpu"), ("tensorrt", "cuda")])
def test_bf16_on_another_backend_names_torch(monkeypatch, backend, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # TensorRT's device, so that the
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # precision is the reason given
    with pytest.raises(
        InputError, match=f"precision 'bf16' runs on the openvino and torch backends, not {backend}: "
    ):
        Metric3D("vit-small", backend, "bf16", device)


@pytest.mark.parametrize(
    ("features", "default", "int8"),
    [
        (ZEN4, "bf16 on AVX512-BF16 (torch backend", "kernels on AVX512-VNNI"),
        (SAPPHIRE_RAPIDS, "bf16 on AMX-BF16 (torch backend", "kernels on AMX-INT8"),
        (AVX2_ONLY, "fp32 (torch backend", "kernels in AVX2 / AVX-512 integer arithmetic"),
    ],
)
def test_doctor_says_which_cpu_paths_run(fake_cpu, monkeypatch, features, default, int8):
    fake_cpu(features)
    monkeypatch.setitem(sys.modules, "openvino", None)  # with it: tests/test_openvino.py
    result = CliRunner().invoke(main, ["doctor"])
    assert f"CPU precision by default: {default}" in result.output
    assert f"CPU int8 (onnxruntime backend): the integer graph, its {int8}" in result.output


def test_every_precision_has_a_backend():
    assert set(precision.PRECISIONS) == {p for ps in precision.BACKEND_PRECISIONS.values() for p in ps}


@pytest.mark.parametrize("command", ["bench", "check", "infer", "video", "ray", "serve"])
def test_the_commands_offer_bf16(command):
    assert "bf16" in CliRunner().invoke(main, [command, "--help"]).output


def test_infer_refuses_a_precision_torch_cannot_run(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    args = ["infer", str(image), "--backend", "torch", "--precision", "int8", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: precision 'int8' runs on the tensorrt and onnxruntime backends, not torch: choose one of "
        "those, or precision fp32 / fp16 / bf16"
    )


def test_check_refuses_bf16_on_onnxruntime_before_any_work():
    result = CliRunner().invoke(main, ["check", "--backend", "onnxruntime", "--precision", "bf16"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: precision 'bf16' runs on the openvino and torch backends, not onnxruntime: choose one "
        "of those, or precision fp32 / fp16 / int8 / fp8"
    ]


def test_nodes_offer_bf16_and_auto_follows_the_units(fake_cpu):
    from trt_metric3d.comfyui import nodes

    assert "bf16" in nodes.PRECISIONS  # the precision input's options (comfyui/extension.py)
    cpu_device = torch.device("cpu")
    fake_cpu(SAPPHIRE_RAPIDS)
    assert nodes.resolve_precision(cpu_device, "auto") == "bf16"
    assert nodes.resolve_precision(torch.device("cuda"), "auto") == "fp16"
    fake_cpu(AVX2_ONLY)
    assert nodes.resolve_precision(cpu_device, "auto") == "fp32"
    assert nodes.resolve_precision(cpu_device, "bf16") == "bf16"
    assert nodes.resolve_precision(cpu_device, "fp16") == "fp32"


def test_auto_opens_only_backends_that_run_the_precision(monkeypatch, small_model):
    tried = []

    def open_backend(self, name, compile, cuda_graph, build_progress):
        tried.append(name)
        return TorchBackend(small_model, torch.device("cpu"), "fp32")

    monkeypatch.setattr(Metric3D, "_open", open_backend)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    Metric3D("vit-small", device="cuda", precision="bf16")
    Metric3D("vit-small", device="cpu", precision="int8")
    Metric3D("vit-small", device="cuda", precision="int8")
    assert tried == ["torch", "onnxruntime", "tensorrt"]
