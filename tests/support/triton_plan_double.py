"""Test double of a triton-repo repository's TensorRT plan (TensorRT cannot run here): a Python-backend
model with the plan's inputs and outputs that runs the same network with the torch backend on the CPU,
one forward per batch Triton's dynamic batcher forms. Its config's `checkpoint` parameter names the
vit-small weights. Copied into the repository as metric3d_engine/1/model.py by the tests.
"""

import numpy as np
import torch

from trt_metric3d.checkpoint import load_model
from trt_metric3d.export import INPUT_NAME, OUTPUT_NAMES
from trt_metric3d.runtime.torch_backend import TorchBackend
from trt_metric3d.serving.triton_models import answer, config_parameters, input_arrays


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        checkpoint = config_parameters(args)["checkpoint"]
        cpu = torch.device("cpu")
        self.network = TorchBackend(load_model("vit-small", checkpoint, device=cpu), cpu, "fp32")

    def execute(self, requests: list) -> list:
        canvases = [input_arrays(request, [INPUT_NAME])[0] for request in requests]
        out = self.network(torch.from_numpy(np.concatenate(canvases)))
        outputs = dict(zip(OUTPUT_NAMES, out, strict=True))
        starts = np.cumsum([0, *(len(canvas) for canvas in canvases)])
        return [
            answer({name: t[begin:end].contiguous().numpy() for name, t in outputs.items()})
            for begin, end in zip(starts[:-1], starts[1:], strict=True)
        ]
