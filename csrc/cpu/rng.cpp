// CPU kernels that expose the Philox stream itself (raw words, uniforms, normals): the ground truth
// the tests compare the Triton and CUDA twins against, `ge.ops.philox_normal` for users, and the
// noise of the stochastic sampler steps (philox_values, called by diffusion.cpp).
//
// Three paths, chosen once at load time (g_cpu_isa, see cpu_common.h for GENENGINE_CPU_ISA):
//   baseline  scalar Philox, Box-Muller as the compiler vectorises it for x86-64 (SSE2)
//   avx2      8-lane Philox intrinsics, Box-Muller as the compiler vectorises it for AVX2
//   avx512    16 blocks in registers from counter to stored value: Philox, uniforms or Box-Muller,
//             and the transpose to the stream's interleaved order, with masked stores at the ends
// All compute the float32 operations of common/philox.h in the same order without FMA (the build
// uses -ffp-contract=off, which also keeps GCC from fusing the intrinsics' mul + add), so words,
// uniforms and normals are bit-identical on every path.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu_common.h"
#include "parallel.h"

#ifdef GE_HAVE_PHILOX_AVX2
#include <immintrin.h>
#endif

namespace ge {

namespace {
std::string g_isa_report;

int choose_isa() {
  int best = kIsaBaseline;
#ifdef GE_HAVE_PHILOX_AVX2
  if (__builtin_cpu_supports("avx2")) best = kIsaAvx2;
  if (__builtin_cpu_supports("avx512f")) best = kIsaAvx512;  // (also checks the OS saves zmm state)
#endif
  static const char* const names[] = {"baseline", "avx2", "avx512"};
  const char* env = std::getenv("GENENGINE_CPU_ISA");
  int isa = best;
  std::string why = "auto";
  if (env && *env && std::strcmp(env, "auto") != 0) {
    int want = -1;
    for (int i = 0; i < 3; ++i) if (std::strcmp(env, names[i]) == 0) want = i;
    if (want < 0) {
      why = std::string("GENENGINE_CPU_ISA=") + env + " not understood (baseline|avx2|avx512|auto), auto";
    } else if (want > best) {
      why = std::string("GENENGINE_CPU_ISA=") + env + " not supported by this CPU";
    } else {
      isa = want;
      why = std::string("GENENGINE_CPU_ISA=") + env;
    }
  }
  g_isa_report = std::string(names[isa]) + " (" + why + ")";
  return isa;
}
}  // namespace

const int g_cpu_isa = choose_isa();
const char* philox_isa_report() { return g_isa_report.c_str(); }

#ifdef GE_HAVE_PHILOX_AVX2
const bool g_cpu_has_avx2 = g_cpu_isa >= kIsaAvx2;

// Eight blocks per iteration: _mm256_mul_epu32 multiplies the even 32-bit lanes into 64-bit
// products, so the odd lanes are shifted down for a second multiply and both halves are blended
// back into (lo, hi) vectors.
__attribute__((target("avx2"))) void philox_words_avx2(const PhiloxKey& key, uint64_t block0, int n_blocks,
                                                       uint32_t* w0, uint32_t* w1, uint32_t* w2, uint32_t* w3) {
  const __m256i m0 = _mm256_set1_epi32(int(kPhiloxM0)), m1 = _mm256_set1_epi32(int(kPhiloxM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(INT32_MIN);
  for (int j = 0; j < n_blocks; j += 8) {
    const uint64_t b = block0 + uint64_t(j);
    const __m256i lo = _mm256_set1_epi32(int(uint32_t(b)));
    __m256i c0 = _mm256_add_epi32(lo, lane);
    // the high counter word carries where the low word wrapped (unsigned compare via the sign flip)
    const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(lo, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int(uint32_t(b >> 32))), wrapped);
    __m256i c2 = _mm256_set1_epi32(int(key.o0)), c3 = _mm256_set1_epi32(int(key.o1));
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int round = 0; round < 10; ++round) {
      const __m256i pe0 = _mm256_mul_epu32(c0, m0), po0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i pe1 = _mm256_mul_epu32(c2, m1), po1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i lo0 = _mm256_blend_epi32(pe0, _mm256_slli_epi64(po0, 32), 0xAA);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(pe0, 32), po0, 0xAA);
      const __m256i lo1 = _mm256_blend_epi32(pe1, _mm256_slli_epi64(po1, 32), 0xAA);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(pe1, 32), po1, 0xAA);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(int(k0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(int(k1)));
      c1 = lo1;
      c3 = lo0;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + j), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + j), c3);
  }
}
#endif

