"""Checkpoint formats as released, lossless conversion, safe loading and clear errors."""

import os
import pickle
import zipfile

import pytest
import torch
from conftest import CodePayload, randomize_

from pe_dense.models import (
    CheckpointError,
    UnknownModelError,
    WeightsNotFoundError,
    build_encoder,
    get_config,
    hub,
    load_weights,
    official_to_timm,
    read_checkpoint,
    save_state_dict,
    timm_to_official,
)
from pe_dense.models.checkpoint import load_torch_file


@pytest.fixture
def core_config():
    """A Core-shaped model (class token, ln_post, attention pooling, projection), tiny."""
    return get_config("PE-Core-T16-384").replace(depth=2, image_size=64)


@pytest.fixture
def source(core_config):
    return randomize_(build_encoder(core_config), seed=7)


def _assert_same_params(model, state):
    own = model.state_dict()
    assert own.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


NESTINGS = {
    "plain": lambda sd: sd,
    "state_dict+module.": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "weights": lambda sd: {"weights": sd},
    "clip visual. with a text tower": lambda sd: {
        **{f"visual.{k}": v for k, v in sd.items()}, "text.token_embedding.weight": torch.zeros(4, 4),
        "logit_scale": torch.tensor(1.0)},
    "module.visual.": lambda sd: {f"module.visual.{k}": v for k, v in sd.items()},
    "detectron2 backbone.net. with (1, N, C) table": lambda sd: {
        "model": {**{f"backbone.net.{k}": (v[None] if k == "positional_embedding" else v) for k, v in sd.items()},
                  "roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 4)},
        "iteration": 1000, "__author__": "pe"},
}


@pytest.mark.parametrize("nesting", NESTINGS)
def test_official_nestings_and_prefixes_load(tmp_path, core_config, source, nesting):
    path = tmp_path / "ckpt.pt"
    torch.save(NESTINGS[nesting](source.state_dict()), path)
    model = build_encoder(core_config, path)
    _assert_same_params(model, source.state_dict())
    report = load_weights(model, path)
    assert report.ok and bool(report.ignored) == (nesting.startswith(("clip", "detectron2")))


def test_round_trip_official_timm_safetensors_is_lossless(tmp_path, core_config, source):
    official = source.state_dict()
    timm_path, safe_path, back_path = tmp_path / "t.pt", tmp_path / "t.safetensors", tmp_path / "o.safetensors"
    save_state_dict(official_to_timm(official), timm_path)
    save_state_dict(read_checkpoint(timm_path), safe_path)
    save_state_dict(timm_to_official(read_checkpoint(safe_path)), back_path)
    back = read_checkpoint(back_path)
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], v) for k, v in official.items())
    for path in (timm_path, safe_path, back_path):  # every step loads straight into pe_dense
        _assert_same_params(build_encoder(core_config, path), official)


def test_timm_head_bias_must_be_zero(source):
    state = official_to_timm(source.state_dict())
    state["head.bias"] += 1.0
    with pytest.raises(CheckpointError, match="head.bias is not zero"):
        load_weights(source, state)


def test_unknown_model_name():
    with pytest.raises(UnknownModelError, match="unknown PE model 'PE-Spatial-X16-512'"):
        build_encoder("PE-Spatial-X16-512")


def test_truncated_files_fail_clearly_and_load_nothing(tmp_path, core_config, source):
    model = randomize_(build_encoder(core_config), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for suffix in (".pt", ".safetensors"):
        path = tmp_path / f"full{suffix}"
        save_state_dict(source.state_dict(), path)
        data = path.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated or not a"):
            load_weights(model, cut)
    (tmp_path / "noise.pt").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_weights(model, tmp_path / "noise.pt")
    _assert_same_params(model, before)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path, source):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": source.state_dict(), "extra": CodePayload(str(marker))}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        load_weights(source, path)
    legacy = tmp_path / "evil_legacy.pt"
    with open(legacy, "wb") as f:
        pickle.dump(CodePayload(str(marker)), f)
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        load_weights(source, legacy)
    assert not marker.exists()


def test_saved_training_arguments_are_read_as_data(tmp_path, source):
    """DETR-family scripts save their argparse.Namespace beside the weights; it loads, nothing else does."""
    import argparse

    path = tmp_path / "with_args.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=2e-4, backbone="pev1")}, path)
    assert load_torch_file(path)["args"].backbone == "pev1"
    assert load_weights(source, path).ok


def test_shape_mismatch_names_the_problem_and_the_likely_model(tmp_path):
    small = build_encoder("PE-Spatial-T16-512")
    path = tmp_path / "t.pt"
    torch.save(small.state_dict(), path)
    target = build_encoder(get_config("PE-Spatial-S16-512"))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_weights(target, path)
    message = str(error.value)
    assert "does not fit PE-Spatial-S16-512" in message
    assert "conv1.weight: checkpoint (192, 3, 16, 16) vs model (384, 3, 16, 16)" in message
    assert "looks like: PE-Spatial-T16-512, PE-Core-T16-384" not in message  # Core has a pooling head
    assert "looks like: PE-Spatial-T16-512" in message
    with pytest.raises(CheckpointError):  # shape mismatches fail even when not strict
        load_weights(target, path, strict=False)
    _assert_same_params(target, before)


