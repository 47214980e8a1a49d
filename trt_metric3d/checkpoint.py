"""Official Metric3D v2 checkpoints: where to find them, and strict loading into our network."""

from __future__ import annotations

import os
import pickle
import re
import socket
import threading
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from .errors import InputError, Metric3DError
from .model import BACKBONES, CONFIGS, build_model
from .workspace import CHECKPOINT_DIR_ENV

HF_REPO = "JUGGHM/Metric3D"
HF_URL = f"https://huggingface.co/{HF_REPO}"
HUB_PROBE_TIMEOUT_S = 3.0

_ENCODER = "depth_model.encoder."
_LIST_LIMIT = 10


class CheckpointError(Metric3DError, ValueError):
    """A checkpoint file or state dict that cannot be loaded as it is."""


class CheckpointNotFoundError(Metric3DError, FileNotFoundError):
    """No local checkpoint, and it could not be downloaded."""


def checkpoint_filename(backbone: str) -> str:
    """`metric_depth_vit_{small,large,giant2}_800k.pth`, the official file name for `backbone`."""
    if backbone not in BACKBONES:
        raise InputError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    return f"metric_depth_vit_{backbone.removeprefix('vit-')}_800k.pth"


# ---------------------------------------------------------------------------------------------------------
# Finding the file


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, also when set after huggingface_hub was imported."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:limit]}" if line else type(error).__name__


def _hub_endpoint() -> str:
    """HF_ENDPOINT as huggingface_hub reads it, also when set after huggingface_hub was imported."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or constants.ENDPOINT


def _first_hop(endpoint: str) -> tuple[str, int]:
    """(host, port) a download from `endpoint` connects to: the proxy when one is set for it."""
    url = urlsplit(endpoint)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not url.hostname:
        raise ValueError("no host name")
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def _hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why a download from `endpoint` cannot start (name lookup plus TCP connect failed or took over
    `timeout` seconds), or None when it can connect. Much faster than huggingface_hub's own retries."""
    try:
        host, port = _first_hop(endpoint)
    except ValueError as e:
        return f"{endpoint!r} is not a valid URL ({e})"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port}: {e}")

    # getaddrinfo has no timeout of its own: waiting on a thread bounds name lookup and connect together.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"no connection to {host}:{port} within {timeout:g} s"


def _checkpoint_folder() -> Path | None:
    local_dir = os.environ.get(CHECKPOINT_DIR_ENV, "").strip()
    return Path(local_dir).expanduser() if local_dir else None


def local_checkpoint(backbone: str) -> Path | None:
    """The official checkpoint for `backbone` where it already is on this machine (no network): in the
    folder named by $METRIC3D_CHECKPOINT_DIR, else in the Hugging Face cache; None where neither has it."""
    import huggingface_hub

    filename = checkpoint_filename(backbone)
    folder = _checkpoint_folder()
    if folder is not None and (folder / filename).is_file():
        return folder / filename
    cached = huggingface_hub.try_to_load_from_cache(HF_REPO, filename)
    if isinstance(cached, str | os.PathLike) and Path(cached).is_file():
        return Path(cached)
    return None


def resolve_checkpoint(backbone: str) -> Path:
    """Path of the official checkpoint for `backbone`, looked for in this order:

    1. the folder named by $METRIC3D_CHECKPOINT_DIR (when set and the file is there);
    2. the Hugging Face cache (no network);
    3. a download from https://huggingface.co/JUGGHM/Metric3D (or $HF_ENDPOINT), skipped when
       HF_HUB_OFFLINE=1 and, after a short connection probe, when the hub cannot be reached.

    Raises CheckpointNotFoundError, saying where to put the file, when none of these gives it.
    """
    import huggingface_hub

    found = local_checkpoint(backbone)
    if found is not None:
        return found
    filename = checkpoint_filename(backbone)
    folder = _checkpoint_folder()
    local_note = ""
    if folder is not None:
        state = "does not contain it" if folder.is_dir() else "is not an existing folder"
        local_note = f"{CHECKPOINT_DIR_ENV}={os.environ[CHECKPOINT_DIR_ENV].strip()} {state}; "

    cause: Exception | None = None
    endpoint = _hub_endpoint()
    if _hub_offline():
        attempt = "it was not downloaded because HF_HUB_OFFLINE is set"
    elif unreachable := _hub_unreachable(endpoint):
        attempt = (
            f"the Hugging Face hub {endpoint} is unreachable: offline? ({unreachable}; HF_HUB_OFFLINE=1 "
            f"skips this check)"
        )
    else:
        try:
            return Path(huggingface_hub.hf_hub_download(HF_REPO, filename, endpoint=endpoint))
        except Exception as e:  # offline, network, disk or auth errors: one clear message below
            cause = e
            attempt = f"downloading it failed ({_first_line(e)})"
    raise CheckpointNotFoundError(
        f"Metric3D checkpoint {filename} not found: {local_note}it is not in the Hugging Face cache, and "
        f"{attempt}. Download {filename} from {HF_URL} and put it in a folder named by "
        f"{CHECKPOINT_DIR_ENV}, e.g. {CHECKPOINT_DIR_ENV}=/models/metric3d with "
        f"/models/metric3d/{filename}"
    ) from cause


