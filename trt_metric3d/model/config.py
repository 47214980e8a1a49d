"""Explicit per-backbone configurations (the official `vit.raft5.{small,large,giant2}` configs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderConfig:
    """DINOv2 ViT with register tokens, patch 14, pretrained on a 37 x 37 patch grid (518 px)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" (GELU MLP) or "swiglu"
    # giant2 feeds the decoder the raw tokens after every quarter of the blocks; small/large feed the
    # final normed tokens four times.
    tap_quarters: bool = False
    patch_size: int = 14
    num_register_tokens: int = 4
    pretrain_grid: int = 37
    interpolate_offset: float = 0.1
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class DecoderConfig:
    """RAFT-DPT decoder (`RAFTDepthNormalDPT5`)."""

    feature_channels: tuple[int, int, int, int]  # token-to-feature outputs at 1/4, 1/7, 1/14, 1/14
    decoder_channels: tuple[int, int, int, int, int]
    hidden_channels: int  # GRU hidden and context width at every level
    iters: int
    num_bins: int = 256
    min_depth: float = 0.1
    max_depth: float = 200.0
    regress_scale: float = 100.0
    upsample_factor: int = 4  # convex upsampling from 1/4 to the canvas


@dataclass(frozen=True)
class Metric3DConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig


CONFIGS: dict[str, Metric3DConfig] = {
    "vit-small": Metric3DConfig(
        EncoderConfig(embed_dim=384, depth=12, num_heads=6, ffn="mlp"),
        DecoderConfig((96, 192, 384, 768), (48, 96, 192, 384, 384), hidden_channels=48, iters=4),
    ),
    "vit-large": Metric3DConfig(
        EncoderConfig(embed_dim=1024, depth=24, num_heads=16, ffn="mlp"),
        DecoderConfig((256, 512, 1024, 1024), (128, 256, 512, 1024, 1024), hidden_channels=128, iters=8),
    ),
    "vit-giant2": Metric3DConfig(
        EncoderConfig(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", tap_quarters=True),
        DecoderConfig((384, 768, 1536, 1536), (192, 384, 768, 1536, 1536), hidden_channels=192, iters=8),
    ),
}

BACKBONES: tuple[str, ...] = tuple(CONFIGS)

# The canvas side lengths must be multiples of this: patch 14, and the 1/14 grid is upsampled x3.5.
CANVAS_MULTIPLE = 28


def get_config(backbone: str) -> Metric3DConfig:
    try:
        return CONFIGS[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}") from None
