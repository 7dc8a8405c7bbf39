// Gaussian-mixture E-step on the CPU, fused with the M-step's sufficient statistics: one pass over x
// computes every component's log-density, the per-row log-sum-exp, the responsibilities and
// N_k, sum r x, sum r x x^T (see mixture.h for the contract).
//
// Floor (full covariance, n = 100,000, d = 16, k = 16): the whitened distances x^T U_k need
// d (d + 1) / 2 = 136 multiply-adds per (row, component) (U_k is triangular) and the second moments
// another 136 (symmetric): 2 * 1.6M * 272 = 0.87 GFLOP per iteration, against ~0.1 GB of data that
// stay in the caches block by block. Compute bound: at ~70% of two cores' AVX2 FMA peak that is ~10 ms.
//
// Layout: rows are taken in blocks of 64, transposed so that 4-lane vectors run over rows (xt[i][t]):
// every component's triangular factor, packed by columns, is then read as broadcast scalars against
// 4 row vectors at once (4 FMAs per 5 loads), and x^T U never leaves the registers. The second
// moments of a block are blocked 1 x 4 over (i, j) with the 16 row vectors as the inner loop, and a
// component whose responsibilities are all exactly zero over the block (they underflow for
// well-separated clusters) is skipped: that drops nothing. exp and the row maximum are vectorised
// over rows; math is float64 for float32 inputs too.
#include "mixture.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"
#include "vecmath.h"

