"""Foreground masks from the first principal component, and token-norm outliers, on synthetic features
whose answer is known."""

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.viz.foreground import border, foreground_mask, foreground_scores
from pe_dense.viz.token_norms import norm_sweep_figure, outlier_threshold, outlier_tokens, token_norms


def _scene(seed=0, object_value=1.0, background_value=-0.3):
    """(16, 10, 12) features: an object (rows 3-7, columns 4-9) and the background differ along one direction,
    with noise in every channel."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(16, generator=generator)
    obj = torch.zeros(10, 12, dtype=torch.bool)
    obj[3:8, 4:10] = True
    features = torch.where(obj, object_value, background_value) * direction[:, None, None]
    return features + 0.1 * torch.randn(16, 10, 12, generator=generator), obj


@pytest.mark.parametrize("seed", range(4))
def test_the_mask_is_the_object_whatever_the_component_s_sign(seed):
    features, obj = _scene(seed)
    assert torch.equal(foreground_mask(features), obj)
    assert torch.equal(foreground_mask(-features), obj)  # the same tokens, the opposite component


def test_the_border_is_background_even_when_the_object_is_the_majority():
    features, obj = _scene(object_value=-0.3, background_value=1.0)
    big = torch.ones(10, 12, dtype=torch.bool)
    big[0], big[-1], big[:, 0], big[:, -1] = False, False, False, False
    features = torch.where(big, 1.0, -2.0) * features[:, :1, :1] + 0.05 * torch.randn(16, 10, 12)
    scores = foreground_scores(features)
    assert scores[border((10, 12))].mean() < 0
    assert torch.equal(foreground_mask(features), big)


def test_outliers_are_the_tokens_above_median_plus_k_robust_sigmas():
    norms = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    # median 3.5, MAD 1.5: threshold 3.5 + 2 * 1.4826 * 1.5
    assert outlier_threshold(norms, k=2) == pytest.approx(3.5 + 2 * 1.4826 * 1.5)
    assert outlier_tokens(norms, k=2).tolist() == [[False, False, False], [False, False, True]]
    assert outlier_tokens(norms, k=0.5).sum() == 2  # 5 and 100


def test_norm_maps_and_the_layer_sweep():
    features = torch.randn(16, 10, 12, generator=torch.Generator().manual_seed(0))
    features[:, 1, 1] *= 40  # one high-norm token
    norms = token_norms(features)
    torch.testing.assert_close(norms, torch.linalg.vector_norm(features, dim=0))
    assert torch.nonzero(outlier_tokens(norms)).tolist() == [[1, 1]]
    image = Image.new("RGB", (120, 100), (90, 90, 90))
    figure = norm_sweep_figure(image, {"block 0": features, "block 1": features * 2})
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["image", "block 0: 1 outlier(s)", "block 1: 1 outlier(s)"]
    ring_pixels = np.asarray(figure.axes[1].images[0].get_array())
    assert ring_pixels.shape == (100, 120, 3)
