"""PyTorch network -> ONNX with dynamic batch, height and width; normalisation inside the graph.

Graph interface (documented in export/README.md):
  input  `image`        float32 B x 3 x H x W, RGB canvas in 0..255 (H, W multiples of 28)
  output `depth`        float32 B x 1 x H x W, canonical depth (focal 1000), in [0.1, 200]
         `confidence`   float32 B x 1 x H x W
         `normal`       float32 B x 4 x H x W, unit normal xyz + kappa (last iteration)
         `normal_iter1` float32 B x 3 x H x W, unit normal xyz after the first iteration
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..model import CANVAS_MULTIPLE, Metric3DOutput
from ..processing import MEAN, STD
from .staging import save_staged

log = logging.getLogger("trt_metric3d")

INPUT_NAME = "image"
OUTPUT_NAMES = Metric3DOutput._fields
MAX_BATCH = 16
MAX_CANVAS_SIDE = 2240  # 80 x 28: room for 616 x 1064 both ways and larger canvases
PROTOBUF_LIMIT = 2**31 - 1  # larger models (vit-giant2) keep their weights in a side file
# Their INFO lines (hundreds per export: folded constants, rewrites) would flood a host's log.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")
SCOPE_KEY = "pkg.torch.onnx.name_scopes"  # node metadata: the modules that emitted the node
# Warned on every export: the exporter's registry skips torchvision's operators, which we do not use.
REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class CanvasNetwork(nn.Module):
    """The network with the mean/std normalisation in front, returning a plain tuple."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.network((image - self.mean) / self.std))


def module_of(node) -> str | None:
    """The innermost module that emitted the ONNX `node` (from the exporter's metadata), "" for the
    wrapper itself; None where the optimiser made the node (or a tool dropped the metadata)."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else ""
    return None


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _not_about_torchvision(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("torchvision is not installed")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's own chatter down to warnings; ours ("exporting ...") stays."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    registry = logging.getLogger(REGISTRY_LOGGER)
    registry.addFilter(_not_about_torchvision)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
            yield
    finally:
        registry.removeFilter(_not_about_torchvision)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(network: nn.Module, path: str | os.PathLike) -> Path:
    """Export `network` (fp32, CPU) to `path`; written to a temp folder first, then moved in place."""
    path = Path(path)
    wrapper = CanvasNetwork(network.float().cpu()).eval()
    # A batch of 2 at a small canvas: batch 1 would be specialised to a constant by torch.export.
    example = torch.rand(2, 3, 4 * CANVAS_MULTIPLE, 5 * CANVAS_MULTIPLE) * 255
    side = CANVAS_MULTIPLE
    rows = torch.export.Dim("rows", min=2, max=MAX_CANVAS_SIDE // side)
    cols = torch.export.Dim("cols", min=2, max=MAX_CANVAS_SIDE // side)
    dynamic = {
        INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_BATCH), 2: side * rows, 3: side * cols}
    }
    log.info("tracing the network and converting it to ONNX")
    started = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic,
            optimize=True,
            verbose=False,
        )
    log.info("network traced and converted to ONNX in %.0f s", time.perf_counter() - started)
    external = _parameter_bytes(network) > PROTOBUF_LIMIT
    return save_staged(path, lambda staged: program.save(staged, external_data=external))