#pragma GCC optimize("fp-contract=fast")
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ge {
namespace {

using vm::v4d;

constexpr int TB = 64;            // rows per block
constexpr int NV = TB / 4;        // row vectors per block
constexpr int64_t kBlocksPerChunk = 16;

struct Work {
  std::vector<double> xt, yt, lp, rx, acc;  // acc: diag / spherical moment accumulators, 4 lanes each
};

// Diagonal and spherical log-densities in expanded form, lp_c = q_c + sum_i (ah_ci x_i^2 + bm_ci x_i)
// with ah = -p / 2, bm = p mu, q_c = cst_c - sum_i p_ci mu_ci^2 / 2 (p the precisions): two FMAs per
// (row, component, feature) against three for (x - mu)^2 p. NC components share each load of x, x^2;
// ah and bm come broadcast (4 copies of each coefficient): a vector load, where a broadcast of a scalar
// costs the FMA pipes two shuffles in GCC's code.
template <int NC>
GE_VM_INLINE void diag_dist(const double* xt, const double* x2t, const double* ah, const double* bm, const double* q,
                            int64_t d, double* lp) {
  for (int v = 0; v < NV; v += 4) {
    v4d m[NC][4];
    for (int c = 0; c < NC; ++c)
      for (int u = 0; u < 4; ++u) m[c][u] = vm::splat(q[c]);
    for (int64_t i = 0; i < d; ++i) {
      const double* xr = xt + i * TB + 4 * v;
      const double* x2r = x2t + i * TB + 4 * v;
      for (int u = 0; u < 4; ++u) {
        const v4d xv = vm::load4(xr + 4 * u), x2v = vm::load4(x2r + 4 * u);
        for (int c = 0; c < NC; ++c) {  // two separate updates: two FMAs (a sum of products is mul + fma + add)
          m[c][u] += vm::load4(ah + (c * d + i) * 4) * x2v;
          m[c][u] += vm::load4(bm + (c * d + i) * 4) * xv;
        }
      }
    }
    for (int c = 0; c < NC; ++c)
      for (int u = 0; u < 4; ++u) vm::store4(lp + c * TB + 4 * v + 4 * u, m[c][u]);
  }
}

// sum_t r_c[t] x_i[t] and sum_t r_c[t] x_i[t]^2 over a block for NC components at once (x and x^2
// loaded once for all of them), added to 4-lane accumulators (summed across lanes once per chunk)
template <int NC>
GE_VM_INLINE void diag_moments(const double* xt, const double* x2t, const double* r, int64_t d, double* acc) {
  for (int64_t i = 0; i < d; ++i) {
    v4d s1[NC], s2[NC];
    for (int c = 0; c < NC; ++c) s1[c] = s2[c] = v4d{};
    for (int v = 0; v < NV; ++v) {
      const v4d xv = vm::load4(xt + i * TB + 4 * v), x2v = vm::load4(x2t + i * TB + 4 * v);
      for (int c = 0; c < NC; ++c) {
        const v4d rv = vm::load4(r + c * TB + 4 * v);
        s1[c] += rv * xv;
        s2[c] += rv * x2v;
      }
    }
    for (int c = 0; c < NC; ++c) {
      double* a1 = acc + (c * d + i) * 8;
      vm::store4(a1, vm::load4(a1) + s1[c]);
      vm::store4(a1 + 4, vm::load4(a1 + 4) + s2[c]);
    }
  }
}

// xt[i][t] = x[t][i] - shift[i], zero past the rows and past d. x is read row by row (sequentially,
// so the hardware prefetcher streams it) and scattered into the transposed block, which stays in L1:
// reading it column by column instead (stride d) was a fifth of the whole diagonal E-step.
template <typename T>
GE_VM_INLINE void load_block(const T* x, const double* shift, int64_t d, int64_t dp, int rows, double* xt) {
  double s[256];
  const bool small = d <= 256;
  if (small)
    for (int64_t i = 0; i < d; ++i) s[i] = shift ? shift[i] : 0.0;
  for (int t = 0; t < rows; ++t) {
    const T* xr = x + int64_t(t) * d;
    // the rows two blocks ahead (the hardware prefetcher alone left this load a fifth of the time);
    // prefetching past the array's end is harmless
    for (int64_t o = 0; o < d * int64_t(sizeof(T)); o += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(xr + 2 * TB * d) + o);
    if (small) {
      for (int64_t i = 0; i < d; ++i) xt[i * TB + t] = double(xr[i]) - s[i];
    } else {
      for (int64_t i = 0; i < d; ++i) xt[i * TB + t] = double(xr[i]) - (shift ? shift[i] : 0.0);
    }
  }
  for (int64_t i = 0; i < dp; ++i) {
    double* row = xt + i * TB;
    for (int t = i < d ? rows : 0; t < TB; ++t) row[t] = 0.0;
  }
}

// m[t] = |xt[:, t]^T U - b|^2 over the block, U packed by columns (column j: its j + 1 entries)
GE_VM_INLINE void tri_dist(const double* xt, const double* upk, const double* b, int64_t d, double* out) {
  for (int v = 0; v < NV; v += 4) {
    v4d m0 = v4d{}, m1 = v4d{}, m2 = v4d{}, m3 = v4d{};
    const double* uc = upk;
    for (int64_t j = 0; j < d; ++j) {
      const v4d bj = vm::splat(-b[j]);
      v4d a0 = bj, a1 = bj, a2 = bj, a3 = bj;
      for (int64_t i = 0; i <= j; ++i) {
        const v4d w = vm::splat(uc[i]);
        const double* xr = xt + i * TB + 4 * v;
        a0 += vm::load4(xr) * w;
        a1 += vm::load4(xr + 4) * w;
        a2 += vm::load4(xr + 8) * w;
        a3 += vm::load4(xr + 12) * w;
      }
      uc += j + 1;
      m0 += a0 * a0;
      m1 += a1 * a1;
      m2 += a2 * a2;
      m3 += a3 * a3;
    }
    vm::store4(out + 4 * v, m0);
    vm::store4(out + 4 * v + 4, m1);
    vm::store4(out + 4 * v + 8, m2);
    vm::store4(out + 4 * v + 12, m3);
  }
}

// yt[j][t] = (xt[:, t]^T U)_j over the block (tied covariance: once per block for every component)
GE_VM_INLINE void tri_apply(const double* xt, const double* upk, int64_t d, double* yt) {
  for (int v = 0; v < NV; v += 4) {
    const double* uc = upk;
    for (int64_t j = 0; j < d; ++j) {
      v4d a0 = v4d{}, a1 = v4d{}, a2 = v4d{}, a3 = v4d{};
      for (int64_t i = 0; i <= j; ++i) {
        const v4d w = vm::splat(uc[i]);
        const double* xr = xt + i * TB + 4 * v;
        a0 += vm::load4(xr) * w;
        a1 += vm::load4(xr + 4) * w;
        a2 += vm::load4(xr + 8) * w;
        a3 += vm::load4(xr + 12) * w;
      }
      uc += j + 1;
      double* yr = yt + j * TB + 4 * v;
      vm::store4(yr, a0);
      vm::store4(yr + 4, a1);
      vm::store4(yr + 8, a2);
      vm::store4(yr + 12, a3);
    }
  }
}

template <typename T, int COV>
GE_VM_INLINE void gmm_chunk(const GmmArgs& a, const double* upk, int64_t r0, int64_t r1, double* st, Work& w,
                            double* ll) {
  const int64_t d = a.d, k = a.k, dp = (d + 3) & ~int64_t(3);
  const int64_t P = d * (d + 1) / 2;
  const bool stats = a.nk != nullptr;
  double* nk = st;
  double* sx = st + k;
  double* sxx = st + k + k * d;  // full: (k, d, d) upper half; diag / spherical: (k, d)
  double* xt = w.xt.data();
  double* lp = w.lp.data();
  double* rx = w.rx.data();
  const T* x = static_cast<const T*>(a.x);
  for (int64_t r = r0; r < r1; r += TB) {
    const int rows = int(std::min<int64_t>(TB, r1 - r));
    load_block(x + r * d, a.shift, d, dp + 4, rows, xt);  // 4 zero rows past dp: the 1 x 4 blocks of sxx read them
    // ---- log-densities lp[c][t]
    if constexpr (COV == 1) tri_apply(xt, upk, d, w.yt.data());
    for (int64_t c = 0; c < (COV <= 1 ? k : 0); ++c) {
      double* l = lp + c * TB;
      if constexpr (COV == 0) {
        tri_dist(xt, upk + c * P, a.b + c * d, d, l);
      } else if constexpr (COV == 1) {
        const double* bc = a.b + c * d;
        for (int v = 0; v < NV; ++v) {
          v4d m = v4d{};
          for (int64_t j = 0; j < d; ++j) {
            const v4d e = vm::load4(w.yt.data() + j * TB + 4 * v) - bc[j];
            m += e * e;
          }
          vm::store4(l + 4 * v, m);
        }
      }
      if constexpr (COV <= 1) {
        const double cc = a.cst[c];
        for (int v = 0; v < NV; ++v) vm::store4(l + 4 * v, cc - 0.5 * vm::load4(l + 4 * v));
      }
    }
    if constexpr (COV >= 2) {
      double* x2t = w.rx.data();
      for (int64_t i = 0; i < d; ++i)
        for (int v = 0; v < NV; ++v) {
          const v4d xv = vm::load4(xt + i * TB + 4 * v);
          vm::store4(x2t + i * TB + 4 * v, xv * xv);
        }
      const double *ah = upk, *bm = upk + 4 * k * d, *q = upk + 8 * k * d;
      int64_t c = 0;
      for (; c + 2 <= k; c += 2) diag_dist<2>(xt, x2t, ah + 4 * c * d, bm + 4 * c * d, q + c, d, lp + c * TB);
      if (c < k) diag_dist<1>(xt, x2t, ah + 4 * c * d, bm + 4 * c * d, q + c, d, lp + c * TB);
    }
    // ---- log-sum-exp over components; when responsibilities are wanted, e = exp(lp - max) is kept in
    // place of lp and r = e / sum e (one exp per (row, component), not two)
    double lse[TB], inv[TB];
    const bool need_r = stats || a.resp_mode == 1;
    for (int v = 0; v < NV; ++v) {
      v4d m = vm::splat(-std::numeric_limits<double>::infinity());
      for (int64_t c = 0; c < k; ++c) m = vm::vmax(m, vm::load4(lp + c * TB + 4 * v));
      v4d s = v4d{};
      if (need_r && a.resp_mode != 2) {
        for (int64_t c = 0; c < k; ++c) {
          const v4d e = vm::vexp(vm::load4(lp + c * TB + 4 * v) - m);
          vm::store4(lp + c * TB + 4 * v, e);
          s += e;
        }
      } else {
        for (int64_t c = 0; c < k; ++c) s += vm::vexp(vm::load4(lp + c * TB + 4 * v) - m);
      }
      vm::store4(inv + 4 * v, 1.0 / s);
      for (int q = 0; q < 4; ++q) lse[4 * v + q] = m[q] + std::log(s[q]);
    }
    for (int t = 0; t < rows; ++t) *ll += lse[t];
    T* ln = static_cast<T*>(a.log_norm);
    if (ln)
      for (int t = 0; t < rows; ++t) ln[r + t] = T(lse[t]);
    if (a.resp_mode == 2) {
      T* out = static_cast<T*>(a.resp) + r * k;
      for (int t = 0; t < rows; ++t)
        for (int64_t c = 0; c < k; ++c) out[t * k + c] = T(lp[c * TB + t] - lse[t]);
    }
    if (!need_r) continue;
    for (int64_t c = 0; c < k; ++c) {
      double* l = lp + c * TB;
      if (a.resp_mode == 2) {  // lp still holds log-densities (log responsibilities were written)
        for (int v = 0; v < NV; ++v) vm::store4(l + 4 * v, vm::vexp(vm::load4(l + 4 * v) - vm::load4(lse + 4 * v)));
      } else {
        for (int v = 0; v < NV; ++v) vm::store4(l + 4 * v, vm::load4(l + 4 * v) * vm::load4(inv + 4 * v));
      }
      for (int t = rows; t < TB; ++t) l[t] = 0.0;  // padding rows carry no mass
    }
    if (a.resp_mode == 1) {
      T* out = static_cast<T*>(a.resp) + r * k;
      for (int t = 0; t < rows; ++t)
        for (int64_t c = 0; c < k; ++c) out[t * k + c] = T(lp[c * TB + t]);
    }
    if (!stats) continue;
    // ---- sufficient statistics
    for (int64_t c = 0; c < k; ++c) {
      const double* rc = lp + c * TB;
      v4d any = v4d{}, tot = v4d{};
      for (int v = 0; v < NV; ++v) {
        const v4d rv = vm::load4(rc + 4 * v);
        tot += rv;
        any = vm::vmax(any, rv);
      }
      if (vm::hmax(any) == 0.0) continue;  // every responsibility underflowed to 0: nothing to add
      nk[c] += vm::hsum(tot);
      if constexpr (COV >= 2) continue;  // their moments: below, components 4 at a time
      if constexpr (COV == 1) {  // first moments only
        for (int64_t i = 0; i < d; ++i) {
          v4d s1 = v4d{};
          for (int v = 0; v < NV; ++v) s1 += vm::load4(rc + 4 * v) * vm::load4(xt + i * TB + 4 * v);
          sx[c * d + i] += vm::hsum(s1);
        }
        continue;
      }
      for (int64_t i = 0; i < d; ++i) {
        v4d s = v4d{};
        double* rxi = rx + i * TB;
        for (int v = 0; v < NV; ++v) {
          const v4d p = vm::load4(rc + 4 * v) * vm::load4(xt + i * TB + 4 * v);
          vm::store4(rxi + 4 * v, p);
          s += p;
        }
        sx[c * d + i] += vm::hsum(s);
      }
      if constexpr (COV == 0) {
        double* S = sxx + c * d * d;
        for (int64_t i = 0; i < d; ++i) {
          const double* rxi = rx + i * TB;
          for (int64_t j = i; j < d; j += 4) {  // rows j..j+3 of xt (zero beyond d: padded)
            v4d s0 = v4d{}, s1 = v4d{}, s2 = v4d{}, s3 = v4d{};
            const double* x0 = xt + j * TB;
            for (int v = 0; v < NV; ++v) {
              const v4d p = vm::load4(rxi + 4 * v);
              s0 += p * vm::load4(x0 + 4 * v);
              s1 += p * vm::load4(x0 + TB + 4 * v);
              s2 += p * vm::load4(x0 + 2 * TB + 4 * v);
              s3 += p * vm::load4(x0 + 3 * TB + 4 * v);
            }
            double* o = S + i * d + j;
            o[0] += vm::hsum(s0);
            if (j + 1 < d) o[1] += vm::hsum(s1);
            if (j + 2 < d) o[2] += vm::hsum(s2);
            if (j + 3 < d) o[3] += vm::hsum(s3);
          }
        }
      }
    }
    if constexpr (COV >= 2) {
      const double* x2t = w.rx.data();
      double* acc = w.acc.data();
      int64_t c = 0;
      for (; c + 4 <= k; c += 4) diag_moments<4>(xt, x2t, lp + c * TB, d, acc + c * d * 8);
      for (; c < k; ++c) diag_moments<1>(xt, x2t, lp + c * TB, d, acc + c * d * 8);
    }
  }
  if constexpr (COV >= 2) {
    if (stats) {
      const double* acc = w.acc.data();
      for (int64_t j = 0; j < k * d; ++j) {
        sx[j] += vm::hsum(vm::load4(acc + j * 8));
        sxx[j] += vm::hsum(vm::load4(acc + j * 8 + 4));
      }
    }
  }
}

#define GE_GMM_RUN(T, COV, NAME)                                                                                \
  GE_MULTIVERSIONED((void NAME(const GmmArgs& a, const double* upk, int64_t r0, int64_t r1, double* st, Work& w,  \
                                double* ll)),                                                               \
                    { gmm_chunk<T, COV>(a, upk, r0, r1, st, w, ll); })
GE_GMM_RUN(double, 0, run_d0)
GE_GMM_RUN(double, 1, run_d1)
GE_GMM_RUN(double, 2, run_d2)
GE_GMM_RUN(double, 3, run_d3)
GE_GMM_RUN(float, 0, run_f0)
GE_GMM_RUN(float, 1, run_f1)
GE_GMM_RUN(float, 2, run_f2)
GE_GMM_RUN(float, 3, run_f3)

using RunFn = void (*)(const GmmArgs&, const double*, int64_t, int64_t, double*, Work&, double*);

}  // namespace

bool gmm_diag_uses_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = g_cpu_isa >= kIsaAvx512 && gmm_diag_avx512_available() && __builtin_cpu_supports("avx512vl");
  return yes;
#else
  return false;
#endif
}

