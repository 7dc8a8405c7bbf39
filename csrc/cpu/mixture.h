// CPU kernel of the Gaussian-mixture E-step with the M-step's sufficient statistics (mixture.cpp).
#pragma once
#include <cstdint>

namespace ge {

// One pass over x (n, d) row-major (`dtype`: 0 float32, 3 float64; math in float64) for k components:
//   log p_k(x) + log w_k = cst[k] - 1/2 m_k(x),  m_k = squared Mahalanobis distance, by cov:
//     0 full:      m_k = |x^T U_k - b_k|^2,  U_k = prec[k] (d, d) upper-triangular Cholesky factor of the
//                  precision (scikit-learn's precisions_cholesky_), b_k = mu_k^T U_k
//     1 tied:      the same with one U = prec (d, d) for every component
//     2 diag:      m_k = sum_i (x_i - b[k, i])^2 prec[k, i]    (b = means, prec = precisions = 1 / var)
//     3 spherical: m_k = prec[k] sum_i (x_i - b[k, i])^2
//   log_norm[n] = log sum_k exp(...) (x's dtype; null: not written)
//   resp (n, k) (x's dtype): resp_mode 1 responsibilities, 2 log responsibilities, 0 not written
//   statistics (float64, null: not computed): nk[k] = sum_n r, sx (k, d) = sum_n r x,
//   sxx: full (k, d, d) = sum_n r x x^T (symmetric, both halves written); diag / spherical (k, d) =
//   sum_n r x*x; tied: not used (the M-step needs only X^T X, which does not depend on r).
// shift (d) or null: every row is taken as x - shift (the statistics are those of x - shift, and
// b / means must be given shifted too); fitting shifts by the data mean, so the one-pass second
// moments do not lose digits to the data's offset.
// Statistics are summed per fixed chunk of rows and the chunks added in order: deterministic.
struct GmmArgs {
  int cov = 0, dtype = 3, resp_mode = 0;
  int64_t n = 0, d = 0, k = 0;
  const void* x = nullptr;
  const double* shift = nullptr;
  const double* prec = nullptr;
  const double* b = nullptr;
  const double* cst = nullptr;
  void* log_norm = nullptr;
  double* ll_sum = nullptr;  // sum_n log_norm[n] (float64), or null
  void* resp = nullptr;
  double* nk = nullptr;
  double* sx = nullptr;
  double* sxx = nullptr;
};
void gmm_e_step(const GmmArgs& a);

// The diag / spherical E-step in AVX-512 (mixture_avx512.cpp), for rows [r0, r1) of a chunk: adds the
// chunk's statistics (of x - centre) to st = [nk (k), sx (k, d), sxx (k, d)] and sum_n log_norm to *ll.
// Coefficients of the expanded form lp[n][c] = q[c] + sum_i (x_i - centre_i)^2 A[i][c] + (x_i - centre_i) B[i][c],
// components padded to kp (a multiple of 8) with A = B = 0 and q = -inf.
struct GmmDiagPlan {
  int64_t kp = 0;
  const double* A = nullptr;       // (d, kp)
  const double* B = nullptr;       // (d, kp)
  const double* q = nullptr;       // (kp)
  const double* centre = nullptr;  // (d)
};
bool gmm_diag_avx512_available();  // compiled in (x86-64 GCC); the caller also checks the CPU
// the diag / spherical E-step runs mixture_avx512.cpp: compiled in, the CPU has AVX-512 F + VL, and
// GENENGINE_CPU_ISA (cpu_common.h) does not ask for less
bool gmm_diag_uses_avx512();
void gmm_diag_chunk_avx512(const GmmArgs& a, const GmmDiagPlan& p, int64_t r0, int64_t r1, double* st, double* ll);

}  // namespace ge
