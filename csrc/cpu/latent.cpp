// The VAE's sampling step on the CPU: z = mu + exp(logvar / 2) * eps with eps drawn in the kernel
// (Philox normals, element i of the stream for element i of mu, so every backend draws the same z)
// and kl[b] = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar) over row b, in one pass over mu, logvar.
//
// Shapes: mu, logvar, z float32 (rows, cols) contiguous; kl float32 (rows,). z or kl may be null.
// Rows are independent (each draws its own range of the stream), so the result does not depend on
// the thread count. The floor is reading mu and logvar and writing z (12 bytes per element) plus
// the normals (the AVX-512 generator makes ~2.5 G/s on this machine): memory and RNG bound.
#include "latent.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"

namespace ge {
namespace {

constexpr int64_t kChunk = 1024;  // normals drawn per batch (stays in L1 with mu, logvar, z)

void rows_task(int64_t r0, int64_t r1, int64_t cols, const float* mu, const float* lv, float* z, float* kl,
               const PhiloxKey& key) {
  thread_local std::vector<float> eps;
  if (z) eps.resize(kChunk);
  for (int64_t r = r0; r < r1; ++r) {
    double acc = 0.0;
    const float* m = mu + r * cols;
    const float* l = lv + r * cols;
    for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
      const int64_t n = std::min(kChunk, cols - c0);
      if (z) philox_values(2, key, uint64_t(r * cols + c0), n, eps.data());
      float* zr = z ? z + r * cols + c0 : nullptr;
      float part = 0.0f;  // a float sum per chunk, chunks added in double
      for (int64_t j = 0; j < n; ++j) {
        const float mj = m[c0 + j], lj = l[c0 + j];
        const float s = std::exp(0.5f * lj);
        if (zr) zr[j] = mj + s * eps[j];
        part += mj * mj + s * s - 1.0f - lj;
      }
      acc += part;
    }
    if (kl) kl[r] = float(0.5 * acc);
  }
}

}  // namespace

void reparameterize_kl(int64_t rows, int64_t cols, uintptr_t mu, uintptr_t lv, uintptr_t z, uintptr_t kl, uint64_t seed,
                       uint64_t offset) {
  const PhiloxKey key = make_philox_key(seed, offset);
  // chunks of rows worth about 16K elements each: enough work per task, enough tasks per thread
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  const int64_t tasks = (rows + per - 1) / per;
  parallel_chunks(tasks, [&](int64_t t) {
    const int64_t r0 = t * per, r1 = std::min(rows, r0 + per);
    rows_task(r0, r1, cols, reinterpret_cast<const float*>(mu), reinterpret_cast<const float*>(lv),
              reinterpret_cast<float*>(z), reinterpret_cast<float*>(kl), key);
  });
}

}  // namespace ge
