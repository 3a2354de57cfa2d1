"""Scaled dot-product attention: pe_dense's bf16 CPU kernel where it applies, torch's everywhere else.

torch's CPU attention runs bf16 no faster than float32 on CPUs without AMX; ``pe_dense._C``'s
``attention_bf16`` multiplies bf16 pairs with AVX512-BF16 instructions and is about 2x faster on such a
CPU (benchmarks/attention.py), with torch's own bf16 error (docs/encoder.md#bf16-on-the-cpu). On a CPU
with AMX, torch multiplies on the AMX tiles and is about 3x faster than the kernel, so the kernel stands
aside there. It has no backward, so it serves inference only.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .. import cpu
from .extension import kernels_available

KERNEL_HEAD_DIMS = (32, 64, 96, 128)


@functools.lru_cache(maxsize=None)
def bf16_kernel_supported() -> bool:
    """Whether the bf16 attention kernel is built and this CPU has AVX512-BF16, so that it can run."""
    return kernels_available("cpu") and torch.ops.pe_dense.attention_bf16_supported()


def bf16_kernel_preferred() -> bool:
    """Whether bf16 attention on this CPU goes to the kernel: it runs here and the CPU's units call for it
    (:func:`pe_dense.cpu.bf16_attention_kernel`)."""
    return bf16_kernel_supported() and cpu.bf16_attention_kernel(cpu.units())


def uses_bf16_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`attention` runs these operands on the bf16 kernel."""
    return (q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.bfloat16
            and q.shape[-1] in KERNEL_HEAD_DIMS
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
            and bf16_kernel_preferred())


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dim)) v for (batch, heads, tokens, dim) operands, as
    ``F.scaled_dot_product_attention(q, k, v)``; the result may be a transposed view."""
    if uses_bf16_kernel(q, k, v):
        return torch.ops.pe_dense.attention_bf16(q, k, v, q.shape[-1] ** -0.5)
    return F.scaled_dot_product_attention(q, k, v)


if kernels_available("cpu"):
    @torch.library.register_fake("pe_dense::attention_bf16")
    def _(q, k, v, scale):  # shapes for torch.compile and export: (B, N, H, D) memory seen as (B, H, N, D)
        b, h, n, d = q.shape
        return q.new_empty(b, n, h, d).transpose(1, 2)
