"""Custom operators: multi-scale deformable attention (CPU and CUDA kernels in pe_dense._C) and
attention with a bf16 CPU kernel."""

from .dot_product_attention import attention
from .extension import kernels_available
from .ms_deform_attn import ms_deform_attn
from .ms_deform_attn_layer import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["MSDeformAttn", "attention", "kernels_available", "ms_deform_attn", "ms_deform_attn_reference"]
