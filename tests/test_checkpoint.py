"""Checkpoint resolution order, strict loading and its errors."""

import huggingface_hub
import pytest
import torch

from reference import key_entries
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
from trt_metric3d.model import build_model

ALIAS = "depth_model.decoder.context_feature_encoder.outputs04.0.0.downsample.1.weight"
TWIN = "depth_model.decoder.context_feature_encoder.outputs04.0.0.norm3.weight"


def zeros_state_dict(backbone="vit-small"):
    return {k: torch.zeros(shape) for k, shape, _ in key_entries(backbone)}


@pytest.fixture
def untouched_model():
    model = build_model("vit-small")
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed by a failed load"


def test_filenames():
    assert checkpoint_filename("vit-small") == "metric_depth_vit_small_800k.pth"
    assert checkpoint_filename("vit-giant2") == "metric_depth_vit_giant2_800k.pth"
    with pytest.raises(ValueError, match="vit-small, vit-large, vit-giant2"):
        checkpoint_filename("vit-base")


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


def test_in_memory_numpy_state_dict_loads(small_state_dict):
    as_numpy = {k: v.numpy() for k, v in small_state_dict.items()}
    model = load_model("vit-small", as_numpy)
    assert torch.equal(
        model.state_dict()["depth_model.encoder.cls_token"], small_state_dict["depth_model.encoder.cls_token"]
    )


def test_plain_state_dict_file_loads(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(zeros_state_dict(), path)
    assert set(read_state_dict(path)) == {k for k, _, _ in key_entries("vit-small")}


def test_one_alias_name_is_enough(untouched_model):
    model, _ = untouched_model
    sd = zeros_state_dict()
    sd[TWIN] = torch.full_like(sd[TWIN], 3.0)
    del sd[ALIAS]
    load_state_dict_strict(model, sd)
    assert (model.state_dict()[ALIAS] == 3.0).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda sd: sd.pop("depth_model.encoder.norm.weight"),
            r"missing keys: 1 \(depth_model.encoder.norm.weight\)",
        ),
        (
            lambda sd: sd.update({"depth_model.extra.weight": torch.zeros(2)}),
            "unexpected keys: 1 .*extra.weight",
        ),
        (
            lambda sd: sd.update({"depth_model.encoder.norm.bias": torch.zeros(5)}),
            r"norm.bias \(model \(384,\), checkpoint \(5,\)\)",
        ),
        (lambda sd: sd.update({ALIAS: torch.ones(48)}), "name one LayerNorm but hold different values"),
        (lambda sd: sd.update({"depth_model.encoder.norm.bias": torch.full((384,), float("nan"))}), "NaN"),
        (
            lambda sd: sd.update({"depth_model.encoder.norm.bias": torch.zeros(384, dtype=torch.int64)}),
            "dtype",
        ),
        (lambda sd: sd.update({"depth_model.encoder.norm.bias": "text"}), "not a tensor"),
    ],
    ids=["missing", "unexpected", "shape", "aliases", "nan", "integer", "not-tensor"],
)
def test_bad_state_dicts_are_refused_without_touching_the_model(untouched_model, edit, message):
    model, before = untouched_model
    sd = zeros_state_dict()
    edit(sd)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_strict(model, sd)
    assert_unchanged(model, before)


def test_wrong_backbone_is_named(untouched_model):
    model, before = untouched_model
    sd = {k: torch.zeros(shape) for k, shape, _ in key_entries("vit-large") if "blocks" not in k}
    with pytest.raises(CheckpointError, match="looks like a vit-large checkpoint"):
        load_state_dict_strict(model, sd)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "content", [b"", b"\x00garbage" * 100, b"PK\x03\x04truncated zip"], ids=["empty", "garbage", "zip"]
)
def test_corrupt_files_are_explained(tmp_path, content):
    path = tmp_path / "metric_depth_vit_small_800k.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="download it again"):
        load_model("vit-small", path)


def test_truncated_official_file(tmp_path, small_checkpoint):
    path = tmp_path / "cut.pth"
    path.write_bytes(small_checkpoint.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


def test_file_without_tensors(tmp_path):
    path = tmp_path / "empty_dict.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        read_state_dict(path)


@pytest.fixture
def no_hub(monkeypatch):
    """The Hugging Face hub as seen offline: nothing cached, every download fails."""
    calls = []

    def download(*args, **kwargs):
        calls.append(args)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv(ckpt.CHECKPOINT_DIR_ENV, raising=False)
    return calls


def test_environment_folder_wins(no_hub, monkeypatch, tmp_path):
    (tmp_path / "metric_depth_vit_large_800k.pth").write_bytes(b"x")
    monkeypatch.setenv(ckpt.CHECKPOINT_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/hf/cache/file.pth")
    assert resolve_checkpoint("vit-large") == tmp_path / "metric_depth_vit_large_800k.pth"
    assert not no_hub


def test_hf_cache_when_the_folder_lacks_the_file(no_hub, monkeypatch, tmp_path):
    monkeypatch.setenv(ckpt.CHECKPOINT_DIR_ENV, str(tmp_path))
    asked = []
    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda repo, name: asked.append((repo, name)) or "/c/f.pth"
    )
    assert str(resolve_checkpoint("vit-small")) == "/c/f.pth"
    assert asked == [("JUGGHM/Metric3D", "metric_depth_vit_small_800k.pth")] and not no_hub


def test_download_as_last_resort(monkeypatch):
    monkeypatch.delenv(ckpt.CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: f"/downloaded/{repo}/{name}")
    assert (
        str(resolve_checkpoint("vit-giant2"))
        == "/downloaded/JUGGHM/Metric3D/metric_depth_vit_giant2_800k.pth"
    )


def test_offline_without_a_local_file_says_what_to_do(no_hub, monkeypatch, tmp_path):
    monkeypatch.setenv(ckpt.CHECKPOINT_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("vit-small")
    message = str(info.value)
    assert (
        "metric_depth_vit_small_800k.pth" in message and "https://huggingface.co/JUGGHM/Metric3D" in message
    )
    assert f"METRIC3D_CHECKPOINT_DIR={tmp_path} does not contain it" in message


def test_missing_file_path():
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model("vit-small", "/nonexistent/metric_depth_vit_small_800k.pth")
