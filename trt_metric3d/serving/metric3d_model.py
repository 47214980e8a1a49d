"""Triton Python-backend model of `serve`: one `Metric3D`, one predict per batch Triton's dynamic batcher
forms (images of any sizes: the IMAGE input allows ragged batches).

Each request is checked on its own first, so a bad one gets its own error answer while the others of
its batch are answered. Loaded by the generated metric3d/1/model.py inside Triton; its config's
parameters say which Metric3D to open (see `server.serve`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, Metric3DError
from ..runtime import Metric3D, Prediction
from ..settings import RuntimeSettings
from .interface import FX, FY, IMAGE, PREDICTION_FIELDS, check_request
from .python_backend import answer, config_parameters, input_arrays, refuse


def _outputs(predictions: list[Prediction]) -> dict[str, np.ndarray]:
    """One request's answer: each output stacked over its images (B x H x W [x 3])."""
    return {
        name: np.stack([getattr(p, field) for p in predictions]) for name, field in PREDICTION_FIELDS.items()
    }


class TritonPythonModel:
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
