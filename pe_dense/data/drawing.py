"""Shared pieces of the built-in synthetic data: smooth textures and vivid colours."""

from __future__ import annotations

import colorsys
import math

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


def shape_outline(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape. Circles are 48-gons so that the polygon is the drawn shape."""
    if kind == "circle":
        n, radii = 48, [radius]
    elif kind == "square":
        n, radii = 4, [radius]
    elif kind == "triangle":
        n, radii = 3, [radius * 1.15]
    elif kind == "star":
        n, radii = 10, [radius * 1.2, radius * 0.5]
    else:
        raise ValueError(f"unknown shape '{kind}'")
    return [(cx + radii[k % len(radii)] * math.cos(angle + 2 * math.pi * k / n),
             cy + radii[k % len(radii)] * math.sin(angle + 2 * math.pi * k / n)) for k in range(n)]


def fill_polygon(polygon, size: int) -> np.ndarray:
    """The polygon's pixels exactly as pycocotools rasterises it, so that a polygon annotation and the
    painted shape are the same pixels."""
    from pycocotools import mask as mask_utils

    flat = [v for point in polygon for v in point]
    return mask_utils.decode(mask_utils.frPyObjects([flat], size, size))[..., 0].astype(bool)
