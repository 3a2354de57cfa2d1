"""Shift-and-stitch: a denser grid made only of the released model's own outputs on shifted images."""



import numpy as np
import pytest
import torch
from conftest import randomize_
from PIL import Image

from pe_dense.models import PEVisionTransformer, get_config
from pe_dense.models.inference import extract_layers
from pe_dense.models.shift_stitch import shift_and_stitch, stitch_factor


@pytest.fixture(scope="module")
def encoder():
    return randomize_(PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=2)), seed=3).eval()


def _shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved up by dy and left by dx pixels, its last row and column repeated into the gap
    (written out here pixel by pixel, independently of the module's padding)."""
    height, width = images.shape[-2:]
    rows = torch.clamp(torch.arange(height) + dy, max=height - 1)
    cols = torch.clamp(torch.arange(width) + dx, max=width - 1)
    return images[..., rows[:, None], cols[None, :]]


def test_one_shift_is_the_plain_forward_exactly(encoder):
    images = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        dense = shift_and_stitch(encoder, images, stride=16, layers=[0, -1])
        plain = encoder.dense_features_at(images, [0, -1])
    assert all(torch.equal(d, p) for d, p in zip(dense, plain))


@pytest.mark.parametrize("stride", [8, 4])
def test_every_sub_grid_is_the_model_on_the_shifted_image(encoder, stride):
    images = torch.randn(2, 3, 32, 48)
    k = 16 // stride
    with torch.inference_mode():
        (dense,) = shift_and_stitch(encoder, images, stride=stride)
        assert dense.shape == (2, 192, 2 * k, 3 * k)
        for i in range(k):
            for j in range(k):
                # the same batch composition as the module's one batched run, so the products round alike
                shifted = torch.cat([_shifted(images, a * stride, b * stride) for a in range(k) for b in range(k)])
                expected = encoder.dense_features(shifted)[(i * k + j) * 2:(i * k + j + 1) * 2]
                assert torch.equal(dense[:, :, i::k, j::k], expected)
                # and alone, up to the rounding of a batch of another size
                torch.testing.assert_close(dense[:, :, i::k, j::k],
                                           encoder.dense_features(_shifted(images, i * stride, j * stride)))


def test_extract_layers_takes_a_stride():
    encoder = PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=1)).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    (plain,) = extract_layers(encoder, [image], size=32, layers=[-1])
    (dense,) = extract_layers(encoder, [image], size=32, layers=[-1], stride=8)
    assert dense.shape == (1, 192, 4, 4)
    torch.testing.assert_close(dense[:, :, ::2, ::2], plain)  # shift (0, 0), in a batch of 4


def test_the_stride_must_divide_the_patch():
    assert stitch_factor(14, 7) == 2 and stitch_factor(16, 16) == 1
    with pytest.raises(ValueError, match="stride 6 does not divide the patch size 16 "
                                         r"\(valid: 1, 2, 4, 8, 16\)"):
        stitch_factor(16, 6)


def test_features_and_viz_take_a_stride(tmp_path, t16_weights, capsys):
    from pe_dense import FeatureStore
    from pe_dense.cli import main
    from pe_dense.data import sample_image
    from pe_dense.models import build_encoder

    out = tmp_path / "out"
    assert main(["features", "sample:coffee", "--model", "PE-Spatial-T16-512", "--weights", str(t16_weights),
                 "--size", "64", "--stride", "8", "--workers", "0", "--out", str(out)]) == 0
    store = FeatureStore(out)
    assert store.manifest["stride"] == 8
    (expected,) = extract_layers(build_encoder("PE-Spatial-T16-512", t16_weights), [sample_image("coffee")],
                                 size=64, layers=[-1], stride=8)
    (name,) = list(store)
    torch.testing.assert_close(store[name]["layer_-1"], expected[0], rtol=0, atol=0)
    for command in ("features", "viz"):
        assert main([command, "sample:coffee", "--model", "PE-Spatial-T16-512", "--stride", "6",
                     "--out", str(tmp_path / command)]) == 2
        assert "stride 6 does not divide the patch size 16" in capsys.readouterr().err
        assert not (tmp_path / command).exists()