namespace {

// ---- baseline and AVX2: words into L1 arrays, then a loop the compiler vectorises ---------------

// Values [first, first + n) through a batch of up to 64 blocks in L1; `avx2` picks the Philox.
inline __attribute__((always_inline)) void values_batched(bool avx2, int kind, const PhiloxKey& key, uint64_t first,
                                                          int64_t n, char* out) {
  constexpr int kMax = kNormalBatch / 4;
  alignas(32) uint32_t w0[kMax], w1[kMax], w2[kMax], w3[kMax];
  alignas(32) uint32_t v[kNormalBatch];  // the batch in stream order (word or float bits)
  while (n > 0) {
    const int lead = int(first & 3);
    const int len = int(std::min<int64_t>(kNormalBatch - lead, n));
    const uint64_t block0 = first >> 2;
    const int n_blocks = (lead + len + 3) / 4;
    const uint32_t lo0 = uint32_t(block0), hi0 = uint32_t(block0 >> 32);
    int done = 0;
#ifdef GE_HAVE_PHILOX_AVX2
    if (avx2 && n_blocks >= 8) {
      done = n_blocks & ~7;
      philox_words_avx2(key, block0, done, w0, w1, w2, w3);
    }
#else
    (void)avx2;
#endif
    for (int j = done; j < n_blocks; ++j) {
      const uint32_t lo = lo0 + uint32_t(j);
      const uint32_t hi = hi0 + (lo < lo0 ? 1u : 0u);
      uint32_t w[4];
      philox4x32_10(lo, hi, key.o0, key.o1, key.k0, key.k1, w);
      w0[j] = w[0]; w1[j] = w[1]; w2[j] = w[2]; w3[j] = w[3];
    }
    if (kind == 2) {
      float z0[kMax], z1[kMax], z2[kMax], z3[kMax];
      for (int j = 0; j < n_blocks; ++j) {
        box_muller(w0[j], w1[j], &z0[j], &z1[j]);
        box_muller(w2[j], w3[j], &z2[j], &z3[j]);
      }
      for (int j = 0; j < n_blocks; ++j) {
        v[4 * j] = float_to_bits(z0[j]); v[4 * j + 1] = float_to_bits(z1[j]);
        v[4 * j + 2] = float_to_bits(z2[j]); v[4 * j + 3] = float_to_bits(z3[j]);
      }
    } else if (kind == 1) {
      for (int j = 0; j < n_blocks; ++j) {
        v[4 * j] = float_to_bits(u32_to_uniform(w0[j])); v[4 * j + 1] = float_to_bits(u32_to_uniform(w1[j]));
        v[4 * j + 2] = float_to_bits(u32_to_uniform(w2[j])); v[4 * j + 3] = float_to_bits(u32_to_uniform(w3[j]));
      }
    } else {
      for (int j = 0; j < n_blocks; ++j) {
        v[4 * j] = w0[j]; v[4 * j + 1] = w1[j]; v[4 * j + 2] = w2[j]; v[4 * j + 3] = w3[j];
      }
    }
    std::memcpy(out, v + lead, size_t(len) * 4);
    out += size_t(len) * 4;
    first += uint64_t(len);
    n -= len;
  }
}

void values_baseline(int kind, const PhiloxKey& key, uint64_t first, int64_t n, char* out) {
  values_batched(false, kind, key, first, n, out);
}

#ifdef GE_HAVE_PHILOX_AVX2
__attribute__((target("avx2"))) void values_avx2(int kind, const PhiloxKey& key, uint64_t first, int64_t n,
                                                 char* out) {
  values_batched(true, kind, key, first, n, out);
}
#endif

// ---- AVX-512: sixteen blocks in registers ---------------------------------------------------------
// On Zen 4 a 512-bit op issues as two 256-bit halves, so the gain over AVX2 is fewer instructions,
// not wider ALUs: a Philox round is 12 instructions for 16 blocks (AVX2: 18 for 8) with no blends,
// three-way xors and bit selects are one vpternlogd, compares give masks that select directly, and
// the words go from registers to stream order with 8 two-source permutes instead of a pass through L1.
#ifdef GE_HAVE_PHILOX_AVX512
#pragma GCC push_options
#pragma GCC target("avx512f")
#pragma GCC diagnostic push
// GCC 12 flags the _mm512_undefined_* inside its own set1/cvt intrinsics (GCC PR 105593)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

struct Philox16 {
  __m512i m0, m1, lane, o0, o1;
  __m512i k0[10], k1[10];
  explicit Philox16(const PhiloxKey& key) {
    m0 = _mm512_set1_epi32(int(kPhiloxM0));
    m1 = _mm512_set1_epi32(int(kPhiloxM1));
    lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    o0 = _mm512_set1_epi32(int(key.o0));
    o1 = _mm512_set1_epi32(int(key.o1));
    uint32_t a = key.k0, b = key.k1;
    for (int r = 0; r < 10; ++r, a += kPhiloxW0, b += kPhiloxW1) {
      k0[r] = _mm512_set1_epi32(int(a));
      k1[r] = _mm512_set1_epi32(int(b));
    }
  }

