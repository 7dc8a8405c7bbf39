// Counter-based random numbers shared by the C++ (CPU) and CUDA kernels.
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Stream layout, identical in kernels/rng.py (the Triton twin) and genengine/reference/rng.py:
//   key     = (seed_lo, seed_hi)
//   counter = (block_lo, block_hi, offset_lo, offset_hi)
// Block `b` yields four uint32 words, i.e. random values 4b .. 4b+3 of the stream (seed, offset).
//
// Uniforms: u = (2 * (w >> 9) + 1) * 2^-24, an odd multiple of 2^-24 in (0, 1), exact in float32.
// Normals (Box-Muller on the word pairs (w0, w1) and (w2, w3)):
//   r = sqrt(-2 ln u(w0)),  z0 = r * cos(2 pi u(w1)),  z1 = r * sin(2 pi u(w1))
// with ln, sin and cos evaluated by the fixed float32 polynomials below (no libm), so that every
// backend computes the same float32 operations in the same order. Build with -ffp-contract=off (and
// Triton does not contract under the interpreter) to keep the CPU results bit-identical across
// instruction sets.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define GE_HD __host__ __device__ __forceinline__
#define GE_SQRTF(v) sqrtf(v)
#else
#define GE_HD inline __attribute__((always_inline))
#define GE_SQRTF(v) __builtin_sqrtf(v)
#endif

namespace ge {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

struct PhiloxKey {
  uint32_t k0, k1;    // seed
  uint32_t o0, o1;    // offset (counter words 2 and 3)
};

GE_HD PhiloxKey make_philox_key(uint64_t seed, uint64_t offset) {
  return PhiloxKey{uint32_t(seed), uint32_t(seed >> 32), uint32_t(offset), uint32_t(offset >> 32)};
}


// Four 32-bit words for counter (c0, c1, c2, c3) under key (k0, k1).
GE_HD void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1, uint32_t out[4]) {
#if defined(__CUDACC__)
#pragma unroll
#else
#pragma GCC unroll 10
#endif
  for (int round = 0; round < 10; ++round) {
    // one widening multiply gives both halves (a single IMAD.WIDE on the GPU, vpmuludq on AVX2)
    const uint64_t p0 = uint64_t(kPhiloxM0) * c0, p1 = uint64_t(kPhiloxM1) * c2;
    const uint32_t lo0 = uint32_t(p0), hi0 = uint32_t(p0 >> 32);
    const uint32_t lo1 = uint32_t(p1), hi1 = uint32_t(p1 >> 32);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += kPhiloxW0; k1 += kPhiloxW1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

GE_HD void philox_block(const PhiloxKey& key, uint64_t block, uint32_t out[4]) {
  philox4x32_10(uint32_t(block), uint32_t(block >> 32), key.o0, key.o1, key.k0, key.k1, out);
}

GE_HD float u32_to_uniform(uint32_t w) {
  return float(int32_t(((w >> 9) << 1) | 1u)) * 5.9604644775390625e-08f;  // * 2^-24
}

// __CUDA_ARCH__, not __CUDACC__: nvcc also compiles these helpers for the host, where the
// intrinsics do not exist.
GE_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f; __builtin_memcpy(&f, &b, 4); return f;
#endif
}
GE_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b; __builtin_memcpy(&b, &f, 4); return b;
#endif
}

// -2 ln(u) for u = u32_to_uniform(w) > 0. Cephes-style range reduction to m in [sqrt(1/2), sqrt(2))
// and a degree-9 minimax polynomial for ln(1 + x).
GE_HD float minus_two_log_uniform(uint32_t w) {
  const uint32_t bits = float_to_bits(u32_to_uniform(w));
  // m > sqrt(2) exactly when the mantissa bits exceed those of sqrt(2) (0x3504F3): then halve m
  const uint32_t big = (bits & 0x007FFFFFu) > 0x003504F3u ? 1u : 0u;
  const int32_t e = int32_t(bits >> 23) - 127 + int32_t(big);
  const float m = bits_to_float((bits & 0x007FFFFFu) | (0x3F800000u - (big << 23)));
  const float x = m - 1.0f;
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = p * x + -1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x + -1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x + -1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x + -2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  const float fe = float(e);
  float y = x * z * p;
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  const float ln = (x + y) + fe * 0.693359375f;
  return -2.0f * ln;
}

// sin and cos of 2 pi u(w): the quadrant comes from the integer bits, the rest is a polynomial on
// [-pi/4, pi/4].
GE_HD void sincos_two_pi_uniform(uint32_t w, float* s, float* c) {
  const int32_t k2 = int32_t(((w >> 9) << 1) | 1u);          // u = k2 * 2^-24
  const int32_t q = ((k2 + (1 << 21)) >> 22);                 // nearest quarter turn, 0..4
  const int32_t rem = k2 - (q << 22);                         // in [-2^21, 2^21]
  const float a = float(rem) * 3.7450702829e-07f;                // * 2 pi * 2^-24
  const float a2 = a * a;
  float sp = -1.9515295891e-4f;
  sp = sp * a2 + 8.3321608736e-3f;
  sp = sp * a2 + -1.6666654611e-1f;
  const float sin_a = a + a * a2 * sp;
  float cp = 2.443315711809948e-5f;
  cp = cp * a2 + -1.388731625493765e-3f;
  cp = cp * a2 + 4.166664568298827e-2f;
  const float cos_a = (1.0f - 0.5f * a2) + a2 * a2 * cp;
  // rotate by q quarter turns with integer selects (branch-free, so the loops vectorise):
  // q odd swaps sin and cos; sin is negated for q = 2, 3 and cos for q = 1, 2
  const uint32_t swap = 0u - uint32_t(q & 1);
  const uint32_t sb = float_to_bits(sin_a), cb = float_to_bits(cos_a);
  const uint32_t s0 = (sb & ~swap) | (cb & swap);
  const uint32_t c0 = (cb & ~swap) | (sb & swap);
  *s = bits_to_float(s0 ^ (uint32_t(q & 2) << 30));
  *c = bits_to_float(c0 ^ (uint32_t((q + 1) & 2) << 30));
}

// Two standard normals from two words.
GE_HD void box_muller(uint32_t w0, uint32_t w1, float* z0, float* z1) {
  const float r = GE_SQRTF(minus_two_log_uniform(w0));
  float s, c;
  sincos_two_pi_uniform(w1, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

}  // namespace ge
