"""Overlapping patches: the encoder's token_stride option places a denser grid between the released
grid's positions, and agrees with the released model wherever the two grids meet."""

import pytest
import torch
from conftest import randomize_

from pe_dense.models import PEVisionTransformer, get_config
from pe_dense.models.pos_embed import fractional_rows
from pe_dense.models.rope import rope_frequencies


@pytest.fixture(scope="module")
def encoder():
    return randomize_(PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=2)), seed=4).eval()


def test_the_patch_size_as_stride_is_the_plain_model(encoder):
    images = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(encoder.dense_features(images), encoder.dense_features_at(images, [-1], token_stride=16)[0])


def test_the_dense_grid_meets_the_released_grid_on_its_tokens(encoder):
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        plain, plain_pos = encoder.embed(images)
        dense, dense_pos = encoder.embed(images, token_stride=8)
        (features,) = encoder.dense_features_at(images, [-1], token_stride=8)
    assert features.shape == (1, 192, 6, 8) and dense.shape == (1, 1 + 6 * 8, 192)
    grid = dense[:, 1:].unflatten(1, (6, 8))
    torch.testing.assert_close(grid[:, ::2, ::2], plain[:, 1:].unflatten(1, (3, 4)))  # patches and positions
    torch.testing.assert_close(dense[:, 0], plain[:, 0])
    # RoPE: the dense token (2r, 2c) turns as the released token (r, c); the ones between by half a position
    dense_rope, plain_rope = dense_pos.rope[1:].unflatten(0, (6, 8)), plain_pos.rope[1:].unflatten(0, (3, 4))
    assert torch.equal(dense_rope[::2, ::2], plain_rope)
    frequencies = rope_frequencies(encoder.config.head_dim)
    expected = torch.cat([(1 + 3 / 2) * frequencies, (1 + 1 / 2) * frequencies])  # column 3, row 1
    torch.testing.assert_close(dense_rope[1, 3].flatten().angle(), expected)


def test_fractional_rows_are_bilinear_between_the_sparse_rows():
    rows = torch.randn(2 * 3, 5)
    dense = fractional_rows(rows, 2, 3, 2).reshape(4, 6, 5)
    sparse = rows.reshape(2, 3, 5)
    assert torch.equal(dense[::2, ::2], sparse)
    torch.testing.assert_close(dense[1, 1], sparse[:2, :2].mean((0, 1)))
    torch.testing.assert_close(dense[3, 5], sparse[1, 2])  # past the end: the last row and column
    torch.testing.assert_close(dense[0, 3], (sparse[0, 1] + sparse[0, 2]) / 2)


def test_refused_in_windowed_models_and_for_strides_that_do_not_divide_the_patch(encoder):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="token stride 6 does not divide the patch size 16"):
        encoder.embed(images, token_stride=6)
    windowed = PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=1), drop_cls_token=True,
                                   window_size=2)
    with pytest.raises(ValueError, match="not in windowed models"):
        windowed.embed(images, token_stride=8)
