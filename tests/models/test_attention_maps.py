"""Attention maps: the block's softmax(q kᵀ / √d) with RoPE, against a reference written out here in
float64 numpy (its own layer norm, projection, rotation and windows), not the model's code."""

import numpy as np
import pytest
import torch
from conftest import randomize_

from pe_dense.models import PEVisionTransformer
from pe_dense.models.attention_maps import attention_map, attention_weights


def _block_input(encoder, images, block):
    captured = {}

    def keep(module, args):
        captured["x"] = args[0].detach().double().numpy()

    handle = encoder.transformer.resblocks[block].register_forward_pre_hook(keep)
    with torch.no_grad():
        encoder.forward_features(images, layer=block)
    handle.remove()
    return captured["x"]


def _reference(encoder, images, block, window=0):
    """softmax over keys of q·k/√d for every head, q and k rotated pair by pair: the first half of the
    pairs by the token's column, the second half by its row (positions 1.. after a class token at 0, or
    the place inside the window), with the frequencies 10000^(-2j / (d/2)), j < d/4, on each axis."""
    layer = encoder.transformer.resblocks[block]
    x = _block_input(encoder, images, block)
    param = {name: p.detach().double().numpy() for name, p in layer.named_parameters()}
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + layer.ln_1.eps) * param["ln_1.weight"] + param["ln_1.bias"]
    qkv = y @ param["attn.in_proj_weight"].T + param["attn.in_proj_bias"]
    batch, n, width = x.shape
    heads = layer.attn.heads
    d = width // heads
    q, k = (qkv[..., i * width:(i + 1) * width].reshape(batch, n, heads, d) for i in (0, 1))
    grid_h, grid_w = encoder.token_grid(*images.shape[-2:])
    cls = int(encoder.use_cls_token)
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    if window:
        y_pos, x_pos = rows % window, cols % window
    else:
        y_pos, x_pos = rows + cls, cols + cls
    y_pos, x_pos = np.concatenate([[0] * cls, y_pos]), np.concatenate([[0] * cls, x_pos])
    frequencies = 1.0 / 10000.0 ** (np.arange(d // 4) * 2 / (d // 2))
    angles = np.concatenate([x_pos[:, None] * frequencies, y_pos[:, None] * frequencies], axis=1)  # (n, d/2)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]

    def rotate(v):
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    q, k = rotate(q), rotate(k)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if window:
        token_window = np.concatenate([[-1] * cls, (rows // window) * 1000 + cols // window])
        logits = np.where(token_window[:, None] == token_window[None, :], logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


@pytest.fixture
def encoder(tiny_config):
    return randomize_(PEVisionTransformer(tiny_config), seed=1).eval()


@pytest.mark.parametrize("block", [0, 1])
def test_weights_are_the_softmax_of_rotated_queries_and_keys(encoder, block):
    images = torch.randn(2, 3, 64, 96)
    weights = attention_weights(encoder, images, block)
    assert weights.shape == (2, 3, 25, 25)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 25))
    np.testing.assert_allclose(weights.numpy(), _reference(encoder, images, block), atol=2e-6)


def test_windowed_blocks_attend_inside_their_window_only(tiny_config):
    encoder = randomize_(PEVisionTransformer(tiny_config, drop_cls_token=True, window_size=2, global_blocks=(1,)),
                         seed=2).eval()
    images = torch.randn(1, 3, 64, 96)  # a 4x6 grid: six 2x2 windows
    windowed = attention_weights(encoder, images, 0)
    expected = _reference(encoder, images, 0, window=2)
    np.testing.assert_allclose(windowed.numpy(), expected, atol=2e-6)
    torch.testing.assert_close(windowed.sum(-1), torch.ones(1, 3, 24))
    rows, cols = np.divmod(np.arange(24), 6)
    outside = (rows[:, None] // 2 != rows[None, :] // 2) | (cols[:, None] // 2 != cols[None, :] // 2)
    assert (windowed[..., torch.from_numpy(outside)] == 0).all()
    assert (windowed[..., torch.from_numpy(~outside)] > 0).all()
    # the global block sees everything
    np.testing.assert_allclose(attention_weights(encoder, images, 1).numpy(), _reference(encoder, images, 1),
                               atol=2e-6)


def test_padding_keys_share_is_left_out_of_partial_windows(tiny_config):
    encoder = randomize_(PEVisionTransformer(tiny_config, drop_cls_token=True, window_size=4), seed=2).eval()
    weights = attention_weights(encoder, torch.randn(1, 3, 64, 96), 0)  # 4x6 grid: the right windows are half padding
    sums = weights.sum(-1).unflatten(-1, (4, 6))
    torch.testing.assert_close(sums[..., :4], torch.ones(1, 3, 4, 4))
    assert (sums[..., 4:] < 1).all()


def test_maps_of_the_class_token_and_of_a_query_point(encoder):
    images = torch.randn(2, 3, 64, 96)
    weights = attention_weights(encoder, images, -1)
    cls_map = attention_map(encoder, images, -1)
    assert cls_map.shape == (2, 3, 4, 6)
    torch.testing.assert_close(cls_map, weights[:, :, 0, 1:].unflatten(-1, (4, 6)))
    torch.testing.assert_close(attention_map(encoder, images, -1, query=(2, 5)),
                               weights[:, :, 1 + 2 * 6 + 5, 1:].unflatten(-1, (4, 6)))
    with pytest.raises(ValueError, match=r"query token \(4, 0\) is outside the 4x6 grid"):
        attention_map(encoder, images, -1, query=(4, 0))


def test_a_model_without_class_token_needs_a_query_point(tiny_config):
    encoder = PEVisionTransformer(tiny_config, drop_cls_token=True).eval()
    with pytest.raises(ValueError, match="runs without a class token: choose a query point"):
        attention_map(encoder, torch.randn(1, 3, 32, 32), 0)
