import numpy as np
import pytest
import torch

from pe_dense.viz.color import encode_srgb, lab_to_linear_rgb, lch_to_srgb, max_chroma

RED_LAB = (53.2408, 80.0925, 67.2032)  # sRGB (1, 0, 0): a corner of the gamut


def _lightness_of(colors: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB colours, independently of pe_dense (it depends on the luminance Y only)."""
    colors = np.asarray(colors, dtype=np.float64)
    linear = np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def test_reference_colours():
    torch.testing.assert_close(lab_to_linear_rgb([100.0, 0.0, 0.0]), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(lab_to_linear_rgb([0.0, 0.0, 0.0]), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(lab_to_linear_rgb(RED_LAB), torch.tensor([1.0, 0.0, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(encode_srgb([0.0, 0.0031308, 0.5, 1.0]),
                               torch.tensor([0.0, 0.0404500, 0.7353570, 1.0]), atol=1e-6, rtol=0)


def test_max_chroma_is_the_gamut_boundary():
    g = torch.Generator().manual_seed(0)
    lightness, hue = 5 + 90 * torch.rand(500, generator=g), (torch.rand(500, generator=g) * 2 - 1) * np.pi
    chroma = max_chroma(lightness, hue)

    def rgb(c):
        return lab_to_linear_rgb(torch.stack([lightness, c * hue.cos(), c * hue.sin()], -1))

    inside = rgb(chroma)
    assert inside.min() >= 0.0 and inside.max() <= 1.0
    outside = rgb(chroma + 0.01)
    assert torch.all((outside.amin(-1) < 0.0) | (outside.amax(-1) > 1.0))
    red_hue = np.arctan2(RED_LAB[2], RED_LAB[1])  # pure red's chroma, reached in its own hue direction
    assert float(max_chroma(RED_LAB[0], red_hue)) == pytest.approx(np.hypot(RED_LAB[1], RED_LAB[2]), abs=0.05)


def test_lch_to_srgb_stays_in_gamut_and_keeps_lightness():
    g = torch.Generator().manual_seed(1)
    lightness = 100 * torch.rand(4000, generator=g)
    saturation = 1.5 * torch.rand(4000, generator=g)  # over 1 clamps to the boundary
    colors = lch_to_srgb(lightness, saturation, 8 * torch.rand(4000, generator=g) - 4)
    assert colors.dtype == torch.float32 and colors.min() >= 0.0 and colors.max() <= 1.0
    # no colour was clipped into the gamut: clipping would change its lightness
    np.testing.assert_allclose(_lightness_of(colors.numpy()), lightness.numpy(), atol=0.05)


def test_zero_saturation_is_grey_and_lightness_orders_it():
    colors = lch_to_srgb(torch.tensor([20.0, 50.0, 80.0]), torch.zeros(3), torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(colors[:, 0], colors[:, 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(colors[:, 1], colors[:, 2], atol=1e-4, rtol=0)
    assert torch.all(colors[1:, 0] > colors[:-1, 0])
