"""DINOv2 vision transformer with register tokens: the Metric3D v2 encoder.

Parameter names follow the official checkpoints (`blocks.0.<i>`: the blocks live in one chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # DINOv2's SwiGLU width rule
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = (Mlp if cfg.ffn == "mlp" else SwiGLU)(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _cubic_near(d: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight for a tap at distance |d| <= 1."""
    return ((CUBIC_A + 2) * d - (CUBIC_A + 3)) * d * d + 1


def _cubic_far(d: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight for a tap at distance 1 < |d| < 2."""
    return ((CUBIC_A * d - 5 * CUBIC_A) * d + 8 * CUBIC_A) * d - 4 * CUBIC_A


def bicubic_matrix(out_size: int, in_size: int, scale: float, device: torch.device) -> torch.Tensor:
    """out_size x in_size matrix M with M @ v == bicubic resize of v (PyTorch's rule, align_corners=False).

    `scale` is the user-given scale factor: like `F.interpolate(scale_factor=...)`, source coordinates
    use 1/scale rather than in/out. Built from the output size with tensor ops only, so it traces
    with a symbolic canvas size.
    """
    src = (torch.arange(out_size, dtype=torch.float32, device=device) + 0.5) * (1.0 / scale) - 0.5
    left = torch.floor(src)
    t = src - left
    weights = (_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t))
    columns = torch.arange(in_size, device=device)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float32, device=device)
    for offset, weight in zip((-1, 0, 1, 2), weights, strict=True):
        # Border taps are clamped to the edge, as PyTorch reads them.
        index = (left.long() + offset).clamp(0, in_size - 1)
        matrix = matrix + weight[:, None] * (index[:, None] == columns[None, :])
    return matrix


class DinoVisionTransformer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pretrain_grid**2 + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        # Trained for masked-image modelling; unused at inference but part of the checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList([nn.ModuleList(Block(cfg) for _ in range(cfg.depth))])
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Bicubic resize of the 37 x 37 position grid to grid_h x grid_w, exactly as DINOv2 does.

        DINOv2 passes scale factors (grid + 0.1) / 37, not sizes; the offset shifts the sampling
        positions, so it is kept. (Its identity shortcut for a 37 x 37 grid never applies here: canvas
        grids are even.)
        """
        cfg = self.cfg
        n, dim = cfg.pretrain_grid, cfg.embed_dim
        pos = self.pos_embed.float()
        grid = pos[0, 1:].reshape(n, n, dim).permute(2, 0, 1)  # dim x n x n
        rows = bicubic_matrix(grid_h, n, (grid_h + cfg.interpolate_offset) / n, pos.device)
        cols = bicubic_matrix(grid_w, n, (grid_w + cfg.interpolate_offset) / n, pos.device)
        patch_pos = (rows @ grid @ cols.T).permute(1, 2, 0).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W -> four B x (1 + registers + h*w) x C token maps for the decoder."""
        b = x.shape[0]
        grid_h, grid_w = x.shape[2] // self.cfg.patch_size, x.shape[3] // self.cfg.patch_size
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_embed(grid_h, grid_w)
        x = torch.cat((x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]), dim=1)

        blocks = self.blocks[0]
        if not self.cfg.tap_quarters:
            for block in blocks:
                x = block(x)
            x = self.norm(x)
            return [x, x, x, x]
        taps, quarter = [], len(blocks) // 4
        for i, block in enumerate(blocks):
            x = block(x)
            if (i + 1) % quarter == 0:
                taps.append(x)
        return taps
