// The diagonal / spherical Gaussian-mixture E-step with its sufficient statistics, in AVX-512
// (8 float64 lanes, 32 registers), for CPUs that have it (mixture.cpp dispatches on g_cpu_isa).
//
// Shape conventions: rows are stored row-major as the caller gives them, components run along the
// vector lanes (k rounded up to kp, a multiple of 8). Everything per block of TB rows stays in L1:
//   xb, x2b  (TB, ld)      x - centre and its square (ld >= d + 1); column d holds 1, so that the first-moment
//                          accumulator of that "feature" is N_k
//   lp       (TB, kp)      log-densities, then responsibilities
//   S1, S2   (d + 1, kp)   sum_t r[t][c] xb[t][i] and sum_t r[t][c] x2b[t][i] over the chunk
// Both the distances and the moments are then small GEMMs with register tiles: no transpose of x.
//
// Work (n = 100,000, d = 16, k = 16): the expanded form lp = q + x^2 . A + x . B is 2 FMAs per
// (row, component, feature), the moments another 2 (17 "features" with the ones): 13.2M zmm FMAs,
// 4.3 ms of one Zen 4 core at one zmm FMA per cycle; plus 0.2M zmm exps of 13 FMA-pipe operations.
// Measured on one core: distances 2.0 ms, exps 1.0, the rest of the log-sum-exp 0.45, moments 2.2,
// loading x 0.5: 6.1 ms, against 10.9 ms for the AVX2 kernel (16 registers: too few accumulators
// to keep both FMA pipes busy; an exp of twice the operations per lane).
//
// exp(x) = 2^(k/16) e^r with k = round(16 x / ln 2), |r| <= ln 2 / 32: the 16 values 2^(j/16) sit in
// two registers (one vpermi2pd looks them up), e^r is its Taylor polynomial of degree 7 (truncation
// 1.2e-18 relative), 2^floor(k / 16) is applied by vscalefpd, which underflows to 0 cleanly. Inputs
// are clamped below at -1000 (exactly 0 out); NaN stays NaN. Callers pass x <= 0 (lp - max).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "mixture.h"

// GCC 12 flags the deliberately undefined pass-through operand of its own AVX-512 intrinsics
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define GE_AVX512_FN __attribute__((target("avx512f,avx512vl,fma")))
#define GE_AVX512_INLINE GE_AVX512_FN inline __attribute__((always_inline))

