"""The dense-work API of the encoder: intermediate maps, sizes, batches, precision, training options,
and the ViTDet options of the same module."""

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

from pe_dense.models import build_encoder, get_config
from pe_dense.models.rope import rope_angles


@pytest.fixture
def model(tiny_config):
    return randomize_(build_encoder(tiny_config.replace(depth=4)), seed=1)


def _images(b=2, h=128, w=128, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_intermediate_maps_are_the_tokens_without_cls(model):
    x = _images(h=96, w=160)
    maps = model.dense_features_at(x, layers=(1, -1))
    assert [m.shape for m in maps] == [(2, 192, 6, 10)] * 2
    for layer, m in zip((1, 3), maps):
        tokens = model.forward_features(x, layer=layer)
        assert tokens.shape == (2, 1 + 60, 192)
        torch.testing.assert_close(m, tokens[:, 1:].transpose(1, 2).reshape(2, 192, 6, 10), atol=0, rtol=0)
    # one pass for several layers equals separate calls; cls tokens come out on request
    torch.testing.assert_close(model.dense_features(x, layer=1), maps[0], atol=0, rtol=0)
    (m, cls), = model.dense_features_at(x, layers=(2,), return_cls_token=True)
    torch.testing.assert_close(cls, model.forward_features(x, layer=2)[:, 0], atol=0, rtol=0)


@torch.no_grad()
def test_layers_are_distinct_and_out_of_range_layers_fail(model):
    x = _images()
    maps = model.dense_features_at(x, layers=range(4))
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(maps, maps[1:]))
    with pytest.raises(ValueError, match="layer 4 is out of range for a 4-block model"):
        model.dense_features(x, layer=4)
    with pytest.raises(ValueError, match="out of range"):
        model.dense_features(x, layer=-5)


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 100, 128), "not a positive multiple of the patch size 16"),
    ((2, 3, 8, 128), "not a positive multiple"),
    ((2, 1, 128, 128), r"expected images of shape \(B, 3, H, W\)"),
    ((3, 128, 128), "expected images of shape"),
])
def test_bad_input_sizes_get_clear_errors(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model.forward_features(torch.zeros(shape))


@torch.no_grad()
def test_batch_elements_are_independent(model):
    x = _images(b=3)
    batched = model.dense_features(x)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], model.dense_features(x[i:i + 1]), atol=2e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.no_grad()
def test_autocast_half_precision_is_close_to_fp32(model, dtype):
    x = _images()
    reference = model.dense_features(x)
    with torch.autocast("cpu", dtype=dtype):
        half = model.dense_features(x)
    assert half.dtype == dtype
    similarity = F.cosine_similarity(half.float().flatten(1), reference.flatten(1))
    assert similarity.min() > 0.99


