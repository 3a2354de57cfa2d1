"""Token maps to pictures: smooth upsampling, colour maps, overlays on the image."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ArrayLike = Union[np.ndarray, torch.Tensor]


def upsample(values: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a (h, w) or (h, w, K) token map to ``size`` = (height, width), float32.

    Token centres sit at pixel centres of their patch (align_corners=False), as in the encoder.
    """
    x = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a (h, w) or (h, w, K) map, got shape {tuple(x.shape)}")
    planes = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    out = F.interpolate(planes, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return (out[0] if x.ndim == 2 else out.permute(1, 2, 0)).numpy()


def token_mask(mask: ArrayLike, grid: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """(h, w) bool token mask from an (H, W) pixel mask: tokens whose patch is more than
    ``threshold`` covered (area average, so any image size works)."""
    x = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {tuple(x.shape)}")
    return (F.adaptive_avg_pool2d(x[None, None], tuple(grid))[0, 0] > threshold).numpy()


def colors_to_image(colors: np.ndarray, size: Optional[tuple[int, int]] = None) -> Image.Image:
    """An RGB PIL image from (h, w, 3) colours in [0, 1]; ``size`` = (width, height) upsamples smoothly."""
    colors = np.asarray(colors)
    if size is not None:
        colors = upsample(colors, (size[1], size[0]))
    return Image.fromarray((np.clip(colors, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def heatmap(values: ArrayLike, cmap: str = "inferno", vmin: Optional[float] = None,
            vmax: Optional[float] = None) -> np.ndarray:
    """(h, w, 3) colours in [0, 1] for a (h, w) map through a matplotlib colour map.

    The range defaults to the map's own minimum and maximum.
    """
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float64)
    low = values.min() if vmin is None else vmin
    high = values.max() if vmax is None else vmax
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return colormaps[cmap](np.clip(scaled, 0.0, 1.0))[..., :3].astype(np.float32)


def overlay(image: Image.Image, colors: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """``colors`` (h, w, 3) upsampled to the image and blended over it with weight ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return Image.blend(image.convert("RGB"), colors_to_image(colors, image.size), alpha)


def mark_points(image: Image.Image, points: Sequence[tuple[float, float]], color=(0, 255, 255),
                radius: Optional[int] = None) -> Image.Image:
    """A copy of ``image`` with a ring drawn at each (x, y) pixel position."""
    marked = image.convert("RGB")
    draw = ImageDraw.Draw(marked)
    r = radius or max(3, round(min(marked.size) / 60))
    for x, y in points:
        draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=max(1, r // 3))
    return marked
