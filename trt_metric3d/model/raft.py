"""RAFT-style iterative refinement: context encoder, 3-level slow-fast ConvGRU, convex upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a B x C x H x W map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    """Conv-LN-ReLU x2 with a projected (1x1 conv + LN) skip; in and out widths always differ here."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = LayerNorm2d(channels)
        self.norm2 = LayerNorm2d(channels)
        # The checkpoints list this LayerNorm twice, as norm3 and as downsample.1: one module, two names.
        self.norm3 = LayerNorm2d(channels)
        self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=1), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.downsample(x) + y)


class ContextFeatureEncoder(nn.Module):
    """Per level (1/4, 1/7, 1/14): the GRU's initial hidden state and its context features."""

    def __init__(self, in_channels: tuple[int, int, int], hidden: int) -> None:
        super().__init__()

        def head(cin: int) -> nn.ModuleList:  # [hidden-state head, context head]
            return nn.ModuleList(
                nn.Sequential(ResidualBlock(cin, hidden), nn.Conv2d(hidden, hidden, 3, padding=1))
                for _ in range(2)
            )

        self.outputs04 = head(in_channels[0])
        self.outputs08 = head(in_channels[1])
        self.outputs16 = head(in_channels[2])

    def forward(self, features: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        levels = (self.outputs04, self.outputs08, self.outputs16)
        return [(net(x), ctx(x)) for (net, ctx), x in zip(levels, features, strict=True)]


class ConvGRU(nn.Module):
    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convr = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convq = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)

    def forward(
        self, h: torch.Tensor, context: tuple[torch.Tensor, ...], *inputs: torch.Tensor
    ) -> torch.Tensor:
        """context: the precomputed (z, r, q) context terms of this level."""
        cz, cr, cq = context
        x = torch.cat(inputs, dim=1)
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx) + cz)
        r = torch.sigmoid(self.convr(hx) + cr)
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)) + cq)
        return (1 - z) * h + z * q


class FlowHead(nn.Module):
    """Per-iteration update of the 6-channel state: depth, confidence, normal xyz, kappa."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1d = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv2d = nn.Conv2d(hidden, 2, 3, padding=1)
        self.conv1n = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv2n = nn.Conv2d(hidden, 4, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        depth = self.conv2d(F.relu(self.conv1d(h)))
        normal = self.conv2n(F.relu(self.conv1n(h)))
        return torch.cat((depth, normal), dim=1)


def pool2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def resize_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(
        x, size=(reference.shape[2], reference.shape[3]), mode="bilinear", align_corners=True
    )


class UpdateBlock(nn.Module):
    """Slow-fast 3-level ConvGRU (1/4, 1/7, 1/14) with the update and convex-upsampling-mask heads."""

    STATE_CHANNELS = 6

    def __init__(self, hidden: int, upsample_factor: int) -> None:
        super().__init__()
        self.gru08 = ConvGRU(hidden, self.STATE_CHANNELS + hidden)
        self.gru16 = ConvGRU(hidden, 2 * hidden)
        self.gru32 = ConvGRU(hidden, hidden)
        self.flow_head = FlowHead(hidden)
        self.mask = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, upsample_factor**2 * 9, 1),
        )

    def step_coarse(self, net: list[torch.Tensor], context: list[tuple[torch.Tensor, ...]]) -> None:
        net[2] = self.gru32(net[2], context[2], pool2x(net[1]))

    def step_middle(self, net: list[torch.Tensor], context: list[tuple[torch.Tensor, ...]]) -> None:
        net[1] = self.gru16(
            net[1], context[1], resize_like(pool2x(net[0]), net[1]), resize_like(net[2], net[1])
        )

    def forward(
        self, net: list[torch.Tensor], context: list[tuple[torch.Tensor, ...]], state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One refinement iteration; updates `net` in place, returns (state delta, upsampling mask)."""
        # Slow-fast: per iteration the 1/14 GRU runs three times, the 1/7 GRU twice, the 1/4 GRU once.
        self.step_coarse(net, context)
        self.step_coarse(net, context)
        self.step_middle(net, context)
        self.step_coarse(net, context)
        self.step_middle(net, context)
        net[0] = self.gru08(net[0], context[0], state, resize_like(net[1], net[0]))
        return self.flow_head(net[0]), 0.25 * self.mask(net[0])


def convex_upsample(x: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """B x C x h x w -> B x C x (factor*h) x (factor*w): each fine pixel is a softmax-weighted mix of
    its coarse 3x3 neighbourhood (RAFT). Shifted slices instead of F.unfold, for clean export."""
    b, c, h, w = x.shape
    weights = torch.softmax(mask.view(b, 1, 9, factor, factor, h, w), dim=2)
    padded = F.pad(x, (1, 1, 1, 1))
    neighbours = torch.stack([padded[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)], dim=2)
    up = torch.sum(weights * neighbours.view(b, c, 9, 1, 1, h, w), dim=2)  # B x C x f x f x h x w
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, c, factor * h, factor * w)
