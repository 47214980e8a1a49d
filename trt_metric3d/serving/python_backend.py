"""What the Python-backend models share: reading a request's arrays, answering, refusing one request.

Imported only inside Triton's Python backend, whose stub provides `triton_python_backend_utils`.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from ..errors import InputError


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
