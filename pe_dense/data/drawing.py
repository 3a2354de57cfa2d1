"""Shared pieces of the built-in synthetic data: smooth textures and vivid colours."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image


def smooth_texture(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth random colour texture (H, W, 3) in [0, 1]: bicubically upsampled noise."""
    noise = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(noise).resize((width, height), Image.BICUBIC), dtype=np.float32) / 255


def muted(texture: np.ndarray) -> np.ndarray:
    """A mostly grey version of a texture, so that saturated objects stand out as objects usually do."""
    return 0.25 + 0.5 * (0.75 * texture.mean(axis=2, keepdims=True) + 0.25 * texture)


def saturated(hue: float) -> np.ndarray:
    """RGB in [0, 1] of a vivid colour (HSV with saturation 0.85, value 0.95)."""
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95))
