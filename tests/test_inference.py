"""predict_image: metric depth at the image size, faithful to the original's canonical depth."""

import numpy as np
import pytest
import torch

from reference import load_arrays
from trt_metric3d import predict_image


@pytest.fixture(scope="module")
def coffee():
    ref, meta = load_arrays("vit-small", "coffee", "model")
    return ref, meta


@pytest.fixture(scope="module")
def coffee_prediction(small_model, coffee):
    ref, _ = coffee
    return predict_image(small_model, ref["input_u8"], fx=1000.0, fy=1000.0)


def test_outputs_are_at_image_resolution(coffee_prediction, coffee):
    h, w = coffee[0]["input_u8"].shape[:2]
    p = coffee_prediction
    assert p.depth.shape == p.confidence.shape == p.canonical_depth.shape == (h, w)
    assert p.normal.shape == (h, w, 3)
    assert all(a.dtype == np.float32 for a in (p.depth, p.confidence, p.normal, p.canonical_depth))
    np.testing.assert_allclose(np.linalg.norm(p.normal, axis=2), 1.0, atol=1e-5)


def test_canonical_depth_is_the_originals_resized(coffee_prediction, coffee):
    ref, _ = coffee
    h, w = ref["input_u8"].shape[:2]
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(ref["depth"])[None], size=(h, w), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    rel = np.abs(coffee_prediction.canonical_depth - expected) / expected
    assert rel.max() <= 1e-4


def test_metric_depth_uses_focal_and_resize_scale(coffee_prediction):
    # coffee is 400 x 600: r = min(616/400, 1064/600) = 1.54; focal 1000 -> metres = canonical * 1.54
    p = coffee_prediction
    assert p.canvas.scale == pytest.approx(1.54)
    np.testing.assert_allclose(p.depth, p.canonical_depth * 1.54, rtol=1e-6)


def test_focal_length_scales_depth_linearly(small_model, coffee):
    image = coffee[0]["input_u8"]
    a = predict_image(small_model, image, fx=500.0, fy=700.0)  # focal 600
    np.testing.assert_allclose(a.depth, a.canonical_depth * 600 * 1.54 / 1000, rtol=1e-6)


@pytest.mark.parametrize(("fx", "fy"), [(0.0, 1000.0), (1000.0, -5.0), (float("nan"), 1000.0)])
def test_bad_focal_is_rejected(small_model, fx, fy):
    with pytest.raises(ValueError, match="focal length in pixels"):
        predict_image(small_model, np.zeros((32, 32, 3), np.uint8), fx=fx, fy=fy)
