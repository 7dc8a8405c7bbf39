// CPU kernels that expose the Philox stream itself (raw words, uniforms, normals): the ground truth
// the tests compare the Triton and CUDA twins against, and `ge.ops.philox_normal` for users.
#include <algorithm>

#include "cpu_common.h"
#include "parallel.h"

namespace ge {

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
