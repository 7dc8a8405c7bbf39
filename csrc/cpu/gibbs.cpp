// CPU kernels of the Gibbs samplers (see gibbs.h for the contracts, genengine/ops/gibbs.py for the
// stream layouts and shapes).
//
// The RBM's matrix products run in torch's GEMM (the best this CPU has); what is fused here is the
// pass after it: bias, inverse temperature, sigmoid and the Bernoulli draw, in place over the GEMM's
// output, so that no probability tensor is written unless asked for. The draw compares the uniform
// u with sigmoid(a) as u * (1 + exp(-a)) < 1 (no division), with exp from a float32 polynomial that
// vectorises (glibc's expf does not, without -ffast-math).
// Comparisons and selects in these loops must be if-converted to vectorise, which GCC only does
// when floating-point exceptions need not be preserved; the results do not change.
#pragma GCC optimize("no-trapping-math")
// The loop bodies below are always_inline: each GE_MULTIVERSIONED entry point must get its own copy
// compiled for its instruction set (an out-of-line helper would be compiled once, for baseline x86-64).
#include "gibbs.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "parallel.h"

// Three clones of the hot loops here (GE_MULTIVERSIONED has two): AVX-512 too, where the Philox
// generator already runs (on Zen 4 it halves the instruction count of these loops, not the width).
#if defined(__x86_64__) && !defined(GE_NATIVE) && defined(__GNUC__) && !defined(__clang__)
#define GE_MV3(decl, ...)                                                   \
  __attribute__((target("default"))) GE_STRIP decl __VA_ARGS__              \
  __attribute__((target("avx2,fma,f16c"))) GE_STRIP decl __VA_ARGS__        \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))) GE_STRIP decl __VA_ARGS__
#else
#define GE_MV3(decl, ...) GE_STRIP decl __VA_ARGS__
#endif

