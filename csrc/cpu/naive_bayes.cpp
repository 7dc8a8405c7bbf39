// Naive-Bayes kernels on the CPU: the fused joint log-likelihood over all classes (Gaussian and
// Bernoulli; the multinomial's is a matmul and only its normalisation runs here) and the per-class
// sufficient statistics of fit.
//
// Shapes: x (n, f) row-major, classes c; see naive_bayes.h for the formulas.
//
// Floor: one read of x and one write of the (n, c) output; the arithmetic is 3 flops per (row,
// class, feature) for the Gaussian (subtract, multiply-add), 1-2 for the Bernoulli. A row's
// features are 4-lane vectors against the class's parameter row (both in L1: c * f * 16 bytes =
// 10 KB at 10 x 64), two accumulators per class to hide the add latency. Rows are split into
// chunks over the threads. Everything is computed in double, float32 inputs widened on load.
#include "naive_bayes.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"
#include "vecmath.h"

// reductions are checked against float64 references with tolerances; fused multiply-adds are fine
#pragma GCC optimize("fp-contract=fast")
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ge {
namespace {

using vm::v4d;

constexpr int64_t kRowsPerChunk = 1024;

template <typename T>
GE_VM_INLINE double gauss_row(const T* x, const double* th, const double* iv, int64_t f) {
  v4d a0 = v4d{}, a1 = v4d{};
  int64_t j = 0;
  for (; j + 8 <= f; j += 8) {
    const v4d d0 = vm::load4(x + j) - vm::load4(th + j);
    const v4d d1 = vm::load4(x + j + 4) - vm::load4(th + j + 4);
    a0 += d0 * d0 * vm::load4(iv + j);
    a1 += d1 * d1 * vm::load4(iv + j + 4);
  }
  for (; j + 4 <= f; j += 4) {
    const v4d d0 = vm::load4(x + j) - vm::load4(th + j);
    a0 += d0 * d0 * vm::load4(iv + j);
  }
  double s = vm::hsum(a0 + a1);
  for (; j < f; ++j) {
    const double d = double(x[j]) - th[j];
    s += d * d * iv[j];
  }
  return s;
}

// two rows against one class: the class's (theta, 1/var) vectors are loaded once for both rows
template <typename T>
GE_VM_INLINE void gauss_row2(const T* x0, const T* x1, const double* th, const double* iv, int64_t f, double* s0,
                             double* s1) {
  v4d a0 = v4d{}, a1 = v4d{}, b0 = v4d{}, b1 = v4d{};
  int64_t j = 0;
  for (; j + 8 <= f; j += 8) {
    const v4d t0 = vm::load4(th + j), t1 = vm::load4(th + j + 4);
    const v4d i0 = vm::load4(iv + j), i1 = vm::load4(iv + j + 4);
    const v4d d0 = vm::load4(x0 + j) - t0, d1 = vm::load4(x0 + j + 4) - t1;
    const v4d e0 = vm::load4(x1 + j) - t0, e1 = vm::load4(x1 + j + 4) - t1;
    a0 += d0 * d0 * i0;
    a1 += d1 * d1 * i1;
    b0 += e0 * e0 * i0;
    b1 += e1 * e1 * i1;
  }
  for (; j + 4 <= f; j += 4) {
    const v4d t0 = vm::load4(th + j), i0 = vm::load4(iv + j);
    const v4d d0 = vm::load4(x0 + j) - t0, e0 = vm::load4(x1 + j) - t0;
    a0 += d0 * d0 * i0;
    b0 += e0 * e0 * i0;
  }
  double u = vm::hsum(a0 + a1), v = vm::hsum(b0 + b1);
  for (; j < f; ++j) {
    const double d = double(x0[j]) - th[j], e = double(x1[j]) - th[j];
    u += d * d * iv[j];
    v += e * e * iv[j];
  }
  *s0 = u;
  *s1 = v;
}

GE_VM_INLINE double dot_row(const double* b, const double* w, int64_t f) {
  v4d a0 = v4d{}, a1 = v4d{};
  int64_t j = 0;
  for (; j + 8 <= f; j += 8) {
    a0 += vm::load4(b + j) * vm::load4(w + j);
    a1 += vm::load4(b + j + 4) * vm::load4(w + j + 4);
  }
  for (; j + 4 <= f; j += 4) a0 += vm::load4(b + j) * vm::load4(w + j);
  double s = vm::hsum(a0 + a1);
  for (; j < f; ++j) s += b[j] * w[j];
  return s;
}

// row (c values, padded to a multiple of 4 with -inf in buf) -> out per mode, returns lse
template <typename T>
GE_VM_INLINE double finish_row(double* buf, int64_t c, int mode, T* out) {
  const int64_t cp = (c + 3) & ~int64_t(3);
  v4d m = vm::splat(-std::numeric_limits<double>::infinity());
  for (int64_t j = 0; j < cp; j += 4) m = vm::vmax(m, vm::load4(buf + j));
  const double mx = vm::hmax(m);
  double lse = mx;
  if (std::isfinite(mx)) {
    v4d s = v4d{};
    for (int64_t j = 0; j < cp; j += 4) s += vm::vexp(vm::load4(buf + j) - mx);
    lse = mx + std::log(vm::hsum(s));
  }
  if (mode == 0) {
    for (int64_t j = 0; j < c; ++j) out[j] = T(buf[j]);
  } else if (mode == 1) {
    for (int64_t j = 0; j < c; ++j) out[j] = T(buf[j] - lse);
  } else {
    for (int64_t j = 0; j < cp; j += 4) vm::store4(buf + j, vm::vexp(vm::load4(buf + j) - lse));
    for (int64_t j = 0; j < c; ++j) out[j] = T(buf[j]);
    for (int64_t j = c; j < cp; ++j) buf[j] = -std::numeric_limits<double>::infinity();  // the next row's padding
  }
  return lse;
}

// always inlined into the multiversioned entry points below, so each clone gets its own ISA
template <typename T>
GE_VM_INLINE void jll_chunk(const NBArgs& a, int64_t r0, int64_t r1) {
  const int64_t f = a.f, c = a.c, cp = (c + 3) & ~int64_t(3);
  std::vector<double> buf(cp + 4), buf2(cp + 4), bin(a.kind == 1 ? f + 4 : 0);
  for (int64_t j = c; j < cp; ++j) buf[j] = buf2[j] = -std::numeric_limits<double>::infinity();
  const T* x = static_cast<const T*>(a.x);
  T* out = static_cast<T*>(a.out);
  T* lse = static_cast<T*>(a.lse);
  int64_t r = r0;
  if (a.kind == 0) {  // Gaussian: rows in pairs
    for (; r + 2 <= r1; r += 2) {
      const T* xr = x + r * f;
      for (int64_t k = 0; k < c; ++k) {
        double s0, s1;
        gauss_row2(xr, xr + f, a.p0 + k * f, a.p1 + k * f, f, &s0, &s1);
        buf[k] = a.cst[k] - 0.5 * s0;
        buf2[k] = a.cst[k] - 0.5 * s1;
      }
      const double l0 = finish_row(buf.data(), c, a.mode, out + r * c);
      const double l1 = finish_row(buf2.data(), c, a.mode, out + (r + 1) * c);
      if (lse) {
        lse[r] = T(l0);
        lse[r + 1] = T(l1);
      }
    }
  }
  for (; r < r1; ++r) {
    const T* xr = x + r * f;
    T* orow = out + r * c;
    if (a.kind == 0) {
      for (int64_t k = 0; k < c; ++k) buf[k] = a.cst[k] - 0.5 * gauss_row(xr, a.p0 + k * f, a.p1 + k * f, f);
    } else if (a.kind == 1) {
      if (a.use_threshold) {
        for (int64_t j = 0; j < f; ++j) bin[j] = double(xr[j]) > a.threshold ? 1.0 : 0.0;
      } else {
        for (int64_t j = 0; j < f; ++j) bin[j] = double(xr[j]);
      }
      for (int64_t k = 0; k < c; ++k) buf[k] = a.cst[k] + dot_row(bin.data(), a.p0 + k * f, f);
    } else {
      for (int64_t k = 0; k < c; ++k) buf[k] = double(orow[k]);
    }
    const double l = finish_row(buf.data(), c, a.mode, orow);
    if (lse) lse[r] = T(l);
  }
}

GE_MULTIVERSIONED((void jll_run_f64(const NBArgs& a, int64_t r0, int64_t r1)), { jll_chunk<double>(a, r0, r1); })
GE_MULTIVERSIONED((void jll_run_f32(const NBArgs& a, int64_t r0, int64_t r1)), { jll_chunk<float>(a, r0, r1); })

template <typename T>
GE_VM_INLINE void stats_chunk(int64_t r0, int64_t r1, int64_t f, const T* x, const int64_t* y, const double* w, const double* center,
                 double* count, double* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t k = y[r];
    const double wr = w ? w[r] : 1.0;
    const T* xr = x + r * f;
    double* o = out + k * f;
    int64_t j = 0;
    count[k] += wr;  // the per-class weight sum, with or without a center (as the reference returns it)
    if (center) {
      const double* m = center + k * f;
      for (; j + 4 <= f; j += 4) {
        const v4d d = vm::load4(xr + j) - vm::load4(m + j);
        vm::store4(o + j, vm::load4(o + j) + wr * d * d);
      }
      for (; j < f; ++j) {
        const double d = double(xr[j]) - m[j];
        o[j] += wr * d * d;
      }
    } else {
      for (; j + 4 <= f; j += 4) vm::store4(o + j, vm::load4(o + j) + wr * vm::load4(xr + j));
      for (; j < f; ++j) o[j] += wr * double(xr[j]);
    }
  }
}

GE_MULTIVERSIONED((void stats_run_f64(int64_t r0, int64_t r1, int64_t f, const double* x, const int64_t* y, const double* w,
                                      const double* center, double* count, double* out)),
                  { stats_chunk<double>(r0, r1, f, x, y, w, center, count, out); })
GE_MULTIVERSIONED((void stats_run_f32(int64_t r0, int64_t r1, int64_t f, const float* x, const int64_t* y, const double* w,
                                      const double* center, double* count, double* out)),
                  { stats_chunk<float>(r0, r1, f, x, y, w, center, count, out); })

}  // namespace

