"""PCA of token features to RGB: the first three principal components become red, green and blue."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

Features = Union[torch.Tensor, np.ndarray]


def _tokens(features: Features) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(N, C) float64 tokens from a (C, h, w) map or (N, C) matrix, and the spatial shape to restore."""
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.ndim == 3:
        return x.flatten(1).T, tuple(x.shape[1:])
    if x.ndim == 2:
        return x, (x.shape[0],)
    raise ValueError(f"expected features of shape (C, h, w) or (N, C), got {tuple(x.shape)}")


class PCAColorizer:
    """Colours tokens by their principal components, each scaled to [0, 1] between two quantiles.

    Components are sign-fixed (largest loading positive) so the same features always get the same
    colours. Fit on one set of features and transform others to give colours a shared meaning.
    """

    def __init__(self, n_components: int = 3, quantile: float = 0.01):
        if not 0.0 <= quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
        self.n_components = n_components
        self.quantile = quantile
        self.mean: Optional[torch.Tensor] = None
        self.components: Optional[torch.Tensor] = None  # (n_components, C)
        self.low: Optional[torch.Tensor] = None
        self.high: Optional[torch.Tensor] = None

    def fit(self, features: Features, mask: Optional[Features] = None) -> "PCAColorizer":
        """Fit on the tokens of ``features``; ``mask`` (h, w) or (N,) keeps only the True tokens."""
        x, shape = _tokens(features)
        if mask is not None:
            keep = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
            if keep.numel() != x.shape[0]:
                raise ValueError(f"mask has {keep.numel()} entries for {x.shape[0]} tokens of shape {shape}")
            x = x[keep]
        if x.shape[0] < 2:
            raise ValueError("PCA needs at least two tokens")
        if x.shape[1] < self.n_components:
            raise ValueError(f"{x.shape[1]} channels cannot give {self.n_components} components")
        self.mean = x.mean(0)
        centered = x - self.mean
        _, vectors = torch.linalg.eigh(centered.T @ centered)  # ascending eigenvalues
        components = vectors.flip(-1)[:, : self.n_components].T
        signs = components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
        self.components = components * torch.where(signs == 0, 1.0, signs)
        projected = centered @ self.components.T
        self.low = projected.quantile(self.quantile, dim=0)
        self.high = projected.quantile(1.0 - self.quantile, dim=0)
        return self

    def project(self, features: Features) -> torch.Tensor:
        """Raw component scores, shape (*spatial, n_components)."""
        if self.components is None:
            raise RuntimeError("call fit() first")
        x, shape = _tokens(features)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"fitted on {self.mean.shape[0]} channels, got {x.shape[1]}")
        return ((x - self.mean) @ self.components.T).reshape(*shape, self.n_components)

    def transform(self, features: Features) -> np.ndarray:
        """Colours in [0, 1], float32, shape (*spatial, n_components)."""
        scores = self.project(features)
        span = self.high - self.low
        scaled = torch.where(span > 0, (scores - self.low) / span.clamp_min(1e-12), torch.full_like(scores, 0.5))
        return scaled.clamp(0.0, 1.0).numpy().astype(np.float32)

    def fit_transform(self, features: Features, mask: Optional[Features] = None) -> np.ndarray:
        return self.fit(features, mask).transform(features)


def pca_rgb(features: Features) -> np.ndarray:
    """(h, w, 3) colours in [0, 1] for one (C, h, w) feature map, PCA fitted on the map itself."""
    return PCAColorizer().fit_transform(features)


def colors_to_image(colors: np.ndarray, size: Optional[tuple[int, int]] = None) -> Image.Image:
    """An RGB PIL image from (h, w, 3) colours in [0, 1], smoothly upsampled to ``size`` (width, height)."""
    image = Image.fromarray((np.clip(colors, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return image.resize(size, Image.BICUBIC) if size is not None else image
