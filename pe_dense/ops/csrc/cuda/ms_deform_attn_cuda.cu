// CUDA kernels: fp32, fp64, fp16 and bf16, accumulating in fp32 (fp64 for double).
//
// Forward: one thread per output element (batch, query, head, channel); consecutive threads take
// consecutive channels, so value reads of a corner are coalesced. Backward: one warp per
// (batch, query, head); lanes split the channels, the location and weight gradients are warp
// reductions written by lane 0, and value gradients are fp32 atomics (into an fp32 buffer for
// fp16/bf16). Level metadata is read on the device (no host sync) and every read is bounds-guarded.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <initializer_list>
#include <limits>

#include "../bilinear_footprint.h"
#include "../ms_deform_attn.h"

namespace pe_dense {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops cover the rest

int64_t blocks_for(int64_t threads) { return std::min<int64_t>(kMaxBlocks, (threads + kThreads - 1) / kThreads); }

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ hw,
                   const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                   const scalar_t* __restrict__ attn, scalar_t* __restrict__ out, index_t S, index_t M, index_t D,
                   index_t Q, int L, int P, index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t c = idx % D;
    acc_t acc = 0;
    for_each_sample<acc_t, index_t>(
        idx / D, hw, starts, loc, S, M, D, Q, L, P,
        [&](index_t j, index_t level_offset, index_t, index_t, const Footprint<acc_t, index_t>& f) {
          acc_t sample = 0;
          PE_UNROLL
          for (int k = 0; k < 4; ++k)
            if (f.valid[k]) sample += f.weight[k] * static_cast<acc_t>(value[level_offset + f.offset[k] + c]);
          acc += static_cast<acc_t>(attn[j]) * sample;
        });
    out[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
  PE_UNROLL
  for (int delta = kWarp / 2; delta > 0; delta /= 2) x += __shfl_xor_sync(0xffffffffu, x, delta);
  return x;
}

template <typename scalar_t, typename index_t, typename grad_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ hw,
                    const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                    const scalar_t* __restrict__ attn, const scalar_t* __restrict__ grad_out,
                    grad_t* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                    scalar_t* __restrict__ grad_attn, index_t S, index_t M, index_t D, index_t Q, int L, int P,
                    index_t tasks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / kWarp);
  // Warp-uniform loop: every lane of a warp has the same task, so the shuffles see full warps.
  for (index_t task = (blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x) / kWarp; task < tasks;
       task += warps) {
    const scalar_t* g = grad_out + task * D;
    for_each_sample<acc_t, index_t>(
        task, hw, starts, loc, S, M, D, Q, L, P,
        [&](index_t j, index_t level_offset, index_t H, index_t W, const Footprint<acc_t, index_t>& f) {
          const acc_t a = static_cast<acc_t>(attn[j]);
          const acc_t gx = acc_t(1) - f.fx, gy = acc_t(1) - f.fy;
          acc_t s_sample = 0, s_x = 0, s_y = 0;
          for (index_t c = lane; c < D; c += kWarp) {
            acc_t u[4];
            PE_UNROLL
            for (int k = 0; k < 4; ++k)
              u[k] = f.valid[k] ? static_cast<acc_t>(value[level_offset + f.offset[k] + c]) : acc_t(0);
            const acc_t go = static_cast<acc_t>(g[c]);
            s_sample += go * (f.weight[0] * u[0] + f.weight[1] * u[1] + f.weight[2] * u[2] + f.weight[3] * u[3]);
            s_x += go * (gy * (u[1] - u[0]) + f.fy * (u[3] - u[2]));
            s_y += go * (gx * (u[2] - u[0]) + f.fx * (u[3] - u[1]));
            const acc_t ga = go * a;
            PE_UNROLL
            for (int k = 0; k < 4; ++k)
              if (f.valid[k])
                atomicAdd(grad_value + level_offset + f.offset[k] + c, static_cast<grad_t>(ga * f.weight[k]));
          }
          s_sample = warp_sum(s_sample);
          s_x = warp_sum(s_x);
          s_y = warp_sum(s_y);
          if (lane == 0) {
            grad_attn[j] = static_cast<scalar_t>(s_sample);
            grad_loc[2 * j] = static_cast<scalar_t>(s_x * a * static_cast<acc_t>(W));
            grad_loc[2 * j + 1] = static_cast<scalar_t>(s_y * a * static_cast<acc_t>(H));
          }
        });
  }
}

bool fits_int32(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s >= std::numeric_limits<int32_t>::max()) return false;
  return true;
}

// Runs body(index) with an int32_t index when every flat index fits in 32 bits (cheaper index math), else int64_t.
template <typename Body>
void with_index_type(bool small, Body&& body) {
  if (small) {
    body(int32_t{});
  } else {
    body(int64_t{});
  }
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard guard(value.device());
  const auto v = value.contiguous(), loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  const auto shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
  const int64_t N = v.size(0), S = v.size(1), M = v.size(2), D = v.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  auto out = at::empty({N, Q, M * D}, v.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    with_index_type(fits_int32({v.numel(), loc.numel(), total}), [&](auto index) {
      using index_t = decltype(index);
      forward_kernel<scalar_t, index_t><<<blocks_for(total), kThreads, 0, stream>>>(
          v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
          attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), static_cast<index_t>(S), static_cast<index_t>(M),
          static_cast<index_t>(D), static_cast<index_t>(Q), static_cast<int>(L), static_cast<int>(P),
          static_cast<index_t>(total));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard guard(value.device());
  const auto v = value.contiguous(), loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  const auto shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
  const auto grad = grad_output.to(v.scalar_type()).contiguous();
  const int64_t N = v.size(0), S = v.size(1), M = v.size(2), D = v.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == N && grad.size(1) == Q && grad.size(2) == M * D,
              "grad_output must have shape (N, Q, M * D)");
  // Value gradients accumulate with atomics: in fp32 (or fp64) whatever the input precision.
  const bool reduced = v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16;
  auto grad_value = at::zeros(v.sizes(), v.options().dtype(reduced ? at::kFloat : v.scalar_type()));
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  const int64_t tasks = N * Q * M;
  if (tasks > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using grad_t = at::opmath_type<scalar_t>;
      with_index_type(fits_int32({v.numel(), loc.numel(), grad.numel(), tasks * kWarp}), [&](auto index) {
        using index_t = decltype(index);
        backward_kernel<scalar_t, index_t, grad_t><<<blocks_for(tasks * kWarp), kThreads, 0, stream>>>(
            v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
            loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
            grad_value.data_ptr<grad_t>(), grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(),
            static_cast<index_t>(S), static_cast<index_t>(M), static_cast<index_t>(D), static_cast<index_t>(Q),
            static_cast<int>(L), static_cast<int>(P), static_cast<index_t>(tasks));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return {reduced ? grad_value.to(v.scalar_type()) : grad_value, grad_loc, grad_attn};
}

}  // namespace pe_dense
