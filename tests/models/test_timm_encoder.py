"""timm ViTs as encoders (``timm:NAME``): the dense maps are timm's own ``forward_intermediates`` output for the
same blocks, and the patch tokens a hook on timm's blocks sees, without the prefix tokens (class, registers);
the input is what timm's data config makes of an image; bad inputs are refused with one clear line."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CodePayload, randomize_
from PIL import Image

from pe_dense.models import CheckpointError, UnknownModelError, build_encoder, encoder_config, preprocess
from pe_dense.models.timm_encoder import TimmEncoder

pytestmark = pytest.mark.suite("timm")
# DINOv2 (class token), DINOv2 with registers, DINOv3 (class token, 4 registers, RoPE): small, random weights
NAMES = ["timm:vit_small_patch14_dinov2", "timm:vit_small_patch14_reg4_dinov2", "timm:vit_small_patch16_dinov3"]
DEPTH = 4  # of 12: every block is the same code, and building and running 12 costs the test budget


@pytest.fixture(scope="module", params=NAMES)
def encoder(request) -> TimmEncoder:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return randomize_(build_encoder(request.param, depth=DEPTH))


def _blocks_tokens(model, images):
    """Every block's full token sequence (prefix tokens first), seen by forward hooks on timm's blocks."""
    seen = []
    hooks = [block.register_forward_hook(lambda module, args, out: seen.append(out)) for block in model.blocks]
    try:
        model.forward_features(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_dense_maps_are_timms_intermediates_without_the_prefix_tokens(encoder):
    p, model = encoder.patch_size, encoder.model
    images = torch.randn(2, 3, 3 * p, 5 * p, generator=torch.Generator().manual_seed(1))  # not square, not native
    layers = (-1, 2, 0)
    with torch.no_grad():
        ours = encoder.dense_features_at(images, layers)
        pairs = encoder.dense_features_at(images, layers, return_cls_token=True)
        theirs = dict(zip((0, 2, 3), model.forward_intermediates(images, indices=[0, 2, 3], output_fmt="NCHW",
                                                                  intermediates_only=True)))
        tokens = _blocks_tokens(model, images)
    assert [m.shape for m in ours] == [(2, encoder.width, 3, 5)] * 3
    for mine, block in zip(ours, (3, 2, 0)):
        assert torch.equal(mine, theirs[block])
    prefix = model.num_prefix_tokens
    assert prefix == encoder.config.prefix_tokens and prefix == (1 if "dinov2" in encoder.config.name and
                                                                 "reg4" not in encoder.config.name else 5)
    for mine, (pair_map, cls), block in zip(ours, pairs, (3, 2, 0)):
        patches = tokens[block][:, prefix:]  # the class token and the registers left out
        assert torch.equal(mine, patches.transpose(1, 2).unflatten(2, (3, 5)))
        assert torch.equal(pair_map, mine) and torch.equal(cls, tokens[block][:, 0])
    assert not torch.equal(ours[0], ours[1])


def test_the_config_and_the_input_are_timms(encoder):
    import timm
    from timm.data import create_transform, resolve_data_config

    data = resolve_data_config({}, model=encoder.model)
    config = encoder.config
    assert (config.pixels.mean, config.pixels.std, config.pixels.interpolation) == (
        data["mean"], data["std"], data["interpolation"])
    assert data["input_size"] == (3, config.image_size, config.image_size)
    assert config.patch_size == encoder.model.patch_embed.patch_size[0] and config.depth == DEPTH
    assert replace(config, depth=12, parameters=0) == replace(encoder_config(config.name), parameters=0)
    # a square image at the native size: timm's eval transform (resize, centre crop, normalise) is our resize
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    expected = create_transform(**{**data, "crop_pct": 1.0})(image)
    assert torch.allclose(preprocess(image, config.image_size, config.pixels), expected, atol=1e-6)
    assert timm.__version__ >= "1.0.20"


def test_layers_count_from_the_end_and_truncation_keeps_the_maps(encoder):
    images = torch.randn(1, 3, 2 * encoder.patch_size, 2 * encoder.patch_size)
    assert encoder.layer_index(-1) == DEPTH - 1 and encoder.layer_index(-DEPTH) == 0
    with torch.no_grad():
        before = encoder.dense_features(images, 1)
        shallow = build_encoder(encoder.config.name, None, depth=DEPTH)
        shallow.load_state_dict(encoder.state_dict())
        shallow.truncate(1)
        assert shallow.num_blocks == 2 and torch.equal(shallow.dense_features(images, -1), before)


def test_weights_load_from_a_file_and_a_file_of_another_model_is_refused(tmp_path):
    from safetensors.torch import save_file

    name = "timm:vit_small_patch16_dinov3"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        drawn = randomize_(build_encoder(name, depth=DEPTH))
    path = tmp_path / "weights.safetensors"
    save_file(drawn.model.state_dict(), path)
    loaded = build_encoder(name, path, depth=DEPTH)
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded.dense_features(images), drawn.dense_features(images))
    with pytest.raises(CheckpointError, match="does not load into timm:vit_small_patch14_dinov2"):
        build_encoder("timm:vit_small_patch14_dinov2", path, depth=DEPTH)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_torch_file_of_weights_loads_and_one_carrying_code_never_runs(tmp_path):
    name = "timm:vit_small_patch14_dinov2"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        drawn = randomize_(build_encoder(name, depth=DEPTH))
    path = tmp_path / "weights.pth"
    torch.save({"model": drawn.model.state_dict()}, path)
    images = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        assert torch.equal(build_encoder(name, path, depth=DEPTH).dense_features(images), drawn.dense_features(images))
    marker = tmp_path / "pwned"
    torch.save({"model": drawn.model.state_dict(), "extra": CodePayload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        build_encoder(name, path, depth=DEPTH)
    assert not marker.exists()


def test_hub_weights_are_timms_release_through_pe_dense_hub_rules(tmp_path, monkeypatch):
    from pe_dense.models import WeightsNotFoundError, hub
    from pe_dense.models.timm_encoder import weights_file

    asked = []
    monkeypatch.setattr(hub, "_download", lambda repo, filename: asked.append((repo, filename)) or tmp_path / "w")
    assert weights_file("timm:vit_small_patch14_dinov2.lvd142m", "hub") == tmp_path / "w"
    assert asked == [("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors")]
    monkeypatch.undo()

    def offline():
        raise ConnectionError("offline")

    monkeypatch.setattr(hub, "_check_hub_reachable", offline)  # not cached, and no network: PE's error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="timm/vit_small_patch16_dinov3.lvd1689m"):
        weights_file("timm:vit_small_patch16_dinov3.lvd1689m", "hub")


def test_bad_inputs_are_refused_with_one_line(monkeypatch):
    from timm.models.vision_transformer import VisionTransformer

    with pytest.raises(UnknownModelError, match="unknown timm model 'vit_small_patch14_dinov7'.*Did you mean "
                                                "timm:vit_small_patch14_dinov2"):
        encoder_config("timm:vit_small_patch14_dinov7")
    with pytest.raises(ValueError, match="timm:resnet18 is not a plain ViT"):
        encoder_config("timm:resnet18")
    with pytest.raises(ValueError, match="timm:swin_tiny_patch4_window7_224 is not a plain ViT"):
        encoder_config("timm:swin_tiny_patch4_window7_224")
    monkeypatch.delattr(VisionTransformer, "forward_intermediates")
    with pytest.raises(ValueError, match="has no intermediate-feature API"):
        encoder_config("timm:vit_small_patch14_dinov2")


def test_a_layer_beyond_the_depth_and_a_size_off_the_patch_are_refused(encoder):
    with pytest.raises(ValueError, match=f"layer {DEPTH} is out of range for timm:vit_small_patch1.*a {DEPTH}-block"):
        encoder.dense_features(torch.zeros(1, 3, 64, 64), DEPTH)
    with pytest.raises(ValueError, match="input size 50x64 is not a positive multiple of .* patch size"):
        encoder.dense_features(torch.zeros(1, 3, 50, 64))
