"""`Metric3DDetector` with comfyui_controlnet_aux's contract, backed by this package.

from trt_metric3d.comfyui.detector import Metric3DDetector   # instead of custom_controlnet_aux.metric3d
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..annotator import controlnet_maps
from ..checkpoint import HF_REPO, load_model
from .host import find_checkpoint

_BACKBONE_IN_NAME = re.compile(r"metric_depth_vit_(small|large|giant2)_")


class Metric3DDetector:
    def __init__(self, model) -> None:
        self.model = model
        self.device = "cpu"

    @classmethod
    def from_pretrained(
        cls, pretrained_model_or_path: str = HF_REPO, filename: str = "metric_depth_vit_small_800k.pth"
    ) -> Metric3DDetector:
        """`filename` names the backbone; a folder holding it is used directly, else the usual search."""
        match = _BACKBONE_IN_NAME.search(filename)
        if match is None:
            raise ValueError(
                f"{filename!r} is not a Metric3D checkpoint name (metric_depth_vit_<size>_800k.pth)"
            )
        backbone = f"vit-{match.group(1)}"
        local = Path(pretrained_model_or_path) / filename
        checkpoint = local if os.path.isfile(local) else find_checkpoint(backbone)
        return cls(load_model(backbone, checkpoint))

    def to(self, device) -> Metric3DDetector:
        self.model.to(device)
        self.device = device
        return self

    def __call__(
        self,
        input_image,
        detect_resolution: int = 512,
        fx: float = 1000,
        fy: float = 1000,
        output_type: str | None = None,
        upscale_method: str = "INTER_CUBIC",
        depth_and_normal: bool = True,
        **kwargs,
    ):
        """(depth map, normal map) as the original; fx / fy do not change these images (as there)."""
        if input_image is None:
            raise ValueError("input_image must be defined.")
        if not isinstance(input_image, np.ndarray):  # PIL in, PIL out, as controlnet_aux does
            input_image = np.array(input_image, dtype=np.uint8)
            output_type = output_type or "pil"
        output_type = output_type or "np"
        depth, normal = controlnet_maps(
            self.model, input_image, detect_resolution, getattr(cv2, upscale_method)
        )
        if output_type == "pil":
            depth, normal = Image.fromarray(depth), Image.fromarray(normal)
        return (depth, normal) if depth_and_normal else depth
