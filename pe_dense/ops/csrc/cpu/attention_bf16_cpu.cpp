// softmax(q k^T * scale) v for bf16 inputs on CPUs with AVX512-BF16 (pe_dense.ops.dot_product_attention).
//
// torch's CPU attention runs bf16 no faster than float32 on CPUs without AMX (benchmarks/attention.py).
// This kernel does the two products with vdpbf16ps, which multiplies bf16 pairs and accumulates in
// float32, at twice the float32 FMA rate:
//   1. K and V of each (batch, head) are packed once into the pair layouts the instruction reads;
//   2. each task takes kBlock query rows, computes their scores against every key in float32 (the
//      rows fit in L2, so no online rescaling is needed), exponentiates them in float32 and rounds
//      the unnormalised probabilities to bf16 in place;
//   3. multiplies them with V and divides by the sum of the rounded probabilities, so each output row
//      is a convex combination of V's rows with exactly the weights used.
// The output is (batch, queries, heads, dim) in memory, returned as the (batch, heads, queries, dim)
// view, which is the layout the output projection reads without a copy.
#include <torch/library.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

// The kernel is x86 code compiled for AVX512-BF16 whatever the build flags; elsewhere the operator
// reports itself unsupported and pe_dense.ops.dot_product_attention uses torch's attention.
#if defined(__x86_64__) && defined(__GNUC__)
#define PE_BF16_KERNEL 1
// GCC 12 warns that the intrinsics' own undefined pass-through operand is uninitialised (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define PE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

