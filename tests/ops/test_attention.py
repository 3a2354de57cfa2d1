"""The bf16 CPU attention kernel (pe_dense._C's attention_bf16) against float64 attention, and the
dispatch in pe_dense.ops.dot_product_attention that decides when it runs."""

import math

import pytest
import torch
import torch.nn.functional as F

import pe_dense.ops.dot_product_attention as attention_module
from pe_dense import cpu
from pe_dense.models import PEVisionTransformer, get_config
from pe_dense.ops.dot_product_attention import attention, uses_bf16_kernel

kernel = pytest.mark.suite("cpu_bf16_attention")


def _operands(shape, keys=None, seed=0, magnitude=1.5):
    b, h, n, d = shape
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, h, n, d, generator=g) * magnitude).bfloat16()
    k, v = ((torch.randn(b, h, keys or n, d, generator=g) * magnitude).bfloat16() for _ in range(2))
    return q, k, v


def _exact(q, k, v):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double())


def _relative_error(got, want):
    return float((got.double() - want).norm() / want.norm())


@kernel
@pytest.mark.parametrize("shape,keys", [
    ((1, 3, 1590, 64), None),  # PE-Spatial-T16 at 480x848
    ((2, 2, 37, 96), None),    # G's head dim; a partial query block and a partial key panel
    ((1, 1, 1, 32), None),     # one token
    ((1, 2, 100, 128), 33),    # cross-attention: other key count, one key past a panel
    ((3, 1, 48, 64), 32),      # exactly one query block, exactly one key panel
])
def test_kernel_matches_float64_attention_as_closely_as_torch_bf16(shape, keys):
    q, k, v = _operands(shape, keys)
    want = _exact(q, k, v)
    got = torch.ops.pe_dense.attention_bf16(q, k, v, q.shape[-1] ** -0.5)
    torch_bf16 = F.scaled_dot_product_attention(q, k, v)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    # bf16 rounding of the probabilities and of the output: both about 0.2 %, like torch's bf16 attention
    assert _relative_error(got, want) <= 1.25 * _relative_error(torch_bf16, want) + 1e-4
    assert float((got.double() - want).abs().max()) < 0.03


@kernel
def test_kernel_is_stable_for_large_scores_and_honours_the_scale():
    """Scores in the thousands (exp would overflow without subtracting the row maximum), and a scale
    other than 1/sqrt(dim)."""
    q, k, v = _operands((1, 2, 70, 64), magnitude=12.0)
    got = torch.ops.pe_dense.attention_bf16(q, k, v, 0.5)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.5)
    assert torch.isfinite(got).all() and float((got.double() - want).abs().max()) < 0.1 * float(want.abs().max())


@kernel
def test_kernel_reads_the_models_strided_operands_and_returns_its_layout():
    """q, k and v as the encoder makes them (views into the packed projection) give what contiguous
    copies give, and the result is a (B, H, N, D) view of (B, N, H, D) memory."""
    b, n, heads, d = 2, 50, 3, 64
    qkv = torch.randn(b, n, 3, heads, d).bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    got = torch.ops.pe_dense.attention_bf16(q, k, v, d ** -0.5)
    want = torch.ops.pe_dense.attention_bf16(q.contiguous(), k.contiguous(), v.contiguous(), d ** -0.5)
    assert torch.equal(got, want)
    assert got.transpose(1, 2).is_contiguous()


@kernel
def test_each_output_row_is_a_convex_combination_of_the_values():
    """The probabilities are divided by the sum of their rounded values, so constant values come out
    exactly (to bf16 rounding of the result)."""
    q, k, _ = _operands((1, 2, 40, 64))
    v = torch.full_like(k, 3.0)
    got = torch.ops.pe_dense.attention_bf16(q, k, v, 0.125)
    assert torch.equal(got, torch.full_like(got, 3.0))


