// Fused GroupNorm + SiLU on the CPU, forward and backward.
//
// Shapes: x is (n, c, hw) (contiguous NCHW-style, any number of spatial dims flattened into hw) or,
// channels-last, (n, hw, c); groups split c into consecutive blocks of cg = c / groups channels.
// mean and rstd are float32 (n, groups).
//
// Forward is memory bound: the floor is one read of x and one write of y. Contiguous: each (sample,
// group) is one contiguous block of cg * hw elements (655 KB at (8,320,64,64) with 32 groups), so a
// thread takes a whole group, computes its statistics and then normalises it while it still sits
// in its L2. Channels-last: a group's elements are spread over every row, so per-channel moments
// over chunks of rows are merged per group, and samples are processed in batches small enough
// (a few MB) that the second read comes from the L3. When there are too few groups (or samples)
// for the threads, every group (sample) is split into pieces whose partial moments are merged.
//
// Accuracy: sums are taken in float32 lanes (so they vectorise) over blocks, after subtracting a
// shift close to the mean (the mean of the first few values): the float lanes then sum values of
// the data's spread rather than its offset (x = 100 + randn keeps full precision), and each block's
// lanes are added into double. Partial moments merge with Chan's pairwise formula in double.
//
// Backward recomputes z = xhat * gamma + beta from x, mean and rstd (neither y nor z is saved):
//   gz = dy * silu'(z),  A[n,c] = sum_hw gz * xhat,  B[n,c] = sum_hw gz
//   dgamma = sum_n A, dbeta = sum_n B, and per group m1 = mean(gz * gamma), m2 = mean(gz * gamma * xhat)
//   (both from A, B), dx = rstd * (gz * gamma - m1 - xhat * m2).
#include "group_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <sys/mman.h>

#include "cpu_common.h"
#include "parallel.h"

// The build compiles with -ffp-contract=off (other kernels are checked bit for bit across backends);
// these are checked against float64 with tolerances, and fused multiply-adds (in the AVX2 clone)
// make the normalise and backward loops 1.5x faster and the sums slightly more accurate.
#pragma GCC optimize("fp-contract=fast")

#define GE_INLINE inline __attribute__((always_inline))