void nb_joint_log_likelihood(const NBArgs& a) {
  if (a.n <= 0 || a.c <= 0) return;
  const int64_t chunks = (a.n + kRowsPerChunk - 1) / kRowsPerChunk;
  parallel_chunks(chunks, [&](int64_t i) {
    const int64_t r0 = i * kRowsPerChunk, r1 = std::min(a.n, r0 + kRowsPerChunk);
    if (a.dtype == 3) jll_run_f64(a, r0, r1);
    else jll_run_f32(a, r0, r1);
  });
}

void nb_class_stats(int dtype, int64_t n, int64_t f, int64_t c, const void* x, const int64_t* y, const double* w,
                    const double* center, double* count, double* out) {
  if (n <= 0) return;
  // fixed chunks, each with its own partial sums, added in chunk order: the result does not depend
  // on which thread ran which chunk
  const int64_t rows = std::max<int64_t>(4096, (n + 63) / 64);
  const int64_t chunks = (n + rows - 1) / rows;
  std::vector<double> part(size_t(chunks) * size_t(c) * size_t(f + 1), 0.0);
  parallel_chunks(chunks, [&](int64_t i) {
    const int64_t r0 = i * rows, r1 = std::min(n, r0 + rows);
    double* pc = part.data() + size_t(i) * size_t(c) * size_t(f + 1);
    double* po = pc + c;
    if (dtype == 3) stats_run_f64(r0, r1, f, static_cast<const double*>(x), y, w, center, pc, po);
    else stats_run_f32(r0, r1, f, static_cast<const float*>(x), y, w, center, pc, po);
  });
  for (int64_t i = 0; i < chunks; ++i) {
    const double* pc = part.data() + size_t(i) * size_t(c) * size_t(f + 1);
    const double* po = pc + c;
    for (int64_t k = 0; k < c; ++k) count[k] += pc[k];
    for (int64_t j = 0; j < c * f; ++j) out[j] += po[j];
  }
}

void nb_label_range(int64_t n, const int64_t* y, int64_t* lo, int64_t* hi) {
  int64_t a = n ? y[0] : 0, b = a;
  for (int64_t i = 0; i < n; ++i) {
    a = std::min(a, y[i]);
    b = std::max(b, y[i]);
  }
  *lo = a;
  *hi = b;
}

void nb_label_present(int64_t n, const int64_t* y, int64_t lo, int64_t span, uint8_t* present) {
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t j = uint64_t(y[i] - lo);
    if (j < uint64_t(span)) present[j] = 1;
  }
}

int64_t nb_label_encode(int64_t n, const int64_t* y, int64_t lo, int64_t span, const int64_t* lut, int64_t* idx) {
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t j = uint64_t(y[i] - lo);
    const int64_t v = j < uint64_t(span) ? lut[j] : -1;
    if (v < 0) return i;
    idx[i] = v;
  }
  return -1;
}

}  // namespace ge
