// Registration of the pe_dense::ms_deform_attn_{forward,backward} operators (CPU, and CUDA when built)
// and the Python module pe_dense._C.
#include <torch/extension.h>
#include <torch/library.h>

#include "ms_deform_attn.h"

namespace pe_dense {

void check_arguments(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "value must have shape (N, S, heads, channels)");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.scalar_type() == at::kLong,
              "spatial_shapes must be an int64 tensor of shape (L, 2)");
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L &&
                  level_start_index.scalar_type() == at::kLong,
              "level_start_index must be an int64 tensor of shape (L)");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) && sampling_locations.size(3) == L &&
                  sampling_locations.size(5) == 2,
              "sampling_locations must have shape (N, Q, heads, L, P, 2)");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must have shape (N, Q, heads, L, P)");
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must share a dtype");
  for (const auto* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "all inputs must be on the device of value (" + value.device().str() + ")");
  }
}

}  // namespace pe_dense

TORCH_LIBRARY(pe_dense, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pe_dense, CPU, m) {
  m.impl("ms_deform_attn_forward", &pe_dense::ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &pe_dense::ms_deform_attn_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pe_dense, CUDA, m) {
  m.impl("ms_deform_attn_forward", &pe_dense::ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &pe_dense::ms_deform_attn_backward_cuda);
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pe_dense C++/CUDA operators (registered as torch.ops.pe_dense.*)";
  m.def("cuda_built", [] {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "whether the CUDA kernels were compiled");
}