namespace ge {
namespace {

// ----------------------------------------------------------------------------------------------
// element math on 8 lanes
//
// The loops are written with GCC vector types (v8f: 8 floats; two SSE registers in the baseline
// clone, one AVX register in the AVX2 clone) instead of being left to the auto-vectoriser: it
// vectorised a 16-lane accumulator loop across its outer loop and then reduced in order (one scalar
// add per element), and it kept a select in the exponential as control flow (-ftrapping-math).

#pragma GCC diagnostic ignored "-Wpsabi"  // v8f values only cross always-inlined calls
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

GE_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GE_INLINE v8f load8(const BF16* p) {
  v8h h;
  std::memcpy(&h, p, sizeof h);
  return (v8f)(__builtin_convertvector(h, v8u) << 16);
}
GE_INLINE v8f load8(const F16* p) {  // as to_float(F16) in cpu_common.h, 8 lanes at a time
  v8h h16;
  std::memcpy(&h16, p, sizeof h16);
  const v8u h = __builtin_convertvector(h16, v8u), em = h & 0x7FFFu;
  const v8u scaled = (v8u)((v8f)(em << 13) * 5.192296858534828e+33f);
  const v8u inf_nan = 0x7F800000u & (v8u)(em >= 0x7C00u);
  return (v8f)(scaled | inf_nan | ((h & 0x8000u) << 16));
}

GE_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
GE_INLINE void store8(BF16* p, v8f v) {  // round to nearest even, NaN stays NaN (as from_float<BF16>)
  const v8u b = (v8u)v;
  const v8u nan = (v8u)((b & 0x7FFFFFFFu) > 0x7F800000u);
  const v8u rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const v8h h = __builtin_convertvector((nan & ((b >> 16) | 0x40u)) | (~nan & rounded), v8h);
  std::memcpy(p, &h, sizeof h);
}
GE_INLINE void store8(F16* p, v8f v) {  // as from_float<F16> in cpu_common.h, 8 lanes at a time
  const v8u b = (v8u)v, sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
  const v8u sub = (v8u)((v8f)a + 0.5f) - 0x3F000000u;
  const v8u norm = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;
  const v8u big = 0x7C00u | (0x0200u & (v8u)(a > 0x7F800000u));
  const v8u is_big = (v8u)(a >= 0x47800000u), is_sub = (v8u)(a < 0x38800000u);
  const v8u h = (big & is_big) | (sub & is_sub & ~is_big) | (norm & ~(is_sub | is_big));
  const v8h o = __builtin_convertvector(h | sign, v8h);
  std::memcpy(p, &o, sizeof o);
}

// k (<= 8) lanes; the others are `fill`. With k == 8 after inlining these are plain vector moves.
template <typename T>
GE_INLINE v8f loadk(const T* p, int k, float fill) {
  if (k == 8) return load8(p);
  v8f v = v8f{} + fill;
  for (int j = 0; j < k; ++j) v[j] = to_float(p[j]);
  return v;
}
template <typename T>
GE_INLINE void storek(T* p, v8f v, int k) {
  if (k == 8) return store8(p, v);
  for (int j = 0; j < k; ++j) p[j] = from_float<T>(v[j]);
}

GE_INLINE double hsum(const v8f& v) {
  double s = 0.0;
  for (int j = 0; j < 8; ++j) s += v[j];
  return s;
}

// exp(-z) with a degree-6 polynomial on [-ln2/2, ln2/2] and the exponent set by integer arithmetic
// (no libm call): relative error ~2e-7. -z is clamped to [-87.5, 87.5] so 2^k stays a normal float
// (the sigmoid is 0 or 1 to float precision there) by an integer select that leaves NaN as it is.
GE_INLINE v8f exp_neg(v8f z) {
  const v8u b = (v8u)z ^ 0x80000000u, mag = b & 0x7FFFFFFFu;
  const v8u big = (v8u)((mag > 0x42AF0000u) & (mag <= 0x7F800000u));  // 87.5 < |z| <= inf
  const v8f t = (v8f)((b & ~big) | (((b & 0x80000000u) | 0x42AF0000u) & big));
  const v8f kf = t * 1.44269504088896341f + 12582912.0f;  // + 1.5 * 2^23 rounds to an integer
  const v8f k = kf - 12582912.0f;
  const v8u scale = ((v8u)kf - 0x4B400000u + 127u) << 23;  // 2^k: the integer sits in kf's low bits
  v8f r = t - k * 0.693359375f;  // ln 2 in two parts: k * hi is exact
  r = r - k * -2.12194440e-4f;
  v8f p = v8f{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * (v8f)scale;
}

GE_INLINE v8f silu(v8f z) { return z / (1.0f + exp_neg(z)); }

// silu'(z) = s (1 + z (1 - s)), s = sigmoid(z)
GE_INLINE v8f silu_grad(v8f z) {
  const v8f s = 1.0f / (1.0f + exp_neg(z));
  return s * (1.0f + z * (1.0f - s));
}

struct Moments {
  double n = 0, mean = 0, m2 = 0;  // count, mean, sum of squared deviations
};

inline Moments merge(const Moments& a, const Moments& b) {
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  const double n = a.n + b.n, d = b.mean - a.mean;
  return {n, a.mean + d * (b.n / n), a.m2 + b.m2 + d * d * (a.n * b.n / n)};
}

inline float rstd_of(const Moments& m, float eps) {
  const double var = m.n > 0 ? std::max(m.m2 / m.n, 0.0) : 0.0;
  return float(1.0 / std::sqrt(var + double(eps)));
}

constexpr int64_t kBlock = 4096;    // contiguous elements summed in float lanes before going to double
constexpr int64_t kRowBlock = 256;  // channels-last rows summed in float before going to double

// Calls body(i, k) for i = begin, begin + 8, ... with k = 8 lanes, then once for the k < 8 left.
#define GE_LANES(begin, end, body)                                            \
  do {                                                                        \
    int64_t i_ = (begin);                                                     \
    for (; i_ + 8 <= (end); i_ += 8) body(i_, 8);                             \
    if (i_ < (end)) body(i_, int((end) - i_));                                \
  } while (0)

// ----------------------------------------------------------------------------------------------
// contiguous layout: ranges of one group's block of cg * hw elements

template <typename T>
GE_INLINE Moments moments_contig(const T* __restrict p, int64_t n) {
  const int64_t nk = std::min<int64_t>(n, 32);
  float shift = 0.0f;
  for (int64_t i = 0; i < nk; ++i) shift += to_float(p[i]);
  shift /= float(nk);
  double s1 = 0.0, s2 = 0.0;
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t b1 = std::min(n, b0 + kBlock);
    v8f a1 = {}, a2 = {}, c1 = {}, c2 = {};  // two accumulators each: half the add latency chain
    int64_t i = b0;
    for (; i + 16 <= b1; i += 16) {
      const v8f d = load8(p + i) - shift, e = load8(p + i + 8) - shift;
      a1 += d;
      a2 += d * d;
      c1 += e;
      c2 += e * e;
    }
    auto tail = [&](int64_t j, int k) __attribute__((always_inline)) {
      const v8f d = loadk(p + j, k, shift) - shift;  // padding lanes are 0
      a1 += d;
      a2 += d * d;
    };
    GE_LANES(i, b1, tail);
    s1 += hsum(a1 + c1);
    s2 += hsum(a2 + c2);
  }
  const double d = s1 / double(n);
  return {double(n), double(shift) + d, std::max(s2 - s1 * d, 0.0)};
}

// The per-channel runs of [s, e): channel c within the group, elements [b, end).
#define GE_CHANNEL_RUNS(s, e, hw)                                                                \
  for (int64_t b = (s), c = (s) / (hw), end = std::min<int64_t>((e), (c + 1) * (hw)); b < (e); \
       b = end, c = b / (hw), end = std::min<int64_t>((e), (c + 1) * (hw)))

template <typename T>
GE_INLINE void normalise_contig(const T* __restrict x, T* __restrict y, int64_t s, int64_t e, int64_t hw, float mean,
                                float rstd, const float* gamma, const float* beta) {
  GE_CHANNEL_RUNS(s, e, hw) {
    const float a = rstd * gamma[c], sh = beta[c];
    auto body = [&](int64_t i, int k) __attribute__((always_inline)) {
      storek(y + i, silu((loadk(x + i, k, 0.0f) - mean) * a + sh), k);
    };
    GE_LANES(b, end, body);
  }
}

// Adds sum gz * xhat and sum gz of each channel run in [s, e) to A[c], B[c] (c within the group).
template <typename T>
GE_INLINE void bwd_sums_contig(const T* __restrict dy, const T* __restrict x, int64_t s, int64_t e, int64_t hw,
                               float mean, float rstd, const float* gamma, const float* beta, double* A, double* B) {
  GE_CHANNEL_RUNS(s, e, hw) {
    const float g = gamma[c], sh = beta[c];
    double sa = 0.0, sb = 0.0;
    for (int64_t b0 = b; b0 < end; b0 += kBlock) {
      const int64_t b1 = std::min(end, b0 + kBlock);
      v8f va = {}, vb = {};
      auto body = [&](int64_t i, int k) __attribute__((always_inline)) {
        const v8f xh = (loadk(x + i, k, 0.0f) - mean) * rstd;
        const v8f gz = loadk(dy + i, k, 0.0f) * silu_grad(xh * g + sh);  // padding: dy = 0
        va += gz * xh;
        vb += gz;
      };
      GE_LANES(b0, b1, body);
      sa += hsum(va);
      sb += hsum(vb);
    }
    A[c] += sa;
    B[c] += sb;
  }
}

// dx = rstd (gz gamma - m1 - xhat m2) over [s, e)
template <typename T>
GE_INLINE void bwd_dx_contig(const T* __restrict dy, const T* __restrict x, T* __restrict dx, int64_t s, int64_t e,
                             int64_t hw, float mean, float rstd, const float* gamma, const float* beta, float m1,
                             float m2) {
  const float k2 = rstd * m2, k3 = rstd * m1;
  GE_CHANNEL_RUNS(s, e, hw) {
    const float g = gamma[c], sh = beta[c], k1 = rstd * g;
    auto body = [&](int64_t i, int k) __attribute__((always_inline)) {
      const v8f xh = (loadk(x + i, k, 0.0f) - mean) * rstd;
      const v8f gz = loadk(dy + i, k, 0.0f) * silu_grad(xh * g + sh);
      storek(dx + i, gz * k1 - xh * k2 - k3, k);
    };
    GE_LANES(b, end, body);
  }
}

// ----------------------------------------------------------------------------------------------
// the per-call plan shared by the work units

struct Plan {
  const GroupNormArgs* a = nullptr;
  int64_t cg = 1, L = 1;     // channels per group, elements per group
  int64_t pieces = 1;        // pieces per group (contiguous) or per sample (channels-last)
  int64_t n0 = 0;            // first sample of the current batch (channels-last)
  int phase = 0;             // 0: fused, 1: partial sums, 2: elementwise pass
  const float* gamma = nullptr;
  const float* beta = nullptr;
  Moments* moments = nullptr;  // contiguous: [unit]; channels-last: [unit][c]
  double* sums = nullptr;      // backward partial A, B: contiguous [unit][2][cg]; channels-last [unit][2][c]
  double* AB = nullptr;        // backward: [n][2][c] (contiguous), [batch sample][2][c] (channels-last)
  float* m12 = nullptr;        // backward contiguous: [n * groups][2] = (m1, m2)
  // channels-last per (batch sample, channel) coefficients
  float* cmean = nullptr;
  float* crstd = nullptr;
  float* ck = nullptr;         // backward: [batch sample][2][c] = (rstd m2, rstd m1) of the channel's group
};

GE_INLINE void piece_range(const Plan& p, int64_t piece, int64_t total, int64_t* s, int64_t* e) {
  *s = total * piece / p.pieces;
  *e = total * (piece + 1) / p.pieces;
}

// unit = group * pieces + piece; group = n * groups + g
template <typename T>
GE_INLINE void fwd_contig_unit(const Plan& p, int64_t unit) {
  const GroupNormArgs& a = *p.a;
  const int64_t q = unit / p.pieces, g = q % a.groups;
  const T* x = static_cast<const T*>(a.x) + q * p.L;
  T* y = static_cast<T*>(a.y) + q * p.L;
  const float* gamma = p.gamma + g * p.cg;
  const float* beta = p.beta + g * p.cg;
  if (p.phase == 0) {
    const Moments m = moments_contig(x, p.L);
    const float mean = float(m.mean), rstd = rstd_of(m, a.eps);
    a.mean[q] = mean;
    a.rstd[q] = rstd;
    normalise_contig(x, y, 0, p.L, a.hw, mean, rstd, gamma, beta);
    return;
  }
  int64_t s, e;
  piece_range(p, unit % p.pieces, p.L, &s, &e);
  if (p.phase == 1)
    p.moments[unit] = moments_contig(x + s, e - s);
  else
    normalise_contig(x, y, s, e, a.hw, a.mean[q], a.rstd[q], gamma, beta);
}

template <typename T>
GE_INLINE void bwd_contig_unit(const Plan& p, int64_t unit) {
  const GroupNormArgs& a = *p.a;
  const int64_t q = unit / p.pieces, n = q / a.groups, g = q % a.groups;
  const T* x = static_cast<const T*>(a.x) + q * p.L;
  const T* dy = static_cast<const T*>(a.dy) + q * p.L;
  T* dx = static_cast<T*>(a.dx) + q * p.L;
  const float* gamma = p.gamma + g * p.cg;
  const float* beta = p.beta + g * p.cg;
  const float mean = a.mean[q], rstd = a.rstd[q];
  if (p.phase == 0) {
    double* A = p.AB + n * 2 * a.c + g * p.cg;  // this group's slice of the sample's A and B
    double* B = A + a.c;
    std::fill(A, A + p.cg, 0.0);
    std::fill(B, B + p.cg, 0.0);
    bwd_sums_contig(dy, x, 0, p.L, a.hw, mean, rstd, gamma, beta, A, B);
    double s1 = 0.0, s2 = 0.0;
    for (int64_t c = 0; c < p.cg; ++c) {
      s1 += double(gamma[c]) * B[c];
      s2 += double(gamma[c]) * A[c];
    }
    bwd_dx_contig(dy, x, dx, 0, p.L, a.hw, mean, rstd, gamma, beta, float(s1 / double(p.L)), float(s2 / double(p.L)));
    return;
  }
  int64_t s, e;
  piece_range(p, unit % p.pieces, p.L, &s, &e);
  if (p.phase == 1) {
    double* A = p.sums + unit * 2 * p.cg;
    double* B = A + p.cg;
    std::fill(A, A + 2 * p.cg, 0.0);
    bwd_sums_contig(dy, x, s, e, a.hw, mean, rstd, gamma, beta, A, B);
  } else {
    bwd_dx_contig(dy, x, dx, s, e, a.hw, mean, rstd, gamma, beta, p.m12[2 * q], p.m12[2 * q + 1]);
  }
}

// ----------------------------------------------------------------------------------------------
// channels-last layout: units are (sample of the batch, piece of its rows)

struct ClScratch {
  std::vector<float> f;
  std::vector<double> d;
};

ClScratch& scratch() {
  thread_local ClScratch s;
  return s;
}

template <typename T>
GE_INLINE void fwd_cl_unit(const Plan& p, int64_t unit) {
  const GroupNormArgs& a = *p.a;
  const int64_t C = a.c, nl = unit / p.pieces, n = p.n0 + nl;
  int64_t r0, r1;
  piece_range(p, unit % p.pieces, a.hw, &r0, &r1);
  const T* __restrict x = static_cast<const T*>(a.x) + (n * a.hw + r0) * C;
  const int64_t rows = r1 - r0;
  if (rows <= 0) {
    if (p.phase == 1)
      for (int64_t c = 0; c < C; ++c) p.moments[unit * C + c] = Moments{};
    return;
  }
  if (p.phase == 2) {
    T* __restrict y = static_cast<T*>(a.y) + (n * a.hw + r0) * C;
    const float* __restrict cm = p.cmean + nl * C;
    const float* __restrict ca = p.crstd + nl * C;  // rstd * gamma
    const float* __restrict cb = p.beta;
    for (int64_t r = 0; r < rows; ++r) {
      const T* __restrict xr = x + r * C;
      T* __restrict yr = y + r * C;
      auto body = [&](int64_t c, int k) __attribute__((always_inline)) {
        const v8f z = (loadk(xr + c, k, 0.0f) - loadk(cm + c, k, 0.0f)) * loadk(ca + c, k, 0.0f) + loadk(cb + c, k, 0.0f);
        storek(yr + c, silu(z), k);
      };
      GE_LANES(0, C, body);
    }
    return;
  }
  ClScratch& sc = scratch();
  sc.f.resize(3 * C);
  sc.d.resize(2 * C);
  float* __restrict shift = sc.f.data();
  float* __restrict l1 = shift + C;
  float* __restrict l2 = l1 + C;
  double* __restrict s1 = sc.d.data();
  double* __restrict s2 = s1 + C;
  const int64_t nk = std::min<int64_t>(rows, 8);
  std::fill(shift, shift + C, 0.0f);
  for (int64_t r = 0; r < nk; ++r)
    for (int64_t c = 0; c < C; ++c) shift[c] += to_float(x[r * C + c]);
  for (int64_t c = 0; c < C; ++c) shift[c] /= float(nk);
  std::fill(s1, s1 + 2 * C, 0.0);
  for (int64_t b0 = 0; b0 < rows; b0 += kRowBlock) {
    const int64_t b1 = std::min(rows, b0 + kRowBlock);
    std::fill(l1, l1 + 2 * C, 0.0f);
    for (int64_t r = b0; r < b1; ++r) {
      const T* __restrict xr = x + r * C;
      auto body = [&](int64_t c, int k) __attribute__((always_inline)) {
        const v8f d = loadk(xr + c, k, 0.0f) - loadk(shift + c, k, 0.0f);
        storek(l1 + c, loadk(l1 + c, k, 0.0f) + d, k);
        storek(l2 + c, loadk(l2 + c, k, 0.0f) + d * d, k);
      };
      GE_LANES(0, C, body);
    }
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += l1[c];
      s2[c] += l2[c];
    }
  }
  Moments* out = p.moments + unit * C;
  for (int64_t c = 0; c < C; ++c) {
    const double d = s1[c] / double(rows);
    out[c] = Moments{double(rows), double(shift[c]) + d, std::max(s2[c] - s1[c] * d, 0.0)};
  }
}

template <typename T>
GE_INLINE void bwd_cl_unit(const Plan& p, int64_t unit) {
  const GroupNormArgs& a = *p.a;
  const int64_t C = a.c, nl = unit / p.pieces, n = p.n0 + nl;
  int64_t r0, r1;
  piece_range(p, unit % p.pieces, a.hw, &r0, &r1);
  const int64_t off = (n * a.hw + r0) * C, rows = r1 - r0;
  const T* __restrict x = static_cast<const T*>(a.x) + off;
  const T* __restrict dy = static_cast<const T*>(a.dy) + off;
  const float* __restrict cm = p.cmean + nl * C;
  const float* __restrict cr = p.crstd + nl * C;
  const float* __restrict gam = p.gamma;
  const float* __restrict bet = p.beta;
  if (p.phase == 2) {
    T* __restrict dx = static_cast<T*>(a.dx) + off;
    const float* __restrict k2 = p.ck + nl * 2 * C;
    const float* __restrict k3 = k2 + C;
    for (int64_t r = 0; r < rows; ++r) {
      const T* __restrict xr = x + r * C;
      const T* __restrict dyr = dy + r * C;
      T* __restrict dxr = dx + r * C;
      auto body = [&](int64_t c, int k) __attribute__((always_inline)) {
        const v8f rs = loadk(cr + c, k, 0.0f), g = loadk(gam + c, k, 0.0f);
        const v8f xh = (loadk(xr + c, k, 0.0f) - loadk(cm + c, k, 0.0f)) * rs;
        const v8f gz = loadk(dyr + c, k, 0.0f) * silu_grad(xh * g + loadk(bet + c, k, 0.0f));
        storek(dxr + c, gz * (rs * g) - xh * loadk(k2 + c, k, 0.0f) - loadk(k3 + c, k, 0.0f), k);
      };
      GE_LANES(0, C, body);
    }
    return;
  }
  double* A = p.sums + unit * 2 * C;
  double* B = A + C;
  std::fill(A, A + 2 * C, 0.0);
  ClScratch& sc = scratch();
  sc.f.resize(2 * C);
  float* __restrict la = sc.f.data();
  float* __restrict lb = la + C;
  for (int64_t b0 = 0; b0 < rows; b0 += kRowBlock) {
    const int64_t b1 = std::min(rows, b0 + kRowBlock);
    std::fill(la, la + 2 * C, 0.0f);
    for (int64_t r = b0; r < b1; ++r) {
      const T* __restrict xr = x + r * C;
      const T* __restrict dyr = dy + r * C;
      auto body = [&](int64_t c, int k) __attribute__((always_inline)) {
        const v8f xh = (loadk(xr + c, k, 0.0f) - loadk(cm + c, k, 0.0f)) * loadk(cr + c, k, 0.0f);
        const v8f z = xh * loadk(gam + c, k, 0.0f) + loadk(bet + c, k, 0.0f);
        const v8f gz = loadk(dyr + c, k, 0.0f) * silu_grad(z);
        storek(la + c, loadk(la + c, k, 0.0f) + gz * xh, k);
        storek(lb + c, loadk(lb + c, k, 0.0f) + gz, k);
      };
      GE_LANES(0, C, body);
    }
    for (int64_t c = 0; c < C; ++c) {
      A[c] += la[c];
      B[c] += lb[c];
    }
  }
}

// one run-time-dispatched (baseline / AVX2) entry per unit kind and dtype
#define GE_GN_UNIT(NAME)                                                                                       \
  GE_MULTIVERSIONED((void NAME##_f32(const Plan& p, int64_t u)), { NAME<float>(p, u); })                       \
  GE_MULTIVERSIONED((void NAME##_bf16(const Plan& p, int64_t u)), { NAME<BF16>(p, u); })                       \
  GE_MULTIVERSIONED((void NAME##_f16(const Plan& p, int64_t u)), { NAME<F16>(p, u); })                         \
  void NAME##_any(const Plan& p, int64_t u) {                                                                  \
    switch (p.a->dtype) {                                                                                      \
      case kFloat32: NAME##_f32(p, u); break;                                                                  \
      case kBFloat16: NAME##_bf16(p, u); break;                                                                \
      default: NAME##_f16(p, u); break;                                                                        \
    }                                                                                                          \
  }
GE_GN_UNIT(fwd_contig_unit)
GE_GN_UNIT(bwd_contig_unit)
GE_GN_UNIT(fwd_cl_unit)
GE_GN_UNIT(bwd_cl_unit)
#undef GE_GN_UNIT

void run_units(void (*fn)(const Plan&, int64_t), const Plan& p, int64_t units) {
  parallel_chunks(units, [&](int64_t u) { fn(p, u); });
}

int64_t dtype_size(int dtype) { return dtype == kFloat32 ? 4 : 2; }

// Pieces per group (contiguous) so that there are enough units for the threads, each still long
// enough to amortise its overhead; 1 means one fused unit per group.
int64_t contig_pieces(int64_t groups_total, int64_t L) {
  const int64_t want = 8 * int64_t(get_num_threads());
  if (groups_total >= want) return 1;
  return std::max<int64_t>(1, std::min((want + groups_total - 1) / groups_total, L / kBlock));
}

// Samples per batch and pieces per sample (channels-last): a batch's tensors (`streams` of them)
// stay within a few MB so the second pass finds them in the L3.
void cl_batching(const GroupNormArgs& a, int streams, int64_t* batch, int64_t* pieces) {
  const int64_t sample_bytes = a.c * a.hw * dtype_size(a.dtype) * streams;
  *batch = std::max<int64_t>(1, std::min<int64_t>(a.n, (int64_t(8) << 20) / std::max<int64_t>(sample_bytes, 1)));
  const int64_t want = 8 * int64_t(get_num_threads());
  *pieces = std::max<int64_t>(1, std::min({(want + *batch - 1) / *batch, a.hw * a.c / 4096, a.hw}));
}

// A fresh output of tens of MB (torch gets it from mmap) costs a page fault and a zeroed 4 KB page
// per 4 KB on first write: at (8,320,64,64) float32 more time than the kernel itself. Transparent
// huge pages (where the system allows them on request) cut the faults 512-fold. Advice only:
// pages already mapped stay as they are.
void advise_huge_pages(void* p, int64_t bytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < int64_t(4 * kHuge)) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

struct Params {
  std::vector<float> gamma, beta;
  explicit Params(const GroupNormArgs& a) : gamma(a.c, 1.0f), beta(a.c, 0.0f) {
    if (a.weight) std::copy(a.weight, a.weight + a.c, gamma.begin());
    if (a.bias) std::copy(a.bias, a.bias + a.c, beta.begin());
  }
};

}  // namespace

void group_norm_silu_fwd(const GroupNormArgs& a) {
  if (a.n <= 0 || a.c <= 0 || a.hw <= 0) return;
  advise_huge_pages(a.y, a.n * a.c * a.hw * dtype_size(a.dtype));
  Params prm(a);
  Plan p;
  p.a = &a;
  p.cg = a.c / a.groups;
  p.L = p.cg * a.hw;
  p.gamma = prm.gamma.data();
  p.beta = prm.beta.data();
  const int64_t NG = a.n * a.groups;
  if (!a.channels_last) {
    p.pieces = contig_pieces(NG, p.L);
    if (p.pieces == 1) {
      p.phase = 0;
      run_units(fwd_contig_unit_any, p, NG);
      return;
    }
    std::vector<Moments> mom(NG * p.pieces);
    p.moments = mom.data();
    p.phase = 1;
    run_units(fwd_contig_unit_any, p, NG * p.pieces);
    for (int64_t q = 0; q < NG; ++q) {
      Moments m;
      for (int64_t k = 0; k < p.pieces; ++k) m = merge(m, mom[q * p.pieces + k]);
      a.mean[q] = float(m.mean);
      a.rstd[q] = rstd_of(m, a.eps);
    }
    p.phase = 2;
    run_units(fwd_contig_unit_any, p, NG * p.pieces);
    return;
  }
  int64_t batch;
  cl_batching(a, 2, &batch, &p.pieces);
  std::vector<Moments> mom(batch * p.pieces * a.c);
  std::vector<float> cmean(batch * a.c), cscale(batch * a.c);
  p.moments = mom.data();
  p.cmean = cmean.data();
  p.crstd = cscale.data();
  for (p.n0 = 0; p.n0 < a.n; p.n0 += batch) {
    const int64_t nb = std::min(batch, a.n - p.n0);
    p.phase = 1;
    run_units(fwd_cl_unit_any, p, nb * p.pieces);
    for (int64_t nl = 0; nl < nb; ++nl) {
      for (int64_t g = 0; g < a.groups; ++g) {
        Moments m;
        for (int64_t c = g * p.cg; c < (g + 1) * p.cg; ++c)
          for (int64_t k = 0; k < p.pieces; ++k) m = merge(m, mom[(nl * p.pieces + k) * a.c + c]);
        const int64_t q = (p.n0 + nl) * a.groups + g;
        a.mean[q] = float(m.mean);
        a.rstd[q] = rstd_of(m, a.eps);
        for (int64_t c = g * p.cg; c < (g + 1) * p.cg; ++c) {
          cmean[nl * a.c + c] = a.mean[q];
          cscale[nl * a.c + c] = a.rstd[q] * p.gamma[c];
        }
      }
    }
    p.phase = 2;
    run_units(fwd_cl_unit_any, p, nb * p.pieces);
  }
}

void group_norm_silu_bwd(const GroupNormArgs& a) {
  if (a.n <= 0 || a.c <= 0 || a.hw <= 0) {
    if (a.dweight) std::fill(a.dweight, a.dweight + std::max<int64_t>(a.c, 0), 0.0f);
    if (a.dbias) std::fill(a.dbias, a.dbias + std::max<int64_t>(a.c, 0), 0.0f);
    return;
  }
  advise_huge_pages(a.dx, a.n * a.c * a.hw * dtype_size(a.dtype));
  Params prm(a);
  Plan p;
  p.a = &a;
  p.cg = a.c / a.groups;
  p.L = p.cg * a.hw;
  p.gamma = prm.gamma.data();
  p.beta = prm.beta.data();
  const int64_t NG = a.n * a.groups, C = a.c;
  std::vector<double> dgamma(C, 0.0), dbeta(C, 0.0);
  // per-group m1, m2 from A, B of the group's channels
  auto group_means = [&](const double* A, const double* B, int64_t g, float* m1, float* m2) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t c = g * p.cg; c < (g + 1) * p.cg; ++c) {
      s1 += double(p.gamma[c]) * B[c];
      s2 += double(p.gamma[c]) * A[c];
    }
    *m1 = float(s1 / double(p.L));
    *m2 = float(s2 / double(p.L));
  };
  if (!a.channels_last) {
    std::vector<double> AB(a.n * 2 * C, 0.0);
    p.AB = AB.data();
    p.pieces = contig_pieces(NG, p.L);
    if (p.pieces == 1) {
      p.phase = 0;
      run_units(bwd_contig_unit_any, p, NG);
    } else {
      std::vector<double> sums(NG * p.pieces * 2 * p.cg);
      std::vector<float> m12(NG * 2);
      p.sums = sums.data();
      p.m12 = m12.data();
      p.phase = 1;
      run_units(bwd_contig_unit_any, p, NG * p.pieces);
      for (int64_t q = 0; q < NG; ++q) {
        const int64_t n = q / a.groups, g = q % a.groups;
        double* A = p.AB + n * 2 * C;
        double* B = A + C;
        for (int64_t k = 0; k < p.pieces; ++k) {
          const double* s = p.sums + (q * p.pieces + k) * 2 * p.cg;
          for (int64_t c = 0; c < p.cg; ++c) {
            A[g * p.cg + c] += s[c];
            B[g * p.cg + c] += s[p.cg + c];
          }
        }
        group_means(A, B, g, &m12[2 * q], &m12[2 * q + 1]);
      }
      p.phase = 2;
      run_units(bwd_contig_unit_any, p, NG * p.pieces);
    }
    for (int64_t n = 0; n < a.n; ++n)
      for (int64_t c = 0; c < C; ++c) {
        dgamma[c] += AB[n * 2 * C + c];
        dbeta[c] += AB[n * 2 * C + C + c];
      }
  } else {
    int64_t batch;
    cl_batching(a, 3, &batch, &p.pieces);
    std::vector<double> sums(batch * p.pieces * 2 * C);
    std::vector<float> cmean(batch * C), crstd(batch * C), ck(batch * 2 * C);
    p.sums = sums.data();
    p.cmean = cmean.data();
    p.crstd = crstd.data();
    p.ck = ck.data();
    std::vector<double> AB(2 * C);
    for (p.n0 = 0; p.n0 < a.n; p.n0 += batch) {
      const int64_t nb = std::min(batch, a.n - p.n0);
      for (int64_t nl = 0; nl < nb; ++nl)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t q = (p.n0 + nl) * a.groups + c / p.cg;
          cmean[nl * C + c] = a.mean[q];
          crstd[nl * C + c] = a.rstd[q];
        }
      p.phase = 1;
      run_units(bwd_cl_unit_any, p, nb * p.pieces);
      for (int64_t nl = 0; nl < nb; ++nl) {
        std::fill(AB.begin(), AB.end(), 0.0);
        for (int64_t k = 0; k < p.pieces; ++k) {
          const double* s = p.sums + (nl * p.pieces + k) * 2 * C;
          for (int64_t c = 0; c < 2 * C; ++c) AB[c] += s[c];
        }
        for (int64_t c = 0; c < C; ++c) {
          dgamma[c] += AB[c];
          dbeta[c] += AB[C + c];
        }
        for (int64_t g = 0; g < a.groups; ++g) {
          float m1, m2;
          group_means(AB.data(), AB.data() + C, g, &m1, &m2);
          const float r = a.rstd[(p.n0 + nl) * a.groups + g];
          for (int64_t c = g * p.cg; c < (g + 1) * p.cg; ++c) {
            ck[nl * 2 * C + c] = r * m2;
            ck[nl * 2 * C + C + c] = r * m1;
          }
        }
      }
      p.phase = 2;
      run_units(bwd_cl_unit_any, p, nb * p.pieces);
    }
  }
  if (a.dweight)
    for (int64_t c = 0; c < C; ++c) a.dweight[c] = float(dgamma[c]);
  if (a.dbias)
    for (int64_t c = 0; c < C; ++c) a.dbias[c] = float(dbeta[c]);
}

}  // namespace ge
