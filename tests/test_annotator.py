"""controlnet_maps reproduces the ComfyUI nodes' depth and normal images from the network's outputs."""

import numpy as np
import pytest
import torch

from support.reference import IMAGES, load_arrays
from trt_metric3d.annotator import controlnet_maps
from trt_metric3d.model.output import Metric3DOutput
from trt_metric3d.processing import CANVAS_HW, normalize_canvas


class ReplayModel(torch.nn.Module):
    """Stands in for the network: returns the original's stored outputs placed back on the canvas.

    The padding is filled with values that would visibly change both images if it were not cropped.
    """

    def __init__(self, model_ref: dict[str, np.ndarray], pad: list[int]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device
        self.expected_input = normalize_canvas(model_ref["canvas_u8"])
        top, _, left, _ = pad
        h, w = model_ref["depth"].shape[-2:]
        generator = torch.Generator().manual_seed(0)

        def on_canvas(valid: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
            full = fill.clone()
            full[:, :, top : top + h, left : left + w] = torch.from_numpy(valid)[None]
            return full

        canvas = (1, 1, *CANVAS_HW)
        self.outputs = Metric3DOutput(
            depth=on_canvas(model_ref["depth"], torch.full(canvas, 500.0)),
            confidence=on_canvas(model_ref["confidence"], torch.zeros(canvas)),
            normal=on_canvas(model_ref["normal_final"], torch.randn((1, 4, *CANVAS_HW), generator=generator)),
            normal_iter1=on_canvas(
                model_ref["normal_iter1"], torch.randn((1, 3, *CANVAS_HW), generator=generator)
            ),
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> Metric3DOutput:
        self.calls += 1
        assert torch.is_inference_mode_enabled()
        assert x.device == self.anchor.device and x.dtype == torch.float32
        assert torch.equal(x, self.expected_input)
        return self.outputs


@pytest.fixture(scope="module", params=IMAGES)
def replay(request):
    model_ref, model_meta = load_arrays("vit-small", request.param, "model")
    node_ref, node_meta = load_arrays("vit-small", request.param, "node")
    model = ReplayModel(model_ref, model_meta["crop_top_bottom_left_right"])
    return model, model_ref["input_u8"], node_ref, node_meta


def _assert_within_one(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert ours.dtype == np.uint8 and ours.shape == expected.shape, (what, ours.shape, expected.shape)
    diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"{what}: max abs diff {diff.max()}, {np.count_nonzero(diff)} values differ"


def test_controlnet_maps_match_the_nodes(replay):
    model, image, node_ref, node_meta = replay
    model.calls = 0
    depth, normal = controlnet_maps(model, image, resolution=node_meta["resolution"])
    assert model.calls == 1, "one forward must feed both images"
    assert list(depth.shape[:2]) == node_meta["output_hw"]["depth"]
    assert list(normal.shape[:2]) == node_meta["output_hw"]["normal"]
    _assert_within_one(depth, node_ref["node_depth_u8"], "depth")
    _assert_within_one(normal, node_ref["node_normal_u8"], "normal")


def test_comfyui_float_image_gives_the_same_maps(replay):
    model, image, node_ref, node_meta = replay
    # The node's input: ComfyUI IMAGE values, u8 / 255 in float32.
    depth, normal = controlnet_maps(
        model, image.astype(np.float32) / 255.0, resolution=node_meta["resolution"]
    )
    _assert_within_one(depth, node_ref["node_depth_u8"], "depth")
    _assert_within_one(normal, node_ref["node_normal_u8"], "normal")


@pytest.mark.parametrize("resolution", [0, 32, 63, -1, 512.0, True])
def test_resolution_below_64_or_not_an_int_means_512(replay, resolution):
    model, image, node_ref, _ = replay
    depth, normal = controlnet_maps(model, image, resolution=resolution)
    assert min(depth.shape[:2]) == 512
    _assert_within_one(depth, node_ref["node_depth_u8"], "depth")
    _assert_within_one(normal, node_ref["node_normal_u8"], "normal")


def test_other_resolutions(replay):
    model, image, _, _ = replay
    for resolution in (64, np.int64(768)):
        depth, normal = controlnet_maps(model, image, resolution=resolution)
        assert min(depth.shape[:2]) == resolution
        assert depth.shape == normal.shape


@pytest.mark.parametrize("image", IMAGES)
def test_real_network_end_to_end_matches_the_nodes(small_model, image):
    """pre-process -> our network -> visualisation -> node resize, against the original nodes (±1)."""
    model_ref, _ = load_arrays("vit-small", image, "model")
    node_ref, _ = load_arrays("vit-small", image, "node")
    depth_image, normal_image = controlnet_maps(small_model, model_ref["input_u8"], resolution=512)
    for ours, expected in (
        (depth_image, node_ref["node_depth_u8"]),
        (normal_image, node_ref["node_normal_u8"]),
    ):
        assert ours.shape == expected.shape and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
        assert diff.max() <= 1, f"{np.count_nonzero(diff)} values differ, max {diff.max()}"
