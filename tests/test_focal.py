"""The focal-length policy (trt_metric3d/focal.py), rule by rule, and that its callers follow it."""

import math

import numpy as np
import pytest

from trt_metric3d.errors import InputError
from trt_metric3d.focal import EXIF_SOURCE, FocalLengths, resolve_focal_lengths
from trt_metric3d.pointcloud import depth_to_point_cloud
from trt_metric3d.serving.client import request_arrays


def test_fy_defaults_to_fx_and_the_source_is_the_names_they_were_given_as():
    assert resolve_focal_lengths(1400.0) == FocalLengths(1400.0, 1400.0, "fx/fy")
    assert resolve_focal_lengths(1400, 1500, names=("--fx", "--fy")) == (1400.0, 1500.0, "--fx/--fy")


def test_fy_without_fx_is_refused_in_one_line_naming_both():
    with pytest.raises(InputError) as info:
        resolve_focal_lengths(None, 1500.0, names=("--fx", "--fy"))
    assert str(info.value) == "--fy was given without --fx: pass --fx too (--fy defaults to --fx)"
    with pytest.raises(InputError, match="fy was given without fx"):  # an EXIF fallback does not excuse it
        resolve_focal_lengths(None, 1500.0, exif=lambda: 1000.0)


def test_without_either_the_exif_focal_length_is_used_where_the_caller_has_one():
    assert resolve_focal_lengths(None, None, exif=lambda: 1234.5) == (1234.5, 1234.5, EXIF_SOURCE)
    assert resolve_focal_lengths(900.0, None, exif=lambda: 1234.5).source == "fx/fy"  # given wins
    with pytest.raises(InputError) as info:
        resolve_focal_lengths(None, None, names=("--fx", "--fy"), exif=lambda: None, image="a/b.png")
    assert str(info.value) == "a/b.png has no EXIF focal length: pass --fx (and --fy) in pixels"


def test_without_either_and_no_exif_it_is_none_when_optional_else_a_missing_fx():
    assert resolve_focal_lengths(None, None, optional=True) is None
    with pytest.raises(InputError, match="fx must be a real number, the focal length in pixels, got None"):
        resolve_focal_lengths(None)


@pytest.mark.parametrize(
    ("fx", "fy", "named"), [(-1.0, None, "fx"), (1000.0, math.nan, "fy"), (True, None, "fx")]
)
def test_values_are_checked_as_predict_checks_them(fx, fy, named):
    with pytest.raises(InputError, match=f"^{named} must be"):
        resolve_focal_lengths(fx, fy)


def test_unchecked_values_pass_as_given_for_a_server_to_judge():
    assert resolve_focal_lengths(-1.0, check=False) == (-1.0, -1.0, "fx/fy")
    with pytest.raises(InputError, match="fy was given without fx"):
        resolve_focal_lengths(None, 2.0, check=False)


def test_the_callers_follow_the_policy():
    cloud = depth_to_point_cloud(np.full((4, 6), 2.0, np.float32), fx=3.0)  # fy defaults to fx
    assert np.allclose(cloud.points[0], [-2.0, -4 / 3, 2.0])
    with pytest.raises(InputError, match="fy was given without fx"):
        depth_to_point_cloud(np.ones((4, 6), np.float32), fx=None, fy=3.0)
    arrays = request_arrays(np.zeros((5, 7, 3), np.uint8), 500.0)
    assert arrays["FY"].tolist() == [[500.0]]
    assert request_arrays(np.zeros((5, 7, 3), np.uint8), -1.0)["FX"].tolist() == [[-1.0]]  # Triton says why
