"""Foreground masks from the features alone (docs/sharper.md#foreground-masks).

DINOv2's recipe: the first principal component of an image's tokens mostly separates the object from
the background; thresholding it gives a mask, and a PCA fitted on the masked tokens alone colours the
object's parts. A component's sign is arbitrary, so it is chosen by a rule: the tokens on the border of
the grid are taken to be background, and the sign is the one that gives them a negative mean score (the
scores of all tokens have mean 0). The mask is the tokens scoring above that mean.
"""

from __future__ import annotations

import torch

from .pca import Features, _tokens, _top_eigenvectors


def border(grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: the outer ring of tokens."""
    ring = torch.ones(grid, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    return ring


def foreground_scores(features: Features) -> torch.Tensor:
    """(h, w) first-principal-component scores of a (C, h, w) map, signed so the border scores lower."""
    x, shape = _tokens(features)
    if len(shape) != 2:
        raise ValueError("foreground scores need a (C, h, w) feature map")
    centered = x - x.mean(0)
    scores = (centered @ _top_eigenvectors(centered, count=1)[0]).reshape(shape)
    return -scores if scores[border(shape)].mean() > 0 else scores  # scores have mean 0: the border goes below


def foreground_mask(features: Features) -> torch.Tensor:
    """(h, w) bool: the tokens whose :func:`foreground_scores` are positive."""
    return foreground_scores(features) > 0
