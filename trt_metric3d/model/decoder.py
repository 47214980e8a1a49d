"""The RAFT-DPT depth-normal decoder of Metric3D v2 (`RAFTDepthNormalDPT5`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig
from .dpt import DecoderFeature, EncoderFeature
from .output import Metric3DOutput
from .raft import ContextFeatureEncoder, UpdateBlock, convex_upsample


def normalize_normal(xyz: torch.Tensor) -> torch.Tensor:
    """Unit normals from B x 3 x H x W (the original's norm_normalize, epsilon included)."""
    x, y, z = torch.split(xyz, 1, dim=1)
    norm = torch.sqrt(x**2.0 + y**2.0 + z**2.0) + 1e-10
    return torch.cat([x / norm, y / norm, z / norm], dim=1)


def normalize_normal_kappa(normal: torch.Tensor) -> torch.Tensor:
    """B x 4 (xyz, kappa) -> unit xyz and concentration kappa = elu + 1.01."""
    return torch.cat([normalize_normal(normal[:, :3]), F.elu(normal[:, 3:]) + 1.0 + 0.01], dim=1)


class RAFTDepthNormalDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, embed_dim: int, num_register_tokens: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_register_tokens = num_register_tokens
        hidden = cfg.hidden_channels
        feature_width = cfg.decoder_channels[1]
        self.token2feature = EncoderFeature(embed_dim, cfg.feature_channels, num_register_tokens)
        self.decoder_mono = DecoderFeature(cfg.decoder_channels)
        self.depth_regressor = nn.Sequential(
            nn.Conv2d(feature_width, cfg.num_bins, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cfg.num_bins, cfg.num_bins, 1),
        )
        self.normal_predictor = nn.Sequential(
            nn.Conv2d(feature_width, 128, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, 128, 1),
            nn.ReLU(),
            nn.Conv2d(128, 128, 1),
            nn.ReLU(),
            nn.Conv2d(128, 3, 1),
        )
        self.context_feature_encoder = ContextFeatureEncoder(cfg.feature_channels[:3], hidden)
        self.context_zqr_convs = nn.ModuleList(nn.Conv2d(hidden, 3 * hidden, 3, padding=1) for _ in range(3))
        self.update_block = UpdateBlock(hidden, cfg.upsample_factor)
        # Log-spaced depth bins; computed here (not lazily per batch as the original), never checkpointed.
        bins = torch.exp(torch.linspace(math.log(cfg.min_depth), math.log(cfg.max_depth), cfg.num_bins))
        self.register_buffer("depth_bins", bins, persistent=False)

    def clamp_depth(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU form kept on purpose: it rounds differently from torch.clamp (reference fact 9).
        lo, hi = self.cfg.min_depth, self.cfg.max_depth
        return hi - F.relu(hi - (F.relu(x - lo) + lo))

    def regress_depth(self, feature: torch.Tensor) -> torch.Tensor:
        """Expected depth under the softmax over bins, mapped to the refinement state's scale."""
        prob = self.depth_regressor(feature).softmax(dim=1)
        depth = torch.sum(prob * self.depth_bins.view(1, -1, 1, 1), dim=1, keepdim=True)
        return (self.clamp_depth(depth) - self.cfg.max_depth) / self.cfg.regress_scale

    def split_tokens(
        self, tokens: torch.Tensor, grid_h: int, grid_w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B x (1 + registers + h*w) x C -> (patch grid B x h x w x C, learned tokens B x 1 x 1 x (1+r)*C)."""
        b, _, c = tokens.shape
        n_learned = 1 + self.num_register_tokens
        patches = tokens[:, n_learned:].reshape(b, grid_h, grid_w, c)
        learned = tokens[:, :n_learned].reshape(b, 1, 1, n_learned * c)
        return patches, learned

    def forward(self, tokens: list[torch.Tensor], grid_h: int, grid_w: int) -> Metric3DOutput:
        cfg = self.cfg
        f4, f7, f14, f14b = self.token2feature([self.split_tokens(t, grid_h, grid_w) for t in tokens])
        initial = self.decoder_mono(f4, f7, f14, f14b)
        feature, depth_confidence, normal_confidence = initial[:, :-2], initial[:, -2:-1], initial[:, -1:]
        normal = normalize_normal_kappa(torch.cat([self.normal_predictor(feature), normal_confidence], dim=1))
        # Refinement state at 1/4: depth (as (d - 200) / 100), confidence, normal xyz, kappa.
        state = torch.cat((self.regress_depth(feature), depth_confidence, normal), dim=1)

        # The original's fusion blocks apply an in-place ReLU to their skip inputs, so the context
        # encoder sees rectified 1/7 and 1/14 features.
        contexts = self.context_feature_encoder([f4, F.relu(f7), F.relu(f14)])
        net = [torch.tanh(h) for h, _ in contexts]
        zqr = [
            conv(F.relu(c)).chunk(3, dim=1)
            for conv, (_, c) in zip(self.context_zqr_convs, contexts, strict=True)
        ]

        factor = cfg.upsample_factor
        normal_iter1 = None
        for i in range(cfg.iters):
            delta, mask = self.update_block(net, zqr, state)
            state = state + delta
            if i == 0:  # only the outputs we return are upsampled
                normal_iter1 = normalize_normal(convex_upsample(state[:, 2:5], mask, factor))
        final = convex_upsample(state, mask, factor)
        return Metric3DOutput(
            depth=self.clamp_depth(final[:, :1] * cfg.regress_scale + cfg.max_depth),
            confidence=final[:, 1:2],
            normal=normalize_normal_kappa(final[:, 2:]),
            normal_iter1=normal_iter1,
        )
