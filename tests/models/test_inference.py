"""The one precision helper every caller uses (features, viz, tracking, alignment, DETA), and batched
extraction from PIL images."""

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.models import PEVisionTransformer, get_config
from pe_dense.models.inference import PRECISIONS, autocast, extract, extract_layers


def test_autocast_runs_each_precision_and_refuses_others():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'int8', expected one of fp32, bf16, fp16"):
        autocast("cpu", "int8")
    assert set(PRECISIONS) == {"fp32", "bf16", "fp16"}


def test_extract_layers_is_one_pass_of_the_encoder_on_preprocessed_images():
    torch.manual_seed(0)
    encoder = PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=3)).eval()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8)) for i in (0, 1)]
    maps = extract_layers(encoder, images, size=(32, 48), layers=[0, -1])
    pixels = np.stack([np.asarray(im.resize((48, 32), Image.BILINEAR), dtype=np.float32) for im in images])
    batch = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255 - 0.5) / 0.5  # the released normalisation
    with torch.no_grad():
        expected = [encoder.dense_features(batch, layer) for layer in (0, -1)]
    assert [m.shape for m in maps] == [(2, 192, 2, 3)] * 2
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(extract(encoder, images, size=(32, 48), layer=-1), maps[1])
    bf16 = extract(encoder, images, size=(32, 48), precision="bf16")
    assert bf16.dtype == torch.float32 and (bf16 - maps[1]).abs().max() < 0.1 * maps[1].abs().max()
