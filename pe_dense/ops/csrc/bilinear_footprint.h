// Where the sampling points of one query read from the value tensor, shared by the CPU and CUDA
// kernels so the sampling rule and the traversal exist once: grid_sample's bilinear interpolation,
// zero padding, align_corners=False.
#pragma once

#ifdef __CUDACC__
#define PE_HOST_DEVICE __host__ __device__ __forceinline__
#define PE_UNROLL _Pragma("unroll")
#else
// always_inline: the CPU kernels are compiled per instruction set (ms_deform_attn_cpu.cpp), and only
// code inlined into them gets that instruction set; a call out of these helpers would not.
#define PE_HOST_DEVICE inline __attribute__((always_inline))
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

// Calls visit(j, level_offset, H, W, f) for every sampling point of one task (batch n, query q,
// head m; task = (n * Q + q) * M + m) that touches its level: j is the point's flat index in the
// locations/weights, level_offset the element offset of the head's first position on that level, f
// its footprint. Levels whose metadata would overrun `value` are skipped.
template <typename acc_t, typename index_t, typename loc_t, typename Visit>
PE_HOST_DEVICE void for_each_sample(index_t task, const int64_t* hw, const int64_t* starts, const loc_t* loc, index_t S,
                                    index_t M, index_t D, index_t Q, int L, int P, Visit&& visit) {
  const index_t n = task / (Q * M), m = task % M;
  index_t j = task * L * P;
  for (int l = 0; l < L; ++l) {
    const index_t H = hw[2 * l], W = hw[2 * l + 1], start = starts[l];
    if (!level_fits<index_t>(H, W, start, S)) {
      j += P;
      continue;
    }
    const index_t level_offset = ((n * S + start) * M + m) * D;
    for (int p = 0; p < P; ++p, ++j) {
      Footprint<acc_t, index_t> f;
      if (bilinear_footprint<acc_t, index_t>(static_cast<acc_t>(loc[2 * j]), static_cast<acc_t>(loc[2 * j + 1]), H, W,
                                             M * D, f))
        visit(j, level_offset, H, W, f);
    }
  }
}

}  // namespace pe_dense