namespace pe_dense {
#ifdef PE_BF16_KERNEL
namespace {

constexpr int64_t kPanel = 32;   // keys per packed K panel: two zmm of float32 scores
constexpr int64_t kScoreRows = 12;  // query rows per score micro-tile: 24 accumulators
constexpr int64_t kBlock = 48;   // query rows per task; a multiple of every micro-tile height used

struct Problem {
  int64_t batch, heads, queries, keys, dim, padded_keys;
  float scale;
  const uint16_t *q, *k, *v;  // bf16 bits
  int64_t q_strides[3], k_strides[3], v_strides[3];  // batch, head, token (dim is contiguous)
  uint32_t *k_packed, *v_packed;  // per (batch, head): K panels and V row pairs
  uint16_t* out;                  // (batch, queries, heads, dim)
};

// K panel p holds keys [32p, 32p + 32): word [p][i][c] = (K[32p + c][2i], K[32p + c][2i + 1]).
// V holds word [j][d] = (V[2j][d], V[2j + 1][d]). Keys past the end are zero.
void pack(const Problem& p, int64_t bh) {
  const int64_t b = bh / p.heads, h = bh % p.heads, pairs = p.dim / 2, words = p.padded_keys * pairs;
  const uint16_t* k = p.k + b * p.k_strides[0] + h * p.k_strides[1];
  const uint16_t* v = p.v + b * p.v_strides[0] + h * p.v_strides[1];
  uint32_t* kp = p.k_packed + bh * words;
  uint32_t* vp = p.v_packed + bh * words;
  for (int64_t n = 0; n < p.padded_keys; ++n) {
    uint32_t* panel = kp + (n / kPanel) * pairs * kPanel + n % kPanel;
    if (n < p.keys) {
      const auto* row = reinterpret_cast<const uint32_t*>(k + n * p.k_strides[2]);
      for (int64_t i = 0; i < pairs; ++i) panel[i * kPanel] = row[i];
    } else {
      for (int64_t i = 0; i < pairs; ++i) panel[i * kPanel] = 0;
    }
  }
  for (int64_t j = 0; j < p.padded_keys / 2; ++j) {
    const int64_t n = 2 * j;
    const uint16_t* even = n < p.keys ? v + n * p.v_strides[2] : nullptr;
    const uint16_t* odd = n + 1 < p.keys ? v + (n + 1) * p.v_strides[2] : nullptr;
    for (int64_t d = 0; d < p.dim; ++d)
      vp[j * p.dim + d] = (even ? even[d] : 0u) | (odd ? static_cast<uint32_t>(odd[d]) << 16 : 0u);
  }
}

// scores[r][n] = q_r . k_n for kScoreRows rows (q: bf16 rows of `dim`) against one K panel, of which the
// first `valid` keys exist; each row's running maximum over existing keys is raised in `maxima`.
PE_BF16_TARGET inline void score_tile(const uint32_t* q, int64_t pairs, const uint32_t* panel, int64_t valid,
                                      float* scores, int64_t score_stride, __m512* maxima) {
  __m512 acc[kScoreRows][2];
  for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
  for (int64_t i = 0; i < pairs; ++i) {
    const __m512bh k0 = (__m512bh)_mm512_loadu_si512(panel + i * kPanel);
    const __m512bh k1 = (__m512bh)_mm512_loadu_si512(panel + i * kPanel + 16);
    for (int64_t r = 0; r < kScoreRows; ++r) {
      const __m512bh qr = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[r * pairs + i]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qr, k0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qr, k1);
    }
  }
  const auto lanes = [](int64_t n) {
    return static_cast<__mmask16>(n >= 16 ? 0xFFFF : n <= 0 ? 0 : (1u << n) - 1u);
  };
  const __mmask16 low = lanes(valid), high = lanes(valid - 16);
  for (int64_t r = 0; r < kScoreRows; ++r) {
    _mm512_storeu_ps(scores + r * score_stride, acc[r][0]);
    _mm512_storeu_ps(scores + r * score_stride + 16, acc[r][1]);
    maxima[r] = _mm512_mask_max_ps(maxima[r], low, maxima[r], acc[r][0]);
    maxima[r] = _mm512_mask_max_ps(maxima[r], high, maxima[r], acc[r][1]);
  }
}

// 2^t: t split into an integer (applied by vscalefps, which also flushes very negative t to 0) and a
// fraction in [-1/2, 1/2] (degree-5 Taylor polynomial, relative error < 3e-6, far below bf16's 4e-3).
PE_BF16_TARGET inline __m512 exp2(__m512 t) {
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 poly = _mm512_set1_ps(1.3333558146428443e-3f);
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(9.6181291076284772e-3f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(5.5504108664821580e-2f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(2.4022650695910071e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(6.9314718055994531e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(poly, n);
}

// Replace a row of `keys` scores whose maximum is `top` by bf16 exp((s - top) * scale) written over its
// own start, zero up to `padded` keys; returns the sum of the rounded values. Writing over the row is
// safe: chunk c writes bytes [64c, 64c + 64), which chunk c has already read and earlier chunks no
// longer need.
PE_BF16_TARGET inline float softmax_row(float* row, int64_t keys, int64_t padded, float top, float scale) {
  constexpr float kLog2e = 1.4426950408889634f;  // exp(x) = 2^(x log2 e)
  const __m512 factor = _mm512_set1_ps(scale * kLog2e), shift = _mm512_set1_ps(top * scale * kLog2e);
  auto* out = reinterpret_cast<uint16_t*>(row);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t n = 0; n < padded; n += 32) {
    __m512 e[2];
    for (int half = 0; half < 2; ++half) {
      const int64_t at = n + 16 * half;
      const __mmask16 valid = at + 16 <= keys ? static_cast<__mmask16>(0xFFFF)
                              : at < keys     ? static_cast<__mmask16>((1u << (keys - at)) - 1u)
                                              : static_cast<__mmask16>(0);
      const __m512 s = _mm512_maskz_loadu_ps(valid, row + at);
      e[half] = _mm512_maskz_mov_ps(valid, exp2(_mm512_fmsub_ps(s, factor, shift)));
    }
    const __m512bh rounded = _mm512_cvtne2ps_pbh(e[1], e[0]);
    // widen the rounded values back (bf16 is the top half of a float32) to sum exactly what is used
    const __m512i bits = (__m512i)rounded;
    sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)));
    sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(0xFFFF0000))));
    _mm512_storeu_si512(out + n, bits);
  }
  return _mm512_reduce_add_ps(sum);
}

