"""Token-norm maps and their outliers (docs/sharper.md#token-norms).

Large ViTs keep a few tokens whose features are far larger than their neighbours', usually on
uninformative background (the "high-norm" or register-like tokens). A token is marked an outlier when
its norm is above a robust threshold, median + k * 1.4826 * MAD of the map's norms: the median absolute
deviation scaled to the standard deviation of normal data, so ``k`` counts robust standard deviations
and the outliers themselves hardly move the threshold.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from PIL import Image

from .correspondence import token_center
from .figures import panels_figure
from .images import heatmap, mark_points, overlay, upsample
from .pca import Features

MAD_TO_SIGMA = 1.4826  # the MAD of normal data times this is its standard deviation
OUTLIER_SIGMAS = 5.0  # the default k: five robust standard deviations above the median


def token_norms(features: Features) -> torch.Tensor:
    """The L2 norm of every token of a (C, h, w) map: (h, w), float32."""
    x = torch.as_tensor(features).detach().to("cpu", torch.float32)
    if x.ndim != 3:
        raise ValueError(f"expected a (C, h, w) feature map, got shape {tuple(x.shape)}")
    return x.norm(dim=0)


def outlier_threshold(norms: Features, k: float = OUTLIER_SIGMAS) -> float:
    """median + k * 1.4826 * MAD of the norms."""
    x = np.asarray(norms, dtype=np.float64)
    median = np.median(x)
    return float(median + k * MAD_TO_SIGMA * np.median(np.abs(x - median)))


def outlier_tokens(norms: Features, k: float = OUTLIER_SIGMAS) -> torch.Tensor:
    """(h, w) bool: the tokens whose norm is above :func:`outlier_threshold`."""
    norms = torch.as_tensor(norms, dtype=torch.float64)
    return norms > outlier_threshold(norms, k)


def norm_picture(image: Image.Image, norms: Features, k: float = OUTLIER_SIGMAS, pixels=None) -> Image.Image:
    """The norm map as a heat map over the image, a ring on every outlier token. ``pixels``: the map already
    brought to the image's size (e.g. guided); bilinear if None."""
    norms = torch.as_tensor(norms, dtype=torch.float32)
    pixels = upsample(norms, (image.height, image.width)) if pixels is None else pixels
    picture = overlay(image, heatmap(pixels), alpha=0.7)
    grid = tuple(norms.shape)
    rings = [token_center((int(r), int(c)), image.size, grid) for r, c in torch.nonzero(outlier_tokens(norms, k))]
    return mark_points(picture, rings, color=(0, 255, 0)) if rings else picture


def norm_sweep_figure(image: Image.Image, maps: Mapping[str, Features], k: float = OUTLIER_SIGMAS, **kw):
    """The image, then the norm picture of every named feature map (e.g. ``{"block 4": f4, ...}``), each with
    its outlier count."""
    panels = [("image", image)]
    for name, features in maps.items():
        norms = token_norms(features)
        count = int(outlier_tokens(norms, k).sum())
        panels.append((f"{name}: {count} outlier(s)", np.asarray(norm_picture(image, norms, k))))
    return panels_figure(panels, **kw)
