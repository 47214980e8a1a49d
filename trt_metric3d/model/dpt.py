"""DPT-style readout and fusion: ViT tokens -> multi-scale feature maps -> the 1/4 initial feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Readout(nn.Module):
    """Adds a projection of the class + register tokens to every patch token (DPT's 'project' readout)."""

    def __init__(self, dim: int, num_register_tokens: int) -> None:
        super().__init__()
        self.project_patch = nn.Linear(dim, dim)
        self.project_learn = nn.Linear((1 + num_register_tokens) * dim, dim, bias=False)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        """patches: B x h x w x C, learned: B x 1 x 1 x (1 + registers)*C -> B x h x w x C."""
        return self.act(self.project_patch(patches) + self.project_learn(learned))


class TokenToFeature(nn.Module):
    """Readout, then resample the 1/14 token grid to its pyramid level (scale 1, 2 or 3.5)."""

    def __init__(self, dim: int, out_channels: int, scale: float, num_register_tokens: int) -> None:
        super().__init__()
        self.scale = scale
        self.readoper = Readout(dim, num_register_tokens)
        if scale == 1:
            self.sample = nn.Identity()
        elif scale == 2:
            self.sample = nn.ConvTranspose2d(dim, out_channels, kernel_size=2, stride=2)
        elif scale == 3.5:  # nearest upsampling, then a 1x1 projection
            self.sample = nn.Sequential(nn.Conv2d(dim, out_channels, kernel_size=1))
        else:
            raise ValueError(f"unsupported token-to-feature scale {scale}")

    def forward(self, patches: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        x = self.readoper(patches, learned).permute(0, 3, 1, 2)
        if self.scale == 3.5:
            # Integer sizes rather than a float scale factor: the grid is even (canvas multiple of
            # 28), so x3.5 is exact, and nearest picks the same source rows either way.
            x = F.interpolate(x, size=(x.shape[2] * 7 // 2, x.shape[3] * 7 // 2), mode="nearest")
        return self.sample(x)


class EncoderFeature(nn.Module):
    """Four token maps -> features at 1/14, 1/14, 1/7 and 1/4 of the canvas."""

    def __init__(self, dim: int, channels: tuple[int, int, int, int], num_register_tokens: int) -> None:
        super().__init__()
        self.read_3 = TokenToFeature(dim, channels[3], 1, num_register_tokens)
        self.read_2 = TokenToFeature(dim, channels[2], 1, num_register_tokens)
        self.read_1 = TokenToFeature(dim, channels[1], 2, num_register_tokens)
        self.read_0 = TokenToFeature(dim, channels[0], 3.5, num_register_tokens)

    def forward(self, tokens: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        reads = (self.read_0, self.read_1, self.read_2, self.read_3)
        return [read(*t) for read, t in zip(reads, tokens, strict=True)]


class ConvBlock(nn.Module):
    """Pre-activation residual unit.

    The original applies an in-place ReLU to its input, so the skip carries relu(x), and the caller's
    tensor is rectified too (see `RAFTDepthNormalDecoder.forward`).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FuseBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.way_trunk = ConvBlock(in_channels)
        if fuse:
            self.way_branch = ConvBlock(in_channels)
        self.out_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            x = x + self.way_branch(skip)
        x = self.way_trunk(x)
        if size is not None:
            # The original passes scale factors (2, 7/4); with align_corners=True only sizes matter.
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DecoderFeature(nn.Module):
    """Fuses 1/14, 1/14 and 1/7 features into the 1/4 map (+ depth and normal confidence channels)."""

    def __init__(self, channels: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        self.upconv_3 = FuseBlock(channels[4], channels[3], fuse=False)
        self.upconv_2 = FuseBlock(channels[3], channels[2], fuse=True)
        self.upconv_1 = FuseBlock(channels[2], channels[1] + 2, fuse=True)

    def forward(
        self, f4: torch.Tensor, f7: torch.Tensor, f14: torch.Tensor, f14b: torch.Tensor
    ) -> torch.Tensor:
        x = self.upconv_3(f14b)
        x = self.upconv_2(x, f14, size=(f7.shape[2], f7.shape[3]))
        return self.upconv_1(x, f7, size=(f4.shape[2], f4.shape[3]))
