"""Checkpoint resolution order, strict loading and its errors (vit-small, CPU, no network)."""

import os
import socket
import time
from functools import cache

import huggingface_hub
import numpy as np
import pytest
import torch

from support.reference import key_entries
from trt_metric3d import checkpoint as ckpt
from trt_metric3d.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    checkpoint_filename,
    load_model,
    load_state_dict_strict,
    read_state_dict,
    resolve_checkpoint,
)
from trt_metric3d.errors import InputError, Metric3DError
from trt_metric3d.model import build_model
from trt_metric3d.workspace import CHECKPOINT_DIR_ENV

SMALL_FILE = "metric_depth_vit_small_800k.pth"
# One LayerNorm of the decoder's ResidualBlock, registered as both `downsample.1` and `norm3`.
ALIAS = "depth_model.decoder.context_feature_encoder.outputs04.0.0.downsample.1.weight"
TWIN = "depth_model.decoder.context_feature_encoder.outputs04.0.0.norm3.weight"
NORM_BIAS = "depth_model.encoder.norm.bias"


@cache
def _zeros(backbone, key, shape):
    return torch.zeros(shape)


def zeros_state_dict(backbone="vit-small", keep=lambda key: True):
    """A new dict of zero tensors of the official shapes (tensors shared: never edit them in place)."""
    return {k: _zeros(backbone, k, tuple(shape)) for k, shape, _ in key_entries(backbone) if keep(k)}


# Watched for a half-done load: the first and last keys, encoder tokens, an alias pair, a decoder conv.
WATCHED = (
    "depth_model.decoder.context_feature_encoder.outputs04.0.0.conv1.bias",
    "depth_model.encoder.cls_token",
    "depth_model.encoder.pos_embed",
    NORM_BIAS,
    ALIAS,
    TWIN,
    "depth_model.decoder.update_block.mask.2.weight",
)


@pytest.fixture
def untouched_model():
    model = build_model("vit-small")
    state = model.state_dict()
    watched = (*WATCHED, min(state), max(state))
    return model, {k: state[k].clone() for k in watched}


def assert_unchanged(model, before):
    state = model.state_dict()
    for key, value in before.items():
        assert torch.equal(state[key], value), f"{key} changed by a failed load"


def test_filenames_and_error_types():
    assert checkpoint_filename("vit-small") == SMALL_FILE
    assert checkpoint_filename("vit-large") == "metric_depth_vit_large_800k.pth"
    assert checkpoint_filename("vit-giant2") == "metric_depth_vit_giant2_800k.pth"
    with pytest.raises(ValueError, match="vit-small, vit-large, vit-giant2"):
        checkpoint_filename("vit-base")
    with pytest.raises(ValueError, match="vit-small, vit-large, vit-giant2"):
        load_model("vit-base", {})
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, Metric3DError)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(CheckpointNotFoundError, Metric3DError)
    with pytest.raises(InputError):
        checkpoint_filename("vit-base")
    assert ckpt.HF_REPO == "JUGGHM/Metric3D"


# --- loading that works ------------------------------------------------------------------------------------


def test_official_file_loads_strictly(small_checkpoint, small_state_dict):
    model = load_model("vit-small", small_checkpoint)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    for key in (
        "depth_model.encoder.pos_embed",
        "depth_model.decoder.update_block.mask.2.weight",
        ALIAS,
        TWIN,
    ):
        assert torch.equal(loaded[key], small_state_dict[key])


def test_official_file_loads_from_a_string_path(small_checkpoint, small_state_dict):
    model = load_model("vit-small", str(small_checkpoint), device=torch.device("cpu"))
    assert torch.equal(model.state_dict()[NORM_BIAS], small_state_dict[NORM_BIAS])


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_in_memory_state_dict_loads(small_state_dict, kind):
    given = small_state_dict if kind == "torch" else {k: v.numpy() for k, v in small_state_dict.items()}
    model = load_model("vit-small", given)
    loaded = model.state_dict()
    for key in ("depth_model.encoder.cls_token", "depth_model.encoder.blocks.0.11.mlp.fc2.weight", TWIN):
        assert torch.equal(loaded[key], small_state_dict[key])
    assert set(given) == set(small_state_dict)  # the caller's dict is not modified