  // The four words of blocks block .. block + 15, lane j of w[i] = word i of block + j.
  inline __attribute__((always_inline)) void blocks(uint64_t block, __m512i w[4]) const {
    const __m512i lo = _mm512_set1_epi32(int(uint32_t(block)));
    __m512i c0 = _mm512_add_epi32(lo, lane);
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, lo);  // the high word carries
    const __m512i hi = _mm512_set1_epi32(int(uint32_t(block >> 32)));
    __m512i c1 = _mm512_mask_add_epi32(hi, wrapped, hi, _mm512_set1_epi32(1));
    // The rounds run on even and odd blocks apart, one block per 64-bit lane with the word in its
    // low half: vpmuludq reads exactly that, its product leaves lo in place for the next round and
    // hi a shift away, and whatever the high halves hold is never read. No shuffles until the end.
    __m512i e0 = c0, e1 = c1, e2 = o0, e3 = o1;
    __m512i d0 = _mm512_srli_epi64(c0, 32), d1 = _mm512_srli_epi64(c1, 32), d2 = o0, d3 = o1;
#pragma GCC unroll 10
    for (int r = 0; r < 10; ++r) {
      const __m512i pe0 = _mm512_mul_epu32(e0, m0), pe1 = _mm512_mul_epu32(e2, m1);
      const __m512i pd0 = _mm512_mul_epu32(d0, m0), pd1 = _mm512_mul_epu32(d2, m1);
      e0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pe1, 32), e1, k0[r], 0x96);  // hi1 ^ c1 ^ k0
      e2 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pe0, 32), e3, k1[r], 0x96);
      d0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pd1, 32), d1, k0[r], 0x96);
      d2 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pd0, 32), d3, k1[r], 0x96);
      e1 = pe1; e3 = pe0; d1 = pd1; d3 = pd0;
    }
    // odd blocks' words back into the odd lanes
    c0 = _mm512_mask_shuffle_epi32(e0, 0xAAAA, d0, _MM_PERM_CCAA);
    c1 = _mm512_mask_shuffle_epi32(e1, 0xAAAA, d1, _MM_PERM_CCAA);
    __m512i c2 = _mm512_mask_shuffle_epi32(e2, 0xAAAA, d2, _MM_PERM_CCAA);
    __m512i c3 = _mm512_mask_shuffle_epi32(e3, 0xAAAA, d3, _MM_PERM_CCAA);
    w[0] = c0; w[1] = c1; w[2] = c2; w[3] = c3;
  }
};

// ((w >> 9) << 1) | 1, the odd integer k with u = k * 2^-24 (common/philox.h)
inline __attribute__((always_inline)) __m512i odd24(__m512i w) {
  return _mm512_or_si512(_mm512_srli_epi32(w, 8), _mm512_set1_epi32(1));
}

inline __attribute__((always_inline)) __m512 uniform16(__m512i w) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(odd24(w)), _mm512_set1_ps(5.9604644775390625e-08f));
}

