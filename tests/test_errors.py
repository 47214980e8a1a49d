"""The error types: what callers catch, and what the package exports."""

import trt_metric3d
from trt_metric3d import BackendUnavailable, InputError, Metric3DError


def test_error_types_are_exported():
    assert issubclass(InputError, ValueError) and issubclass(InputError, Metric3DError)
    assert issubclass(BackendUnavailable, RuntimeError)
    assert {
        "Metric3DError",
        "InputError",
        "MissingDependency",
        "BackendUnavailable",
        "WorkspaceError",
    } <= set(trt_metric3d.__all__)
