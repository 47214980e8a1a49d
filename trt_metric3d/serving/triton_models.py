"""What runs inside Triton's Python backend: the models of `serve` and of `triton-repo`'s ensemble, and
what they share (reading a request's arrays, answering it, refusing one request).

- `Metric3DModel`: `serve`'s one model, a `Metric3D` answering each batch of requests.
- `PreprocessModel`, `PostprocessModel`: the ensemble's first and last steps around the TensorRT plan
  (see `ensemble_steps`).

Each generated `<model>/1/model.py` imports one of these classes as `TritonPythonModel`, the name Triton
looks up. Imported only inside Triton's Python backend, whose stub provides
`triton_python_backend_utils`.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from ..errors import InputError, Metric3DError
from ..runtime import Metric3D, Prediction
from ..settings import RuntimeSettings
from .ensemble_steps import CANVAS_OUTPUTS, IMAGE_SIZE, SCALE, postprocess, preprocess
from .interface import FX, FY, IMAGE, PREDICTION_FIELDS, check_request


def config_parameters(args: dict) -> dict[str, str]:
    """The `parameters` of the model's config.pbtxt, from `initialize`'s args."""
    parameters = json.loads(args["model_config"]).get("parameters", {})
    return {key: value["string_value"] for key, value in parameters.items()}


def input_arrays(request, names: list[str]) -> list[np.ndarray]:
    return [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in names]


def answer(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse([pb_utils.Tensor(name, array) for name, array in outputs.items()])


def refuse(error: Exception):
    """An error answer for one request; the other requests of its batch are answered as usual.
    The client gets the message; a bad input is its fault (HTTP 400), anything else the server's."""
    code = (
        pb_utils.TritonError.INVALID_ARG if isinstance(error, InputError) else pb_utils.TritonError.INTERNAL
    )
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))


def _outputs(predictions: list[Prediction]) -> dict[str, np.ndarray]:
    """One request's answer: each output stacked over its images (B x H x W [x 3])."""
    return {
        name: np.stack([getattr(p, field) for p in predictions]) for name, field in PREDICTION_FIELDS.items()
    }


class Metric3DModel:
    """`serve`'s model: one `Metric3D`, one predict per batch Triton's dynamic batcher forms (images of any
    sizes: the IMAGE input allows ragged batches). Its config's parameters say which Metric3D to open
    (see `metric3d_server.serve`).

    Each request is checked on its own first, so a bad one gets its own error answer while the others
    of its batch are answered.
    """

    def initialize(self, args: dict) -> None:
        self.runtime = Metric3D.from_settings(RuntimeSettings.from_strings(config_parameters(args)))

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        accepted = []  # (request index, images, fx, fy)
        for index, request in enumerate(requests):
            images, fx, fy = input_arrays(request, [IMAGE, FX, FY])
            try:
                check_request(images, fx, fy)
            except InputError as e:
                responses[index] = refuse(e)
                continue
            accepted.append((index, images, fx.reshape(-1), fy.reshape(-1)))
        if not accepted:
            return responses
        try:
            predictions = iter(
                self.runtime.predict(
                    [image for _, images, _, _ in accepted for image in images],
                    fx=np.concatenate([fx for _, _, fx, _ in accepted]).tolist(),
                    fy=np.concatenate([fy for _, _, _, fy in accepted]).tolist(),
                )
            )
        except Metric3DError as e:  # the backend failed on this batch (e.g. NaN depth): all of it is told why
            for index, *_ in accepted:
                responses[index] = refuse(e)
            return responses
        for index, images, _, _ in accepted:
            responses[index] = answer(_outputs([next(predictions) for _ in images]))
        return responses

    def finalize(self) -> None:
        self.runtime.close()


class PreprocessModel:
    """First step of `triton-repo`'s ensemble: images -> canvases for the plan."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:  # each on its own: a bad image fails only its request
            try:
                responses.append(answer(preprocess(*input_arrays(request, [IMAGE, FX, FY]))))
            except Metric3DError as e:
                responses.append(refuse(e))
        return responses


class PostprocessModel:
    """Last step of `triton-repo`'s ensemble: the plan's canvas outputs -> DEPTH, CONFIDENCE and NORMAL at
    each image's size."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            *canvas, image_size, scale = input_arrays(request, [*CANVAS_OUTPUTS.values(), IMAGE_SIZE, SCALE])
            try:
                outputs = dict(zip(CANVAS_OUTPUTS.values(), canvas, strict=True))
                responses.append(answer(postprocess(outputs, image_size, scale)))
            except Metric3DError as e:
                responses.append(refuse(e))
        return responses
