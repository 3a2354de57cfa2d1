// Multi-scale deformable attention kernels of pe_dense.
//
// Shapes: value (N, S, M, D); spatial_shapes (L, 2) int64 (H, W); level_start_index (L) int64;
// sampling_locations (N, Q, M, L, P, 2) as (x, y) in [0, 1]; attention_weights (N, Q, M, L, P);
// output (N, Q, M * D). Sampling is bilinear with zero padding, align_corners=False (grid_sample).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pe_dense {

// Shape, dtype and device agreement of the five inputs (TORCH_CHECK; the Python layer checks first).
void check_arguments(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_locations, const at::Tensor& attention_weights);

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output);
#endif

}  // namespace pe_dense
