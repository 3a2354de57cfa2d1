// Exact top-k of label propagation from int8 screening scores (pe_dense.tracking.propagation).
//
// For a tile of target tokens, `screen[f]` holds the integer dot products of the targets' int8 codes
// with the codes of a window of context frame f. For each target the kernel
//   1. finds the k-th largest screening score among the sources within `radius` (its neighbourhood),
//   2. rescores exactly, in float32, every neighbour whose screening score is at least that k-th score
//      minus `slack`, keeping the k best exact scores.
// The caller sets `slack` from the quantisation error bound, so every source of the exact top-k passes
// step 2 (docs/protocols.md#fast-label-propagation); only a few dozen of the thousands of neighbours do.
#include <torch/library.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace pe_dense {
namespace {

// Insert (value, index) into the descending list of the best k seen so far (size <= k).
template <typename V>
inline void keep_best(std::vector<std::pair<V, int64_t>>& best, int64_t k, V value, int64_t index) {
  if (static_cast<int64_t>(best.size()) == k) {
    if (!(value > best.back().first)) return;
    best.pop_back();
  }
  auto at = std::upper_bound(best.begin(), best.end(), value,
                             [](V v, const std::pair<V, int64_t>& b) { return v > b.first; });
  best.insert(at, {value, index});
}

struct Problem {
  const int32_t* screen;  // (frames, tile tokens, window tokens)
  const float* query;     // (tile tokens, C)
  std::vector<const float*> sources;  // frames x (H, W, C)
  int64_t H, W, C, i0, j0, tw, a0, b0, wh, ww, tokens, radius, topk, slack;
};

struct Scratch {
  std::vector<std::pair<int32_t, int64_t>> screened;
  std::vector<std::pair<float, int64_t>> best;
  std::vector<int32_t> run_max;  // the best screening score of each (frame, source row) run
};

// One target token. Cloned for AVX-512 and AVX2 with dispatch at load time (the extension is built
// without -march flags), so the run maxima, the comparisons and the exact products vectorise.
__attribute__((target_clones("avx512f", "avx2", "default"))) void select_target(const Problem& p, int64_t t,
                                                                                 Scratch& s, float* values,
                                                                                 int64_t* index) {
  const int64_t y = p.i0 + t / p.tw, x = p.j0 + t % p.tw;
  const int64_t y0 = std::max(y - p.radius, p.a0), y1 = std::min(y + p.radius, p.a0 + p.wh - 1);
  const int64_t x0 = std::max(x - p.radius, p.b0) - p.b0, x1 = std::min(x + p.radius, p.b0 + p.ww - 1) - p.b0;
  const int64_t frames = static_cast<int64_t>(p.sources.size()), rows = y1 - y0 + 1;
  const auto run = [&](int64_t f, int64_t sy) {
    return p.screen + (f * p.tokens + t) * p.wh * p.ww + (sy - p.a0) * p.ww;
  };
  s.run_max.resize(frames * rows);
  s.screened.clear();
  // newest frame first: its best scores are usually the highest, so later runs are skipped sooner
  for (int64_t f = frames - 1; f >= 0; --f)
    for (int64_t sy = y0; sy <= y1; ++sy) {
      const int32_t* r = run(f, sy);
      int32_t most = std::numeric_limits<int32_t>::min();
      for (int64_t sx = x0; sx <= x1; ++sx) most = std::max(most, r[sx]);
      s.run_max[f * rows + sy - y0] = most;
      if (static_cast<int64_t>(s.screened.size()) == p.topk && most <= s.screened.back().first) continue;
      for (int64_t sx = x0; sx <= x1; ++sx) keep_best(s.screened, p.topk, r[sx], 0);
    }
  const int64_t threshold = static_cast<int64_t>(s.screened.back().first) - p.slack;
  s.best.clear();
  const float* q = p.query + t * p.C;
  for (int64_t f = 0; f < frames; ++f)
    for (int64_t sy = y0; sy <= y1; ++sy) {
      if (s.run_max[f * rows + sy - y0] < threshold) continue;
      const int32_t* r = run(f, sy);
      for (int64_t sx = x0; sx <= x1; ++sx) {
        if (r[sx] < threshold) continue;
        const int64_t token = sy * p.W + p.b0 + sx;
        const float* k = p.sources[f] + token * p.C;
        float cos = 0.f;
#pragma omp simd reduction(+ : cos)
        for (int64_t c = 0; c < p.C; ++c) cos += q[c] * k[c];
        keep_best(s.best, p.topk, cos, f * p.H * p.W + token);
      }
    }
  for (int64_t n = 0; n < p.topk; ++n) {
    values[n] = s.best[n].first;
    index[n] = s.best[n].second;
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> screened_topk_cpu(const at::Tensor& screen, const at::Tensor& query,
                                                     at::TensorList sources, at::IntArrayRef tile,
                                                     at::IntArrayRef window, int64_t radius, int64_t topk,
                                                     int64_t slack) {
  TORCH_CHECK(tile.size() == 4 && window.size() == 4, "tile and window are (row, column, height, width)");
  TORCH_CHECK(!sources.empty() && topk > 0 && radius >= 0 && slack >= 0,
              "need source frames, topk >= 1, radius >= 0 and slack >= 0");
  Problem p;
  p.H = sources[0].size(0), p.W = sources[0].size(1), p.C = sources[0].size(2);
  p.i0 = tile[0], p.j0 = tile[1], p.tw = tile[3], p.tokens = tile[2] * tile[3];
  p.a0 = window[0], p.b0 = window[1], p.wh = window[2], p.ww = window[3];
  p.radius = radius, p.topk = topk, p.slack = slack;
  const auto frames = static_cast<int64_t>(sources.size());
  TORCH_CHECK(screen.scalar_type() == at::kInt && screen.is_contiguous() &&
                  screen.sizes() == at::IntArrayRef({frames, p.tokens, p.wh * p.ww}),
              "screen must be a contiguous int32 tensor (frames, tile tokens, window tokens)");
  TORCH_CHECK(query.scalar_type() == at::kFloat && query.is_contiguous() &&
                  query.sizes() == at::IntArrayRef({p.tokens, p.C}),
              "query must be a contiguous float32 tensor (tile tokens, channels)");
  for (const auto& s : sources) {
    TORCH_CHECK(s.scalar_type() == at::kFloat && s.is_contiguous() && s.sizes() == sources[0].sizes(),
                "sources must be contiguous float32 (h, w, C) maps of one shape");
    p.sources.push_back(s.const_data_ptr<float>());
  }
  TORCH_CHECK(p.a0 >= 0 && p.b0 >= 0 && p.a0 + p.wh <= p.H && p.b0 + p.ww <= p.W && p.i0 >= p.a0 && p.j0 >= p.b0 &&
                  p.i0 + tile[2] <= p.a0 + p.wh && p.j0 + p.tw <= p.b0 + p.ww,
              "the window must lie in the frame and contain the tile");
  // every target must see topk sources: the tile's corners see the fewest
  const int64_t corner = std::min(radius + 1, p.H) * std::min(radius + 1, p.W);
  TORCH_CHECK(topk <= frames * corner, "topk exceeds the sources some targets can see");
  p.screen = screen.const_data_ptr<int32_t>();
  p.query = query.const_data_ptr<float>();

  auto values = at::empty({p.tokens, topk}, query.options());
  auto index = at::empty({p.tokens, topk}, query.options().dtype(at::kLong));
  float* out_values = values.mutable_data_ptr<float>();
  int64_t* out_index = index.mutable_data_ptr<int64_t>();
  at::parallel_for(0, p.tokens, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    scratch.screened.reserve(topk + 1);
    scratch.best.reserve(topk + 1);
    for (int64_t t = begin; t < end; ++t) select_target(p, t, scratch, out_values + t * topk, out_index + t * topk);
  });
  return {values, index};
}

}  // namespace pe_dense

TORCH_LIBRARY_FRAGMENT(pe_dense, m) {
  m.def(
      "screened_topk(Tensor screen, Tensor query, Tensor[] sources, int[] tile, int[] window, int radius, "
      "int topk, int slack) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pe_dense, CPU, m) { m.impl("screened_topk", &pe_dense::screened_topk_cpu); }
