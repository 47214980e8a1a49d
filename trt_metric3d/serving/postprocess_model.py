"""Triton Python-backend model, last step of `triton-repo`'s ensemble: the plan's canvas outputs ->
DEPTH, CONFIDENCE and NORMAL at each image's size.

Loaded by the repository's metric3d_postprocess/1/model.py inside Triton (see `ensemble_steps`).
"""

from __future__ import annotations

from ..errors import Metric3DError
from .ensemble_steps import CANVAS_OUTPUTS, IMAGE_SIZE, SCALE, postprocess
from .python_backend import answer, input_arrays, refuse


class TritonPythonModel:
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
