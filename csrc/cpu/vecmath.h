// Vector math in double precision for the classical-model kernels (naive_bayes.cpp, mixture.cpp):
// 4-lane double vectors (GCC vector types: one AVX register in the AVX2 clone, two SSE registers
// in the baseline one), loads that widen float32 to double, and exp / log-sum-exp without libm
// calls, so the per-row passes over (samples x classes) vectorise.
//
// exp: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial of degree 12 (truncation
// 1.6e-16 relative), 2^k assembled in the exponent bits. Inputs below -708 give exactly 0 (the
// callers only exponentiate log-probabilities minus their maximum, i.e. values <= 0).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#define GE_VM_INLINE inline __attribute__((always_inline))

namespace ge {
namespace vm {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // v4d values only cross always-inlined calls
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

GE_VM_INLINE v4d load4(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GE_VM_INLINE v4d load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, v4d);
}
GE_VM_INLINE void store4(double* p, v4d v) { std::memcpy(p, &v, sizeof v); }
GE_VM_INLINE void store4(float* p, v4d v) {
  const v4f f = __builtin_convertvector(v, v4f);
  std::memcpy(p, &f, sizeof f);
}
// {v, v, v, v}, not v4d{} + v: adding 0.0 is no identity for -0.0, so the compiler keeps an add (an FP
// uop) before every broadcast
GE_VM_INLINE v4d splat(double v) { return v4d{v, v, v, v}; }
GE_VM_INLINE double hsum(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }
GE_VM_INLINE double hmax(v4d v) {
  const double a = v[0] > v[1] ? v[0] : v[1], b = v[2] > v[3] ? v[2] : v[3];
  return a > b ? a : b;
}
GE_VM_INLINE v4d vmax(v4d a, v4d b) { return a > b ? a : b; }

GE_VM_INLINE v4d vexp(v4d x) {
  const v4l tiny = (v4l)(x < -708.0);
  x = x < -708.0 ? splat(-708.0) : x;
  x = x > 709.0 ? splat(709.0) : x;
  const v4d shifter = splat(6755399441055744.0);  // 1.5 * 2^52: adding it rounds to an integer
  const v4d kf = x * 1.4426950408889634 + shifter;
  const v4d k = kf - shifter;
  v4d r = x - k * 0.693147180369123816490;  // ln 2 in two parts: k * hi is exact
  r = r - k * 1.90821492927058770002e-10;
  v4d p = splat(1.0 / 479001600.0);
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const v4l scale = (((v4l)kf - (v4l)shifter) + 1023) << 52;
  return (v4d)((v4l)(p * (v4d)scale) & ~tiny);
}

GE_VM_INLINE double exp1(double x) { return vexp(splat(x))[0]; }

#pragma GCC diagnostic pop

}  // namespace vm
}  // namespace ge
