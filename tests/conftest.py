import shutil
from pathlib import Path

import pytest
import torch

from support.reference import REPO_ROOT, synthetic_state_dict
from support.stand_in_backends import STAND_IN_FOLDER, load_stand_in_networks
from trt_metric3d.model import build_model


class RootAsFolder:
    """Collect the repository root as a plain folder, not as a test package.

    The root `__init__.py` is ComfyUI's entry point (a clone in custom_nodes/ is imported as a
    package). As a package, pytest would import it on its own, which fails in a clone whose folder
    name is not a Python identifier (`git clone` makes `trt-metric3d`). It is a plugin, registered
    below, because pytest asks the root's parent folder's hooks how to collect the root.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        return pytest.Dir.from_parent(parent, path=path) if path == REPO_ROOT else None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RootAsFolder(), "trt-metric3d-root-as-folder")


@pytest.fixture(scope="session", autouse=True)
def cpu_without_bf16_units():
    """Every test sees the same default precision, fp32, on whatever CPU runs it: oneDNN is capped
    below its bf16 units as a user would cap it (ONEDNN_MAX_CPU_ISA, inherited by the processes tests
    start). Tests of the bf16 default fake the CPU themselves (test_precision.py)."""
    from trt_metric3d.runtime import cpu

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
        cpu.cpu_features.cache_clear()
        yield
    cpu.cpu_features.cache_clear()


@pytest.fixture(scope="session")
def small_state_dict() -> dict:
    """vit-small synthetic weights (seed 1), as torch tensors."""
    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict("vit-small").items()}


@pytest.fixture(scope="session")
def small_model(small_state_dict) -> torch.nn.Module:
    model = build_model("vit-small")
    model.load_state_dict(small_state_dict, strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, small_state_dict) -> Path:
    """The synthetic vit-small weights saved as an official checkpoint file."""
    path = tmp_path_factory.mktemp("checkpoints") / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": small_state_dict}, path)
    return path


@pytest.fixture(scope="session")
def stand_in_checkpoint(small_checkpoint, tmp_path_factory) -> Path:
    """The synthetic checkpoint in a `STAND_IN_FOLDER` folder: processes that install
    `install_marked_stand_ins` (Ray's workers, benchmark processes) run a stand-in network for it."""
    path = tmp_path_factory.mktemp("checkpoints") / STAND_IN_FOLDER / small_checkpoint.name
    path.parent.mkdir()
    shutil.copy(small_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def small_onnx(small_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(FP32, FP16) ONNX of the synthetic vit-small, exported once per test session."""
    pytest.importorskip("onnxscript")
    from trt_metric3d.export import stages

    fp32, fp16, _ = stages.exported_onnx("vit-small", small_checkpoint, tmp_path_factory.mktemp("export"))
    return fp32, fp16


@pytest.fixture
def stand_in_network(monkeypatch) -> None:
    """Checkpoints load into a `StandInNetwork` (`load_stand_in_networks`): for plumbing tests of code
    that opens its own runtime, as the command line does."""
    from trt_metric3d import checkpoint

    load_stand_in_networks(monkeypatch, checkpoint)
