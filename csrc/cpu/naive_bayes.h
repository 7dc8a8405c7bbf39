// CPU kernels of the naive-Bayes families (naive_bayes.cpp).
#pragma once
#include <cstdint>

namespace ge {

// Joint log-likelihood of every (sample, class) in one pass, with the row normalisation fused:
//   kind 0 (Gaussian):  jll[n,c] = cst[c] - 0.5 * sum_f (x[n,f] - p0[c,f])^2 * p1[c,f]   (p1 = 1 / var)
//   kind 1 (Bernoulli): jll[n,c] = cst[c] + sum_f b(x[n,f]) * p0[c,f]  (p0 = log p - log(1 - p);
//                       b(v) = v > threshold, or v itself when use_threshold is false)
//   kind 2 (given):     jll is read from out (e.g. a multinomial's matmul) and only normalised
// mode: 0 writes jll, 1 writes jll - lse (log posterior), 2 writes exp(jll - lse) (posterior);
// lse[n] = log sum_c exp(jll[n,c]) when lse is not null. x, out, lse: `dtype` (0 float32,
// 3 float64); x (n, f) contiguous, out (n, c); p0, p1 (c, f) and cst (c) are float64.
struct NBArgs {
  int kind = 0, mode = 0, dtype = 3;
  int64_t n = 0, f = 0, c = 0;
  const void* x = nullptr;
  const double* p0 = nullptr;
  const double* p1 = nullptr;
  const double* cst = nullptr;
  bool use_threshold = false;
  double threshold = 0.0;
  void* out = nullptr;
  void* lse = nullptr;
};
void nb_joint_log_likelihood(const NBArgs& a);

// Per-class sufficient statistics in one pass over the rows, partial sums reduced in a fixed
// order (deterministic for any thread count). y: int64 class indices in [0, c) (checked by the
// caller); w: float64 sample weights or null (1). count[c] += sum w; center null: out[c,f] += sum w x;
// center (c, f) given: out[c,f] += sum w (x - center[c,f])^2. x: `dtype` (n, f).
void nb_class_stats(int dtype, int64_t n, int64_t f, int64_t c, const void* x, const int64_t* y, const double* w,
                    const double* center, double* count, double* out);

// Label helpers, single-threaded (a pass over n int64 labels is ~0.1 ms; torch's multi-threaded
// reductions wait for their slowest thread, which on a busy 2-core machine costs 10-50 ms each):
// the range [lo, hi] of y; `present` (span = hi - lo + 1 flags) marks the labels seen; encode maps
// y to lut[y - lo] (lut: span entries, -1 for labels that are not classes) and returns the index
// of the first label that is not a class (or out of [lo, lo + span)), or -1.
void nb_label_range(int64_t n, const int64_t* y, int64_t* lo, int64_t* hi);
void nb_label_present(int64_t n, const int64_t* y, int64_t lo, int64_t span, uint8_t* present);
int64_t nb_label_encode(int64_t n, const int64_t* y, int64_t lo, int64_t span, const int64_t* lut, int64_t* idx);

}  // namespace ge
