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
    order = list(range(5, 10)) + list(range(5))
    shifted = f[:, :, order]  # same tokens, moved: same colours, moved
    np.testing.assert_allclose(colorizer.transform(shifted), colorizer.transform(f)[:, order])


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


def test_fit_on_a_list_of_maps_equals_fit_on_their_tokens():
    a, b = _features(0), _features(1, h=7, w=9)
    joint = PCAColorizer().fit([a, b])
    tokens = torch.cat([a.flatten(1).T, b.flatten(1).T])
    torch.testing.assert_close(joint.components, PCAColorizer().fit(tokens).components)
    masks = [torch.rand(12, 10) > 0.5, torch.rand(7, 9) > 0.5]
    masked = PCAColorizer().fit([a, b], mask=masks)
    kept = torch.cat([a.flatten(1).T[masks[0].flatten()], b.flatten(1).T[masks[1].flatten()]])
    torch.testing.assert_close(masked.components, PCAColorizer().fit(kept).components)
    with pytest.raises(ValueError, match="2 masks for 1"):
        PCAColorizer().fit([a], mask=masks)
    with pytest.raises(ValueError, match="differ in channels"):
        PCAColorizer().fit([a, torch.zeros(16, 3, 3)])
    with pytest.raises(ValueError, match="is the mask empty"):
        PCAColorizer().fit(a, mask=torch.zeros(12, 10, dtype=torch.bool))


@pytest.mark.parametrize("mode", ["rgb", "lch"])
def test_upsampled_colours_match_the_tokens_at_their_centres(mode):
    f = _features()
    colorizer = PCAColorizer(mode).fit(f)
    big = colorizer.transform(f, size=(36, 30))  # x3: token centres fall on pixel centres 1, 4, 7, ...
    assert big.shape == (36, 30, 3) and big.min() >= 0.0 and big.max() <= 1.0
    np.testing.assert_allclose(big[1::3, 1::3], colorizer.transform(f), atol=1e-5)


def test_lch_lightness_follows_the_first_component():
    f = _features()
    colorizer = PCAColorizer("lch", quantile=0.0).fit(f)
    colors = colorizer.transform(f).reshape(-1, 3).astype(np.float64)
    linear = np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
    first = colorizer.project(f)[..., 0].reshape(-1).numpy()
    order = np.argsort(first)
    assert np.all(np.diff(luminance[order]) > -1e-4)  # monotonic: hue and chroma do not change lightness
    assert luminance[order[-1]] > 0.6 > 0.1 > luminance[order[0]]


def test_lch_hue_follows_components_two_and_three():
    f = _features()
    colorizer = PCAColorizer("lch", quantile=0.0).fit(f)
    scores = colorizer.project(f).reshape(-1, 3)
    colors = colorizer.transform(f).reshape(-1, 3)
    # tokens on opposite sides of the (2, 3) plane, with similar first score, get different hues
    a, b = scores[:, 1].argmax(), scores[:, 1].argmin()
    assert np.abs(colors[a] - colors[b]).max() > 0.2


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of rgb, lch"):
        PCAColorizer("hsv")
