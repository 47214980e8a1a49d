import pytest
import torch

from reference import synthetic_state_dict
from trt_metric3d.model import build_model


@pytest.fixture(scope="session")
def small_state_dict() -> dict:
    """vit-small synthetic weights (seed 1), as torch tensors."""
    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict("vit-small").items()}


@pytest.fixture(scope="session")
def small_model(small_state_dict) -> torch.nn.Module:
    model = build_model("vit-small")
    model.load_state_dict(small_state_dict, strict=True)
    return model.eval().requires_grad_(False)