@kernel
@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v: (q.float(), k, v), "bf16 CPU tensor"),
    (lambda q, k, v: (q[..., :48], k[..., :48], v[..., :48]), "head dims 32, 64, 96, 128"),
    (lambda q, k, v: (q, k[:, :1], v[:, :1]), "q's batch and heads"),
    (lambda q, k, v: (q, k, v[:, :, :5]), "q's batch and heads"),
    (lambda q, k, v: (q, k.transpose(2, 3), v), "contiguous"),
])
def test_kernel_refuses_inconsistent_operands(bad, match):
    q, k, v = bad(*_operands((1, 2, 64, 64)))
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pe_dense.attention_bf16(q, k, v, 0.125)


@kernel
def test_attention_uses_the_kernel_only_for_bf16_inference_on_the_cpu(monkeypatch):
    monkeypatch.setattr(attention_module, "bf16_kernel_preferred", lambda: True)  # also on a CPU with AMX
    q, k, v = _operands((1, 2, 20, 64))
    assert uses_bf16_kernel(q, k, v)
    assert not uses_bf16_kernel(q.float(), k.float(), v.float())
    assert not uses_bf16_kernel(q[..., :40], k[..., :40], v[..., :40])  # a head dim it has no tiles for
    q.requires_grad_(True)
    assert not uses_bf16_kernel(q, k, v)  # no backward: training keeps torch's attention
    with torch.no_grad():
        assert uses_bf16_kernel(q, k, v)
    out = attention(q, k, v)
    out.sum().backward()  # torch's attention ran, so gradients flow
    assert q.grad is not None and math.isfinite(float(q.grad.float().sum()))


@pytest.mark.parametrize("kernel_runs,amx,preferred", [(True, False, True), (True, True, False),
                                                       (False, False, False)])
def test_kernel_is_preferred_where_it_runs_and_the_cpu_has_no_amx(monkeypatch, kernel_runs, amx, preferred):
    """With AMX, torch's bf16 attention multiplies on the tiles and is ~3x faster than the kernel
    (benchmarks/results/attention_cpu_amx.json)."""
    monkeypatch.setattr(attention_module, "bf16_kernel_supported", lambda: kernel_runs)
    with cpu.assuming(cpu.CpuUnits("", "avx512", bf16=True, amx=amx, int8_dot=True, int8_exact=True)):
        assert attention_module.bf16_kernel_preferred() is preferred


def test_attention_without_the_kernel_is_torchs(monkeypatch):
    monkeypatch.setattr(attention_module, "bf16_kernel_preferred", lambda: False)
    q, k, v = _operands((1, 2, 30, 64))
    assert not uses_bf16_kernel(q, k, v)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(attention(q.float(), k.float(), v.float()),
                       F.scaled_dot_product_attention(q.float(), k.float(), v.float()))


@kernel
def test_encoder_features_under_bf16_autocast_agree_with_torchs_attention(monkeypatch):
    """A whole encoder in bf16 with the kernel against the same encoder with torch's bf16 attention:
    the two differ only in rounding, far less than bf16 differs from fp32."""
    torch.manual_seed(0)
    encoder = PEVisionTransformer(get_config("PE-Spatial-T16-512").replace(depth=4)).eval()
    images = torch.randn(2, 3, 128, 192)
    with torch.inference_mode():
        fp32 = encoder.dense_features(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            monkeypatch.setattr(attention_module, "bf16_kernel_preferred", lambda: True)
            ours = encoder.dense_features(images).float()
            monkeypatch.setattr(attention_module, "bf16_kernel_preferred", lambda: False)
            torchs = encoder.dense_features(images).float()
    gap = float((ours - torchs).norm() / fp32.norm())
    assert 0 < gap < 0.5 * float((torchs - fp32).norm() / fp32.norm()) + 0.005


@kernel
def test_kernel_operator_registration_passes_torchs_opcheck():
    """Schema, the fake (shape-only) implementation that torch.compile and export trace with, and
    that the result's strides match between the real and the fake implementation."""
    q, k, v = _operands((1, 2, 40, 64))
    assert all(r == "SUCCESS" for r in torch.library.opcheck(torch.ops.pe_dense.attention_bf16.default,
                                                             (q, k, v, 0.125)).values())