// box_muller of common/philox.h on sixteen word pairs, operation for operation.
inline __attribute__((always_inline)) void box_muller16(__m512i wa, __m512i wb, __m512* z0, __m512* z1) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  // minus_two_log_uniform(wa)
  const __m512i bits = _mm512_castps_si512(uniform16(wa));
  const __m512i mant_mask = _mm512_set1_epi32(0x007FFFFF);
  const __mmask16 big = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, mant_mask), _mm512_set1_epi32(0x003504F3));
  __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127));
  e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
  const __m512i expo = _mm512_mask_blend_epi32(big, _mm512_set1_epi32(0x3F800000), _mm512_set1_epi32(0x3F000000));
  const __m512 m = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(bits, mant_mask, expo, 0xEA));  // (a & b) | c
  const __m512 x = _mm512_sub_ps(m, one);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(7.0376836292e-2f);
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(-1.1514610310e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(1.1676998740e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(-1.2420140846e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(1.4249322787e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(-1.6668057665e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(2.0000714765e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(-2.4999993993e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, x), _mm512_set1_ps(3.3333331174e-1f));
  const __m512 fe = _mm512_cvtepi32_ps(e);
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(x, z), p);
  y = _mm512_add_ps(y, _mm512_mul_ps(fe, _mm512_set1_ps(-2.12194440e-4f)));
  y = _mm512_sub_ps(y, _mm512_mul_ps(half, z));
  const __m512 ln = _mm512_add_ps(_mm512_add_ps(x, y), _mm512_mul_ps(fe, _mm512_set1_ps(0.693359375f)));
  const __m512 r = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), ln));
  // sincos_two_pi_uniform(wb)
  const __m512i k2 = odd24(wb);
  const __m512i q = _mm512_srli_epi32(_mm512_add_epi32(k2, _mm512_set1_epi32(1 << 21)), 22);
  const __m512i rem = _mm512_sub_epi32(k2, _mm512_slli_epi32(q, 22));
  const __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(rem), _mm512_set1_ps(3.7450702829e-07f));
  const __m512 a2 = _mm512_mul_ps(a, a);
  __m512 sp = _mm512_set1_ps(-1.9515295891e-4f);
  sp = _mm512_add_ps(_mm512_mul_ps(sp, a2), _mm512_set1_ps(8.3321608736e-3f));
  sp = _mm512_add_ps(_mm512_mul_ps(sp, a2), _mm512_set1_ps(-1.6666654611e-1f));
  const __m512 sin_a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_mul_ps(a, a2), sp));
  __m512 cp = _mm512_set1_ps(2.443315711809948e-5f);
  cp = _mm512_add_ps(_mm512_mul_ps(cp, a2), _mm512_set1_ps(-1.388731625493765e-3f));
  cp = _mm512_add_ps(_mm512_mul_ps(cp, a2), _mm512_set1_ps(4.166664568298827e-2f));
  const __m512 cos_a = _mm512_add_ps(_mm512_sub_ps(one, _mm512_mul_ps(half, a2)), _mm512_mul_ps(_mm512_mul_ps(a2, a2), cp));
  // q odd swaps sin and cos; the sign bits are (q & 2) << 30 for sin and ((q + 1) & 2) << 30 for cos,
  // and r > 0, so flipping the sign of the product is flipping the sign of the factor
  const __mmask16 swap = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
  const __m512 s0 = _mm512_mask_blend_ps(swap, sin_a, cos_a);
  const __m512 c0 = _mm512_mask_blend_ps(swap, cos_a, sin_a);
  const __m512i sign = _mm512_set1_epi32(INT32_MIN);
  const __m512i s_sign = _mm512_slli_epi32(q, 30);
  const __m512i c_sign = _mm512_slli_epi32(_mm512_add_epi32(q, _mm512_set1_epi32(1)), 30);
  *z0 = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(_mm512_mul_ps(r, c0)), c_sign, sign, 0x78));
  *z1 = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(_mm512_mul_ps(r, s0)), s_sign, sign, 0x78));
}

