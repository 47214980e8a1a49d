"""Prediction.point_cloud back-projects depth as the original Metric3D does; write_ply writes real PLY."""

import math

import numpy as np
import pytest

from trt_metric3d.errors import InputError
from trt_metric3d.pointcloud import PointCloud, write_ply
from trt_metric3d.processing import fit_canvas
from trt_metric3d.runtime.prediction import Prediction


def prediction(depth, fx: float = 1.0, fy: float | None = None) -> Prediction:
    """A prediction of `depth` as if made with focal lengths fx, fy (default fx)."""
    depth = np.asarray(depth, dtype=np.float32)
    zeros = np.zeros_like(depth)
    normal = np.zeros((*depth.shape, 3), np.float32)
    return Prediction(depth, zeros, normal, zeros, fit_canvas(*depth.shape), fx, fx if fy is None else fy)


def rgb_ramp(height: int, width: int) -> np.ndarray:
    """A different colour at every pixel: red = row, green = column, blue = row + column."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, rows + cols], axis=-1).astype(np.uint8)


def test_known_pixels_back_project_exactly():
    cloud = prediction([[2, 4], [6, 8]], fx=2.0, fy=4.0).point_cloud(cx=0.5, cy=0.5)
    # X = (u - cx) * Z / fx, Y = (v - cy) * Z / fy at integer pixel coordinates, in row-major order.
    expected = [[-0.5, -0.25, 2], [1, -0.5, 4], [-1.5, 0.75, 6], [2, 1, 8]]
    assert cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.points, np.array(expected, np.float32))
    assert len(cloud) == 4 and cloud.colors is None


def test_principal_point_defaults_to_w_and_h_over_2_and_fy_to_fx():
    cloud = prediction(np.ones((2, 4)), fx=0.5).point_cloud()
    # The original's demo intrinsics [f, f, W / 2, H / 2]: pixel (u=2, v=1) is on the optical axis.
    np.testing.assert_array_equal(cloud.points[1 * 4 + 2], [0, 0, 1])
    np.testing.assert_array_equal(cloud.points[0], [-4, -2, 1])  # (0 - 2) / 0.5, (0 - 1) / 0.5


def test_points_of_a_tilted_plane_lie_on_it():
    height, width, fx, fy, cx, cy = 48, 64, 50.0, 60.0, 30.3, 25.1
    normal, offset = np.array([0.2, -0.3, 1.0]), 5.0  # the plane normal . P = offset
    v, u = np.mgrid[:height, :width]
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u, dtype=float)], axis=-1)
    depth = offset / (rays @ normal)
    cloud = prediction(depth, fx, fy).point_cloud(cx=cx, cy=cy)
    assert len(cloud) == height * width
    np.testing.assert_allclose(cloud.points.astype(np.float64) @ normal, offset, rtol=1e-5)


def test_stride_keeps_every_nth_row_and_column_at_full_size_pixel_coordinates():
    depth = np.arange(1, 36, dtype=np.float32).reshape(5, 7)
    cloud = prediction(depth, fx=2.0).point_cloud(cx=0.0, cy=0.0, stride=3)
    v, u = np.mgrid[0:5:3, 0:7:3]  # rows 0, 3 and columns 0, 3, 6
    z = depth[v, u].ravel()
    expected = np.stack([u.ravel() * z / 2, v.ravel() * z / 2, z], axis=1)
    np.testing.assert_array_equal(cloud.points, expected.astype(np.float32))


def test_max_depth_drops_farther_points_and_keeps_the_limit():
    cloud = prediction([[1, 2], [3, 4]]).point_cloud(max_depth=3.0)
    np.testing.assert_array_equal(cloud.points[:, 2], [1, 2, 3])


def test_non_finite_and_non_positive_depths_are_dropped():
    depth = [[np.nan, np.inf, -np.inf], [0.0, -1.0, 5.0]]
    cloud = prediction(depth).point_cloud(image=rgb_ramp(2, 3))
    np.testing.assert_array_equal(cloud.points, [[(2 - 1.5) * 5, (1 - 1) * 5, 5]])
    np.testing.assert_array_equal(cloud.colors, [[1, 2, 3]])  # the colour of row 1, column 2


def test_colours_follow_the_kept_pixels():
    depth = np.ones((5, 6), np.float32)
    depth[3, 3] = 0  # dropped with its colour
    image = rgb_ramp(5, 6)
    cloud = prediction(depth).point_cloud(stride=3, image=image)
    assert cloud.colors.dtype == np.uint8
    np.testing.assert_array_equal(cloud.colors, [image[0, 0], image[0, 3], image[3, 0]])


def test_float_images_are_taken_as_predict_takes_them():
    image = rgb_ramp(2, 2)
    cloud = prediction(np.ones((2, 2))).point_cloud(image=image.astype(np.float32) / 255)
    np.testing.assert_array_equal(cloud.colors, image.reshape(-1, 3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fx": 0.0}, "fx must be a finite focal length in pixels > 0"),
        ({"fx": "1000"}, "fx must be a real number"),
        ({"fx": True}, "fx must be a real number"),
        ({"fy": -5.0}, "fy must be a finite focal length"),
        ({"cx": math.nan}, "cx must be a finite number"),
        ({"cy": math.inf}, "cy must be a finite number"),
        ({"cx": "centre"}, "cx must be a finite number"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"stride": 2.0}, "stride must be an integer >= 1"),
        ({"stride": True}, "stride must be an integer >= 1"),
        ({"max_depth": 0.0}, "max_depth must be a distance in metres > 0"),
        ({"max_depth": math.nan}, "max_depth must be a distance in metres > 0"),
        ({"image": rgb_ramp(3, 4)}, "image is 3x4 but the depth is 4x3"),
        ({"image": np.zeros((4, 3), np.uint8)}, r"image must have shape \(H, W, 3\)"),
    ],
)
def test_bad_options_raise_input_errors_naming_the_fix(options, message):
    with pytest.raises(InputError, match=message):
        prediction(np.ones((4, 3))).point_cloud(**options)


def test_the_focal_lengths_default_to_those_of_the_prediction():
    cloud = prediction(np.ones((2, 4)), fx=0.5, fy=0.25).point_cloud()
    np.testing.assert_array_equal(cloud.points[0], [-4, -4, 1])  # (0 - 2) / 0.5, (0 - 1) / 0.25
    same = prediction(np.ones((2, 4)), fx=1400.0).point_cloud(fx=np.float32(1400.0), fy=1400)
    np.testing.assert_array_equal(same.points, prediction(np.ones((2, 4)), fx=1400.0).point_cloud().points)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fx": 700.0}, r"fx=700 is not the fx=1400 this depth was predicted with.*again with fx=700"),
        ({"fy": 1000.0}, r"fy=1000 is not the fy=1400 this depth was predicted with"),
        ({"fx": 1400.0, "fy": 1401.0}, r"fy=1401 is not the fy=1400"),
    ],
)
def test_another_camera_is_refused_rather_than_mixed_into_the_points(options, message):
    with pytest.raises(InputError, match=message):
        prediction(np.ones((2, 4)), fx=1400.0).point_cloud(**options)


def test_predict_and_stream_give_predictions_their_focal_lengths():
    from support.stand_in_backends import RedDepth
    from trt_metric3d import Metric3D

    image = rgb_ramp(20, 30)
    with Metric3D(backend=RedDepth(), device="cpu") as runtime:
        one = runtime.predict(image, fx=1400.0)
        each = runtime.predict([image, image], fx=[700.0, 900.0], fy=[710.0, 910.0])
        with runtime.stream([image], fx=500.0, fy=520.0) as results:
            streamed = [r.prediction for r in results]
    assert [(p.fx, p.fy) for p in [one, *each, *streamed]] == [
        (1400.0, 1400.0),
        (700.0, 710.0),
        (900.0, 910.0),
        (500.0, 520.0),
    ]
    with pytest.raises(InputError, match="fx=700 is not the fx=1400"):
        one.point_cloud(700.0)


@pytest.mark.parametrize(
    ("points", "colors", "message"),
    [
        (np.zeros((2, 3), np.float64), None, "points must be an N x 3 float32 array"),
        ([[0.0, 0.0, 1.0]], None, "points must be an N x 3 float32 array, got a list"),
        (np.zeros((2, 3), np.float32), np.zeros((1, 3), np.uint8), "colors must be None or an N x 3 uint8"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), "colors must be None or an N x 3 uint8"),
    ],
)
def test_point_clouds_refuse_arrays_write_ply_could_not_write(points, colors, message):
    with pytest.raises(InputError, match=message):
        PointCloud(points, colors)


def read_ply(path):
    plyfile = pytest.importorskip("plyfile")
    return plyfile.PlyData.read(str(path))


def columns(vertex, names) -> np.ndarray:
    return np.stack([vertex[name] for name in names], axis=1)


def test_coloured_ply_reads_back_with_plyfile(tmp_path):
    cloud = prediction([[1.5, 2.25], [np.nan, 7.0]], fx=3.0).point_cloud(image=rgb_ramp(2, 2))
    path = tmp_path / "nested" / "cloud.ply"
    assert write_ply(path, cloud) == path
    ply = read_ply(path)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert [(p.name, p.val_dtype) for p in vertex.properties] == [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
    ]
    np.testing.assert_array_equal(columns(vertex, "xyz"), cloud.points)
    np.testing.assert_array_equal(columns(vertex, ("red", "green", "blue")), cloud.colors)


def test_uncoloured_and_empty_clouds_write_only_coordinates(tmp_path):
    for name, depth in [("plain", [[1.0, 2.0]]), ("empty", [[0.0, np.nan]])]:
        cloud = prediction(depth).point_cloud()
        vertex = read_ply(write_ply(tmp_path / f"{name}.ply", cloud))["vertex"]
        assert [p.name for p in vertex.properties] == ["x", "y", "z"]
        assert vertex.count == len(cloud)
        np.testing.assert_array_equal(columns(vertex, "xyz"), cloud.points)


def test_write_ply_replaces_an_existing_file_without_leftovers(tmp_path):
    path = tmp_path / "cloud.ply"
    path.write_bytes(b"an older, longer file " * 100)
    write_ply(path, prediction([[2.0]]).point_cloud())
    assert read_ply(path)["vertex"].count == 1
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]
