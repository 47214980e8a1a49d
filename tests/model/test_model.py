"""The network reproduces the original implementation's outputs (fp32, CPU) and its parameter layout."""

import numpy as np
import pytest
import torch

from support.reference import IMAGES, key_entries, load_arrays
from trt_metric3d.model import BACKBONES, build_model
from trt_metric3d.model.vit import bicubic_matrix

MEAN = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
STD = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
TOLERANCE = 1e-4  # the original's own thread-count noise is ~1e-6 (reference README)


def canvas_input(canvas_u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(canvas_u8).permute(2, 0, 1).float()
    return ((x - MEAN) / STD)[None]


@pytest.fixture(scope="module", params=IMAGES)
def forward_vs_reference(request, small_model):
    ref, meta = load_arrays("vit-small", request.param, "model")
    with torch.inference_mode():
        out = small_model(canvas_input(ref["canvas_u8"]))
    t, b, left, r = meta["crop_top_bottom_left_right"]
    ours = {name: value[0, :, t : 616 - b, left : 1064 - r].numpy() for name, value in out._asdict().items()}
    return ours, ref


def test_depth_matches_reference(forward_vs_reference):
    ours, ref = forward_vs_reference
    assert ours["depth"].shape == ref["depth"].shape
    rel = np.abs(ours["depth"] - ref["depth"]) / np.abs(ref["depth"])
    assert rel.max() <= TOLERANCE


def test_confidence_matches_reference(forward_vs_reference):
    ours, ref = forward_vs_reference
    rel = np.abs(ours["confidence"] - ref["confidence"]) / np.abs(ref["confidence"])
    assert rel.max() <= TOLERANCE


@pytest.mark.parametrize(("name", "ref_name"), [("normal", "normal_final"), ("normal_iter1", "normal_iter1")])
def test_normals_match_reference(forward_vs_reference, name, ref_name):
    ours, ref = forward_vs_reference
    assert ours[name].shape == ref[ref_name].shape
    # Unit vectors: a component's error relative to the vector's length (1) is its absolute error;
    # element-wise ratios are meaningless where a component crosses zero.
    xyz, ref_xyz = ours[name][:3], ref[ref_name][:3]
    vector_rel = np.linalg.norm(xyz - ref_xyz, axis=0) / np.linalg.norm(ref_xyz, axis=0)
    assert vector_rel.max() <= TOLERANCE
    if name == "normal":  # kappa, a positive concentration
        kappa_rel = np.abs(ours[name][3] - ref[ref_name][3]) / np.abs(ref[ref_name][3])
        assert kappa_rel.max() <= TOLERANCE


@pytest.mark.parametrize("backbone", BACKBONES)
def test_parameter_layout_is_official(backbone):
    with torch.device("meta"):
        model = build_model(backbone)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {k: shape for k, shape, _ in key_entries(backbone)}
    assert ours == official


def test_batch_matches_single_images(small_model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 280)
    with torch.inference_mode():
        batch = small_model(x)
        singles = [small_model(x[i : i + 1]) for i in range(2)]
    for field, value in batch._asdict().items():
        assert value.shape[0] == 2 and value.shape[2:] == (224, 280)
        for i, single in enumerate(singles):
            torch.testing.assert_close(value[i : i + 1], getattr(single, field), rtol=1e-4, atol=1e-5)


def test_output_channels_and_ranges(small_model):
    x = torch.randn(1, 3, 168, 224)
    with torch.inference_mode():
        out = small_model(x)
    assert [t.shape[1] for t in out] == [1, 1, 4, 3]
    assert out.depth.min() >= 0.1 and out.depth.max() <= 200
    torch.testing.assert_close(out.normal_iter1.norm(dim=1), torch.ones(1, 168, 224), atol=1e-5, rtol=0)


def test_canvas_not_multiple_of_28_is_rejected(small_model):
    with pytest.raises(RuntimeError, match="multiples of 28"):
        small_model(torch.zeros(1, 3, 616, 1050))


def test_bicubic_matrix_matches_torch_interpolate():
    """The position-embedding resize equals F.interpolate with DINOv2's offset scale factors."""
    grid = torch.randn(1, 8, 37, 37)
    for out_h, out_w in [(44, 76), (76, 44), (12, 20)]:
        sh, sw = (out_h + 0.1) / 37, (out_w + 0.1) / 37
        expected = torch.nn.functional.interpolate(grid, scale_factor=(sh, sw), mode="bicubic")
        rows = bicubic_matrix(out_h, 37, sh, grid.device)
        cols = bicubic_matrix(out_w, 37, sw, grid.device)
        torch.testing.assert_close(rows @ grid[0] @ cols.T, expected[0], rtol=1e-5, atol=1e-5)