def test_plain_state_dict_file_loads(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(zeros_state_dict(), path)
    assert set(read_state_dict(path)) == {k for k, _, _ in key_entries("vit-small")}


@pytest.mark.parametrize(("keep", "drop"), [(TWIN, ALIAS), (ALIAS, TWIN)], ids=["norm3", "downsample.1"])
def test_one_alias_name_is_enough(untouched_model, keep, drop):
    model, _ = untouched_model
    sd = zeros_state_dict()
    sd[keep] = torch.full_like(sd[keep], 3.0)
    del sd[drop]
    load_state_dict_strict(model, sd)
    assert (model.state_dict()[ALIAS] == 3.0).all() and (model.state_dict()[TWIN] == 3.0).all()


def test_float64_and_readonly_numpy_values_are_accepted(untouched_model):
    model, _ = untouched_model
    sd = zeros_state_dict()
    sd[NORM_BIAS] = np.full(384, 0.25)  # float64
    sd[NORM_BIAS].flags.writeable = False
    sd[TWIN] = np.full(48, 2.0, np.float32)
    del sd[ALIAS]
    load_state_dict_strict(model, sd)
    value = model.state_dict()[NORM_BIAS]
    assert value.dtype == torch.float32 and (value == 0.25).all()
    assert (model.state_dict()[ALIAS] == 2.0).all()


def test_huge_finite_values_are_not_mistaken_for_inf(untouched_model):
    model, _ = untouched_model
    sd = zeros_state_dict()
    sd[NORM_BIAS] = torch.full((384,), 3e38)  # the float32 sum overflows, every value is finite
    load_state_dict_strict(model, sd)
    assert (model.state_dict()[NORM_BIAS] == 3e38).all()


# --- refused state dicts, model untouched ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda sd: sd.pop("depth_model.encoder.norm.weight"),
            r"missing keys: 1 \(depth_model.encoder.norm.weight\)",
        ),
        (
            lambda sd: sd.update({"depth_model.extra.weight": torch.zeros(2)}),
            r"unexpected keys: 1 \(depth_model.extra",
        ),
        (
            lambda sd: sd.update({NORM_BIAS: torch.zeros(5)}),
            r"norm.bias \(model \(384,\), checkpoint \(5,\)\)",
        ),
        (
            lambda sd: sd.update({ALIAS: torch.ones(48)}),
            f"({ALIAS} and {TWIN}|{TWIN} and {ALIAS}) name one tensor.*different values",
        ),
        (lambda sd: sd.update({NORM_BIAS: torch.full((384,), float("nan"))}), f"{NORM_BIAS} contains NaN"),
        (lambda sd: sd.update({NORM_BIAS: torch.full((384,), float("inf"))}), f"{NORM_BIAS} contains inf"),
        (
            lambda sd: sd.update({NORM_BIAS: torch.zeros(384, dtype=torch.int64)}),
            f"{NORM_BIAS} has dtype torch.int64; the model.s is torch.float32",
        ),
        (
            lambda sd: sd.update({NORM_BIAS: torch.zeros(384, dtype=torch.complex64)}),
            "has dtype torch.complex64",
        ),
        (lambda sd: sd.update({NORM_BIAS: "text"}), f"'{NORM_BIAS}' is a str, not a tensor"),
    ],
    ids=["missing", "unexpected", "shape", "aliases", "nan", "inf", "integer", "complex", "not-tensor"],
)
def test_bad_state_dicts_are_refused_without_touching_the_model(untouched_model, edit, message):
    model, before = untouched_model
    sd = zeros_state_dict()
    sd["depth_model.encoder.cls_token"] = torch.ones(1, 1, 384)  # would change the model if copied early
    edit(sd)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_strict(model, sd)
    assert_unchanged(model, before)


def test_many_missing_keys_are_counted_and_the_list_is_cut(untouched_model):
    model, before = untouched_model
    sd = zeros_state_dict(keep=lambda k: not k.startswith("depth_model.decoder."))
    n_decoder = sum(k.startswith("depth_model.decoder.") for k, _, _ in key_entries("vit-small"))
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, sd)
    message = str(info.value)
    assert f"missing keys: {n_decoder} (depth_model.decoder." in message
    assert f"... {n_decoder - 10} more)" in message and "unexpected" not in message
    assert_unchanged(model, before)


