"""PCA of token features to colours.

``rgb``: the first three principal components become red, green and blue. ``lch``: the first
component is lightness and the next two, read as a point in the plane, are hue (angle) and chroma
(radius), as in the PE paper's figures.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from .color import lch_to_srgb
from .images import upsample

Features = Union[torch.Tensor, np.ndarray]
COLOR_MODES = ("rgb", "lch")
LIGHTNESS_RANGE = (25.0, 92.0)  # CIE L*: darker loses hue, lighter loses chroma


def _tokens(features: Features) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(N, C) float64 tokens from a (C, h, w) map or (N, C) matrix, and the spatial shape to restore."""
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.ndim == 3:
        return x.flatten(1).T, tuple(x.shape[1:])
    if x.ndim == 2:
        return x, (x.shape[0],)
    raise ValueError(f"expected features of shape (C, h, w) or (N, C), got {tuple(x.shape)}")


def _top_eigenvectors(centered: torch.Tensor, count: int = 3) -> torch.Tensor:
    """The ``count`` leading principal directions (count, C), largest first.

    The Gram matrix is accumulated in float32 (the costly product; ample for a picture) and only
    the leading eigenvectors are computed (LAPACK syevr), 2-3x faster than a full eigh or SVD.
    """
    from scipy.linalg import eigh

    c = centered.float()
    gram = (c.T @ c).double().numpy()
    channels = gram.shape[0]
    _, vectors = eigh(gram, subset_by_index=[channels - count, channels - 1], driver="evr")  # ascending
    return torch.from_numpy(vectors[:, ::-1].T.copy())


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class PCAColorizer:
    """Colours tokens by their first three principal components.

    Components are sign-fixed (largest loading positive), so the same features always get the same
    colours. Scores are scaled between the ``quantile`` and ``1 - quantile`` quantiles of the fitted
    tokens, so a few outliers do not wash the picture out. Fit on one map, a list of maps, or the
    foreground tokens only (``mask``), then transform any map: colours keep their meaning across
    images and video frames.
    """

    def __init__(self, mode: str = "rgb", quantile: float = 0.01):
        if mode not in COLOR_MODES:
            raise ValueError(f"mode must be one of {', '.join(COLOR_MODES)}, got '{mode}'")
        if not 0.0 <= quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
        self.mode = mode
        self.quantile = quantile
        self.mean: Optional[torch.Tensor] = None
        self.components: Optional[torch.Tensor] = None  # (3, C)
        self.low: Optional[torch.Tensor] = None
        self.high: Optional[torch.Tensor] = None

    def fit(self, features: Union[Features, Sequence[Features]],
            mask: Union[None, Features, Sequence[Features]] = None) -> "PCAColorizer":
        """Fit on the tokens of one map or a list of maps; ``mask`` (one per map, (h, w) or (N,)) keeps
        the True tokens."""
        maps = _as_list(features)
        masks = [None] * len(maps) if mask is None else _as_list(mask)
        if len(masks) != len(maps):
            raise ValueError(f"{len(masks)} masks for {len(maps)} feature maps")
        parts = []
        for f, m in zip(maps, masks):
            x, shape = _tokens(f)
            if m is not None:
                keep = torch.as_tensor(m, dtype=torch.bool).reshape(-1)
                if keep.numel() != x.shape[0]:
                    raise ValueError(f"mask has {keep.numel()} entries for {x.shape[0]} tokens of shape {shape}")
                x = x[keep]
            parts.append(x)
        if len({p.shape[1] for p in parts}) > 1:
            raise ValueError(f"feature maps differ in channels: {sorted({p.shape[1] for p in parts})}")
        x = torch.cat(parts)
        if x.shape[0] < 2:
            raise ValueError("PCA needs at least two tokens (is the mask empty?)")
        if x.shape[1] < 3:
            raise ValueError(f"{x.shape[1]} channels cannot give 3 components")
        self.mean = x.mean(0)
        centered = x - self.mean
        components = _top_eigenvectors(centered)
        signs = components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
        self.components = components * torch.where(signs == 0, 1.0, signs)
        projected = centered @ self.components.T
        self.low = projected.quantile(self.quantile, dim=0)
        self.high = projected.quantile(1.0 - self.quantile, dim=0)
        return self

    def project(self, features: Features) -> torch.Tensor:
        """Raw component scores, shape (*spatial, 3)."""
        if self.components is None:
            raise RuntimeError("call fit() first")
        x, shape = _tokens(features)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"fitted on {self.mean.shape[0]} channels, got {x.shape[1]}")
        return ((x - self.mean) @ self.components.T).reshape(*shape, 3)

    def transform(self, features: Features, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """Colours in [0, 1], float32, shape (*spatial, 3), or (height, width, 3) when ``size`` is given.

        With ``size`` the component scores are upsampled bilinearly before colouring, which keeps
        edges between tokens smooth and hues correct (colours themselves do not interpolate well).
        """
        scores = self.project(features)
        if size is not None:
            if scores.ndim != 3:
                raise ValueError("size needs a (C, h, w) feature map")
            scores = torch.from_numpy(upsample(scores.numpy(), size)).double()
        return self.colors(scores)

    def colors(self, scores: torch.Tensor) -> np.ndarray:
        """Colours in [0, 1], float32, of component scores (..., 3) from :meth:`project`, e.g. scores brought
        to the image's pixels another way than :meth:`transform`'s bilinear upsampling."""
        scores = torch.as_tensor(scores, dtype=torch.float64)
        if self.mode == "rgb":
            span = self.high - self.low
            scaled = torch.where(span > 0, (scores - self.low) / span.clamp_min(1e-12), torch.full_like(scores, 0.5))
            return scaled.clamp(0.0, 1.0).numpy().astype(np.float32)
        return self._lch(scores)

    def _lch(self, scores: torch.Tensor) -> np.ndarray:
        span = self.high[0] - self.low[0]
        first = ((scores[..., 0] - self.low[0]) / span).clamp(0, 1) if span > 0 else torch.full_like(scores[..., 0], .5)
        lightness = LIGHTNESS_RANGE[0] + (LIGHTNESS_RANGE[1] - LIGHTNESS_RANGE[0]) * first
        # components 2 and 3 are zero-mean: scale each by its larger quantile magnitude, so the
        # fitted tokens fill the unit disc and both components use the full hue circle
        bound = torch.maximum(self.low[1:].abs(), self.high[1:].abs())
        plane = torch.where(bound > 0, scores[..., 1:] / bound.clamp_min(1e-12), torch.zeros_like(scores[..., 1:]))
        saturation = torch.hypot(plane[..., 0], plane[..., 1]).clamp(max=1.0)  # (norm(dim=-1) is slow here)
        hue = torch.atan2(plane[..., 1], plane[..., 0])
        return lch_to_srgb(lightness, saturation, hue).numpy()

    def fit_transform(self, features: Features, mask: Optional[Features] = None,
                      size: Optional[tuple[int, int]] = None) -> np.ndarray:
        return self.fit(features, mask).transform(features, size)


def pca_rgb(features: Features) -> np.ndarray:
    """(h, w, 3) colours in [0, 1] for one (C, h, w) feature map, PCA fitted on the map itself."""
    return PCAColorizer().fit_transform(features)
