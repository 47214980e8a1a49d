"""The depth / normal images and the resolution resize equal the original's, bit for bit."""

import cv2
import numpy as np
import pytest

from support.reference import IMAGES, load_arrays
from trt_metric3d.visualize import depth_to_image, normal_to_image, resize_with_pad


def matplotlib_gray_to_colormap(img: np.ndarray) -> np.ndarray:
    """The original gray_to_colormap(img, "Greys"), with matplotlib (mutates img, as it did)."""
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib import cm, colors

    img[img < 0] = 0
    mask_invalid = img < 1e-10
    img = img / (img.max() + 1e-8)
    mappable = cm.ScalarMappable(norm=colors.Normalize(vmin=0, vmax=1.1), cmap=matplotlib.colormaps["Greys"])
    colormap = (mappable.to_rgba(img)[:, :, :3] * 255).astype(np.uint8)
    colormap[mask_invalid] = 0
    return colormap


def _edge_case_depths() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    ramp = np.linspace(-1.0, 200.0, 64 * 96, dtype=np.float32).reshape(64, 96)
    tiny = np.array([[0.0, 1e-11, 1e-10, 2e-10], [1e-9, 1e-3, 0.5, 1.0]], dtype=np.float32)
    with_nan = rng.uniform(0.1, 50.0, (8, 9)).astype(np.float32)
    with_nan[3, 4] = np.nan
    with_inf = rng.uniform(0.1, 50.0, (8, 9)).astype(np.float32)
    with_inf[0, 0] = np.inf
    return {
        "uniform": rng.uniform(0.1, 200.0, (97, 131)).astype(np.float32),
        "with negatives": rng.normal(5.0, 10.0, (80, 120)).astype(np.float32),
        "all negative": -rng.uniform(1.0, 2.0, (10, 12)).astype(np.float32),
        "zeros": np.zeros((16, 24), np.float32),
        "constant": np.full((16, 24), 7.25, np.float32),
        "ramp": ramp,
        "near zero": tiny,
        "small range": rng.uniform(0.0, 1e-6, (30, 40)).astype(np.float32),
        "single pixel": np.array([[3.0]], np.float32),
        "nan": with_nan,
        "inf": with_inf,
    }


EDGE_CASES = _edge_case_depths()


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_depth_to_image_equals_matplotlib(case):
    depth = EDGE_CASES[case]
    before = depth.copy()
    ours = depth_to_image(depth)
    assert np.array_equal(depth, before, equal_nan=True), "the caller's array was modified"
    with np.errstate(invalid="ignore"):
        expected = matplotlib_gray_to_colormap(depth.copy())
    assert ours.dtype == np.uint8 and ours.shape == (*depth.shape, 3)
    assert np.array_equal(ours, expected), f"{np.count_nonzero(ours != expected)} values differ"


def test_depth_to_image_covers_the_whole_ramp():
    # Normalize(0, 1.1) reaches colormap entries 0..232; a fine ramp crosses every index boundary.
    depth = np.linspace(0.0, 1.0, 200_003, dtype=np.float32)[None]
    assert np.array_equal(depth_to_image(depth), matplotlib_gray_to_colormap(depth.copy()))


def test_depth_to_image_rejects_bad_shapes():
    with pytest.raises(ValueError, match="H x W"):
        depth_to_image(np.zeros((2, 3, 1), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        depth_to_image(np.zeros((0, 3), np.float32))


@pytest.fixture(scope="module", params=IMAGES)
def node_reference(request):
    model_ref, _ = load_arrays("vit-small", request.param, "model")
    node_ref, node_meta = load_arrays("vit-small", request.param, "node")
    return model_ref, node_ref, node_meta


def test_depth_image_matches_reference(node_reference):
    model_ref, node_ref, _ = node_reference
    depth = model_ref["depth"][0]
    ours = depth_to_image(depth)
    expected = node_ref["pre_resize_depth_u8"]
    assert ours.shape == expected.shape
    assert np.array_equal(ours, expected), f"{np.count_nonzero(ours != expected)} values differ"


def test_normal_image_matches_reference(node_reference):
    _, node_ref, _ = node_reference
    ours = normal_to_image(node_ref["pre_resize_normal_f32"])
    expected = node_ref["pre_resize_normal_vis_u8"]
    assert np.array_equal(ours, expected), f"{np.count_nonzero(ours != expected)} values differ"


def test_normal_to_image_rejects_bad_shapes():
    with pytest.raises(ValueError, match="H x W x 3"):
        normal_to_image(np.zeros((4, 5, 4), np.float32))


def test_resize_with_pad_matches_reference(node_reference):
    _, node_ref, node_meta = node_reference
    resolution = node_meta["resolution"]
    depth_padded, remove_pad = resize_with_pad(node_ref["pre_resize_depth_u8"], resolution)
    normal_padded, remove_normal_pad = resize_with_pad(255 - node_ref["pre_resize_normal_vis_u8"], resolution)
    assert depth_padded.shape[0] % 64 == 0 and depth_padded.shape[1] % 64 == 0
    assert normal_padded.shape[0] % 64 == 0 and normal_padded.shape[1] % 64 == 0
    depth, normal = remove_pad(depth_padded), remove_pad(normal_padded)
    assert list(depth.shape[:2]) == node_meta["output_hw"]["depth"]
    assert list(normal.shape[:2]) == node_meta["output_hw"]["normal"]
    assert np.array_equal(depth, node_ref["node_depth_u8"])
    assert np.array_equal(normal, node_ref["node_normal_u8"])
    # The normal map's own size, which the node does not use (see reference README fact 7).
    own_target = node_meta["facts"]["normal_resize"]["own_target_hw"]
    assert list(remove_normal_pad(normal_padded).shape[:2]) == own_target


def test_resize_with_pad_interpolation_and_padding():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    padded, remove_pad = resize_with_pad(image, 200)  # k > 1: the upscale method
    assert padded.shape == (256, 320, 3)
    assert np.array_equal(remove_pad(padded), cv2.resize(image, (300, 200), interpolation=cv2.INTER_CUBIC))
    # Edge replication up to the multiples of 64.
    assert np.array_equal(padded[200:], np.broadcast_to(padded[199:200], (56, 320, 3)))
    assert np.array_equal(padded[:, 300:], np.broadcast_to(padded[:, 299:300], (256, 20, 3)))
    padded, _ = resize_with_pad(image, 200, upscale=cv2.INTER_NEAREST)
    assert np.array_equal(padded[:200, :300], cv2.resize(image, (300, 200), interpolation=cv2.INTER_NEAREST))
    padded, remove_pad = resize_with_pad(image, 64)  # k < 1: INTER_AREA
    assert np.array_equal(remove_pad(padded), cv2.resize(image, (96, 64), interpolation=cv2.INTER_AREA))
    assert padded.shape == (64, 128, 3)


def test_resize_with_pad_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        resize_with_pad(np.zeros((4, 4, 3), np.float32), 64)
    with pytest.raises(ValueError, match="positive"):
        resize_with_pad(np.zeros((4, 4, 3), np.uint8), 0)