// out rows = (probabilities @ V) / sums for kRows rows; probabilities are bf16 rows of `stride` words.
template <int kVectors>
PE_BF16_TARGET inline void value_tile(const uint32_t* probabilities, int64_t stride, const uint32_t* v,
                                      int64_t pairs, const float* sums, int64_t rows, uint16_t* out,
                                      int64_t out_stride) {
  constexpr int kRows = 24 / kVectors;
  constexpr int dim = 16 * kVectors;
  __m512 acc[kRows][kVectors];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t j = 0; j < pairs; ++j) {
    __m512bh vj[kVectors];
    for (int c = 0; c < kVectors; ++c) vj[c] = (__m512bh)_mm512_loadu_si512(v + j * dim + 16 * c);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh pr = (__m512bh)_mm512_set1_epi32(static_cast<int>(probabilities[r * stride + j]));
      for (int c = 0; c < kVectors; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pr, vj[c]);
    }
  }
  for (int r = 0; r < std::min<int64_t>(kRows, rows); ++r) {
    const __m512 inverse = _mm512_set1_ps(1.f / sums[r]);
    for (int c = 0; c < kVectors; ++c)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * out_stride + 16 * c),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[r][c], inverse)));
  }
}

struct Scratch {
  std::vector<uint32_t> q;  // kBlock query rows, bf16 pairs, zero past the last query
  std::vector<float> scores;  // kBlock x padded_keys; row r's bf16 probabilities overwrite its start
  std::vector<float> sums;
};

template <int kVectors>
PE_BF16_TARGET void attend_block(const Problem& p, int64_t task, Scratch& s) {
  constexpr int64_t kRows = 24 / kVectors;
  const int64_t blocks = (p.queries + kBlock - 1) / kBlock, bh = task / blocks, q0 = task % blocks * kBlock;
  const int64_t b = bh / p.heads, h = bh % p.heads, rows = std::min(kBlock, p.queries - q0);
  const int64_t pairs = p.dim / 2, stride = p.padded_keys, words = p.padded_keys * pairs;
  s.q.assign(kBlock * pairs, 0u);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(s.q.data() + r * pairs, p.q + b * p.q_strides[0] + h * p.q_strides[1] + (q0 + r) * p.q_strides[2],
                p.dim * sizeof(uint16_t));
  s.scores.resize(kBlock * stride);
  s.sums.resize(kBlock);
  __m512 maxima[kBlock];  // per row, the lane-wise maximum of its scores
  for (auto& m : maxima) m = _mm512_set1_ps(-INFINITY);
  const int64_t used_rows = (rows + kScoreRows - 1) / kScoreRows * kScoreRows;
  const uint32_t* k = p.k_packed + bh * words;
  for (int64_t panel = 0; panel < p.padded_keys / kPanel; ++panel)
    for (int64_t r = 0; r < used_rows; r += kScoreRows)
      score_tile(s.q.data() + r * pairs, pairs, k + panel * pairs * kPanel, p.keys - panel * kPanel,
                 s.scores.data() + r * stride + panel * kPanel, stride, maxima + r);
  for (int64_t r = 0; r < kBlock; ++r) {
    if (r < rows) {
      s.sums[r] = softmax_row(s.scores.data() + r * stride, p.keys, p.padded_keys,
                              _mm512_reduce_max_ps(maxima[r]), p.scale);
    } else {  // rows past the last query take part in the last value tile: make them zero
      std::memset(s.scores.data() + r * stride, 0, p.padded_keys * sizeof(uint16_t));
      s.sums[r] = 1.f;
    }
  }
  const auto* probabilities = reinterpret_cast<const uint32_t*>(s.scores.data());  // bf16 pairs, row stride 2x
  const int64_t out_stride = p.heads * p.dim;
  uint16_t* out = p.out + (b * p.queries + q0) * out_stride + h * p.dim;
  for (int64_t r = 0; r < rows; r += kRows)
    value_tile<kVectors>(probabilities + r * stride, stride, p.v_packed + bh * words, p.padded_keys / 2,
                         s.sums.data() + r, rows - r, out + r * out_stride, out_stride);
}