@pytest.mark.parametrize("token", ["depth_model.encoder.cls_token", "depth_model.encoder.pos_embed"])
def test_wrong_backbone_is_named(untouched_model, token):
    """A vit-large checkpoint for the vit-small model (its blocks left out: 1.2 GB of zeros otherwise)."""
    model, before = untouched_model
    other = (
        "depth_model.encoder.pos_embed" if token.endswith("cls_token") else "depth_model.encoder.cls_token"
    )
    sd = zeros_state_dict("vit-large", keep=lambda k: "blocks" not in k and k != other)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, sd)
    message = str(info.value)
    assert (
        "this looks like a vit-large checkpoint" in message and "metric_depth_vit_large_800k.pth" in message
    )
    assert "missing keys:" in message and "depth_model.encoder.blocks.0." in message
    assert "shape mismatches:" in message and "(model (48,), checkpoint (128,))" in message
    assert message.startswith("checkpoint does not fit the vit-small model: this looks like a vit-large")
    assert_unchanged(model, before)


def test_prefixed_keys_get_a_hint(untouched_model):
    model, before = untouched_model
    sd = {f"module.{k}": v for k, v in zeros_state_dict().items()}
    with pytest.raises(CheckpointError, match="extra 'module.' prefix"):
        load_state_dict_strict(model, sd)
    sd = {k.removeprefix("depth_model."): v for k, v in zeros_state_dict().items()}
    with pytest.raises(CheckpointError, match="lack the 'depth_model.' prefix"):
        load_state_dict_strict(model, sd)
    assert_unchanged(model, before)


# --- unreadable files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00garbage" * 100, np.random.default_rng(0).bytes(4096), b"PK\x03\x04truncated zip"],
    ids=["empty", "garbage", "random", "zip"],
)
def test_corrupt_files_are_explained(tmp_path, content):
    path = tmp_path / SMALL_FILE
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="download it again") as info:
        load_model("vit-small", path)
    assert str(path) in str(info.value) and info.value.__cause__ is not None


def test_truncated_official_file(tmp_path, small_checkpoint):
    path = tmp_path / "cut.pth"
    path.write_bytes(small_checkpoint.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match=r"cut.pth is not a readable .*truncated or corrupt"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "content", [{"epoch": 3}, {"model": {"w": [1.0]}}, [1, 2]], ids=["dict", "nested", "list"]
)
def test_file_without_tensors(tmp_path, content):
    path = tmp_path / "no_tensors.pth"
    torch.save(content, path)
    with pytest.raises(
        CheckpointError, match="no_tensors.pth holds no state dict of tensors.*download it again"
    ):
        read_state_dict(path)


def test_file_with_objects_weights_only_refuses(tmp_path):
    path = tmp_path / "with_numpy.pth"
    torch.save({"model_state_dict": zeros_state_dict(), "step": np.int64(800_000)}, path)
    with pytest.raises(CheckpointError, match=r"with_numpy.pth contains Python code.*would call numpy"):
        read_state_dict(path)