namespace ge {

namespace {

// exp(x) for x in float32 range: 2^n * e^r with |r| <= ln2 / 2, Cephes' degree-6 polynomial
// (relative error ~2e-7); clamped so that large |x| gives 0 or a huge finite value, never NaN.
inline __attribute__((always_inline)) float exp_poly(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = (p * (r * r) + r) + 1.0f;
  const int32_t ni = int32_t(n);
  return e * bits_as_float(uint32_t(ni + 127) << 23);
}

constexpr int64_t kPiece = 512;  // columns per batch of random values (in L1)

// One row segment [c0, c0 + len) of row r, with its random values in rnd.
template <typename T>
inline __attribute__((always_inline)) void epilogue_segment(const RbmEpilogueArgs& a, int64_t r, int64_t c0, int64_t len, const float* rnd) {
  const float beta = a.beta_rows ? a.beta_rows[r] : a.beta;
  const int64_t at = r * a.cols + c0;
  T* x = static_cast<T*>(a.buf) + at;
  const float* b = a.bias + c0;
  float* prow = a.prob ? a.prob + at : nullptr;
  if (a.gaussian) {
    const float sd = 1.0f / std::sqrt(beta);
    if (prow)
      for (int64_t j = 0; j < len; ++j) prow[j] = to_float(x[j]) + b[j];
    for (int64_t j = 0; j < len; ++j) x[j] = from_float<T>((to_float(x[j]) + b[j]) + sd * rnd[j]);
  } else if (prow) {
    for (int64_t j = 0; j < len; ++j) {
      const float e = exp_poly(-beta * (to_float(x[j]) + b[j]));
      prow[j] = 1.0f / (1.0f + e);
      x[j] = from_float<T>(float(rnd[j] + rnd[j] * e < 1.0f));
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      const float e = exp_poly(-beta * (to_float(x[j]) + b[j]));
      x[j] = from_float<T>(float(rnd[j] + rnd[j] * e < 1.0f));
    }
  }
  if (a.clamp_mask) {
    const uint8_t* mk = a.clamp_mask + at;
    const float* cv = a.clamp_values + at;
    for (int64_t j = 0; j < len; ++j) x[j] = mk[j] ? from_float<T>(cv[j]) : x[j];
    if (prow)
      for (int64_t j = 0; j < len; ++j) prow[j] = mk[j] ? cv[j] : prow[j];
  }
}

// Rows [r0, r1): their elements are one contiguous range of the stream, drawn kPiece at a time
// (one generator call per piece whatever the row length: narrow layers have many rows per piece).
template <typename T>
inline __attribute__((always_inline)) void epilogue_rows(const RbmEpilogueArgs& a, int64_t r0, int64_t r1) {
  alignas(64) float rnd[kPiece];
  const int64_t cols = a.cols;
  const int64_t end = r1 * cols;
  for (int64_t p0 = r0 * cols; p0 < end; p0 += kPiece) {
    const int64_t p1 = std::min(end, p0 + kPiece);
    philox_values(a.gaussian ? 2 : 1, a.key, a.base + uint64_t(p0), p1 - p0, rnd);
    for (int64_t p = p0; p < p1;) {
      const int64_t r = p / cols, c = p - r * cols;
      const int64_t len = std::min(cols - c, p1 - p);
      epilogue_segment<T>(a, r, c, len, rnd + (p - p0));
      p += len;
    }
  }
}

GE_MV3((void epilogue_f32(const RbmEpilogueArgs& a, int64_t r0, int64_t r1)),
                  { epilogue_rows<float>(a, r0, r1); })
GE_MV3((void epilogue_bf16(const RbmEpilogueArgs& a, int64_t r0, int64_t r1)),
                  { epilogue_rows<BF16>(a, r0, r1); })

// ---- Ising ---------------------------------------------------------------------------------------

// One colour of row i of one lattice: sites j with (i + j) % 2 == colour take a heat-bath draw.
// Words come compact (one per updated site, W / 2 per row); the loop runs over the whole row with
// a select so that loads and stores stay contiguous (and vectorise), writing into `nrow`.
inline __attribute__((always_inline)) void ising_row(int8_t* __restrict cur, const int8_t* __restrict up, const int8_t* __restrict dn, int64_t W,
                      int par, const int32_t* thr, const uint32_t* __restrict words, uint32_t* __restrict wexp,
                      int8_t* __restrict nrow) {
  const int64_t half = W / 2;
  for (int64_t k = 0; k < half; ++k) {
    wexp[2 * k] = words[k];
    wexp[2 * k + 1] = words[k];
  }
  const int32_t t0 = thr[0], t1 = thr[1], t2 = thr[2], t3 = thr[3], t4 = thr[4];
  const int32_t d1 = t1 - t0, d2 = t2 - t1, d3 = t3 - t2, d4 = t4 - t3;
  auto site = [=](int32_t s, uint32_t w, int32_t old, bool take) __attribute__((always_inline)) -> int8_t {
    int32_t t = t0;
    t = s > -4 ? t1 : t;
    t = s > -2 ? t2 : t;
    t = s > 0 ? t3 : t;
    t = s > 2 ? t4 : t;
    const int32_t nw = 2 * int32_t(int32_t(w >> 9) < t) - 1;
    return int8_t(take ? nw : old);
  };
  // the two end sites wrap around; the loop between them has no branches
  nrow[0] = site(int32_t(up[0]) + dn[0] + cur[W - 1] + cur[1], wexp[0], cur[0], par == 0);
  for (int64_t j = 1; j < W - 1; ++j) {
    const int32_t s = int32_t(up[j]) + int32_t(dn[j]) + int32_t(cur[j - 1]) + int32_t(cur[j + 1]);
    // T[(s + 4) / 2] as a sum of masked steps (GCC leaves a chain of selects as branches here)
    const int32_t t = t0 + (d1 & -int32_t(s > -4)) + (d2 & -int32_t(s > -2)) + (d3 & -int32_t(s > 0)) +
                      (d4 & -int32_t(s > 2));
    const int32_t nw = 2 * int32_t(int32_t(wexp[j] >> 9) < t) - 1;
    const int32_t take = -int32_t((int32_t(j) & 1) == par);  // all ones where the site is of this colour
    nrow[j] = int8_t((nw & take) | (int32_t(cur[j]) & ~take));
  }
  nrow[W - 1] = site(int32_t(up[W - 1]) + dn[W - 1] + cur[W - 2] + cur[0], wexp[W - 1], cur[W - 1], par == 1);
  std::memcpy(cur, nrow, size_t(W));
}

struct IsingCtx {
  int8_t* spins;
  int64_t L, H, W;
  const int32_t* thr;
  int thr_per_lattice;
  PhiloxKey key;
};

// rows [g0, g1) of the flattened (lattice, row) index, colour c of sweep t
inline __attribute__((always_inline)) void ising_rows(const IsingCtx& s, int64_t t, int c, int64_t g0, int64_t g1) {
  const int64_t W = s.W, H = s.H, half = W / 2;
  std::vector<uint32_t> tmp(size_t(half + W) + size_t((W + 3) / 4 + 1));
  uint32_t* words = tmp.data();
  uint32_t* wexp = words + half;
  int8_t* nrow = reinterpret_cast<int8_t*>(wexp + W);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t l = g / H, i = g % H;
    int8_t* lat = s.spins + l * H * W;
    const uint64_t pos = uint64_t((((t * s.L + l) * 2 + c) * H + i) * half);
    philox_values(0, s.key, pos, half, words);
    ising_row(lat + i * W, lat + ((i + H - 1) % H) * W, lat + ((i + 1) % H) * W, W, int((i + c) & 1),
              s.thr + (s.thr_per_lattice ? 5 * l : 0), words, wexp, nrow);
  }
}

GE_MV3((void ising_rows_mv(const IsingCtx& s, int64_t t, int c, int64_t g0, int64_t g1)),
                  { ising_rows(s, t, c, g0, g1); })

// ---- sparse Boltzmann machine ----------------------------------------------------------------------

inline __attribute__((always_inline)) void bm_chain(const BmGibbsArgs& a, int64_t b, float* rnd) {
  float* x = a.x + b * a.n;
  for (int64_t t = 0; t < a.sweeps; ++t) {
    philox_values(1, a.key, uint64_t((t * a.batch + b) * a.n), a.n, rnd);
    for (int64_t c = 0; c < a.n_classes; ++c) {
      for (int64_t q = a.class_ptr[c]; q < a.class_ptr[c + 1]; ++q) {
        const int64_t i = a.class_nodes[q];
        float acc = a.bias[i];
        for (int64_t e = a.indptr[i]; e < a.indptr[i + 1]; ++e) acc += a.values[e] * x[a.indices[e]];
        const float ex = exp_poly(-a.beta * acc);
        x[i] = rnd[i] + rnd[i] * ex < 1.0f ? 1.0f : 0.0f;
      }
    }
  }
}

// ---- Langevin ----------------------------------------------------------------------------------------

inline __attribute__((always_inline)) void langevin_range(int64_t begin, int64_t end, const float* x, const float* grad, float* out, float half_step,
                           float noise_coef, int clamp, float lo, float hi, const PhiloxKey& key) {
  alignas(64) float z[kPiece];
  for (int64_t p0 = begin; p0 < end; p0 += kPiece) {
    const int64_t len = std::min(kPiece, end - p0);
    philox_values(2, key, uint64_t(p0), len, z);
    const float* xs = x + p0;
    const float* gs = grad + p0;
    float* o = out + p0;
    if (clamp) {
      for (int64_t j = 0; j < len; ++j) {
        const float v = (xs[j] - half_step * gs[j]) + noise_coef * z[j];
        o[j] = std::min(std::max(v, lo), hi);
      }
    } else {
      for (int64_t j = 0; j < len; ++j) o[j] = (xs[j] - half_step * gs[j]) + noise_coef * z[j];
    }
  }
}

GE_MV3((void langevin_range_mv(int64_t begin, int64_t end, const float* x, const float* grad, float* out,
                                          float half_step, float noise_coef, int clamp, float lo, float hi,
                                          const PhiloxKey& key)),
                  { langevin_range(begin, end, x, grad, out, half_step, noise_coef, clamp, lo, hi, key); })

}  // namespace

