"""Metric3D v2: DINOv2-reg encoder + RAFT-DPT decoder, named as the official checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from .config import CANVAS_MULTIPLE, Metric3DConfig, get_config
from .decoder import RAFTDepthNormalDecoder
from .output import Metric3DOutput
from .vit import DinoVisionTransformer


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: Metric3DConfig) -> None:
        super().__init__()
        self.encoder = DinoVisionTransformer(cfg.encoder)
        self.decoder = RAFTDepthNormalDecoder(
            cfg.decoder, cfg.encoder.embed_dim, cfg.encoder.num_register_tokens
        )


class Metric3DNet(nn.Module):
    """`model(x)`: x is the normalised B x 3 x H x W canvas (H, W multiples of 28; 616 x 1064 is the
    canonical one); returns a `Metric3DOutput` at the canvas size."""

    def __init__(self, cfg: Metric3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.depth_model = EncoderDecoder(cfg)

    def forward(self, x: torch.Tensor) -> Metric3DOutput:
        h, w = x.shape[2], x.shape[3]
        torch._check(
            h % CANVAS_MULTIPLE == 0 and w % CANVAS_MULTIPLE == 0,
            lambda: (
                f"canvas {h}x{w}: height and width must be multiples of {CANVAS_MULTIPLE} "
                "(use trt_metric3d.preprocess to build the 616x1064 canvas)"
            ),
        )
        patch = self.cfg.encoder.patch_size
        tokens = self.depth_model.encoder(x)
        return self.depth_model.decoder(tokens, h // patch, w // patch)


def build_model(backbone: str) -> Metric3DNet:
    """An untrained Metric3D v2 network for `backbone` ("vit-small", "vit-large", "vit-giant2")."""
    return Metric3DNet(get_config(backbone))
