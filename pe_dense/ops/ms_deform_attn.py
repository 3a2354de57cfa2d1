"""Multi-scale deformable attention (Deformable DETR): the compiled kernels of ``pe_dense._C`` behind
autograd, with the pure-PyTorch reference as the fallback when they are not built."""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch

from . import extension
from .reference import ms_deform_attn_reference
from .validation import ShapesLike, as_level_tensors, check_inputs


@functools.lru_cache(maxsize=None)
def _warn_fallback(device_type: str) -> None:
    _, reason = extension.load_extension()
    why = (f"pe_dense._C does not import ({reason})" if reason
           else f"pe_dense._C was built without {device_type} kernels")
    warnings.warn(f"{why}: using the pure-PyTorch multi-scale deformable attention, which is slower and needs more "
                  f"memory. Rebuild with `pip install --no-build-isolation -e .` (FORCE_CUDA=1 for CUDA).",
                  RuntimeWarning, stacklevel=3)


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return torch.ops.pe_dense.ms_deform_attn_forward(value, spatial_shapes, level_start_index,
                                                         sampling_locations, attention_weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = torch.ops.pe_dense.ms_deform_attn_backward(
            *ctx.saved_tensors, grad_output.contiguous())
        return grad_value, None, None, grad_locations, grad_weights


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: ShapesLike,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    use_kernel: Optional[bool] = None,
) -> torch.Tensor:
    """Multi-scale deformable attention, (N, Lq, heads * channels).

    Args:
        value: (N, S, heads, channels), the levels flattened and concatenated along S.
        spatial_shapes: (L, 2) integer (H, W) per level, or a list of pairs. Keep it on the CPU (or a
            list) to have the level sizes checked against ``value`` without stalling a GPU.
        level_start_index: (L,) start of each level in S; None computes it from spatial_shapes.
        sampling_locations: (N, Lq, heads, L, points, 2), (x, y) in [0, 1]; outside points read zeros.
        attention_weights: (N, Lq, heads, L, points), used as given (no softmax).
        use_kernel: force the compiled kernel (True) or the pure-PyTorch reference (False); by
            default the kernel when it is built for the device, else the reference with one warning.

    Non-contiguous inputs are made contiguous. Under autocast the computation runs in float32;
    explicit float16/bfloat16 inputs run in that dtype with float32 accumulation.
    """
    shapes, starts = as_level_tensors(spatial_shapes, level_start_index)
    check_inputs(value, shapes, starts, sampling_locations, attention_weights)
    if torch.is_autocast_enabled(value.device.type):  # sampling positions need float32 precision
        value, sampling_locations, attention_weights = (
            value.float(), sampling_locations.float(), attention_weights.float())
    # Small tensors: a non-blocking copy from the host does not wait for the device.
    shapes = shapes.to(value.device, non_blocking=True)
    starts = starts.to(value.device, non_blocking=True)
    if use_kernel is None:
        use_kernel = extension.kernels_available(value.device)
        if not use_kernel:
            _warn_fallback(value.device.type)
    elif use_kernel and not extension.kernels_available(value.device):
        raise RuntimeError(f"no compiled deformable attention kernel for {value.device.type}: "
                           f"{extension.load_extension()[1] or 'not built'}")
    if not use_kernel:
        return ms_deform_attn_reference(value, shapes, sampling_locations, attention_weights)
    return _MSDeformAttnFunction.apply(value, shapes, starts, sampling_locations, attention_weights)