void rbm_epilogue(const RbmEpilogueArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return;
  // about 32K elements per chunk: enough work to amortise a hand-off, enough chunks to balance
  const int64_t rows_per = std::max<int64_t>(1, (int64_t(1) << 15) / a.cols);
  const int64_t n_chunks = (a.rows + rows_per - 1) / rows_per;
  parallel_chunks(n_chunks, [&](int64_t ch) {
    const int64_t r0 = ch * rows_per, r1 = std::min(a.rows, r0 + rows_per);
    if (a.dtype == kBFloat16) epilogue_bf16(a, r0, r1);
    else epilogue_f32(a, r0, r1);
  });
}

void ising_sweep(int8_t* spins, int64_t L, int64_t H, int64_t W, const int32_t* thresholds, int thr_per_lattice,
                 int64_t sweeps, uint64_t seed, uint64_t offset) {
  const IsingCtx s{spins, L, H, W, thresholds, thr_per_lattice, make_philox_key(seed, offset)};
  const int threads = get_num_threads();
  if (L >= 2 * threads || L * H < 64) {
    // independent lattices: each chunk runs all its sweeps without waiting for the others
    parallel_chunks(L, [&](int64_t l) {
      for (int64_t t = 0; t < sweeps; ++t)
        for (int c = 0; c < 2; ++c) ising_rows_mv(s, t, c, l * H, (l + 1) * H);
    });
    return;
  }
  // few large lattices: rows of one colour in parallel, a barrier (the loop's end) between colours
  const int64_t rows = L * H;
  const int64_t per = std::max<int64_t>(1, std::min<int64_t>(64, rows / (8 * threads)));
  const int64_t n_chunks = (rows + per - 1) / per;
  for (int64_t t = 0; t < sweeps; ++t)
    for (int c = 0; c < 2; ++c)
      parallel_chunks(n_chunks, [&](int64_t ch) { ising_rows_mv(s, t, c, ch * per, std::min(rows, (ch + 1) * per)); });
}

void bm_gibbs(const BmGibbsArgs& a) {
  if (a.batch <= 0 || a.n <= 0) return;
  parallel_chunks(a.batch, [&](int64_t b) {
    std::vector<float> rnd(size_t(a.n));
    bm_chain(a, b, rnd.data());
  });
}

void langevin_step(int64_t n, const float* x, const float* grad, float* out, float half_step, float noise_coef,
                   int clamp, float lo, float hi, uint64_t seed, uint64_t offset) {
  if (n <= 0) return;
  const PhiloxKey key = make_philox_key(seed, offset);
  constexpr int64_t kChunk = 1 << 15;
  parallel_chunks((n + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
    langevin_range_mv(b, e, x, grad, out, half_step, noise_coef, clamp, lo, hi, key);
  });
}

}  // namespace ge
