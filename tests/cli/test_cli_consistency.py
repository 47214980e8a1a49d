"""The command line is quiet and consistent: the same runtime options everywhere, Ctrl-C ends every
command the same way, percentages read as percentages, and its start-up loads no heavy module.

Plumbing tests: a stand-in Metric3D (no network) records how a command opened it."""

import contextlib
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from support.reference import REPO_ROOT
from trt_metric3d import runtime
from trt_metric3d.choices import BACKENDS, PRECISIONS
from trt_metric3d.cli import main
from trt_metric3d.logs import percent
from trt_metric3d.runtime.prediction import Prediction

RUNTIME_OPTIONS = ("backbone", "backend", "precision", "device", "checkpoint")
RUNNING_COMMANDS = ("infer", "video", "ray", "serve", "check", "bench")


class StandIn:
    """Metric3D without a network: depth 2 m everywhere; records each opening."""

    opened: list[tuple] = []
    interrupt = False

    def __init__(
        self, backbone="vit-small", backend="auto", precision=None, device=None, checkpoint=None, **_
    ):
        StandIn.opened.append((backbone, backend, precision, device, checkpoint))
        self.backbone, self.backend = backbone, "torch" if backend == "auto" else backend
        self.precision, self.device = precision or "fp32", device or "cpu"

    @classmethod
    def from_settings(cls, settings, **_):  # as Metric3D.from_settings: the command line opens it so
        return cls(**settings.keywords())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def predict(self, image: np.ndarray, fx: float, fy: float | None = None) -> Prediction:
        if StandIn.interrupt:
            raise KeyboardInterrupt
        depth = np.full(image.shape[:2], 2.0, np.float32)
        normal = np.dstack([np.zeros_like(depth), np.zeros_like(depth), -np.ones_like(depth)])
        return Prediction(depth, np.zeros_like(depth), normal, depth, None, fx, fx if fy is None else fy)


@pytest.fixture
def stand_in(monkeypatch):
    StandIn.opened, StandIn.interrupt = [], False
    monkeypatch.setattr(runtime, "Metric3D", StandIn)
    return StandIn


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((30, 45, 3), 128, np.uint8))
    return path


def _option(command: str, name: str):
    (param,) = [p for p in main.commands[command].params if p.name in (name, f"{name}s")]
    return param


@pytest.mark.parametrize("command", RUNNING_COMMANDS)
def test_every_command_that_runs_the_model_has_the_same_runtime_options(command):
    reference = {name: _option("video", name) for name in RUNTIME_OPTIONS}
    for name in RUNTIME_OPTIONS:
        option = _option(command, name)
        assert option.opts == reference[name].opts, (command, name)
        assert getattr(option.type, "choices", None) == getattr(reference[name].type, "choices", None)
        if name != "backend":  # check and bench: below
            assert option.default == reference[name].default, (command, name)
            assert option.help == reference[name].help, (command, name)
    assert list(_option(command, "backend").type.choices) == list(BACKENDS)
    assert list(_option(command, "precision").type.choices) == list(PRECISIONS)
    assert _option(command, "device").default is None  # the best device here, not the CPU
    backend = _option(command, "backend")
    # check compares a backend with PyTorch, so by default another one; bench compares several
    expected = {"check": "onnxruntime", "bench": ("auto",)}.get(command, "auto")
    assert backend.default == expected and backend.multiple == (command == "bench")


def test_infer_opens_the_model_as_asked_and_on_the_best_device_by_default(stand_in, photo, tmp_path):
    args = ["infer", str(photo), "--fx", "100", "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(main, args).exit_code == 0
    asked = [*args, "--backend", "onnxruntime", "--precision", "fp32", "--device", "cpu"]
    result = CliRunner().invoke(main, asked)
    assert result.exit_code == 0, result.output
    assert stand_in.opened == [
        ("vit-small", "auto", None, None, None),
        ("vit-small", "onnxruntime", "fp32", "cpu", None),
    ]


@pytest.mark.parametrize("stride", [None, 1, 3])
def test_infer_ply_takes_every_nth_pixel_as_video_does(stand_in, photo, tmp_path, stride):
    plyfile = pytest.importorskip("plyfile")
    args = ["infer", str(photo), "--fx", "100", "--ply", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args + ([] if stride is None else ["--ply-stride", str(stride)]))
    assert result.exit_code == 0, result.output
    step = _option("video", "ply_stride").default if stride is None else stride
    vertices = plyfile.PlyData.read(str(tmp_path / "out" / "photo.ply"))["vertex"]
    assert len(vertices) == math.ceil(30 / step) * math.ceil(45 / step)


def _interrupted_ray_job(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command", ["infer", "ray"])
def test_ctrl_c_ends_every_command_with_status_130_and_one_line(
    stand_in, photo, tmp_path, monkeypatch, command
):
    from trt_metric3d import ray, raycluster

    stand_in.interrupt = True
    monkeypatch.setattr(raycluster, "import_ray", lambda: None)
    monkeypatch.setattr(raycluster, "check_address", lambda address: None)
    monkeypatch.setattr(raycluster, "ray_cluster", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(ray, "run_depth_job", _interrupted_ray_job)
    args = [command, str(photo), "--fx", "100", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == "interrupted (Ctrl-C)"
    assert "Aborted" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (1.0, "100 %"),
        (0.812, "81.2 %"),
        (0.5, "50 %"),
        (0.004, "0.4 %"),
        (1e-5, "< 0.1 %"),
        (0.99999, "> 99.9 %"),
    ],
)
def test_percentages_read_as_percentages(fraction, text):
    assert percent(fraction) == text


def test_the_clipping_note_gives_a_percentage(stand_in, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(StandIn, "predict", lambda self, image, fx, fy=None: _far(image))
    result = CliRunner().invoke(main, ["infer", str(photo), "--fx", "100", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "note: 1350 pixel(s) (100 %) lie beyond" in result.output


def _far(image: np.ndarray) -> Prediction:
    depth = np.full(image.shape[:2], 80.0, np.float32)  # beyond the 65.535 m of a uint16 millimetre PNG
    normal = np.dstack([depth * 0, depth * 0, depth * 0 - 1])
    return Prediction(depth, depth, normal, depth, None, fx=100.0, fy=100.0)


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sys.modules), file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stderr.split())


@pytest.mark.parametrize("args", [None, ["--help"], ["infer", "--help"], ["serve", "--help"]])
def test_the_command_line_starts_without_heavy_modules(args):
    """Start-up time: benchmarks/cli_startup.py (torch alone takes over a second to import)."""
    code = "import trt_metric3d.cli"
    if args is not None:
        code = f"from trt_metric3d.cli import main\nmain({args!r}, standalone_mode=False)"
    heavy = {"torch", "cv2", "numpy", "onnx", "onnxruntime", "ray", "modelopt", "PIL"}
    assert not heavy & _modules_after(code)


def test_the_readme_commands_outputs_are_ignored_by_git():
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = _option("infer", "out_dir").default
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out}/photo_depth.npy"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, f"add {out}/ to .gitignore"
