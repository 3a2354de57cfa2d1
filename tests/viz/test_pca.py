import numpy as np
import pytest
import torch

from pe_dense.viz import PCAColorizer, colors_to_image, pca_rgb


def _features(seed=0, c=32, h=12, w=10):
    g = torch.Generator().manual_seed(seed)
    # three strong directions on top of noise, so the components are well separated
    basis = torch.randn(3, c, generator=g)
    weights = torch.randn(h * w, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0])
    return (weights @ basis + 0.1 * torch.randn(h * w, c, generator=g)).T.reshape(c, h, w)


def test_colors_are_in_range_with_the_map_shape():
    rgb = pca_rgb(_features())
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0 and rgb.std() > 0.1


def test_components_are_sign_fixed_and_deterministic():
    f = _features()
    a = PCAColorizer().fit(f)
    b = PCAColorizer().fit(-f)  # flipping the features flips the scores, not the component signs
    torch.testing.assert_close(a.components, b.components)
    idx = a.components.abs().argmax(1)
    assert torch.all(a.components.gather(1, idx[:, None]) > 0)
    np.testing.assert_array_equal(pca_rgb(f), pca_rgb(f.clone()))


def test_fit_on_one_map_and_transform_another_shares_colours():
    f = _features()
    colorizer = PCAColorizer().fit(f)
    np.testing.assert_allclose(colorizer.transform(f), colorizer.fit_transform(f))
    shifted = f[:, :, list(range(5, 10)) + list(range(5))]  # same tokens, moved: same colours, moved
    np.testing.assert_allclose(colorizer.transform(shifted), colorizer.transform(f)[:, list(range(5, 10)) + list(range(5))])


def test_mask_fits_on_foreground_only():
    f = _features()
    mask = torch.zeros(12, 10, dtype=torch.bool)
    mask[:6] = True
    fg = PCAColorizer().fit(f, mask=mask)
    direct = PCAColorizer().fit(f[:, :6].reshape(32, -1).T)
    torch.testing.assert_close(fg.components, direct.components)
    with pytest.raises(ValueError, match="mask has 5 entries"):
        PCAColorizer().fit(f, mask=torch.ones(5, dtype=torch.bool))


def test_constant_features_give_mid_grey_not_nan():
    rgb = pca_rgb(torch.ones(8, 4, 4))
    np.testing.assert_array_equal(rgb, np.full((4, 4, 3), 0.5, dtype=np.float32))


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected features of shape"):
        pca_rgb(torch.zeros(2, 2, 2, 2))
    with pytest.raises(RuntimeError, match="fit"):
        PCAColorizer().transform(_features())
    with pytest.raises(ValueError, match="fitted on 32 channels"):
        PCAColorizer().fit(_features()).transform(torch.zeros(16, 3, 3))


def test_image_upsampling():
    image = colors_to_image(pca_rgb(_features()), size=(100, 120))
    assert image.size == (100, 120) and image.mode == "RGB"
