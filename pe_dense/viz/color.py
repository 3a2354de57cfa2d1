"""CIE LCh colours that stay inside the sRGB gamut.

The PE paper colours features by lightness (first principal component) and hue/chroma (the next
two). Most (L, C, h) triples are not displayable, and clipping them shifts their hue, so chroma is
given as a fraction of the largest displayable chroma at that lightness and hue: looked up in a
(lightness, hue) table, and found exactly by bisection wherever the table's value is not displayable.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# D65 white point folded into the XYZ -> linear sRGB matrix (IEC 61966-2-1), applied as x @ _LAB_F_TO_RGB.
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_RGB = torch.tensor([
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
])
_LAB_F_TO_RGB = (_XYZ_TO_LINEAR_RGB * _WHITE).T.contiguous()
_DELTA = 6.0 / 29.0
_MAX_CHROMA = 140.0  # above any sRGB colour's chroma in CIELAB
_BISECTION_STEPS = 16  # 140 / 2^16: chroma to 0.002, far below a visible difference


def _float(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)


def lab_to_linear_rgb(lab) -> torch.Tensor:
    """Linear sRGB (unclipped) from CIELAB (..., 3)."""
    lab = _float(lab)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], dim=-1)
    return torch.where(f > _DELTA, f**3, 3.0 * _DELTA**2 * (f - 4.0 / 29.0)) @ _LAB_F_TO_RGB


def encode_srgb(linear) -> torch.Tensor:
    """The sRGB transfer curve; input clipped to [0, 1]."""
    linear = _float(linear).clamp(0.0, 1.0)
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.pow(1.0 / 2.4) - 0.055)


def _lch_to_linear_rgb(lightness, chroma, hue_cos, hue_sin):
    return lab_to_linear_rgb(torch.stack([lightness, chroma * hue_cos, chroma * hue_sin], dim=-1))


def max_chroma(lightness, hue) -> torch.Tensor:
    """The largest chroma displayable in sRGB at each (lightness, hue in radians), by bisection."""
    lightness, hue = torch.broadcast_tensors(_float(lightness), _float(hue))
    hue_cos, hue_sin = hue.cos(), hue.sin()
    low, high = torch.zeros_like(lightness), torch.full_like(lightness, _MAX_CHROMA)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        inside = _in_gamut(_lch_to_linear_rgb(lightness, mid, hue_cos, hue_sin))
        low, high = torch.where(inside, mid, low), torch.where(inside, high, mid)
    return low  # always displayable: only ever set to a chroma that was inside


def _in_gamut(rgb: torch.Tensor) -> torch.Tensor:
    return ((rgb >= 0.0) & (rgb <= 1.0)).all(dim=-1)


@functools.lru_cache(maxsize=1)
def _max_chroma_table() -> torch.Tensor:
    """max_chroma on a (lightness, hue) grid, (1, 1, 257, 513): 0..100 by 100/256, -pi..pi by 2pi/512."""
    lightness, hue = torch.linspace(0.0, 100.0, 257), torch.linspace(-math.pi, math.pi, 513)
    return max_chroma(lightness[:, None], hue[None, :])[None, None]


def _approx_max_chroma(lightness: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """max_chroma interpolated from the table: exact at grid points, close between them."""
    grid = torch.stack([hue / math.pi, lightness / 50.0 - 1.0], dim=-1).reshape(1, 1, -1, 2)
    values = F.grid_sample(_max_chroma_table(), grid, mode="bilinear", align_corners=True)
    return values.reshape(lightness.shape)


def lch_to_srgb(lightness, saturation, hue) -> torch.Tensor:
    """sRGB colours in [0, 1], shape (..., 3), float32.

    ``lightness`` is CIE L* in [0, 100], ``hue`` in radians, and ``saturation`` in [0, 1] the
    fraction of the largest chroma displayable at that lightness and hue.
    """
    lightness, saturation, hue = torch.broadcast_tensors(
        _float(lightness).clamp(0.0, 100.0), _float(saturation).clamp(0.0, 1.0), _float(hue))
    hue = torch.remainder(hue + math.pi, 2 * math.pi) - math.pi
    hue_cos, hue_sin = hue.cos(), hue.sin()
    # the table's interpolation can overshoot the boundary between grid points (the gamut has
    # edges): every colour is checked, and the few outside get their exact chroma by bisection
    chroma = saturation * _approx_max_chroma(lightness, hue)
    rgb = _lch_to_linear_rgb(lightness, chroma, hue_cos, hue_sin)
    outside = ~_in_gamut(rgb)
    if outside.any():
        exact = saturation[outside] * max_chroma(lightness[outside], hue[outside])
        rgb[outside] = _lch_to_linear_rgb(lightness[outside], exact, hue_cos[outside], hue_sin[outside])
    return encode_srgb(rgb)
