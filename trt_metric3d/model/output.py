"""The typed result of one Metric3D forward."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Metric3DOutput(NamedTuple):
    """Network outputs, each B x C x H x W at the canvas size the network was fed.

    depth:        B x 1, canonical depth (camera focal length 1000), clamped to [0.1, 200]
    confidence:   B x 1, depth confidence logit of the last iteration
    normal:       B x 4, unit surface normal xyz + kappa (concentration), last iteration
    normal_iter1: B x 3, unit surface normal xyz after the first iteration (what the ComfyUI node shows)
    """

    depth: torch.Tensor
    confidence: torch.Tensor
    normal: torch.Tensor
    normal_iter1: torch.Tensor