void gmm_e_step(const GmmArgs& a) {
  if (a.n <= 0 || a.k <= 0) return;
  const int64_t d = a.d, k = a.k, dp = (d + 3) & ~int64_t(3);
  // triangular factors packed by columns (column j of U: rows 0..j), the order tri_dist reads them
  std::vector<double> upk;
  if (a.cov <= 1) {
    const int64_t nm = a.cov == 0 ? k : 1, P = d * (d + 1) / 2;
    upk.resize(size_t(nm * P));
    for (int64_t c = 0; c < nm; ++c) {
      double* o = upk.data() + c * P;
      for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i <= j; ++i) *o++ = a.prec[c * d * d + i * d + j];
    }
  }
  // diag / spherical: expanded-form coefficients (see diag_dist), in a frame centred on the mean of
  // the component means when the caller gives no shift, so that x^2 cannot dwarf (x - mu)^2 for data
  // far from the origin; the moments are moved back to x's frame after the sum
  GmmArgs ca = a;
  std::vector<double> centre, bc;
  if (a.cov >= 2) {
    if (!a.shift) {
      centre.assign(size_t(d), 0.0);
      bc.resize(size_t(k * d));
      for (int64_t c = 0; c < k; ++c)
        for (int64_t i = 0; i < d; ++i) centre[size_t(i)] += a.b[c * d + i] / double(k);
      for (int64_t c = 0; c < k; ++c)
        for (int64_t i = 0; i < d; ++i) bc[size_t(c * d + i)] = a.b[c * d + i] - centre[size_t(i)];
      ca.shift = centre.data();
      ca.b = bc.data();
    }
    upk.assign(size_t(8 * k * d + k), 0.0);  // ah, bm broadcast 4 times, then q
    for (int64_t c = 0; c < k; ++c) {
      double q = a.cst[c];
      for (int64_t i = 0; i < d; ++i) {
        const double p = a.cov == 2 ? a.prec[c * d + i] : a.prec[c], mu = ca.b[c * d + i];
        for (int l = 0; l < 4; ++l) {
          upk[size_t((c * d + i) * 4 + l)] = -0.5 * p;
          upk[size_t(4 * k * d + (c * d + i) * 4 + l)] = p * mu;
        }
        q -= 0.5 * p * mu * mu;
      }
      upk[size_t(8 * k * d + c)] = q;
    }
  }
  // the AVX-512 kernel's layout of the same coefficients: feature-major, components padded to kp
  const bool avx512 = a.cov >= 2 && gmm_diag_uses_avx512();
  GmmDiagPlan plan;
  std::vector<double> plan_buf;
  if (avx512) {
    const int64_t kp = (k + 7) & ~int64_t(7);
    plan_buf.assign(size_t(2 * d * kp + kp), 0.0);
    plan.kp = kp;
    plan.A = plan_buf.data();
    plan.B = plan.A + d * kp;
    plan.q = plan.B + d * kp;
    plan.centre = ca.shift;
    double* q = plan_buf.data() + 2 * d * kp;
    for (int64_t c = 0; c < kp; ++c) q[c] = c < k ? upk[size_t(8 * k * d + c)] : -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < d; ++i) {
        plan_buf[size_t(i * kp + c)] = upk[size_t((c * d + i) * 4)];
        plan_buf[size_t(d * kp + i * kp + c)] = upk[size_t(4 * k * d + (c * d + i) * 4)];
      }
  }
  const int64_t sxx_len = a.cov == 0 ? k * d * d : (a.cov == 1 ? 0 : k * d);
  const int64_t st_len = k + k * d + sxx_len;
  const int64_t rows_per_chunk = kBlocksPerChunk * TB;
  const int64_t chunks = (a.n + rows_per_chunk - 1) / rows_per_chunk;
  const bool stats = a.nk != nullptr;
  std::vector<double> part(stats ? size_t(chunks * st_len) : 0, 0.0), llp(size_t(chunks), 0.0);
  static const RunFn f64[4] = {run_d0, run_d1, run_d2, run_d3};
  static const RunFn f32[4] = {run_f0, run_f1, run_f2, run_f3};
  const RunFn run = (a.dtype == 3 ? f64 : f32)[a.cov];
  parallel_chunks(chunks, [&](int64_t ci) {
    if (avx512) {
      double* st = stats ? part.data() + ci * st_len : nullptr;
      const int64_t r0 = ci * rows_per_chunk, r1 = std::min(a.n, r0 + rows_per_chunk);
      gmm_diag_chunk_avx512(ca, plan, r0, r1, st, &llp[size_t(ci)]);
      return;
    }
    Work w;
    w.xt.assign(size_t((dp + 4) * TB), 0.0);
    w.yt.assign(a.cov == 1 ? size_t(dp * TB) : 0, 0.0);
    w.lp.assign(size_t(k * TB), 0.0);
    w.rx.assign(size_t(dp * TB), 0.0);
    if (a.cov >= 2 && stats) w.acc.assign(size_t(k * d * 8), 0.0);
    std::vector<double> scratch;
    double* st = nullptr;
    if (stats) {
      st = part.data() + ci * st_len;
    } else {
      scratch.assign(size_t(st_len), 0.0);
      st = scratch.data();
    }
    const int64_t r0 = ci * rows_per_chunk, r1 = std::min(a.n, r0 + rows_per_chunk);
    run(ca, upk.data(), r0, r1, st, w, &llp[size_t(ci)]);
  });
  if (a.ll_sum) {
    double t = 0.0;
    for (int64_t ci = 0; ci < chunks; ++ci) t += llp[size_t(ci)];  // chunk order: deterministic
    *a.ll_sum = t;
  }
  if (!stats) return;
  std::fill(a.nk, a.nk + k, 0.0);
  std::fill(a.sx, a.sx + k * d, 0.0);
  if (sxx_len) std::fill(a.sxx, a.sxx + sxx_len, 0.0);
  for (int64_t ci = 0; ci < chunks; ++ci) {
    const double* p = part.data() + ci * st_len;
    for (int64_t c = 0; c < k; ++c) a.nk[c] += p[c];
    for (int64_t j = 0; j < k * d; ++j) a.sx[j] += p[k + j];
    for (int64_t j = 0; j < sxx_len; ++j) a.sxx[j] += p[k + k * d + j];
  }
  if (!centre.empty())  // moments of x - centre -> of x: sum r x^2 = sxx' + 2 c sx' + nk c^2, sum r x = sx' + nk c
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < d; ++i) {
        const double ci = centre[size_t(i)], s1 = a.sx[c * d + i];
        a.sxx[c * d + i] += 2.0 * ci * s1 + a.nk[c] * ci * ci;
        a.sx[c * d + i] = s1 + a.nk[c] * ci;
      }
  if (a.cov == 0)  // mirror the upper half
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < i; ++j) a.sxx[c * d * d + i * d + j] = a.sxx[c * d * d + j * d + i];
}

}  // namespace ge
