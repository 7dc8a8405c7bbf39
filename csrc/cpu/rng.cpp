// CPU kernels that expose the Philox stream itself (raw words, uniforms, normals): the ground truth
// the tests compare the Triton and CUDA twins against, and `ge.ops.philox_normal` for users.
#include <algorithm>
#include <climits>

#include "cpu_common.h"
#include "parallel.h"

#ifdef GE_HAVE_PHILOX_AVX2
#include <immintrin.h>
#endif

namespace ge {

#ifdef GE_HAVE_PHILOX_AVX2
const bool g_cpu_has_avx2 = __builtin_cpu_supports("avx2");

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
constexpr int64_t kChunk = 1 << 16;  // elements per parallel chunk (a multiple of 4)

GE_MULTIVERSIONED((void fill_range(int kind, uint32_t* out_words, float* out, int64_t begin, int64_t end,
                                    PhiloxKey key)), {
  alignas(64) float z[kNormalBatch];
  for (int64_t i = begin; i < end; i += kNormalBatch) {
    const int64_t len = std::min<int64_t>(kNormalBatch, end - i);
    const int nb = int((len + 3) / 4);
    if (kind == 2) {
      philox_normals(key, uint64_t(i / 4), nb, z);
      for (int64_t j = 0; j < len; ++j) out[i + j] = z[j];
      continue;
    }
    for (int b = 0; b < nb; ++b) {
      uint32_t w[4];
      philox_block(key, uint64_t(i / 4 + b), w);
      for (int l = 0; l < 4 && 4 * b + l < len; ++l) {
        if (kind == 0) out_words[i + 4 * b + l] = w[l];
        else out[i + 4 * b + l] = u32_to_uniform(w[l]);
      }
    }
  }
})
}  // namespace

// kind: 0 = raw uint32 words, 1 = uniforms in (0, 1), 2 = standard normals.
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset) {
  const PhiloxKey key = make_philox_key(seed, offset);
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  parallel_chunks(n_chunks, [&](int64_t c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    fill_range(kind, static_cast<uint32_t*>(out), static_cast<float*>(out), begin, end, key);
  });
}

}  // namespace ge
