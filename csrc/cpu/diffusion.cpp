// The fused sampler step on the CPU: one pass over the latent, in sub-blocks of kBlock elements that
// are converted to float32 in L1-resident buffers, combined, and converted back. Noise element i is
// normal number i of the Philox stream (seed, offset), so the result does not depend on threading.
#include "diffusion.h"

#include <algorithm>

#include "cpu_common.h"
#include "parallel.h"

namespace ge {
namespace {

constexpr int kBlock = kNormalBatch;     // elements per sub-block (a multiple of 4)
constexpr int64_t kChunk = 16 * kBlock;  // elements per parallel chunk

template <typename T>
inline __attribute__((always_inline)) void step_range(const StepArgs& a, int64_t begin,
                                                      int64_t end) {
  alignas(64) float xs[kBlock], ps[kBlock], prevs[kBlock], zs[kBlock], x0s[kBlock];
  const T* __restrict x = static_cast<const T*>(a.x);
  const T* __restrict cond = static_cast<const T*>(a.cond);
  const T* __restrict uncond = static_cast<const T*>(a.uncond);
  const T* __restrict prev = static_cast<const T*>(a.prev);
  T* __restrict out = static_cast<T*>(a.out);
  T* __restrict x0_out = static_cast<T*>(a.x0_out);
  if (!prev) std::fill(prevs, prevs + kBlock, 0.0f);
  if (!a.noise) std::fill(zs, zs + kBlock, 0.0f);
  const StepCoefs k = a.k;

  for (int64_t i = begin; i < end; i += kBlock) {
    const int len = int(std::min<int64_t>(kBlock, end - i));
    for (int j = 0; j < len; ++j) xs[j] = to_float(x[i + j]);
    if (uncond) {
      const int64_t first = i / a.inner, last = (i + len - 1) / a.inner;
      if (a.guidance_per_sample && first != last) {
        for (int j = 0; j < len; ++j) {
          const float w = a.guidance_per_sample[(i + j) / a.inner];
          ps[j] = guided(to_float(cond[i + j]), to_float(uncond[i + j]), w);
        }
      } else {
        const float w = a.guidance_per_sample ? a.guidance_per_sample[first] : a.guidance;
        for (int j = 0; j < len; ++j) ps[j] = guided(to_float(cond[i + j]), to_float(uncond[i + j]), w);
      }
    } else {
      for (int j = 0; j < len; ++j) ps[j] = to_float(cond[i + j]);
    }
    if (prev) for (int j = 0; j < len; ++j) prevs[j] = to_float(prev[i + j]);
    if (a.noise) philox_normals(a.key, uint64_t(i / 4), (len + 3) / 4, zs);
    for (int j = 0; j < len; ++j) {
      const float x0 = predicted_x0(k, xs[j], ps[j]);
      x0s[j] = x0;
      out[i + j] = from_float<T>(step_update(k, xs[j], ps[j], x0, prevs[j], zs[j]));
    }
    if (x0_out) for (int j = 0; j < len; ++j) x0_out[i + j] = from_float<T>(x0s[j]);
  }
}

GE_MULTIVERSIONED((void step_range_f32(const StepArgs& a, int64_t b, int64_t e)), { step_range<float>(a, b, e); })
GE_MULTIVERSIONED((void step_range_bf16(const StepArgs& a, int64_t b, int64_t e)), { step_range<BF16>(a, b, e); })
GE_MULTIVERSIONED((void step_range_f16(const StepArgs& a, int64_t b, int64_t e)), { step_range<F16>(a, b, e); })

}  // namespace

void sampler_step(const StepArgs& a) {
  const int64_t n_chunks = (a.n + kChunk - 1) / kChunk;
  parallel_chunks(n_chunks, [&](int64_t c) {
    const int64_t begin = c * kChunk, end = std::min(a.n, begin + kChunk);
    switch (a.dtype) {
      case kFloat32: step_range_f32(a, begin, end); break;
      case kBFloat16: step_range_bf16(a, begin, end); break;
      default: step_range_f16(a, begin, end); break;
    }
  });
}

}  // namespace ge