# ---------------------------------------------------------------------------------------------------------
# Reading the file


def _load_failure(error: BaseException, limit: int = 200) -> str:
    """torch.load's error in one line, as `_first_line`. A weights-only refusal gives its reason: the
    last line before the pointer to the docs, after paragraphs of advice that do not apply here."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Weights only load failed"):
        return _first_line(error, limit)
    reason = [line for line in lines if not line.startswith("Check the documentation")][-1]
    return f"{type(error).__name__}: {reason.removeprefix('WeightsUnpickler error:').strip()[:limit]}"


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of an official `.pth` ({"model_state_dict": ...}) or of a plain state-dict file.

    Loaded with `weights_only=True` (no code from the file runs). A damaged or foreign file raises
    CheckpointError naming it; a missing one CheckpointNotFoundError. mmap: the tensors stay in the
    file (memory-mapped) where its format allows (torch.save's zip format): a cheap check of a file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint file {path} {what}")
    redownload = f"download it again from {HF_URL}"
    try:
        mmap = mmap and zipfile.is_zipfile(path)  # the legacy format cannot be memory-mapped
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except Exception as e:
        reason = _load_failure(e)
        refused = re.search(r"GLOBAL (\S+)", reason)  # torch names the callable the pickle would call
        if isinstance(e, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"{path} contains Python code, not only tensors: loading it would call {refused[1]} (a "
                f"Python callable), so it was not loaded, for safety; the official Metric3D checkpoints "
                f"hold tensors only: {redownload}"
            ) from e
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason}); it may be truncated or corrupt: "
            f"{redownload}"
        ) from e
    if isinstance(content, Mapping) and isinstance(content.get("model_state_dict"), Mapping):
        content = content["model_state_dict"]
    if not isinstance(content, Mapping) or not any(isinstance(v, torch.Tensor) for v in content.values()):
        if isinstance(content, Mapping):
            found = f"a dict with keys {_listing(sorted(map(str, content)))}"
        else:
            found = f"a {type(content).__name__}"
        raise CheckpointError(
            f"{path} holds no state dict of tensors (found {found}); it is not a Metric3D checkpoint: "
            f"{redownload}"
        )
    return dict(content)


# ---------------------------------------------------------------------------------------------------------
# Strict loading


def _as_tensors(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A new dict of torch tensors (numpy arrays converted); anything else is refused."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if isinstance(value, np.ndarray | np.generic):
            array = np.asarray(value)
            try:
                value = torch.from_numpy(array if array.flags.writeable else array.copy())
            except TypeError as e:
                raise CheckpointError(
                    f"checkpoint entry {key!r} is a numpy array of dtype {array.dtype}"
                ) from e
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value
    return tensors


def _alias_groups(model: torch.nn.Module, expected: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """State-dict names that reach the same tensor because a module is registered under several names.

    In Metric3D's decoder ResidualBlock one LayerNorm is both `norm3` and `downsample.1`.
    """
    names_by_module: dict[int, list[str]] = defaultdict(list)
    modules: dict[int, torch.nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names_by_module[id(module)].append(name)
        modules[id(module)] = module
    groups = []
    for module_id, names in names_by_module.items():
        if len(names) < 2:
            continue
        for leaf in modules[module_id].state_dict():
            group = [f"{name}.{leaf}" if name else leaf for name in names]
            group = [key for key in group if key in expected]
            if len(group) > 1:
                groups.append(group)
    return groups


def _fill_aliases(tensors: dict[str, torch.Tensor], groups: list[list[str]]) -> None:
    """Accept any one name of an aliased tensor; names given more than once must agree."""
    for group in groups:
        given = [key for key in group if key in tensors]
        if not given:
            continue  # reported as missing
        first = tensors[given[0]]
        for other in given[1:]:
            value = tensors[other]
            if value.shape != first.shape or not torch.equal(value.to(first.dtype), first):
                raise CheckpointError(
                    f"{given[0]} and {other} name one tensor of the model (one module registered "
                    f"under both names) but the checkpoint gives them different values"
                    + (
                        ""
                        if value.shape == first.shape
                        else f" (shapes {tuple(first.shape)}, {tuple(value.shape)})"
                    )
                )
        for key in group:
            tensors.setdefault(key, first)


def _listing(items: list[str], limit: int = _LIST_LIMIT) -> str:
    shown = ", ".join(items[:limit])
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} ({shown}{more})"


def _encoder_width(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    for leaf in ("cls_token", "pos_embed", "register_tokens", "norm.weight", "patch_embed.proj.bias"):
        value = state_dict.get(_ENCODER + leaf)
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return int(value.shape[-1])
    return None


def _backbone_of_width(width: int | None) -> str | None:
    return next((name for name, config in CONFIGS.items() if config.encoder.embed_dim == width), None)


def _hint(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], unexpected: list[str]
) -> str:
    """Why the keys may not fit: another backbone's checkpoint, or keys under another prefix; "" if none."""
    got, want = _encoder_width(tensors), _encoder_width(expected)
    if got is not None and want is not None and got != want:
        other = _backbone_of_width(got)
        if other:
            return (
                f"this looks like a {other} checkpoint (encoder width {got}, the model's is {want}; file "
                f"{checkpoint_filename(other)}): load it with backbone {other!r}"
            )
        return (
            f"the checkpoint's encoder width is {got}, the model's {want}: not a checkpoint for this backbone"
        )
    if unexpected:
        half = len(unexpected) / 2
        stripped = [key.split(".", 1)[1] for key in unexpected if "." in key]
        if sum(key in expected for key in stripped) > half:
            prefix = unexpected[0].split(".", 1)[0] + "."
            return f"the checkpoint's keys carry an extra {prefix!r} prefix: strip it"
        prefixed = [f"depth_model.{key}" for key in unexpected]
        if sum(key in expected for key in prefixed) > half:
            return "the checkpoint's keys lack the 'depth_model.' prefix"
    return ""


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, object]) -> None:
    """Copy `state_dict` into `model` if every key, shape and value is acceptable; else change nothing.

    Strict: any missing or unexpected key, or any shape mismatch, raises CheckpointError listing them
    (with a hint when the checkpoint is another backbone's). Names of one aliased tensor (the decoder's
    `norm3` / `downsample.1` LayerNorm) must agree when both are given; one of them is enough. Values
    must be finite floating-point tensors. `state_dict` values may be torch tensors or numpy arrays.
    """
    tensors = _as_tensors(state_dict)
    expected = model.state_dict()
    _fill_aliases(tensors, _alias_groups(model, expected))

    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{key} (model {tuple(expected[key].shape)}, checkpoint {tuple(tensors[key].shape)})"
        for key in sorted(set(expected) & set(tensors))
        if tensors[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        backbone = _backbone_of_width(_encoder_width(expected))
        hint = _hint(tensors, expected, unexpected)
        raise CheckpointError(
            f"checkpoint does not fit the {backbone or 'Metric3D'} model: "
            + (f"{hint}. Details: " if hint else "")
            + "; ".join(problems)
        )

    for key in sorted(tensors):
        value = tensors[key]
        if value.is_floating_point() != expected[key].is_floating_point() or value.is_complex():
            raise CheckpointError(
                f"checkpoint entry {key} has dtype {value.dtype}; the model's is {expected[key].dtype}"
            )
        if not value.is_floating_point():
            continue
        # A sum is finite when every value is (fast); an overflowing sum gets the exact test.
        if not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            raise CheckpointError(f"checkpoint entry {key} contains {kind} values: the weights are damaged")

    model.load_state_dict(tensors, strict=True)


def load_model(
    backbone: str,
    checkpoint: str | os.PathLike | Mapping[str, object] | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """The Metric3D v2 network with official weights, in eval mode, frozen, on `device`.

    checkpoint: path to an official .pth, or a state dict (torch tensors or numpy arrays);
    None finds `metric_depth_vit_<size>_800k.pth` (see `resolve_checkpoint`).
    """
    checkpoint_filename(backbone)  # unknown backbone: ValueError before any file work
    if checkpoint is None:
        checkpoint = resolve_checkpoint(backbone)
    state_dict = checkpoint if isinstance(checkpoint, Mapping) else read_state_dict(checkpoint)
    model = build_model(backbone)
    load_state_dict_strict(model, state_dict)
    return model.to(device).eval().requires_grad_(False)
