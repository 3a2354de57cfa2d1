// CPU entry points: argument checks, dtype handling, and the choice between the kernels compiled for
// plain x86-64 and for AVX2+FMA (picked once, by what the running CPU supports).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "../bilinear_footprint.h"
#include "../ms_deform_attn.h"

namespace pe_dense {
namespace {

struct Sizes {
  int64_t N, S, M, D, Q, L, P;
  explicit Sizes(const at::Tensor& value, const at::Tensor& locations)
      : N(value.size(0)), S(value.size(1)), M(value.size(2)), D(value.size(3)), Q(locations.size(1)),
        L(locations.size(3)), P(locations.size(4)) {}
};

// The level metadata must keep every read inside `value`, whoever calls the op.
void check_levels(const at::Tensor& shapes, const at::Tensor& starts, int64_t length) {
  const auto* hw = shapes.data_ptr<int64_t>();
  const auto* start = starts.data_ptr<int64_t>();
  for (int64_t l = 0; l < shapes.size(0); ++l) {
    // One std::string argument: TORCH_CHECK passes it through without an ostream, whose integer
    // formatting crashed where the extension's libstdc++ headers and the runtime one differed.
    TORCH_CHECK(level_fits<int64_t>(hw[2 * l], hw[2 * l + 1], start[l], length),
                "level " + std::to_string(l) + " (" + std::to_string(hw[2 * l]) + " x " + std::to_string(hw[2 * l + 1]) +
                    " starting at " + std::to_string(start[l]) + ") does not fit in value of length " +
                    std::to_string(length));
  }
}

// An uninitialised tensor whose memory the kernel will write all over, backed by transparent huge
// pages where Linux offers them (torch does this for every allocation under THP_MEM_ALLOC_ENABLE=1,
// see c10/core/alloc_cpu.cpp; this does it for our outputs only). The gradient of a DETA value
// tensor is 44 MB and freshly mapped each backward: on 4 KiB pages zeroing it took ~11,000 page
// faults, about as long as the sampling itself at 900 queries; on 2 MiB pages it is 3-4x faster.
// Only the 2 MiB-aligned interior is advised; without THP support nothing changes.
at::Tensor empty_on_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options) {
  auto t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t(1) << 21;
  const auto data = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (data + huge - 1) & ~(huge - 1), end = (data + t.nbytes()) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
  return t;
}

bool reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace

namespace baseline {
#include "ms_deform_attn_cpu_kernels.inc"
}  // namespace baseline

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "ms_deform_attn_cpu_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#define PE_DENSE_HAVE_AVX2_KERNELS 1
#endif

namespace {

bool use_avx2() {
#ifdef PE_DENSE_HAVE_AVX2_KERNELS
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

template <typename scalar_t, typename... Args>
void forward(Args&&... args) {
#ifdef PE_DENSE_HAVE_AVX2_KERNELS
  if (use_avx2()) return avx2::forward_kernel<scalar_t>(std::forward<Args>(args)...);
#endif
  baseline::forward_kernel<scalar_t>(std::forward<Args>(args)...);
}

template <typename scalar_t, typename... Args>
void backward(Args&&... args) {
#ifdef PE_DENSE_HAVE_AVX2_KERNELS
  if (use_avx2()) return avx2::backward_kernel<scalar_t>(std::forward<Args>(args)...);
#endif
  baseline::backward_kernel<scalar_t>(std::forward<Args>(args)...);
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (reduced_precision(value)) {  // half and bfloat16 compute in float32 on the CPU
    return ms_deform_attn_forward_cpu(value.to(at::kFloat), spatial_shapes, level_start_index,
                                      sampling_locations.to(at::kFloat), attention_weights.to(at::kFloat))
        .to(value.scalar_type());
  }
  const auto shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
  check_levels(shapes, starts, value.size(1));
  const auto v = value.contiguous(), loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  const Sizes z(v, loc);
  auto out = empty_on_huge_pages({z.N, z.Q, z.M * z.D}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward<scalar_t>(v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                      loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), z);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (reduced_precision(value)) {
    auto [gv, gl, ga] = ms_deform_attn_backward_cpu(value.to(at::kFloat), spatial_shapes, level_start_index,
                                                    sampling_locations.to(at::kFloat),
                                                    attention_weights.to(at::kFloat), grad_output.to(at::kFloat));
    const auto dtype = value.scalar_type();
    return {gv.to(dtype), gl.to(dtype), ga.to(dtype)};
  }
  const auto shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
  check_levels(shapes, starts, value.size(1));
  const auto v = value.contiguous(), loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  const auto grad = grad_output.to(v.scalar_type()).contiguous();
  const Sizes z(v, loc);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == z.N && grad.size(1) == z.Q && grad.size(2) == z.M * z.D,
              "grad_output must have shape (N, Q, M * D)");
  auto grad_value = empty_on_huge_pages(v.sizes(), v.options()).zero_();
  auto grad_loc = empty_on_huge_pages(loc.sizes(), loc.options()).zero_();
  auto grad_attn = empty_on_huge_pages(attn.sizes(), attn.options()).zero_();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    backward<scalar_t>(v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                       loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                       grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(),
                       z);
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace pe_dense
