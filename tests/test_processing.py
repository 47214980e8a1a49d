"""Canonical-camera pre- and post-processing reproduces the original's canvas, input tensor and scale."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support.reference import IMAGES, load_arrays
from trt_metric3d.errors import InputError
from trt_metric3d.processing import (
    CANVAS_HW,
    MAX_PIXELS,
    MAX_SIDE,
    Canvas,
    make_canvas,
    metric_scale,
    normalize_canvas,
    preprocess,
    resize_to_image,
    to_metric_depth,
    unpad,
    validate_image,
)

MEAN = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
STD = torch.tensor([58.395, 57.12, 57.375])[:, None, None]


@pytest.fixture(scope="module", params=IMAGES)
def model_reference(request):
    return load_arrays("vit-small", request.param, "model")


def test_canvas_is_bit_exact(model_reference):
    ref, meta = model_reference
    canvas_u8, canvas = make_canvas(ref["input_u8"])
    assert canvas_u8.dtype == np.uint8
    assert np.array_equal(canvas_u8, ref["canvas_u8"])
    facts = meta["preprocess"]
    assert list(canvas.pad) == meta["crop_top_bottom_left_right"] == facts["pad_top_bottom_left_right"]
    assert list(canvas.resized_hw) == facts["canvas_valid_hw"]
    assert canvas.scale == facts["to_scale_ratio"]
    assert canvas.image_hw == ref["input_u8"].shape[:2]
    assert canvas.canvas_hw == CANVAS_HW
    top, bottom, left, right = canvas.pad
    border = np.concatenate(
        [canvas_u8[:, :left].reshape(-1, 3), canvas_u8[:, CANVAS_HW[1] - right :].reshape(-1, 3)]
    )
    assert (border == facts["canvas_pad_rgb_u8"][0]).all()


def test_input_tensor_is_the_readme_formula(model_reference):
    ref, meta = model_reference
    x, _ = preprocess(ref["input_u8"])
    expected = torch.div(torch.from_numpy(ref["canvas_u8"].transpose(2, 0, 1)).float() - MEAN, STD)[None]
    assert x.dtype == torch.float32 and x.shape == (1, 3, *CANVAS_HW)
    assert torch.equal(x, expected)
    assert x[0, :, 0, 0].tolist() == pytest.approx(meta["preprocess"]["canvas_pad_normalized"], abs=1e-6)


def test_float_comfyui_image_gives_the_same_input(model_reference):
    ref, _ = model_reference
    x_u8, _ = preprocess(ref["input_u8"])
    x_float, _ = preprocess(ref["input_u8"].astype(np.float32) / 255.0)
    assert torch.equal(x_u8, x_float)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_to_uint8_round_trip(dtype):
    values = np.arange(256, dtype=np.uint8)
    image = np.broadcast_to(values[None, :, None], (2, 256, 3))
    assert np.array_equal(validate_image(image.astype(dtype) / dtype(255)), image)


def test_non_contiguous_image_is_accepted():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    flipped = image[:, :, ::-1]
    assert np.array_equal(make_canvas(flipped)[0], make_canvas(flipped.copy())[0])


def test_unpad_and_resize_to_image(model_reference):
    ref, _ = model_reference
    _, canvas = make_canvas(ref["input_u8"])
    top, _, left, _ = canvas.pad
    h, w = canvas.resized_hw
    full = torch.full((1, 1, *CANVAS_HW), -7.0)
    full[..., top : top + h, left : left + w] = torch.from_numpy(ref["depth"])
    valid = unpad(full, canvas)
    assert torch.equal(valid[0], torch.from_numpy(ref["depth"]))
    resized = resize_to_image(valid, canvas)
    assert resized.shape == (1, 1, *canvas.image_hw)
    assert torch.equal(
        resized, F.interpolate(valid, size=canvas.image_hw, mode="bilinear", align_corners=False)
    )
    with pytest.raises(ValueError, match="spatial size"):
        unpad(full[..., 1:, :], canvas)


def test_metric_scale_for_a_known_focal():
    _, canvas = make_canvas(np.zeros((400, 600, 3), dtype=np.uint8))
    assert canvas.scale == 616 / 400
    assert metric_scale(canvas, 500.0, 500.0) == pytest.approx(500 * 1.54 / 1000, rel=1e-12)
    assert metric_scale(canvas, 400.0, 600.0) == pytest.approx(500 * 1.54 / 1000, rel=1e-12)


def test_metric_scale_inverts_label_scale_factor(model_reference):
    ref, meta = model_reference
    _, canvas = make_canvas(ref["input_u8"])
    label_scale_factor = meta["preprocess"]["label_scale_factor"]
    assert metric_scale(canvas, meta["fx"], meta["fy"]) == pytest.approx(1 / label_scale_factor, rel=1e-12)


def test_to_metric_depth(model_reference):
    ref, meta = model_reference
    _, canvas = make_canvas(ref["input_u8"])
    top, _, left, _ = canvas.pad
    h, w = canvas.resized_hw
    depth = torch.full((1, 1, *CANVAS_HW), 1e4)
    depth[..., top : top + h, left : left + w] = torch.from_numpy(ref["depth"])
    metres = to_metric_depth(depth, canvas, 600.0, 800.0)
    assert metres.shape == (1, 1, *canvas.image_hw)
    # The original's metric depth: canonical depth / label_scale_factor, label_scale_factor for fx, fy.
    label_scale_factor = (1000 / 700) / canvas.scale
    expected = F.interpolate(torch.from_numpy(ref["depth"])[None], size=canvas.image_hw, mode="bilinear")
    torch.testing.assert_close(metres, expected / label_scale_factor, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [0.0, -500.0, math.nan, math.inf])
@pytest.mark.parametrize("name", ["fx", "fy"])
def test_bad_focal_lengths(name, bad):
    _, canvas = make_canvas(np.zeros((40, 60, 3), dtype=np.uint8))
    focal = {"fx": 500.0, "fy": 500.0, name: bad}
    with pytest.raises(
        InputError, match=rf"{name} must be a finite focal length in pixels > 0, got"
    ) as error:
        metric_scale(canvas, **focal)
    assert repr(bad) in str(error.value)
    with pytest.raises(ValueError, match=name):
        to_metric_depth(torch.ones(1, 1, *CANVAS_HW), canvas, **focal)


def _broadcast(shape, dtype=np.uint8):
    """A huge image without the memory: every pixel is the same element."""
    return np.broadcast_to(np.zeros((1,) * len(shape), dtype=dtype), shape)


BAD_IMAGES = {
    "list": ([[[0, 0, 0]]], ["numpy array", "list", "np.asarray"]),
    "tensor": (torch.zeros(4, 4, 3), ["numpy array", "Tensor", ".numpy()"]),
    "grayscale 2-d": (np.zeros((4, 5), np.uint8), ["(H, W, 3)", "(4, 5)", "grayscale", "COLOR_GRAY2RGB"]),
    "grayscale 1 channel": (np.zeros((4, 5, 1), np.uint8), ["(4, 5, 1)", "grayscale"]),
    "rgba": (np.zeros((4, 5, 4), np.uint8), ["(4, 5, 4)", "RGBA", "[..., :3]"]),
    "batch": (np.zeros((1, 4, 5, 3), np.float32), ["(1, 4, 5, 3)", "batch", "images[0]"]),
    "1-d": (np.zeros(3, np.uint8), ["(3,)", "(H, W, 3)"]),
    "no rows": (np.zeros((0, 5, 3), np.uint8), ["empty", "(0, 5, 3)"]),
    "no columns": (np.zeros((5, 0, 3), np.uint8), ["empty", "(5, 0, 3)"]),
    "int64": (np.zeros((4, 5, 3), np.int64), ["int64", "uint8", "float32"]),
    "uint16": (np.zeros((4, 5, 3), np.uint16), ["uint16", "not supported"]),
    "float16": (np.zeros((4, 5, 3), np.float16), ["float16", "not supported"]),
    "bool": (np.zeros((4, 5, 3), bool), ["bool", "not supported"]),
    "above 1": (np.full((4, 5, 3), 255.0, np.float32), ["[0, 1]", "255", "divide by 255"]),
    "negative": (np.full((4, 5, 3), -0.5), ["[0, 1]", "-0.5", "clip"]),
    "nan": (np.full((4, 5, 3), np.nan, np.float32), ["NaN", "nan_to_num"]),
    "inf": (np.full((4, 5, 3), np.inf), ["inf", "nan_to_num"]),
    "long side": (
        _broadcast((MAX_SIDE + 1, 8, 3)),
        [f"{MAX_SIDE + 1}x8", "too large", str(MAX_SIDE), "downscale"],
    ),
    "megapixels": (_broadcast((10_001, 10_000, 3)), ["too large", f"{MAX_PIXELS // 1_000_000} megapixels"]),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_explained(case):
    image, expected_fragments = BAD_IMAGES[case]
    with pytest.raises(InputError) as error:
        preprocess(image)
    message = str(error.value)
    for fragment in expected_fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_extreme_aspect_ratio_is_explained():
    with pytest.raises(ValueError, match=r"1x20000 is too elongated.*0x10[0-9]{2}.*crop"):
        make_canvas(_broadcast((1, 20_000, 3)))


def test_canvas_is_frozen():
    _, canvas = make_canvas(np.zeros((40, 60, 3), dtype=np.uint8))
    assert isinstance(canvas, Canvas)
    with pytest.raises(AttributeError):
        canvas.scale = 1.0  # type: ignore[misc]


def test_normalize_canvas_pad_colour_is_not_zero():
    canvas_u8, _ = make_canvas(np.zeros((616, 100, 3), dtype=np.uint8))
    x = normalize_canvas(canvas_u8)
    assert x[0, :, 0, -1].tolist() == pytest.approx([0.0055655, -0.0049020, 0.0081917], abs=1e-7)
