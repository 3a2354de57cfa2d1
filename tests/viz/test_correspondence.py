import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.viz import (
    cosine_map,
    heatmap,
    mark_points,
    mutual_matches,
    overlay,
    similarity_map,
    token_at,
    token_center,
    token_mask,
    upsample,
)


def _random_map(c=16, h=9, w=11, seed=0):
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


def test_a_token_is_most_similar_to_itself():
    f = _random_map()
    for token in [(0, 0), (4, 7), (8, 10)]:
        sim = similarity_map(f, token, f)
        assert sim.shape == (9, 11)
        assert sim[token] == pytest.approx(1.0, abs=1e-6)
        assert divmod(int(sim.argmax()), 11) == token
        assert sim.min() >= -1.0 - 1e-6


def test_similarity_is_cosine_and_scale_free():
    a, b = _random_map(seed=0), _random_map(seed=1)
    sim = similarity_map(a, (2, 3), b)
    expected = torch.nn.functional.cosine_similarity(a[:, 2, 3][:, None, None], b, dim=0)
    torch.testing.assert_close(sim, expected)
    torch.testing.assert_close(similarity_map(3 * a, (2, 3), 0.5 * b), sim)
    torch.testing.assert_close(cosine_map(a[:, 2, 3], b), sim)


def test_mutual_matches_recover_a_shift():
    f = _random_map(h=12, w=12)
    shifted = torch.roll(f, shifts=(2, -3), dims=(1, 2))
    matches = mutual_matches(f, shifted, max_matches=10, min_distance=3)
    assert len(matches.source) == 10
    for (r, c), (r2, c2), s in zip(matches.source, matches.target, matches.similarity):
        assert ((r + 2) % 12, (c - 3) % 12) == (r2, c2) and s == pytest.approx(1.0, abs=1e-5)
    # spread: kept source tokens are at least min_distance apart
    for i, a in enumerate(matches.source):
        for b in matches.source[:i]:
            assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 3
    assert matches.similarity == sorted(matches.similarity, reverse=True)


def test_mutual_matches_skip_one_sided_neighbours():
    # two target tokens: both source tokens prefer target 0, which prefers source 0 only
    source = torch.tensor([[1.0, 0.9], [0.0, 0.1]])[:, None, :]  # (C=2, 1, 2)
    target = torch.tensor([[1.0, -1.0], [0.0, 0.0]])[:, None, :]
    matches = mutual_matches(source, target, min_distance=0)
    assert matches.source == [(0, 0)] and matches.target == [(0, 0)]


def test_token_coordinates_round_trip():
    image_size, grid = (320, 240), (15, 20)  # 16-pixel tokens
    for token in [(0, 0), (7, 11), (14, 19)]:
        assert token_at(token_center(token, image_size, grid), image_size, grid) == token
    assert token_at((319.9, 239.9), image_size, grid) == (14, 19)
    with pytest.raises(ValueError, match="outside the 320x240 image"):
        token_at((320, 0), image_size, grid)
    with pytest.raises(ValueError, match="outside the 9x11 grid"):
        similarity_map(_random_map(), (9, 0), _random_map())
    with pytest.raises(ValueError, match="16 target channels"):
        cosine_map(torch.ones(8), _random_map())


def test_token_mask_pools_pixel_masks():
    mask = np.zeros((64, 64), dtype=bool)
    mask[:32, :24] = True  # tokens of 16 px: the first column is whole, the second half covered
    tokens = token_mask(mask, (4, 4))
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, 0] = True
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(token_mask(mask, (4, 4), threshold=0.4)[:2, 1], [True, True])


def test_pictures_have_the_input_size():
    image = Image.new("RGB", (90, 60), (10, 200, 30))
    values = np.random.default_rng(0).random((6, 9))
    big = upsample(values, (60, 90))
    assert big.shape == (60, 90) and big.min() >= values.min() and big.max() <= values.max()
    colors = heatmap(values)
    assert colors.shape == (6, 9, 3) and colors.min() >= 0 and colors.max() <= 1
    blended = overlay(image, colors, alpha=0.5)
    assert blended.size == image.size
    np.testing.assert_array_equal(np.asarray(overlay(image, colors, alpha=0.0)), np.asarray(image))
    marked = mark_points(image, [(45, 30)])
    assert marked.size == image.size and np.any(np.asarray(marked) != np.asarray(image))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, colors, alpha=2)
    with pytest.raises(ValueError, match="expected a"):
        upsample(np.zeros((2, 2, 2, 2)), (4, 4))


def test_heatmap_of_a_constant_map_is_flat():
    colors = heatmap(np.ones((3, 4)))
    assert np.all(colors == colors[0, 0])
