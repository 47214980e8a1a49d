"""Official Metric3D v2 checkpoints: where to find them, and strict loading into our network."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .model import BACKBONES, build_model

HF_REPO = "JUGGHM/Metric3D"
HF_URL = f"https://huggingface.co/{HF_REPO}"
CHECKPOINT_DIR_ENV = "METRIC3D_CHECKPOINT_DIR"

# ResidualBlock registers one LayerNorm under two names; checkpoints carry both.
_ALIAS = re.compile(r"^(?P<prefix>.+)\.downsample\.1\.(?P<leaf>weight|bias)$")


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be loaded as it is."""


class CheckpointNotFoundError(FileNotFoundError):
    """No local checkpoint, and it could not be downloaded."""


def checkpoint_filename(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    return f"metric_depth_vit_{backbone.removeprefix('vit-')}_800k.pth"


def resolve_checkpoint(backbone: str) -> Path:
    """$METRIC3D_CHECKPOINT_DIR, then the Hugging Face cache, then a download from JUGGHM/Metric3D."""
    import huggingface_hub

    filename = checkpoint_filename(backbone)
    local_dir = os.environ.get(CHECKPOINT_DIR_ENV)
    if local_dir and (Path(local_dir) / filename).is_file():
        return Path(local_dir) / filename
    cached = huggingface_hub.try_to_load_from_cache(HF_REPO, filename)
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(huggingface_hub.hf_hub_download(HF_REPO, filename))
    except Exception as e:  # offline, HF_HUB_OFFLINE=1, network or auth errors: one clear message
        searched = f"; {CHECKPOINT_DIR_ENV}={local_dir} does not contain it" if local_dir else ""
        raise CheckpointNotFoundError(
            f"checkpoint {filename} not found locally and could not be downloaded ({type(e).__name__}: {e})"
            f"{searched}. Download it from {HF_URL} and put it in a folder named by {CHECKPOINT_DIR_ENV}, "
            f"e.g. {CHECKPOINT_DIR_ENV}=/models/metric3d with /models/metric3d/{filename}"
        ) from e


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of an official `.pth` ({"model_state_dict": ...}) or of a plain state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}); it may be truncated or "
            f"corrupt: download it again from {HF_URL}"
        ) from e
    if isinstance(content, Mapping) and isinstance(content.get("model_state_dict"), Mapping):
        content = content["model_state_dict"]
    if not isinstance(content, Mapping) or not any(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(
            f"{path} holds no state dict of tensors; is it a Metric3D checkpoint from {HF_URL}?"
        )
    return dict(content)


def _as_tensors(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, value in state_dict.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value
    return tensors


def _fill_aliases(state_dict: dict[str, torch.Tensor]) -> None:
    """Accept either name of an aliased LayerNorm; both present must agree."""
    for key in list(state_dict):
        match = _ALIAS.match(key)
        if not match:
            continue
        twin = f"{match['prefix']}.norm3.{match['leaf']}"
        if twin not in state_dict:
            state_dict[twin] = state_dict[key]
        elif not torch.equal(state_dict[twin], state_dict[key]):
            raise CheckpointError(f"{key} and {twin} name one LayerNorm but hold different values")
    for key in list(state_dict):
        if key.endswith((".norm3.weight", ".norm3.bias")):
            prefix, leaf = key.rsplit(".norm3.", 1)
            state_dict.setdefault(f"{prefix}.downsample.1.{leaf}", state_dict[key])


def _listing(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def _backbone_hint(state_dict: Mapping[str, torch.Tensor], expected_width: int) -> str:
    token = state_dict.get("depth_model.encoder.cls_token")
    widths = {384: "vit-small", 1024: "vit-large", 1536: "vit-giant2"}
    if token is not None and token.shape[-1] != expected_width and token.shape[-1] in widths:
        return f"; this looks like a {widths[token.shape[-1]]} checkpoint: pick that backbone"
    return ""


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, object]) -> None:
    """Copy `state_dict` into `model` only if every key and shape matches exactly (else nothing)."""
    tensors = _as_tensors(state_dict)
    _fill_aliases(tensors)
    expected = model.state_dict()
    width = (
        expected["depth_model.encoder.cls_token"].shape[-1]
        if "depth_model.encoder.cls_token" in expected
        else 0
    )
    hint = _backbone_hint(tensors, width)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    mismatched = [
        f"{k} (model {tuple(expected[k].shape)}, checkpoint {tuple(tensors[k].shape)})"
        for k in sorted(set(expected) & set(tensors))
        if tensors[k].shape != expected[k].shape
    ]
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems) + hint)
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise CheckpointError(f"checkpoint entry {key} has dtype {value.dtype}; expected floating point")
        if not torch.isfinite(value).all():
            raise CheckpointError(f"checkpoint entry {key} contains NaN or inf: the file is damaged")
    model.load_state_dict(tensors, strict=True)


def load_model(
    backbone: str,
    checkpoint: str | os.PathLike | Mapping[str, object] | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """The Metric3D v2 network with official weights, in eval mode on `device`.

    checkpoint: path to an official .pth, or a state dict (torch tensors or numpy arrays);
    None finds `metric_depth_vit_<size>_800k.pth` (see `resolve_checkpoint`).
    """
    if checkpoint is None:
        checkpoint = resolve_checkpoint(backbone)
    state_dict = checkpoint if isinstance(checkpoint, Mapping) else read_state_dict(checkpoint)
    model = build_model(backbone)
    load_state_dict_strict(model, state_dict)
    return model.to(device).eval().requires_grad_(False)