namespace ge {
namespace {

constexpr int TB = 32;  // rows per block (32 measured 2% faster than 64 and 128: the block buffers stay in L1)
constexpr int R = 8;    // rows per distance tile

alignas(64) constexpr double kExp2Sixteenths[16] = {
    1.0, 1.0442737824274138, 1.0905077326652577, 1.1387886347566916, 1.189207115002721, 1.241857812073484,
    1.2968395546510096, 1.3542555469368927, 1.4142135623730951, 1.4768261459394993, 1.5422108254079407,
    1.6104903319492543, 1.681792830507429, 1.7562521603732995, 1.8340080864093424, 1.9152065613971474};

struct Exp8 {
  __m512d lo, hi;
  GE_AVX512_INLINE Exp8() : lo(_mm512_load_pd(kExp2Sixteenths)), hi(_mm512_load_pd(kExp2Sixteenths + 8)) {}
  GE_AVX512_INLINE __m512d operator()(__m512d x) const {
    x = _mm512_max_pd(_mm512_set1_pd(-1000.0), x);  // max returns its second operand for NaN
    const __m512d shifter = _mm512_set1_pd(6755399441055744.0);  // 1.5 * 2^52: adding it rounds to an integer
    const __m512d ks = _mm512_fmadd_pd(x, _mm512_set1_pd(23.083120654223414), shifter);  // 16 / ln 2
    const __m512d k = _mm512_sub_pd(ks, shifter);
    // ln 2 / 16 in two parts; the high part has 32 significant bits, so k * hi is exact for |k| < 2^21
    __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(0.693147180369123816490 / 16), x);
    r = _mm512_fnmadd_pd(k, _mm512_set1_pd(1.90821492927058770002e-10 / 16), r);
    __m512d p = _mm512_set1_pd(1.0 / 5040.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    // the low 4 bits of ks's mantissa are k mod 16: vpermi2pd reads exactly those bits as the index
    const __m512d t = _mm512_permutex2var_pd(lo, _mm512_castpd_si512(ks), hi);
    return _mm512_scalef_pd(_mm512_mul_pd(p, t), _mm512_mul_pd(k, _mm512_set1_pd(1.0 / 16)));
  }
};

GE_AVX512_INLINE __mmask8 lanes(int64_t n) { return n >= 8 ? __mmask8(0xFF) : __mmask8((1u << n) - 1u); }

// lp[t][g0 * 8 ..] for the R rows from t0 and G component vectors from g0
template <int G, int LD>
GE_AVX512_INLINE void dist_tile(const double* xb, int64_t ldx, const double* A, const double* B, const double* q,
                                int64_t kp, int64_t d, double* lp) {
  const int64_t ld = LD ? LD : ldx;  // a constant row stride puts every row of the tile at a fixed displacement
  const double* x2b = xb + TB * ld;
  __m512d acc[R][G];
  for (int j = 0; j < G; ++j) {
    const __m512d qv = _mm512_loadu_pd(q + 8 * j);
    for (int r = 0; r < R; ++r) acc[r][j] = qv;
  }
  for (int64_t i = 0; i < d; ++i) {
    __m512d a[G], b[G];
    for (int j = 0; j < G; ++j) {
      a[j] = _mm512_loadu_pd(A + i * kp + 8 * j);
      b[j] = _mm512_loadu_pd(B + i * kp + 8 * j);
    }
    for (int r = 0; r < R; ++r) {
      const __m512d x2 = _mm512_set1_pd(x2b[r * ld + i]), x = _mm512_set1_pd(xb[r * ld + i]);
      for (int j = 0; j < G; ++j) {
        acc[r][j] = _mm512_fmadd_pd(x2, a[j], acc[r][j]);
        acc[r][j] = _mm512_fmadd_pd(x, b[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < G; ++j) _mm512_storeu_pd(lp + r * kp + 8 * j, acc[r][j]);
}

template <typename T>
GE_AVX512_INLINE __m512d load_row(const T* p, __mmask8 m) {
  if constexpr (std::is_same<T, double>::value) return _mm512_maskz_loadu_pd(m, p);
  else return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, p));
}

template <typename T>
GE_AVX512_INLINE void store_row(T* p, __mmask8 m, __m512d v) {
  if constexpr (std::is_same<T, double>::value) _mm512_mask_storeu_pd(p, m, v);
  else _mm256_mask_storeu_ps(p, m, _mm512_cvtpd_ps(v));
}

// lane r of the result = op over the 8 lanes of v[r]: 8 horizontal reductions in 14 shuffles and 7 ops
template <typename Op>
GE_AVX512_INLINE __m512d reduce8(const __m512d* v, Op op) {
  __m512d t[4], u[2];
  for (int p = 0; p < 4; ++p)  // 128-bit block b of t[p]: (v[2p] over lanes 2b, 2b+1; v[2p+1] likewise)
    t[p] = op(_mm512_unpacklo_pd(v[2 * p], v[2 * p + 1]), _mm512_unpackhi_pd(v[2 * p], v[2 * p + 1]));
  for (int p = 0; p < 2; ++p)  // blocks: rows (4p, 4p+1) over lanes 0-3, the same over 4-7, rows (4p+2, 4p+3) ...
    u[p] = op(_mm512_shuffle_f64x2(t[2 * p], t[2 * p + 1], 0x88), _mm512_shuffle_f64x2(t[2 * p], t[2 * p + 1], 0xDD));
  return op(_mm512_shuffle_f64x2(u[0], u[1], 0x88), _mm512_shuffle_f64x2(u[0], u[1], 0xDD));
}
struct MaxOp {
  GE_AVX512_INLINE __m512d operator()(__m512d x, __m512d y) const { return _mm512_max_pd(x, y); }
};
struct AddOp {
  GE_AVX512_INLINE __m512d operator()(__m512d x, __m512d y) const { return _mm512_add_pd(x, y); }
};
GE_AVX512_INLINE __m512d lane_splat(__m512d v, int r) { return _mm512_permutexvar_pd(_mm512_set1_epi64(r), v); }

// What lse_tile writes besides lp (see diag_chunk)
template <typename T>
struct TileOut {
  bool need_r, per_row_lse;
  int resp_mode;
  int64_t k;
  T* resp;      // row t0's (k) responsibilities or log responsibilities, or null
  T* log_norm;  // row t0's log-normaliser, or null
};

// The log-sum-exp of the R rows of lp from t0 (all nv = G component vectors) with the rows in the
// lanes: 8 rows' maxima and sums each take one 8-way reduction (reduce8), not 8 horizontal ones.
// Responsibilities go back into lp (zero for rows >= valid); sum over rows of max_t and prod of s_t
// (the log-sum-exp is max_t + log s_t) go to msum / sprod. A pass of its own after the block's
// distances: fused into the distance tile, its long dependency chains left the FMA pipes idle.
template <int G, typename T>
GE_AVX512_INLINE void lse_tile(int64_t kp, int valid, const Exp8& vexp, const TileOut<T>& o, double* lp, __m512d& msum,
                               __m512d& sprod, double& total) {
  __m512d acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < G; ++j) acc[r][j] = _mm512_loadu_pd(lp + r * kp + 8 * j);
  const __mmask8 vm = __mmask8((1u << valid) - 1u);
  __m512d v[R];
  for (int r = 0; r < R; ++r) v[r] = G == 2 ? _mm512_max_pd(acc[r][0], acc[r][G - 1]) : acc[r][0];
  const __m512d M = reduce8(v, MaxOp());
  const bool keep_e = o.resp_mode != 2;  // log responsibilities need lp itself below
  for (int r = 0; r < R; ++r) {
    const __m512d mr = lane_splat(M, r);
    __m512d s = _mm512_setzero_pd();
    for (int j = 0; j < G; ++j) {
      const __m512d e = vexp(_mm512_sub_pd(acc[r][j], mr));
      if (keep_e) acc[r][j] = e;
      s = _mm512_add_pd(s, e);
    }
    v[r] = s;
  }
  const __m512d S = reduce8(v, AddOp());
  __m512d lse = _mm512_setzero_pd();
  if (o.per_row_lse) {
    alignas(64) double mv[8], sv[8], lv[8];
    _mm512_store_pd(mv, M);
    _mm512_store_pd(sv, S);
    for (int r = 0; r < R; ++r) lv[r] = r < valid ? mv[r] + std::log(sv[r]) : 0.0;
    for (int r = 0; r < valid; ++r) {
      total += lv[r];
      if (o.log_norm) o.log_norm[r] = T(lv[r]);
    }
    lse = _mm512_load_pd(lv);
  } else {
    msum = _mm512_mask_add_pd(msum, vm, msum, M);
    sprod = _mm512_mask_mul_pd(sprod, vm, sprod, S);
  }
  if (o.resp_mode == 2) {  // log responsibilities lp - lse; then r = exp of them for the statistics
    for (int r = 0; r < valid; ++r) {
      const __m512d lr = lane_splat(lse, r);
      for (int j = 0; j < G; ++j) {
        const __m512d l = _mm512_sub_pd(acc[r][j], lr);
        store_row(o.resp + r * o.k + 8 * j, lanes(o.k - 8 * j), l);
        if (o.need_r) _mm512_storeu_pd(lp + r * kp + 8 * j, vexp(l));
      }
    }
    if (o.need_r)
      for (int r = valid; r < R; ++r)
        for (int j = 0; j < G; ++j) _mm512_storeu_pd(lp + r * kp + 8 * j, _mm512_setzero_pd());
    return;
  }
  if (!o.need_r) return;
  const __m512d inv = _mm512_maskz_div_pd(vm, _mm512_set1_pd(1.0), S);  // 0 for the padding rows
  for (int r = 0; r < R; ++r) {
    const __m512d ir = lane_splat(inv, r);
    for (int j = 0; j < G; ++j) {
      const __m512d rv = _mm512_mul_pd(acc[r][j], ir);
      _mm512_storeu_pd(lp + r * kp + 8 * j, rv);
      if (o.resp && r < valid) store_row(o.resp + r * o.k + 8 * j, lanes(o.k - 8 * j), rv);
    }
  }
}

// S1[i][c] += sum_t r[t][c] xb[t][i], S2 likewise with x2b, for F features from i0 and G component
// vectors (the pointers are already offset to i0 and the first component)
template <int F, int G, int LD>
GE_AVX512_INLINE void moment_tile(const double* xb, int64_t ldx, const double* rs, int64_t kp, double* S1, double* S2) {
  const int64_t ld = LD ? LD : ldx;
  const double* x2b = xb + TB * ld;
  __m512d s1[F][G], s2[F][G];
  for (int f = 0; f < F; ++f)
    for (int j = 0; j < G; ++j) {
      s1[f][j] = _mm512_loadu_pd(S1 + f * kp + 8 * j);
      s2[f][j] = _mm512_loadu_pd(S2 + f * kp + 8 * j);
    }
  for (int t = 0; t < TB; ++t) {
    __m512d rv[G];
    for (int j = 0; j < G; ++j) rv[j] = _mm512_loadu_pd(rs + t * kp + 8 * j);
    for (int f = 0; f < F; ++f) {
      const __m512d x = _mm512_set1_pd(xb[t * ld + f]), x2 = _mm512_set1_pd(x2b[t * ld + f]);
      for (int j = 0; j < G; ++j) {
        s1[f][j] = _mm512_fmadd_pd(x, rv[j], s1[f][j]);
        s2[f][j] = _mm512_fmadd_pd(x2, rv[j], s2[f][j]);
      }
    }
  }
  for (int f = 0; f < F; ++f)
    for (int j = 0; j < G; ++j) {
      _mm512_storeu_pd(S1 + f * kp + 8 * j, s1[f][j]);
      _mm512_storeu_pd(S2 + f * kp + 8 * j, s2[f][j]);
    }
}

template <int G, int LD>
GE_AVX512_INLINE void moments_block(const double* xb, int64_t ldx, const double* rs, int64_t kp, int64_t nf, double* S1,
                                    double* S2) {
  constexpr int F = G == 2 ? 6 : 8;  // 4 F G accumulators + G + 2 registers of 32
  int64_t i = 0;
  for (; i + F <= nf; i += F) moment_tile<F, G, LD>(xb + i, ldx, rs, kp, S1 + i * kp, S2 + i * kp);
  const double *xr = xb + i, *r = rs;
  double *s1 = S1 + i * kp, *s2 = S2 + i * kp;
  switch (nf - i) {  // the last features in one pass too (a pass per feature leaves too few accumulators)
    case 7: moment_tile<7, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 6: moment_tile<6, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 5: moment_tile<5, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 4: moment_tile<4, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 3: moment_tile<3, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 2: moment_tile<2, G, LD>(xr, ldx, r, kp, s1, s2); break;
    case 1: moment_tile<1, G, LD>(xr, ldx, r, kp, s1, s2); break;
    default: break;
  }
}

// The log-sum-exp of a block's rows one row at a time (any number of component vectors): as in
// lse_tile, with per-row horizontal reductions
template <typename T>
GE_AVX512_FN void lse_rows(const GmmArgs& a, int64_t r, int rows, int64_t kp, const Exp8& vexp, double* lp,
                               bool need_r, bool per_row_lse, double& mx_sum, double& s_prod, double& total) {
  const int64_t k = a.k, nv = kp / 8;
  const bool stats = a.nk != nullptr;
  for (int t = 0; t < TB; ++t) {
    double* l = lp + t * kp;
    if (t >= rows) {
      if (need_r) std::fill(l, l + kp, 0.0);  // padding rows carry no mass
      continue;
    }
    __m512d m = _mm512_loadu_pd(l);
    for (int64_t j = 1; j < nv; ++j) m = _mm512_max_pd(m, _mm512_loadu_pd(l + 8 * j));
    const double mx = _mm512_reduce_max_pd(m);
    const __m512d mv = _mm512_set1_pd(mx);
    __m512d s = _mm512_setzero_pd();
    const bool keep_e = need_r && a.resp_mode != 2;
    for (int64_t j = 0; j < nv; ++j) {
      const __m512d e = vexp(_mm512_sub_pd(_mm512_loadu_pd(l + 8 * j), mv));
      if (keep_e) _mm512_storeu_pd(l + 8 * j, e);
      s = _mm512_add_pd(s, e);
    }
    const double ss = _mm512_reduce_add_pd(s);
    double lse = 0.0;
    if (per_row_lse) {
      lse = mx + std::log(ss);
      total += lse;
      if (a.log_norm) static_cast<T*>(a.log_norm)[r + t] = T(lse);
    } else {
      mx_sum += mx;
      s_prod *= ss;
    }
    if (a.resp_mode == 2) {  // log responsibilities from lp, then r = exp(lp - lse) for the statistics
      T* out = static_cast<T*>(a.resp) + (r + t) * k;
      const __m512d lv = _mm512_set1_pd(lse);
      for (int64_t j = 0; j < nv; ++j) {
        const __m512d lr = _mm512_sub_pd(_mm512_loadu_pd(l + 8 * j), lv);
        store_row(out + 8 * j, lanes(k - 8 * j), lr);
        if (stats) _mm512_storeu_pd(l + 8 * j, vexp(lr));
      }
      continue;
    }
    if (!need_r) continue;
    const __m512d inv = _mm512_set1_pd(1.0 / ss);
    T* out = a.resp_mode == 1 ? static_cast<T*>(a.resp) + (r + t) * k : nullptr;
    for (int64_t j = 0; j < nv; ++j) {
      const __m512d rv = _mm512_mul_pd(_mm512_loadu_pd(l + 8 * j), inv);
      _mm512_storeu_pd(l + 8 * j, rv);
      if (out) store_row(out + 8 * j, lanes(k - 8 * j), rv);
    }
  }
}

template <typename T, int LD>
GE_AVX512_FN void diag_chunk(const GmmArgs& a, const GmmDiagPlan& p, int64_t r0, int64_t r1, double* st, double* ll) {
  const int64_t d = a.d, k = a.k, kp = p.kp, nv = kp / 8, nf = d + 1, ldx = LD ? LD : nf;
  const bool stats = a.nk != nullptr, need_r = stats || a.resp_mode == 1;
  // (the product of a block's row sums s_t in [1, k] stays finite while k^TB < 2^1000)
  const bool per_row_lse = a.log_norm != nullptr || a.resp_mode == 2 || k > 4096;
  std::vector<double> buf(size_t(2 * TB * ldx + TB * kp + (stats ? 2 * nf * kp : 0)), 0.0);
  double* xb = buf.data();
  double* x2b = xb + TB * ldx;
  double* lp = x2b + TB * ldx;
  double* S1 = lp + TB * kp;
  double* S2 = S1 + nf * kp;
  const T* x = static_cast<const T*>(a.x);
  const Exp8 vexp;
  double total = 0.0;
  for (int64_t r = r0; r < r1; r += TB) {
    const int rows = int(std::min<int64_t>(TB, r1 - r));
    // ---- xb = x - centre, x2b = xb^2, the column of ones; padding rows zero
    for (int t = 0; t < TB; ++t) {
      double* xr = xb + t * ldx;
      double* x2r = x2b + t * ldx;
      if (t < rows) {
        const T* src = x + (r + t) * d;
        for (int64_t i = 0; i < d; i += 8) {
          const __mmask8 m = lanes(d - i);
          const __m512d v = _mm512_sub_pd(load_row(src + i, m), _mm512_maskz_loadu_pd(m, p.centre + i));
          _mm512_mask_storeu_pd(xr + i, m, v);
          _mm512_mask_storeu_pd(x2r + i, m, _mm512_mul_pd(v, v));
        }
        xr[d] = x2r[d] = 1.0;
      } else {
        std::fill(xr, xr + ldx, 0.0);
        std::fill(x2r, x2r + ldx, 0.0);
      }
    }
    // the next block's rows, fetched while this one computes: the hardware prefetcher alone left the
    // loads above a seventh of the kernel's time
    const char* next = reinterpret_cast<const char*>(x + std::min(r + TB, r1) * d);
    const int64_t next_bytes = std::min<int64_t>(TB, std::max<int64_t>(r1 - r - TB, 0)) * d * int64_t(sizeof(T));
    double mx_sum = 0.0, s_prod = 1.0;  // sum_t lse_t = sum_t max_t + log prod_t s_t, s_t in [1, k]: one log a block
    if (nv <= 2) {  // ---- k <= 16: the block's distances, then the log-sum-exp 8 rows at a time
      for (int t0 = 0; t0 < TB; t0 += R) {
        for (int64_t o = t0 * next_bytes / TB; o < (t0 + R) * next_bytes / TB; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
        if (nv == 2) dist_tile<2, LD>(xb + t0 * ldx, ldx, p.A, p.B, p.q, kp, d, lp + t0 * kp);
        else dist_tile<1, LD>(xb + t0 * ldx, ldx, p.A, p.B, p.q, kp, d, lp + t0 * kp);
      }
      __m512d msum = _mm512_setzero_pd(), sprod = _mm512_set1_pd(1.0);
      for (int t0 = 0; t0 < TB; t0 += R) {
        const int valid = int(std::clamp<int64_t>(rows - t0, 0, R));
        const TileOut<T> o{need_r, per_row_lse, a.resp_mode, k,
                           a.resp_mode ? static_cast<T*>(a.resp) + (r + t0) * k : nullptr,
                           a.log_norm ? static_cast<T*>(a.log_norm) + r + t0 : nullptr};
        if (nv == 2) lse_tile<2, T>(kp, valid, vexp, o, lp + t0 * kp, msum, sprod, total);
        else lse_tile<1, T>(kp, valid, vexp, o, lp + t0 * kp, msum, sprod, total);
      }
      mx_sum = _mm512_reduce_add_pd(msum);
      s_prod = _mm512_reduce_mul_pd(sprod);
    } else {  // ---- the general case: distances a block at a time, then the log-sum-exp row by row
      for (int t0 = 0; t0 < TB; t0 += R) {
        for (int64_t o = t0 * next_bytes / TB; o < (t0 + R) * next_bytes / TB; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
        int64_t g = 0;
        for (; g + 2 <= nv; g += 2)
          dist_tile<2, LD>(xb + t0 * ldx, ldx, p.A + 8 * g, p.B + 8 * g, p.q + 8 * g, kp, d, lp + t0 * kp + 8 * g);
        if (g < nv)
          dist_tile<1, LD>(xb + t0 * ldx, ldx, p.A + 8 * g, p.B + 8 * g, p.q + 8 * g, kp, d, lp + t0 * kp + 8 * g);
      }
      lse_rows<T>(a, r, rows, kp, vexp, lp, need_r, per_row_lse, mx_sum, s_prod, total);
    }
    if (!per_row_lse) total += mx_sum + std::log(s_prod);
    if (!stats) continue;
    // ---- moments (and N_k through the column of ones)
    int64_t g = 0;
    for (; g + 2 <= nv; g += 2) moments_block<2, LD>(xb, ldx, lp + 8 * g, kp, nf, S1 + 8 * g, S2 + 8 * g);
    if (g < nv) moments_block<1, LD>(xb, ldx, lp + 8 * g, kp, nf, S1 + 8 * g, S2 + 8 * g);
  }
  *ll += total;
  if (!stats) return;
  double* nk = st;
  double* sx = st + k;
  double* sxx = st + k + k * d;
  for (int64_t c = 0; c < k; ++c) {
    nk[c] += S1[d * kp + c];
    for (int64_t i = 0; i < d; ++i) {
      sx[c * d + i] += S1[i * kp + c];
      sxx[c * d + i] += S2[i * kp + c];
    }
  }
}

}  // namespace

bool gmm_diag_avx512_available() { return true; }

void gmm_diag_chunk_avx512(const GmmArgs& a, const GmmDiagPlan& p, int64_t r0, int64_t r1, double* st, double* ll) {
  // rows of the block buffers padded to a constant stride where d is small (the tiles then address
  // every row at a fixed displacement from one pointer, which leaves registers for the pointers)
  using Fn = void (*)(const GmmArgs&, const GmmDiagPlan&, int64_t, int64_t, double*, double*);
  static const Fn f64[5] = {diag_chunk<double, 8>, diag_chunk<double, 16>, diag_chunk<double, 24>, diag_chunk<double, 32>,
                            diag_chunk<double, 0>};
  static const Fn f32[5] = {diag_chunk<float, 8>, diag_chunk<float, 16>, diag_chunk<float, 24>, diag_chunk<float, 32>,
                            diag_chunk<float, 0>};
  const int64_t cls = std::min<int64_t>((a.d + 1 + 7) / 8 - 1, 4);
  (a.dtype == 3 ? f64 : f32)[cls](a, p, r0, r1, st, ll);
}

}  // namespace ge

#else  // not x86-64 GCC: mixture.cpp keeps its portable kernel

namespace ge {
bool gmm_diag_avx512_available() { return false; }
void gmm_diag_chunk_avx512(const GmmArgs&, const GmmDiagPlan&, int64_t, int64_t, double*, double*) {}
}  // namespace ge

#endif
