"""The one precision helper every caller uses (features, viz, tracking, alignment, DETA), and batched
extraction from PIL images."""

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.data.samples import sample_image
from pe_dense.models import PEVisionTransformer, get_config
from pe_dense.models.inference import (
    PRECISIONS,
    autocast,
    check_precision,
    extract,
    extract_layers,
    with_matmul_weights_in,
)


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


def test_bf16_features_stay_within_the_recorded_error_of_fp32():
    """The bf16 path (`--precision bf16`) against fp32 on a real image with the full PE-Spatial-T16 at a
    480p-like grid: mean relative error per token <= 2 % and every token's cosine to its fp32 feature
    >= 0.999 (benchmarks/tracking.py records 0.9 % and 0.99994 at 480x848)."""
    torch.manual_seed(0)
    encoder = PEVisionTransformer(get_config("PE-Spatial-T16-512")).eval()
    image = [sample_image("coffee")]
    fp32 = extract(encoder, image, size=(240, 416))
    bf16 = extract(encoder, image, size=(240, 416), precision="bf16")
    per_token = (bf16 - fp32).norm(dim=1) / fp32.norm(dim=1)
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=1)
    assert 0 < per_token.mean() <= 0.02 and cosine.min() >= 0.999


def test_check_precision_refuses_what_would_be_slower_than_fp32(monkeypatch):
    check_precision("cpu", "fp32")
    check_precision("cuda", "fp16")  # only the CPU is restricted
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        check_precision("cpu", "fp16")
    monkeypatch.setattr("pe_dense.cpu.native_bf16", lambda units: False)
    with pytest.raises(ValueError, match="no native bf16"):
        check_precision("cpu", "bf16")
    monkeypatch.setattr("pe_dense.cpu.native_bf16", lambda units: True)
    check_precision("cpu", "bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        check_precision("cpu", "int8")


def test_matmul_weights_cast_once_compute_what_autocast_computes():
    """The tracker's bf16 copy: under autocast it gives bit-identical features, its matrix-product
    weights are bf16 and the original encoder is left as it was."""
    torch.manual_seed(0)
    encoder = PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=3)).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    converted = with_matmul_weights_in(encoder, torch.bfloat16)
    images = torch.randn(1, 3, 64, 96)
    with torch.inference_mode(), autocast("cpu", "bf16"):
        assert torch.equal(converted.dense_features(images), encoder.dense_features(images))
    dtypes = {k: v.dtype for k, v in converted.state_dict().items()}
    assert dtypes["transformer.resblocks.0.attn.in_proj_weight"] == torch.bfloat16
    assert dtypes["transformer.resblocks.0.mlp.c_fc.weight"] == torch.bfloat16
    assert dtypes["conv1.weight"] == torch.bfloat16
    assert dtypes["transformer.resblocks.0.ln_1.weight"] == dtypes["positional_embedding"] == torch.float32
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in encoder.state_dict().items())