@pytest.mark.parametrize("kernel", [(3, 3), (16, 15), (14, 14)])
def test_a_patch_kernel_of_another_shape_is_a_mismatch_not_resized(tmp_path, kernel):
    source = build_encoder("PE-Spatial-T16-512")
    state = source.state_dict()
    state["conv1.weight"] = torch.randn(192, 3, *kernel)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    target = build_encoder("PE-Spatial-T16-512")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    expected = rf"conv1.weight: checkpoint \(192, 3, {kernel[0]}, {kernel[1]}\) vs model \(192, 3, 16, 16\)"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(target, path, strict=False)
    _assert_same_params(target, before)


def test_the_released_kernel_is_resized_for_a_model_built_with_another_patch_size(tmp_path):
    config = get_config("PE-Spatial-L14-448").replace(depth=1, image_size=56)
    released = randomize_(build_encoder(config), seed=3)
    path = tmp_path / "l14.pt"
    torch.save(released.state_dict(), path)
    model = build_encoder(config, patch_size=16)
    report = load_weights(model, path)
    assert any("resized from 14px to 16px" in note for note in report.adapted)
    assert model.conv1.weight.shape[-2:] == (16, 16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused_naming_the_checkpoint(tmp_path, core_config, source, bad):
    state = source.state_dict()
    state["transformer.resblocks.1.mlp.c_fc.weight"][3, 4] = bad
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    model = build_encoder(core_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"{path} holds NaN or infinite values in 1 tensor\(s\): "
                                              r"transformer.resblocks.1.mlp.c_fc.weight"):
        load_weights(model, path)
    _assert_same_params(model, before)


def test_missing_and_unexpected_keys_strict_and_lenient(core_config, source):
    state = source.state_dict()
    del state["attn_pool.probe"]
    state["transformer.resblocks.0.attn.bias_k"] = torch.zeros(3)
    model = build_encoder(core_config)
    with pytest.raises(CheckpointError, match=r"missing \(1\): attn_pool.probe[\s\S]*unexpected \(1\)"):
        load_weights(model, state)
    report = load_weights(model, state, strict=False)
    assert report.missing == ["attn_pool.probe"] and report.unexpected == ["transformer.resblocks.0.attn.bias_k"]
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_ambiguous_and_absent_towers(core_config, source):
    sd = source.state_dict()
    both = {**{f"a.{k}": v for k, v in sd.items()}, **{f"b.{k}": v for k, v in sd.items()}}
    with pytest.raises(CheckpointError, match="several vision towers"):
        load_weights(build_encoder(core_config), both)
    _assert_same_params(build_encoder(core_config, both, prefix="b."), sd)
    with pytest.raises(CheckpointError, match="no PE vision tower found"):
        load_weights(source, {"fc.weight": torch.zeros(2, 2)})


def test_non_tensor_content_is_reported(tmp_path, source):
    path = tmp_path / "odd.pt"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_weights(source, path)


# ---------------------------------------------------------------- finding released weights
def test_hub_weights_come_from_the_weights_folder_first(tmp_path, monkeypatch, core_config, source):
    name = "PE-Core-T16-384"
    torch.save(source.state_dict(), tmp_path / f"{name}.pt")
    monkeypatch.setenv(hub.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(hub, "_download", lambda *a: pytest.fail("must not download"))
    assert hub.resolve_weights(name, "hub") == tmp_path / f"{name}.pt"


def test_hub_download_asks_for_the_released_file(tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False):
        if local_files_only:  # not in the cache yet
            raise FileNotFoundError(filename)
        calls.append((repo_id, filename, cache_dir))
        return str(tmp_path / filename)

    import huggingface_hub

    monkeypatch.delenv(hub.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv(hub.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_check_hub_reachable", lambda: None)
    assert hub.resolve_weights("PE-Spatial-B16-512", "hub") == tmp_path / "PE-Spatial-B16-512.pt"
    hub.resolve_weights("x", "hf://facebook/PE-Detection:mask_rcnn_PEspatial_G_coco36ep.pth")
    assert calls == [("facebook/PE-Spatial-B16-512", "PE-Spatial-B16-512.pt", str(tmp_path)),
                     ("facebook/PE-Detection", "mask_rcnn_PEspatial_G_coco36ep.pth", str(tmp_path))]


def test_offline_hub_error_says_how_to_pass_a_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv(hub.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import time
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv(hub.CACHE_DIR_ENV, str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as error:
        build_encoder("PE-Spatial-T16-512", "hub")
    message = str(error.value)
    assert "facebook/PE-Spatial-T16-512" in message and "weights='/path/to/PE-Spatial-T16-512.pt'" in message
    assert f"${hub.WEIGHTS_DIR_ENV}" in message


def test_unreachable_hub_fails_at_once_without_trying_to_download(tmp_path, monkeypatch):
    import socket

    import huggingface_hub

    downloads = []

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(filename)
        downloads.append(filename)

    def hanging_network(address, timeout=None):
        assert timeout is not None and timeout <= 5  # a short wait, not huggingface_hub's retries
        raise socket.timeout("timed out")

    for variable in (hub.WEIGHTS_DIR_ENV, "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(socket, "create_connection", hanging_network)
    with pytest.raises(WeightsNotFoundError, match=r"cannot reach huggingface.co:443 \(timed out\)"):
        hub.resolve_weights("PE-Spatial-T16-512", "hub")
    assert downloads == []


def test_bad_weight_specs():
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        build_encoder("PE-Spatial-T16-512", os.path.join("no", "such", "file.pt"))
    with pytest.raises(ValueError, match="hf://<repo>:<file>"):
        hub.resolve_weights("PE-Spatial-T16-512", "hf://facebook/only-a-repo")