class RunsAShellCommand:
    """Pickles as a call to os.system: what a booby-trapped .pth holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_file_that_would_run_code_is_refused_and_named(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / SMALL_FILE
    torch.save({"model_state_dict": zeros_state_dict(), "x": RunsAShellCommand(f"touch {marker}")}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert not marker.exists(), "the file's code ran"
    assert (
        f"{path} contains Python code" in message and f"would call {os.system.__module__}.system" in message
    )
    assert "not loaded, for safety" in message
    assert "download it again from https://huggingface.co/JUGGHM/Metric3D" in message
    assert "truncated" not in message and "\n" not in message


def test_missing_file_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model("vit-small", "/nonexistent/metric_depth_vit_small_800k.pth")
    with pytest.raises(CheckpointNotFoundError, match="is not a file"):
        read_state_dict(tmp_path)


# --- where the file comes from -----------------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """The Hugging Face hub as seen offline: nothing cached, every download fails (recorded)."""
    calls = []

    def download(*args, **kwargs):
        calls.append(args)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(ckpt, "_hub_unreachable", lambda endpoint: None)
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_environment_folder_wins(no_hub, monkeypatch, tmp_path):
    cached = tmp_path / "hf" / "metric_depth_vit_large_800k.pth"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    (tmp_path / "metric_depth_vit_large_800k.pth").write_bytes(b"x")
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(cached))
    assert resolve_checkpoint("vit-large") == tmp_path / "metric_depth_vit_large_800k.pth"
    assert not no_hub


def test_hf_cache_when_the_folder_lacks_the_file(no_hub, monkeypatch, tmp_path):
    cached = tmp_path / "hf" / SMALL_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    (tmp_path / "metric_depth_vit_large_800k.pth").write_bytes(b"x")  # another backbone's file: not used
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    asked = []
    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        lambda repo, name: asked.append((repo, name)) or str(cached),
    )
    assert resolve_checkpoint("vit-small") == cached
    assert asked == [("JUGGHM/Metric3D", SMALL_FILE)] and not no_hub


def test_download_as_last_resort(no_hub, monkeypatch):
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, name, endpoint: f"/downloaded/{repo}/{name}"
    )
    assert (
        str(resolve_checkpoint("vit-giant2"))
        == "/downloaded/JUGGHM/Metric3D/metric_depth_vit_giant2_800k.pth"
    )


def test_offline_without_a_local_file_says_what_to_do(no_hub, monkeypatch, tmp_path):
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("vit-small")
    message = str(info.value)
    assert SMALL_FILE in message and "https://huggingface.co/JUGGHM/Metric3D" in message
    assert f"METRIC3D_CHECKPOINT_DIR={tmp_path} does not contain it" in message
    assert "METRIC3D_CHECKPOINT_DIR=/models/metric3d with /models/metric3d/" + SMALL_FILE in message
    assert "LocalEntryNotFoundError: offline" in message and len(no_hub) == 1
    assert isinstance(info.value.__cause__, huggingface_hub.errors.LocalEntryNotFoundError)


def test_environment_folder_that_does_not_exist_is_named(no_hub, monkeypatch, tmp_path):
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointNotFoundError, match="nowhere is not an existing folder"):
        resolve_checkpoint("vit-small")


def test_hf_hub_offline_makes_no_download_attempt(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("vit-small")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and SMALL_FILE in message and "METRIC3D_CHECKPOINT_DIR=" in message
    assert not no_hub


def test_hf_hub_offline_still_uses_the_cache(no_hub, monkeypatch, tmp_path):
    cached = tmp_path / SMALL_FILE
    cached.write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(cached))
    assert resolve_checkpoint("vit-small") == cached and not no_hub


# --- an unreachable hub ------------------------------------------------------------------------------------


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """Nothing cached, no folder set, HF_HUB_OFFLINE unset: the next step would be a download."""
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_unreachable_hub_is_reported_at_once_without_retries(empty_cache, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens there
    start = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("vit-small")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < ckpt.HUB_PROBE_TIMEOUT_S + 1, f"took {elapsed:.1f} s"
    assert "the Hugging Face hub http://127.0.0.1:9 is unreachable: offline?" in message
    assert "cannot connect to 127.0.0.1:9" in message and "HF_HUB_OFFLINE=1 skips this check" in message
    assert SMALL_FILE in message and "METRIC3D_CHECKPOINT_DIR=/models/metric3d" in message
    assert "Retry" not in capfd.readouterr().err


def test_hub_probe_gives_up_after_its_timeout(monkeypatch):
    def silent_network(address, timeout):
        time.sleep(2)
        raise TimeoutError("timed out")  # as a real connect does once its own timeout passes

    monkeypatch.setattr(socket, "create_connection", silent_network)
    start = time.perf_counter()
    reason = ckpt._hub_unreachable("https://huggingface.co", timeout=0.2)
    assert time.perf_counter() - start < 1
    assert reason == "no connection to huggingface.co:443 within 0.2 s"


def test_hub_probe_goes_through_a_proxy_and_passes_when_it_answers(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert ckpt._hub_unreachable("https://hub.invalid") is None


def test_doctor_finds_checkpoints_where_loading_finds_them(no_hub, monkeypatch, tmp_path):
    """doctor and resolve_checkpoint share one lookup: a folder given as ~/... is found by both."""
    from click.testing import CliRunner

    from trt_metric3d.cli import main

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / SMALL_FILE).write_bytes(b"x")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, "~/models")
    assert resolve_checkpoint("vit-small") == tmp_path / "models" / SMALL_FILE
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"checkpoint vit-small: {tmp_path / 'models' / SMALL_FILE}" in result.output
    assert "checkpoint vit-large: not downloaded yet" in result.output
