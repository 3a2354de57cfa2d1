"""Custom operators: multi-scale deformable attention (CPU and CUDA kernels in pe_dense._C)."""

from .ms_deform_attn import kernels_available, ms_deform_attn
from .ms_deform_attn_layer import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["MSDeformAttn", "kernels_available", "ms_deform_attn", "ms_deform_attn_reference"]
