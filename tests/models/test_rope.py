"""RoPE in real arithmetic (cos/sin tables, used for export: docs/export.md#rope-in-real-arithmetic) turns every
channel pair exactly as the complex product of the default path."""

import pytest
import torch
from conftest import randomize_

from pe_dense.models import build_encoder
from pe_dense.models.pos_embed import adapt_pos_embed
from pe_dense.models.rope import apply_rope, rope_angles, rope_cos_sin, rope_table


@pytest.mark.parametrize("grid, cls_token, pretrain_grid", [
    ((32, 32), True, None),  # a Spatial model's native grid
    ((20, 30), True, None),  # off-native, not square
    ((7, 5), False, None),  # no class token (G towers)
    ((12, 18), False, 32),  # positions rescaled to the pretraining grid (ViTDet)
])
def test_real_rotation_equals_the_complex_product(grid, cls_token, pretrain_grid):
    head_dim = 64
    angles = rope_angles(*grid, head_dim, cls_token=cls_token, pretrain_grid=pretrain_grid)
    qkv = torch.randn(2, angles.shape[0], 3, 3, head_dim, generator=torch.Generator().manual_seed(0))
    x = qkv[:, :, :2]  # q and k, a strided view of the packed projection as in the model
    complex_form = apply_rope(x, rope_table(angles)[:, None, None])
    real_form = apply_rope(x, rope_cos_sin(angles)[..., None, None, :])
    torch.testing.assert_close(real_form, complex_form, atol=1e-6, rtol=0)
    if cls_token:  # the class token is not rotated
        torch.testing.assert_close(real_form[:, 0], x[:, 0], atol=0, rtol=0)
    assert not torch.allclose(real_form[:, -1], x[:, -1], atol=1e-2)  # the other tokens are


def test_real_rotation_keeps_the_input_dtype():
    angles = rope_angles(4, 6, 64, cls_token=True)
    x = torch.randn(1, 25, 2, 1, 64).bfloat16()
    real_form = apply_rope(x, rope_cos_sin(angles)[..., None, None, :])
    assert real_form.dtype == torch.bfloat16
    torch.testing.assert_close(real_form, apply_rope(x, rope_table(angles)[:, None, None]), atol=1e-6, rtol=2**-8)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "tile"])
def test_resizing_the_position_table_to_its_own_grid_gives_it_back(mode):
    table = torch.randn(32 * 32, 8)
    torch.testing.assert_close(adapt_pos_embed(table, 32, 32, mode, resize_native=True), table, atol=0, rtol=0)


@pytest.mark.parametrize("size", [(128, 128), (80, 112)])  # the tiny config's native size, and another
def test_export_mode_gives_the_same_features(tiny_config, size):
    model = randomize_(build_encoder(tiny_config), seed=2)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    assert model.positions(5, 7).rope.is_complex()  # the default path is the complex product
    with torch.no_grad():
        expected = model.forward_features(images)
        model.export_mode = True
        assert not model.positions(5, 7).rope.is_complex()
        exported_form = model.forward_features(images)
    torch.testing.assert_close(exported_form, expected, atol=1e-5, rtol=0)
