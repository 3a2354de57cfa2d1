"""Off the native resolution pe_dense follows the released models (docs/encoder.md#off-the-native-size), not timm:
the position table is resized bilinearly and RoPE uses raw integer grid positions."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

from pe_dense.models import build_encoder, get_config
from pe_dense.models.rope import rope_angles

H, W = 320, 480  # a non-square, non-native size: 20 x 30 tokens at patch 16


def test_position_table_is_an_explicit_bilinear_resize(tiny_config):
    model = randomize_(build_encoder(tiny_config))
    table = model.positional_embedding.detach()
    side = tiny_config.pretrain_grid
    grid = table[1:].reshape(side, side, -1).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(20, 30), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(model.position_table(20, 30), expected.reshape(600, -1), atol=0, rtol=0)
    assert model.position_table(side, side).data_ptr() == table[1:].data_ptr()  # native: used as is


@pytest.mark.parametrize("cls_token", [True, False])
def test_rope_angles_are_integer_grid_positions_x_first(cls_token):
    head_dim, gh, gw = 64, 20, 30
    angles = rope_angles(gh, gw, head_dim, cls_token=cls_token)
    freqs = [1.0 / 10000 ** (2 * i / (head_dim // 2)) for i in range(head_dim // 4)]
    start = 1 if cls_token else 0
    assert angles.shape == (start + gh * gw, head_dim // 2)
    if cls_token:
        assert torch.all(angles[0] == 0)  # the class token is not rotated
    for y, x in [(0, 0), (0, 29), (19, 0), (7, 13), (19, 29)]:
        row = angles[start + y * gw + x]
        expected = [(x + start) * f for f in freqs] + [(y + start) * f for f in freqs]
        torch.testing.assert_close(row, torch.tensor(expected), rtol=1e-6, atol=1e-5)


def _reference_forward(model, images):
    """A deliberately plain re-implementation of the released forward: explicit bilinear position
    resize, explicit cos/sin rotation of adjacent channel pairs, softmax attention written out."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    images = images.double()
    b, _, h, w = images.shape
    gh, gw, c, nh = h // cfg.patch_size, w // cfg.patch_size, cfg.width, cfg.heads
    hd = c // nh
    x = F.conv2d(images, sd["conv1.weight"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    side = cfg.pretrain_grid
    patch_table = sd["positional_embedding"][1:].T.reshape(1, c, side, side)
    x = x + F.interpolate(patch_table, size=(gh, gw), mode="bilinear", align_corners=False).reshape(c, -1).T
    cls = (sd["class_embedding"] + sd["positional_embedding"][0]).expand(b, 1, c)
    x = torch.cat([cls, x], 1)
    x = F.layer_norm(x, (c,), sd["ln_pre.weight"], sd["ln_pre.bias"], 1e-5)
    # rotation angle per token and channel pair: pairs [0, hd/4) follow x, [hd/4, hd/2) follow y
    theta = torch.zeros(1 + gh * gw, hd // 2, dtype=torch.float64)
    for t in range(gh * gw):
        yy, xx = divmod(t, gw)
        for i in range(hd // 4):
            f = 1.0 / 10000 ** (2 * i / (hd // 2))
            theta[1 + t, i], theta[1 + t, hd // 4 + i] = (xx + 1) * f, (yy + 1) * f

    def rotate(v):  # v (b, heads, n, hd)
        v0, v1 = v[..., 0::2], v[..., 1::2]
        out = torch.empty_like(v)
        out[..., 0::2] = v0 * theta.cos() - v1 * theta.sin()
        out[..., 1::2] = v1 * theta.cos() + v0 * theta.sin()
        return out

    for i in range(model.num_blocks):
        p = f"transformer.resblocks.{i}."
        y = F.layer_norm(x, (c,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        q, k, v = (y @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
        q, k, v = (t.reshape(b, -1, nh, hd).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax(rotate(q) @ rotate(k).transpose(-1, -2) / math.sqrt(hd), -1) @ v
        y = attn.transpose(1, 2).reshape(b, -1, c) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        x = x + y
        y = F.layer_norm(x, (c,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        y = F.gelu(y @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + y @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return x


def test_off_native_forward_matches_a_plain_reference(tiny_config):
    model = randomize_(build_encoder(tiny_config), seed=3)
    images = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model.forward_features(images)
    expected = _reference_forward(model, images).float()
    assert tokens.shape == (2, 1 + 20 * 30, tiny_config.width)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=0)


@pytest.mark.suite("timm")
def test_timm_differs_off_native_so_it_is_not_the_oracle_there(tiny_config):
    """docs/encoder.md#off-the-native-size: timm resizes bicubically and rescales RoPE. If this ever starts to fail,
    timm changed and could become an off-native oracle too."""
    import timm
    from timm.models.eva import checkpoint_filter_fn

    config = get_config("PE-Spatial-T16-512").replace(depth=2)
    ours = randomize_(build_encoder(config), seed=4)
    theirs = timm.create_model(config.timm_name, pretrained=False, depth=2, img_size=512, dynamic_img_size=True)
    theirs.load_state_dict(checkpoint_filter_fn(ours.state_dict(), theirs))
    images = torch.randn(1, 3, H, W)
    with torch.no_grad():
        gap = (ours.forward_features(images) - theirs.eval().forward_features(images)).abs().max()
    assert gap > 1e-2