def test_gradient_checkpointing_gives_the_same_gradients(model):
    x = _images(b=1)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.train().set_grad_checkpointing(enable)
        model.dense_features(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


@torch.no_grad()
def test_truncation_keeps_earlier_layers_and_loads_full_checkpoints(model, tiny_config):
    x = _images()
    layer1 = model.dense_features(x, layer=1)
    shallow = build_encoder(tiny_config.replace(depth=4), model.state_dict(), keep_blocks=2)
    assert shallow.num_blocks == 2
    torch.testing.assert_close(shallow.dense_features(x), layer1, atol=0, rtol=0)
    model.truncate(1)
    assert model.num_blocks == 2 and len(model.state_dict()) == len(shallow.state_dict())
    torch.testing.assert_close(model.dense_features(x), layer1, atol=0, rtol=0)


def test_freeze_all_or_the_first_blocks(model):
    model.freeze(first_blocks=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    embeddings_and_first_blocks = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.",
                                   "transformer.resblocks.0.", "transformer.resblocks.1.")
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(embeddings_and_first_blocks)}
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.suite("cuda")
@torch.no_grad()
def test_cuda_matches_cpu(model):
    x = _images()
    reference = model.dense_features(x)
    gpu = model.cuda()
    torch.testing.assert_close(gpu.dense_features(x.cuda()).cpu(), reference, atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = gpu.dense_features(x.cuda()).float().cpu()
    assert F.cosine_similarity(half.flatten(1), reference.flatten(1)).min() > 0.99


def test_drop_path_is_stochastic_in_training_only(tiny_config):
    model = randomize_(build_encoder(tiny_config, drop_path_rate=0.5))
    x = _images(b=4)
    with torch.no_grad():
        model.train()
        a, b = model.dense_features(x), model.dense_features(x)
        assert (a - b).abs().max() > 1e-3
        model.eval()
        torch.testing.assert_close(model.dense_features(x), model.dense_features(x), atol=0, rtol=0)


# ---------------------------------------------------------------- ViTDet options of the same module
@pytest.fixture
def no_cls_config():
    return get_config("PE-Spatial-G14-448").replace(width=128, heads=2, mlp_width=256, depth=2, image_size=112,
                                                    patch_size=14)


@torch.no_grad()
def test_one_window_covering_the_grid_equals_global_attention(no_cls_config):
    plain = randomize_(build_encoder(no_cls_config))
    windowed = build_encoder(no_cls_config, plain.state_dict(), window_size=8)
    x = _images(h=112, w=112)
    torch.testing.assert_close(windowed.dense_features(x), plain.dense_features(x), atol=1e-5, rtol=0)


@torch.no_grad()
def test_windows_do_not_see_each_other_and_global_blocks_do(no_cls_config):
    config = no_cls_config.replace(depth=1)
    x = _images(b=1, h=112, w=112)
    poked = x.clone()
    poked[..., :14, :14] += 5.0  # changes token (0, 0) only
    for global_blocks, changed_far in (((), False), ((0,), True)):
        model = randomize_(build_encoder(config, window_size=3, global_blocks=global_blocks), seed=2)
        delta = (model.dense_features(poked) - model.dense_features(x)).abs().amax(1)[0]  # (8, 8)
        assert delta[0, 0] > 1e-3
        assert (delta[3:, 3:].max() > 1e-6) == changed_far  # tokens in other windows (grid padded 8 -> 9)


def test_windowed_models_refuse_a_class_token(tiny_config):
    with pytest.raises(ValueError, match="drop_cls_token=True"):
        build_encoder(tiny_config, window_size=4)
    model = build_encoder(tiny_config, window_size=4, drop_cls_token=True)
    assert not hasattr(model, "class_embedding") and model.dense_features(_images()).shape == (2, 192, 8, 8)


def test_rope_positions_rescaled_to_the_pretraining_grid():
    # docs/detection.md#vitdet-mask-r-cnn: k * 32 / n + 1 -> integers for a 32-token window, half steps for a
    # 64-token run
    freqs_x = rope_angles(1, 64, 64, pretrain_grid=32)[:, 0]
    torch.testing.assert_close(freqs_x, torch.arange(64) * 0.5 + 1)
    torch.testing.assert_close(rope_angles(32, 1, 64, pretrain_grid=32)[:, 16], torch.arange(32) + 1.0)


def test_tiled_position_table(no_cls_config):
    model = randomize_(build_encoder(no_cls_config, pos_embed_mode="tile"))
    grid = model.positional_embedding.detach().reshape(8, 8, -1)
    tiled = model.position_table(16, 12).reshape(16, 12, -1)
    torch.testing.assert_close(tiled, grid.tile(2, 2, 1)[:, :12], atol=0, rtol=0)
    with pytest.raises(ValueError, match="pos_embed_mode"):
        build_encoder(no_cls_config, pos_embed_mode="nearest")


@torch.no_grad()
def test_patch_14_checkpoint_runs_at_patch_16(no_cls_config):
    source = randomize_(build_encoder(no_cls_config))
    converted = build_encoder(no_cls_config, source.state_dict(), patch_size=16)
    expected = F.interpolate(source.conv1.weight, size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(converted.conv1.weight, expected, atol=0, rtol=0)
    assert converted.dense_features(_images(h=128, w=160)).shape == (2, 128, 8, 10)
