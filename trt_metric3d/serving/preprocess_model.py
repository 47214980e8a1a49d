"""Triton Python-backend model, first step of `triton-repo`'s ensemble: images -> canvases for the plan.

Loaded by the repository's metric3d_preprocess/1/model.py inside Triton (see `ensemble_steps`).
"""

from __future__ import annotations

from ..errors import Metric3DError
from .ensemble_steps import preprocess
from .interface import FX, FY, IMAGE
from .python_backend import answer, input_arrays, refuse


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:  # each on its own: a bad image fails only its request
            try:
                responses.append(answer(preprocess(*input_arrays(request, [IMAGE, FX, FY]))))
            except Metric3DError as e:
                responses.append(refuse(e))
        return responses
