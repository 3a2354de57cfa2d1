"""Joint bilateral upsampling against a direct, pixel-by-pixel reference."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.viz.guided_upsampling import guided_upsample, image_tensor


def _reference(features, guide, sigma_spatial, sigma_range, radius):
    """The definition, one pixel and one token at a time, in float64."""
    f, g = features.double().numpy(), guide.double().numpy()
    channels, h, w = f.shape
    height, width = g.shape[1:]
    sy, sx = height // h, width // w  # whole patches in these tests
    colours = g.reshape(3, h, sy, w, sx).mean(axis=(2, 4))
    out = np.zeros((channels, height, width))
    for y in range(height):
        for x in range(width):
            uy, ux = (y + 0.5) * h / height - 0.5, (x + 0.5) * w / width - 0.5
            cy, cx = min(max(round(uy), 0), h - 1), min(max(round(ux), 0), w - 1)
            total, acc = 0.0, np.zeros(channels)
            for ty in range(cy - radius, cy + radius + 1):
                for tx in range(cx - radius, cx + radius + 1):
                    if 0 <= ty < h and 0 <= tx < w:
                        spatial = (uy - ty) ** 2 + (ux - tx) ** 2
                        colour = ((g[:, y, x] - colours[:, ty, tx]) ** 2).sum()
                        weight = math.exp(-spatial / (2 * sigma_spatial**2) - colour / (2 * sigma_range**2))
                        total += weight
                        acc += weight * f[:, ty, tx]
            out[:, y, x] = acc / total
    return out


@pytest.mark.parametrize("sigma_spatial, sigma_range, radius, tile", [(1.0, 0.3, 2, 2**22), (0.7, 0.5, 1, 40)])
def test_equals_the_direct_joint_bilateral_reference(sigma_spatial, sigma_range, radius, tile):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, 4, 6, generator=generator)
    guide = torch.rand(3, 16, 24, generator=generator)
    got = guided_upsample(features, guide, sigma_spatial=sigma_spatial, sigma_range=sigma_range, radius=radius,
                          tile_elements=tile)  # 40: tiles of one or two rows
    assert got.shape == (5, 16, 24)
    np.testing.assert_allclose(got.numpy(), _reference(features, guide, sigma_spatial, sigma_range, radius),
                               rtol=1e-5, atol=1e-5)


def test_constant_features_stay_constant_even_where_every_weight_underflows():
    guide = torch.zeros(3, 32, 32)
    guide[:, :, 16:] = 1.0
    guide[:, 5, 5] = torch.tensor([1.0, 0.0, 1.0])  # far from every patch's mean colour
    features = torch.full((3, 4, 4), 2.5)
    features[1] = -7.0
    got = guided_upsample(features, guide, sigma_range=0.01)
    torch.testing.assert_close(got, features[:, :1, :1].expand(-1, 32, 32))


def test_edges_follow_the_image():
    # a two-colour image whose edge lies inside a token column: the guided map keeps it sharp
    image = np.zeros((16, 32, 3), dtype=np.uint8)
    image[:, 13:] = 255
    features = torch.zeros(1, 2, 4)
    features[0, :, 2:] = 1.0
    features[0, :, 1] = 0.2  # the token that straddles the edge: mostly dark
    got = guided_upsample(features, image_tensor(Image.fromarray(image)))[0]
    assert (got[:, 8:13] < 0.25).all() and (got[:, 13:16] > 0.75).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expected a \(C, h, w\) map and a \(3, H, W\) guide"):
        guided_upsample(torch.zeros(2, 2), torch.zeros(3, 4, 4))
