// Helpers shared by the CPU kernels: dtype codes and conversions, runtime ISA dispatch, and the
// entry points of the Philox generator (rng.cpp).
#pragma once
#include <cstdint>
#include <cstring>

#include "../common/philox.h"

// Hot loops are compiled twice, for baseline x86-64 and for Haswell-class CPUs (AVX2, FMA, F16C),
// and the loader picks one at run time (GCC function multiversioning): the default build runs on
// any x86-64 machine. With GENENGINE_NATIVE=1 the whole module is built for the build machine.
// Usage: GE_MULTIVERSIONED((void f(int a, int b)), { body })
#define GE_STRIP(...) __VA_ARGS__
#if defined(__x86_64__) && !defined(GE_NATIVE) && defined(__GNUC__) && !defined(__clang__)
#define GE_MULTIVERSIONED(decl, ...)                                  \
  __attribute__((target("default"))) GE_STRIP decl __VA_ARGS__       \
  __attribute__((target("avx2,fma,f16c"))) GE_STRIP decl __VA_ARGS__
#else
#define GE_MULTIVERSIONED(decl, ...) GE_STRIP decl __VA_ARGS__
#endif

namespace ge {

enum DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Scalar conversions written with integer and float32 operations only (no _Float16, which GCC
// lowers to a library call per element), so the loops over them vectorise in either clone.
struct BF16 { uint16_t bits; };
struct F16 { uint16_t bits; };

inline float bits_as_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t float_as_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float to_float(float v) { return v; }
inline float to_float(BF16 v) { return bits_as_float(uint32_t(v.bits) << 16); }
inline float to_float(F16 v) {
  const uint32_t h = v.bits, em = h & 0x7FFFu;
  // exponent and mantissa moved into float position, rebiased by 2^112 (exact, subnormals too)
  const uint32_t scaled = float_as_bits(bits_as_float(em << 13) * 5.192296858534828e+33f);
  const uint32_t inf_nan = 0x7F800000u & (0u - uint32_t(em >= 0x7C00u));  // masks, not branches
  return bits_as_float(scaled | inf_nan | ((h & 0x8000u) << 16));
}

template <typename T> inline T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline BF16 from_float<BF16>(float v) {
  const uint32_t b = float_as_bits(v);
  // round to nearest even; NaN stays NaN (quiet bit forced)
  const bool nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  return BF16{uint16_t(nan ? ((b >> 16) | 0x40u) : rounded)};
}
template <> inline F16 from_float<F16>(float v) {
  // round to nearest even (as the F16C instruction and torch do); overflow to inf, NaN to a quiet NaN
  const uint32_t b = float_as_bits(v), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
  // |v| < 2^-14: the float add aligns the mantissa to the f16 subnormal grid and rounds (RNE)
  const uint32_t sub = float_as_bits(bits_as_float(a) + 0.5f) - 0x3F000000u;
  // normal range: rebias the exponent and round the 13 dropped bits to nearest even
  const uint32_t norm = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;  // 0xC8000000 = (15 - 127) << 23
  const uint32_t big = 0x7C00u | (0x0200u & (0u - uint32_t(a > 0x7F800000u)));  // inf, or NaN
  // select with masks: GCC leaves a nested ?: as control flow and then does not vectorise
  const uint32_t is_big = 0u - uint32_t(a >= 0x47800000u), is_sub = 0u - uint32_t(a < 0x38800000u);
  const uint32_t h = (big & is_big) | (sub & is_sub & ~is_big) | (norm & ~(is_sub | is_big));
  return F16{uint16_t(h | sign)};
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GE_HAVE_PHILOX_AVX2 1
#define GE_HAVE_PHILOX_AVX512 1
// Philox words of blocks [block0, block0 + n_blocks), n_blocks a multiple of 8, with AVX2 (the
// compiler's own vectorisation of philox4x32_10 runs at half this speed): rng.cpp.
void philox_words_avx2(const PhiloxKey& key, uint64_t block0, int n_blocks, uint32_t* w0, uint32_t* w1,
                       uint32_t* w2, uint32_t* w3);
extern const bool g_cpu_has_avx2;  // the AVX2 Philox is in use (g_cpu_isa >= kIsaAvx2)
#endif

// The instruction set of the Philox generator (words, uniforms, normals), chosen once at load time:
// the best the CPU supports, or the one named by GENENGINE_CPU_ISA=baseline|avx2|avx512 (capped at
// what the CPU supports). Every path gives bit-identical words, uniforms and normals, so the variable
// only exists to test and time them. It also picks the AVX-512 diagonal / spherical GMM E-step
// (mixture_avx512.cpp; below avx512, the multiversioned one), whose results agree with the other to
// rounding. It does not steer the multiversioned loops (GE_MULTIVERSIONED), which GCC's loader picks
// from the CPU alone; their arithmetic does not depend on the clone either.
enum CpuIsa : int { kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };
extern const int g_cpu_isa;
const char* philox_isa_report();  // e.g. "avx512 (auto)", "avx2 (GENENGINE_CPU_ISA=avx2)"

// Values [first, first + n) of the Philox stream `key` into out: kind 0 = uint32 words, 1 = float
// uniforms, 2 = float normals. `first` need not be a multiple of 4 (a block): rng.cpp.
void philox_values(int kind, const PhiloxKey& key, uint64_t first, int64_t n, void* out);
// philox_fill from stream position `start` (philox_fill is start = 0): rng.cpp.
void philox_fill_at(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset, uint64_t start);

// Normals number [4 * block0, 4 * (block0 + n_blocks)) of the stream `key`, written to z.
inline void philox_normals(const PhiloxKey& key, uint64_t block0, int n_blocks, float* __restrict z) {
  philox_values(2, key, 4 * block0, 4 * int64_t(n_blocks), z);
}

constexpr int kNormalBatch = 256;  // elements per batch of philox_normals (64 blocks)

}  // namespace ge
