// Where one sampling point reads from a level, shared by the CPU and CUDA kernels so the sampling
// rule exists once: grid_sample's bilinear interpolation, zero padding, align_corners=False.
#pragma once

#ifdef __CUDACC__
#define PE_HOST_DEVICE __host__ __device__ __forceinline__
#define PE_UNROLL _Pragma("unroll")
#else
#define PE_HOST_DEVICE inline
#define PE_UNROLL _Pragma("GCC unroll 4")
#endif

namespace pe_dense {

// Corners in the order (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1). A corner outside
// the map has valid = false, weight 0 and offset 0 (a safe address), so loops can skip or mask it.
template <typename acc_t, typename index_t>
struct Footprint {
  index_t offset[4];  // element offset of the corner from the level's first position (row stride applied)
  acc_t weight[4];    // bilinear weight of the corner
  bool valid[4];
  acc_t fx, fy;       // position inside the cell, for the location gradients
};

// Fills `f` for location (loc_x, loc_y) in [0, 1] on an H x W level whose positions are `stride`
// elements apart; false when the point is so far outside that no corner contributes (or is NaN).
template <typename acc_t, typename index_t>
PE_HOST_DEVICE bool bilinear_footprint(acc_t loc_x, acc_t loc_y, index_t H, index_t W, index_t stride,
                                       Footprint<acc_t, index_t>& f) {
  const acc_t x = loc_x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(H) - acc_t(0.5);
  if (!(x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(W) && y < static_cast<acc_t>(H))) return false;
  // floor() for x > -1: truncation for x >= 0, -1 below.
  const index_t x0 = x >= acc_t(0) ? static_cast<index_t>(x) : index_t(-1);
  const index_t y0 = y >= acc_t(0) ? static_cast<index_t>(y) : index_t(-1);
  f.fx = x - static_cast<acc_t>(x0);
  f.fy = y - static_cast<acc_t>(y0);
  const acc_t wx[2] = {acc_t(1) - f.fx, f.fx};
  const acc_t wy[2] = {acc_t(1) - f.fy, f.fy};
  PE_UNROLL
  for (int k = 0; k < 4; ++k) {
    const index_t cx = x0 + (k & 1), cy = y0 + (k >> 1);
    f.valid[k] = cx >= 0 && cx < W && cy >= 0 && cy < H;
    f.offset[k] = f.valid[k] ? (cy * W + cx) * stride : index_t(0);
    f.weight[k] = f.valid[k] ? wx[k & 1] * wy[k >> 1] : acc_t(0);
  }
  return true;
}

// Whether a level's metadata stays inside a value tensor of `length` positions.
template <typename index_t>
PE_HOST_DEVICE bool level_fits(index_t H, index_t W, index_t start, index_t length) {
  return H > 0 && W > 0 && start >= 0 && start <= length && H <= (length - start) / W;
}

}  // namespace pe_dense
