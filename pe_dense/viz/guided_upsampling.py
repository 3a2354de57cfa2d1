"""Edge-aware upsampling of a token map to pixels: joint bilateral upsampling (Kopf et al., 2007) guided by
the image (docs/sharper.md#guided-upsampling).

Every output pixel p is a weighted mean of the tokens q around it:

    out(p) = sum_q w(p, q) f(q) / sum_q w(p, q),
    w(p, q) = exp(-|u(p) - q|^2 / (2 sigma_spatial^2) - |I(p) - I(q)|^2 / (2 sigma_range^2))

u(p) is p's position in token coordinates (token centres at pixel centres of their patch, as in
bilinear upsampling with align_corners=False), I(p) the image's colour at p in [0, 1] and I(q) the
image's mean colour over q's patch. The tokens taken are the (2 * radius + 1)^2 around the one nearest
to u(p), those inside the grid. The weights are accumulated in the log domain, as a running softmax, so
that no pixel loses all its weights to underflow: a constant map stays constant.

The output is built in tiles of rows, so beyond the output itself the memory is a few buffers of one
tile (``tile_elements`` channels x pixels each), whatever the image size.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import upsample

UPSAMPLING = ("bilinear", "guided")
SIGMA_SPATIAL = 1.0  # tokens
SIGMA_RANGE = 0.1  # colour distance, channels in [0, 1]
TILE_ELEMENTS = 2**22  # channels x pixels of one tile: 16 MiB per float32 buffer


def image_tensor(image: Image.Image, device=None) -> torch.Tensor:
    """(3, H, W) float32 colours in [0, 1] of a PIL image, the guide this module expects."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    return pixels.permute(2, 0, 1).to(device)


def _positions(pixels: int, tokens: int, device) -> torch.Tensor:
    """Token coordinate of every pixel centre along one axis."""
    return (torch.arange(pixels, device=device, dtype=torch.float32) + 0.5) * (tokens / pixels) - 0.5


def guided_upsample(features: torch.Tensor, guide: torch.Tensor, *, sigma_spatial: float = SIGMA_SPATIAL,
                    sigma_range: float = SIGMA_RANGE, radius: Optional[int] = None,
                    tile_elements: int = TILE_ELEMENTS) -> torch.Tensor:
    """A (C, h, w) map brought to the (3, H, W) guide's size: (C, H, W), float32, on the map's device.

    ``radius`` (tokens) defaults to ceil(2 * sigma_spatial).
    """
    if features.ndim != 3 or guide.ndim != 3 or guide.shape[0] != 3:
        raise ValueError(f"expected a (C, h, w) map and a (3, H, W) guide, got {tuple(features.shape)} and "
                         f"{tuple(guide.shape)}")
    if sigma_spatial <= 0 or sigma_range <= 0:
        raise ValueError("sigma_spatial and sigma_range must be positive")
    radius = math.ceil(2 * sigma_spatial) if radius is None else radius
    device = features.device
    features = features.float()
    channels, h, w = features.shape
    height, width = guide.shape[1:]
    guide = guide.to(device, torch.float32)
    token_colours = F.adaptive_avg_pool2d(guide[None], (h, w))[0]
    uy, ux = _positions(height, h, device), _positions(width, w, device)
    cy, cx = uy.round().clamp(0, h - 1).long(), ux.round().clamp(0, w - 1).long()
    # the centre token first: always inside the grid, so the running maximum starts finite
    offsets = sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)),
                     key=lambda o: o != (0, 0))
    out = features.new_empty(channels, height, width)
    rows = max(1, tile_elements // (max(channels, 3) * width))
    for top in range(0, height, rows):
        tile = slice(top, min(top + rows, height))
        out[:, tile] = _tile(features, token_colours, guide[:, tile], uy[tile], ux, cy[tile], cx, offsets,
                             sigma_spatial, sigma_range)
    return out


def _tile(features, token_colours, guide, uy, ux, cy, cx, offsets, sigma_spatial, sigma_range):
    h, w = features.shape[1:]
    best = total = weighted = None
    for dy, dx in offsets:
        ty, tx = cy + dy, cx + dx
        inside = ((ty >= 0) & (ty < h))[:, None] & ((tx >= 0) & (tx < w))[None, :]
        ty, tx = ty.clamp(0, h - 1), tx.clamp(0, w - 1)
        colours = token_colours.index_select(1, ty).index_select(2, tx)
        spatial = (uy - ty)[:, None] ** 2 + (ux - tx)[None, :] ** 2
        logit = -spatial / (2 * sigma_spatial**2) - (guide - colours).square().sum(0) / (2 * sigma_range**2)
        logit = logit.masked_fill(~inside, -math.inf)
        values = features.index_select(1, ty).index_select(2, tx)
        if best is None:
            best, total, weighted = logit, torch.ones_like(logit), values
            continue
        new_best = torch.maximum(best, logit)
        keep, add = (best - new_best).exp(), (logit - new_best).exp()
        total = total * keep + add
        weighted = weighted * keep + values * add
        best = new_best
    return weighted / total


def to_pixels(values, image: Image.Image, method: str = "bilinear") -> np.ndarray:
    """A (h, w) or (h, w, K) token map at the image's size, float32: ``bilinear``, or ``guided`` by the image."""
    if method not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got '{method}'")
    if method == "bilinear":
        return upsample(values, (image.height, image.width))
    x = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a (h, w) or (h, w, K) map, got shape {tuple(x.shape)}")
    out = guided_upsample(x[None] if x.ndim == 2 else x.permute(2, 0, 1), image_tensor(image))
    return (out[0] if x.ndim == 2 else out.permute(1, 2, 0)).numpy()
