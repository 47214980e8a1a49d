"""`Metric3DClient`: one image in, its depth, confidence and normals out, from either Triton server
(`serve`, or tritonserver on a `triton-repo` repository), over HTTP or gRPC with tritonclient."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ..errors import MissingDependency
from ..focal import resolve_focal_lengths
from ..processing import validate_image
from .interface import FX, FY, IMAGE, MODEL_NAME, PREDICTION_FIELDS
from .tritonserver_process import SERVE_EXTRA

PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class ServedPrediction:
    """One image's answer, at its size (as `Prediction`)."""

    depth: np.ndarray  # H x W, metres
    confidence: np.ndarray  # H x W
    normal: np.ndarray  # H x W x 3, unit normals


def tritonclient_module(protocol: str) -> ModuleType:
    """tritonclient.http or tritonclient.grpc, or MissingDependency with the pip command."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except ImportError as e:
        raise MissingDependency(f"tritonclient is not installed: {SERVE_EXTRA}") from e


def request_arrays(image: np.ndarray, fx: float, fy: float | None = None) -> dict[str, np.ndarray]:
    """The inputs of a request for one RGB image, H x W x 3 uint8 (or float in [0, 1], as predict takes
    it), with the batch dimension Triton expects first; a batch, or an image that is no RGB image, is
    an InputError naming the fix here rather than Triton's "batch size does not match" later."""
    fx, fy, _ = resolve_focal_lengths(fx, fy, check=False)  # the server checks them and says why
    return {
        IMAGE: validate_image(image)[None],
        FX: np.array([[fx]], dtype=np.float32),
        FY: np.array([[fy]], dtype=np.float32),
    }


class Metric3DClient:
    """>>> client = Metric3DClient("localhost:8000")            # or ("localhost:8001", "grpc")
    >>> client.predict(image, fx=1400.0).depth                 # H x W x 3 uint8 RGB -> H x W metres

    A refused request raises tritonclient's InferenceServerException with the server's reason.
    One client per thread: tritonclient's clients are not meant to be shared between threads.
    """

    def __init__(self, url: str, protocol: str = "http", model: str = MODEL_NAME) -> None:
        self.protocol = tritonclient_module(protocol)
        self.client = self.protocol.InferenceServerClient(url)
        self.model = model

    def inputs(self, image: np.ndarray, fx: float, fy: float | None = None) -> list:
        """The request's tensors for one image (a batch of one); see `request_arrays`."""
        tensors = []
        for name, array in request_arrays(image, fx, fy).items():
            tensor = self.protocol.InferInput(name, list(array.shape), "UINT8" if name == IMAGE else "FP32")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return tensors

    def predict(self, image: np.ndarray, fx: float, fy: float | None = None) -> ServedPrediction:
        result = self.client.infer(self.model, self.inputs(image, fx, fy))
        return ServedPrediction(
            **{field: result.as_numpy(name)[0] for name, field in PREDICTION_FIELDS.items()}
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Metric3DClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