// Sixteen blocks as 64 values in stream order: v[k] = values 16k .. 16k + 15 (blocks 4k .. 4k + 3).
inline __attribute__((always_inline)) void interleave16(const __m512i w[4], __m512i v[4]) {
  const __m512i pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i quad_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  const __m512i quad_hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  const __m512i a = _mm512_permutex2var_epi32(w[0], pair_lo, w[1]);  // (w0, w1) of blocks 0..7
  const __m512i b = _mm512_permutex2var_epi32(w[0], pair_hi, w[1]);  // blocks 8..15
  const __m512i c = _mm512_permutex2var_epi32(w[2], pair_lo, w[3]);
  const __m512i d = _mm512_permutex2var_epi32(w[2], pair_hi, w[3]);
  v[0] = _mm512_permutex2var_epi32(a, quad_lo, c);
  v[1] = _mm512_permutex2var_epi32(a, quad_hi, c);
  v[2] = _mm512_permutex2var_epi32(b, quad_lo, d);
  v[3] = _mm512_permutex2var_epi32(b, quad_hi, d);
}

template <int KIND>
inline __attribute__((always_inline)) void values_avx512_kind(const PhiloxKey& key, uint64_t first, int64_t n,
                                                              char* out) {
  const Philox16 gen(key);
  // positions relative to `first` (first + n may be 2^64): group g covers [rel, rel + 64), starting
  // before `out` when the range starts inside a group; those lanes are masked off, and masked-off
  // lanes of a store are never accessed
  for (int64_t rel = -int64_t(first & 63); rel < n; rel += 64) {
    __m512i w[4], v[4];
    gen.blocks((first + uint64_t(rel)) >> 2, w);
    if constexpr (KIND == 2) {
      __m512 z[4];
      box_muller16(w[0], w[1], &z[0], &z[1]);
      box_muller16(w[2], w[3], &z[2], &z[3]);
      for (int i = 0; i < 4; ++i) w[i] = _mm512_castps_si512(z[i]);
    } else if constexpr (KIND == 1) {
      for (int i = 0; i < 4; ++i) w[i] = _mm512_castps_si512(uniform16(w[i]));
    }
    interleave16(w, v);
    const uintptr_t at = reinterpret_cast<uintptr_t>(out) + 4 * uintptr_t(rel);
    if (rel >= 0 && rel + 64 <= n) {
      for (int k = 0; k < 4; ++k) _mm512_storeu_si512(reinterpret_cast<void*>(at + 64 * k), v[k]);
      continue;
    }
    for (int k = 0; k < 4; ++k) {
      const int64_t p = rel + 16 * k;
      const int lo = int(std::clamp<int64_t>(-p, 0, 16)), hi = int(std::clamp<int64_t>(n - p, 0, 16));
      if (hi <= lo) continue;
      const __mmask16 mask = __mmask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
      _mm512_mask_storeu_epi32(reinterpret_cast<void*>(at + 64 * k), mask, v[k]);
    }
  }
}

void values_avx512(int kind, const PhiloxKey& key, uint64_t first, int64_t n, char* out) {
  switch (kind) {
    case 0: values_avx512_kind<0>(key, first, n, out); break;
    case 1: values_avx512_kind<1>(key, first, n, out); break;
    default: values_avx512_kind<2>(key, first, n, out); break;
  }
}

#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif  // GE_HAVE_PHILOX_AVX512

constexpr int64_t kChunk = 1 << 16;  // elements per parallel chunk

}  // namespace

void philox_values(int kind, const PhiloxKey& key, uint64_t first, int64_t n, void* out) {
  if (n <= 0) return;
  char* o = static_cast<char*>(out);
  switch (g_cpu_isa) {
#ifdef GE_HAVE_PHILOX_AVX512
    case kIsaAvx512: values_avx512(kind, key, first, n, o); return;
#endif
#ifdef GE_HAVE_PHILOX_AVX2
    case kIsaAvx2: values_avx2(kind, key, first, n, o); return;
#endif
    default: values_baseline(kind, key, first, n, o); return;
  }
}

void philox_fill_at(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset, uint64_t start) {
  const PhiloxKey key = make_philox_key(seed, offset);
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  parallel_chunks(n_chunks, [&](int64_t c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    philox_values(kind, key, start + uint64_t(begin), end - begin, static_cast<char*>(out) + 4 * begin);
  });
}

// kind: 0 = raw uint32 words, 1 = uniforms in (0, 1), 2 = standard normals.
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset) {
  philox_fill_at(kind, out, n, seed, offset, 0);
}

}  // namespace ge