template <int kVectors>
void attend(const Problem& p) {
  const int64_t blocks = (p.queries + kBlock - 1) / kBlock;
  at::parallel_for(0, p.batch * p.heads * blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local Scratch scratch;
    for (int64_t task = begin; task < end; ++task) attend_block<kVectors>(p, task, scratch);
  });
}

void check_operand(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kBFloat16 && t.device().is_cpu(), name,
              " must be a (batch, heads, tokens, dim) bf16 CPU tensor");
  TORCH_CHECK(t.size(3) == dim && t.stride(3) == 1, name, " must have q's head dim, contiguous");
}

}  // namespace

bool attention_bf16_supported() { return __builtin_cpu_supports("avx512bf16"); }
#else
bool attention_bf16_supported() { return false; }
#endif

at::Tensor attention_bf16_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(attention_bf16_supported(), "attention_bf16 needs a CPU with AVX512-BF16");
  const int64_t dim = q.size(-1);
  TORCH_CHECK(dim == 32 || dim == 64 || dim == 96 || dim == 128, "attention_bf16 supports head dims 32, 64, 96, 128");
  check_operand(q, "q", dim), check_operand(k, "k", dim), check_operand(v, "v", dim);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(2) > 0,
              "k and v must be (batch, heads, keys, dim) with q's batch and heads and at least one key");
  TORCH_CHECK(scale > 0, "scale must be positive");
#ifdef PE_BF16_KERNEL
  Problem p;
  p.batch = q.size(0), p.heads = q.size(1), p.queries = q.size(2), p.keys = k.size(2), p.dim = dim;
  p.padded_keys = (p.keys + kPanel - 1) / kPanel * kPanel;
  p.scale = static_cast<float>(scale);
  p.q = reinterpret_cast<const uint16_t*>(q.const_data_ptr<at::BFloat16>());
  p.k = reinterpret_cast<const uint16_t*>(k.const_data_ptr<at::BFloat16>());
  p.v = reinterpret_cast<const uint16_t*>(v.const_data_ptr<at::BFloat16>());
  for (int i = 0; i < 3; ++i) p.q_strides[i] = q.stride(i), p.k_strides[i] = k.stride(i), p.v_strides[i] = v.stride(i);
  auto out = at::empty({p.batch, p.queries, p.heads, dim}, q.options());
  auto packed = at::empty({2, p.batch * p.heads, p.padded_keys * dim / 2}, q.options().dtype(at::kInt));
  p.k_packed = reinterpret_cast<uint32_t*>(packed[0].data_ptr<int32_t>());
  p.v_packed = reinterpret_cast<uint32_t*>(packed[1].data_ptr<int32_t>());
  p.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  if (p.queries > 0) {
    at::parallel_for(0, p.batch * p.heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) pack(p, bh);
    });
    switch (dim / 16) {
      case 2: attend<2>(p); break;
      case 4: attend<4>(p); break;
      case 6: attend<6>(p); break;
      default: attend<8>(p); break;
    }
  }
  return out.transpose(1, 2);
#else
  TORCH_CHECK(false, "unreachable: attention_bf16_supported() is false on this architecture");
#endif
}

}  // namespace pe_dense

TORCH_LIBRARY_FRAGMENT(pe_dense, m) {
  m.def("attention_bf16(Tensor q, Tensor k, Tensor v, float scale) -> Tensor");
  m.def("attention_bf16_supported() -> bool", &pe_dense::attention_bf16_supported);
}

TORCH_LIBRARY_IMPL(pe_dense, CPU, m) { m.impl("attention_bf16", &pe_dense::attention_bf16_cpu); }
