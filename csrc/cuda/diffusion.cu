// The fused sampler step on the GPU: one pass over the latent that reads x, the model output(s) and
// the optional previous x0, and writes the new sample (and optionally the predicted x0); see
// csrc/common/step.h for the math, which is shared verbatim with the CPU kernel.
//
// Shape conventions (the Python side has checked them and made everything contiguous):
//   x, cond, uncond, prev, out, x0_out,  n elements of one dtype (float32, bfloat16 or float16),
//   out_dup                              flattened [batch, ...]; uncond, prev, x0_out, out_dup
//                                        optional; out_dup receives the values stored into out (a
//                                        guided loop's next model input [x; x] without a concat)
//   guidance_per_sample                   optional float32 [batch]; element i uses entry i / inner
//   thresholds                            optional float32 [batch] dynamic thresholds (threshold.cu):
//                                        x0 = clamp(x0, -s, s) / s with s = thresholds[i / inner]
//   key                                   optional uint64 [2] (seed, offset) in device memory, read
//                                        by the kernel instead of the host-side seed and offset, so
//                                        a captured CUDA graph replays with the key written there
// Noise element i is normal number i of the Philox stream (seed, offset), as on the CPU, so the
// result does not depend on the launch geometry and a CPU and a GPU run of the same step agree up
// to float32 rounding: nvcc contracts a * b + c into FMAs where the CPU build (-ffp-contract=off)
// does not, which moves a normal by at most one ulp (<= 4.8e-7 for |z| < 8). Building with
// -fmad=false would make them bit-identical at ~15% more ALU work in the RNG-bound noise loops.
//
// The step is memory bound (a few flops per element, plus the RNG), so the design is about bytes
// in flight: each thread handles one 16-byte vector per tensor (4 float32 or 8 16-bit elements),
// which is also a whole number of Philox blocks (4 normals each), so no random words are thrown
// away. The absent-tensor and noise cases are template parameters, so the common paths issue no
// dead loads and no RNG work. Pointers that are not 16-byte aligned fall back to a scalar kernel;
// the n % width tail of the vector path is done by scalar code in the same launch.
#include <cstdint>

#include "cuda/cuda_common.cuh"

#define GE_STR2(...) #__VA_ARGS__
#define GE_STR(...) GE_STR2(__VA_ARGS__)

namespace ge {
namespace cuda {
namespace {

struct StepParams {
  int64_t n;
  int64_t inner;                     // elements per sample, > 0
  void* out;
  void* x0_out;                      // may be null
  void* out_dup;                     // may be null
  const void* x;
  const void* cond;
  const void* uncond;                // may be null
  const void* prev;                  // may be null
  const float* guidance_per_sample;  // may be null; only read when guiding
  const float* thresholds;           // may be null: no dynamic thresholding
  const uint64_t* key_ptr;           // may be null: use key
  float guidance;
  StepCoefs k;
  PhiloxKey key;
};

// The noise key of this launch: read from device memory when given (one 16-byte load per thread,
// outside the element loops).
__device__ __forceinline__ PhiloxKey launch_key(const StepParams& p) {
  if (p.key_ptr == nullptr) return p.key;
  return make_philox_key(__ldg(p.key_ptr), __ldg(p.key_ptr + 1));
}

// (i / inner, i % inner), carried along a grid-stride loop with adds instead of a 64-bit division
// (tens of instructions) per iteration.
struct SampleCursor {
  int64_t q = 0, r = 0;
  __device__ __forceinline__ void init(int64_t i, int64_t inner) {
    q = i / inner;
    r = i - q * inner;
  }
  __device__ __forceinline__ void advance(int64_t dq, int64_t dr, int64_t inner) {
    q += dq;
    r += dr;
    if (r >= inner) { r -= inner; ++q; }
  }
};

// Guidance weights of elements i .. i + valid - 1, where the cursor is at i. Entries past `valid`
// are not read (they could index past the last sample). kPerSample: 1 = per-sample weights,
// 0 = the scalar guidance, -1 = decide at run time from p.guidance_per_sample.
template <int kLen, int kPerSample = -1>
__device__ __forceinline__ void guidance_weights(const StepParams& p, const SampleCursor& c,
                                                 int valid, float* w) {
  if (kPerSample == 0 || (kPerSample < 0 && p.guidance_per_sample == nullptr)) {
#pragma unroll
    for (int j = 0; j < kLen; ++j) w[j] = p.guidance;
  } else if (c.r + kLen <= p.inner) {  // the usual case: the whole vector is in one sample
    const float g = __ldg(p.guidance_per_sample + c.q);
#pragma unroll
    for (int j = 0; j < kLen; ++j) w[j] = g;
  } else {
    int64_t q = c.q, r = c.r;
#pragma unroll
    for (int j = 0; j < kLen; ++j) {
      w[j] = j < valid ? __ldg(p.guidance_per_sample + q) : 0.0f;
      if (++r == p.inner) { r = 0; ++q; }
    }
  }
}

// Per-sample values table[(i + j) / inner] for j < kLen, where the cursor is at i (entries past
// `valid` are not read: they could index past the last sample).
template <int kLen>
__device__ __forceinline__ void sample_values(const float* __restrict__ table, const SampleCursor& c,
                                              int64_t inner, int valid, float* v) {
  if (c.r + kLen <= inner) {
    const float t = __ldg(table + c.q);
#pragma unroll
    for (int j = 0; j < kLen; ++j) v[j] = t;
  } else {
    int64_t q = c.q, r = c.r;
#pragma unroll
    for (int j = 0; j < kLen; ++j) {
      v[j] = j < valid ? __ldg(table + q) : 1.0f;
      if (++r == inner) { r = 0; ++q; }
    }
  }
}

// Normals 4 * block0 .. 4 * (block0 + kBlocks) - 1 of the stream.
template <int kBlocks>
__device__ __forceinline__ void normals(const PhiloxKey& key, uint64_t block0, float* z) {
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
    uint32_t w[4];
    philox_block(key, block0 + uint64_t(b), w);
    box_muller(w[0], w[1], &z[4 * b], &z[4 * b + 1]);
    box_muller(w[2], w[3], &z[4 * b + 2], &z[4 * b + 3]);
  }
}

// Absent prev / noise come in as zeros, exactly like the CPU kernel (so a NaN or inf coefficient
// behaves the same on both).
template <int kLen>
__device__ __forceinline__ void combine(const StepCoefs& k, bool has_uncond, bool thresh, const float* x,
                                        const float* cond, const float* uncond, const float* w,
                                        const float* s, const float* prev, const float* z, float* out,
                                        float* x0) {
#pragma unroll
  for (int j = 0; j < kLen; ++j) {
    const float p = has_uncond ? guided(cond[j], uncond[j], w[j]) : cond[j];
    x0[j] = thresh ? thresholded_x0(k, x[j], p, s[j]) : predicted_x0(k, x[j], p);
    out[j] = step_update(k, x[j], p, x0[j], prev[j], z[j]);
  }
}

// Elements 4g .. min(4g + 4, n) - 1 with scalar loads: one Philox block. The flags are compile-time
// constants when called from the vector kernel and run-time values in the fallback kernel.
template <typename T>
__device__ __forceinline__ void step_group4(const StepParams& p, const PhiloxKey& key, int64_t g,
                                            bool has_uncond, bool has_noise, bool has_prev) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ cond = static_cast<const T*>(p.cond);
  const T* __restrict__ uncond = static_cast<const T*>(p.uncond);
  const T* __restrict__ prev = static_cast<const T*>(p.prev);
  T* __restrict__ out = static_cast<T*>(p.out);
  T* __restrict__ x0_out = static_cast<T*>(p.x0_out);
  T* __restrict__ out_dup = static_cast<T*>(p.out_dup);
  const int64_t i0 = 4 * g;
  const int valid = int(p.n - i0 < 4 ? p.n - i0 : 4);
  float xs[4], cs[4], us[4], ws[4], ss[4], ps[4], zs[4], os[4], x0s[4];
  const bool thresh = p.thresholds != nullptr;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const bool in = j < valid;
    ss[j] = 1.0f;
    xs[j] = in ? to_float(x[i0 + j]) : 0.0f;
    cs[j] = in ? to_float(cond[i0 + j]) : 0.0f;
    us[j] = in && has_uncond ? to_float(uncond[i0 + j]) : 0.0f;
    ps[j] = in && has_prev ? to_float(prev[i0 + j]) : 0.0f;
    zs[j] = 0.0f;
  }
  SampleCursor c;
  if (thresh || (has_uncond && p.guidance_per_sample)) c.init(i0, p.inner);
  if (has_uncond) guidance_weights<4>(p, c, valid, ws);
  if (thresh) sample_values<4>(p.thresholds, c, p.inner, valid, ss);
  if (has_noise) normals<1>(key, uint64_t(g), zs);
  combine<4>(p.k, has_uncond, thresh, xs, cs, us, ws, ss, ps, zs, os, x0s);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j < valid) {
      const T o = from_float<T>(os[j]);
      out[i0 + j] = o;
      if (out_dup) out_dup[i0 + j] = o;
      if (x0_out) x0_out[i0 + j] = from_float<T>(x0s[j]);
    }
  }
}

// Main path: every pointer is 16-byte aligned. Thread t handles vectors t, t + stride, ...
// kClip, kThresh and kPerSample are run-time uniforms (k.clip, thresholds != null,
// guidance_per_sample != null) turned into constants by a branch outside the loop, so the common
// loops carry neither the clamp selects nor the sample-index bookkeeping (together ~18% of the
// instructions of the guided + noise loop on sm_90a).
template <typename T, bool kUncond, bool kNoise, bool kPrev, bool kDup, bool kClip, bool kThresh, bool kPerSample>
__device__ __forceinline__ void step_vec_loop(const StepParams& p, const PhiloxKey& key) {
  constexpr int V = Vec16<T>::kWidth;
  static_assert(V % 4 == 0, "a vector must hold whole Philox blocks");
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ cond = static_cast<const T*>(p.cond);
  const T* __restrict__ uncond = static_cast<const T*>(p.uncond);
  const T* __restrict__ prev = static_cast<const T*>(p.prev);
  T* __restrict__ out = static_cast<T*>(p.out);
  T* __restrict__ x0_out = static_cast<T*>(p.x0_out);
  T* __restrict__ out_dup = static_cast<T*>(p.out_dup);
  StepCoefs k = p.k;
  k.clip = kClip ? 1 : 0;

  const int64_t nvec = p.n / V;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;

  SampleCursor cur;
  int64_t dq = 0, dr = 0;
  constexpr bool per_sample = kUncond && kPerSample;
  constexpr bool track_sample = per_sample || kThresh;
  if (track_sample) {
    cur.init(tid * V, p.inner);
    dq = (stride * V) / p.inner;
    dr = stride * V - dq * p.inner;
  }

  for (int64_t v = tid; v < nvec; v += stride) {
    const int64_t i = v * V;
    float xs[V], cs[V], us[V], ws[V], ss[V], ps[V], zs[V], os[V], x0s[V];
    // loads first, so they are in flight while the RNG runs
    load16(x, i, xs);
    load16(cond, i, cs);
    if (kUncond) load16(uncond, i, us);
    if (kPrev) {
      load16(prev, i, ps);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) ps[j] = 0.0f;
    }
    if (kUncond) guidance_weights<V, per_sample ? 1 : 0>(p, cur, V, ws);
    if (kThresh) sample_values<V>(p.thresholds, cur, p.inner, V, ss);
    if (kNoise) {
      normals<V / 4>(key, uint64_t(i / 4), zs);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) zs[j] = 0.0f;
    }
    combine<V>(k, kUncond, kThresh, xs, cs, us, ws, ss, ps, zs, os, x0s);
    store16(out, i, os);
    if (kDup) store16(out_dup, i, os);  // the same float32 values, so the same narrowed bits
    if (x0_out) store16(x0_out, i, x0s);
    if (track_sample) cur.advance(dq, dr, p.inner);
  }
}

// The n % kWidth leftover elements go to the first threads of the grid after the loop.
template <typename T, bool kUncond, bool kNoise, bool kPrev, bool kDup>
__global__ void __launch_bounds__(kThreads) step_vec_kernel(const StepParams p) {
  constexpr int V = Vec16<T>::kWidth;
  const bool per_sample = kUncond && p.guidance_per_sample != nullptr;
  const PhiloxKey key = kNoise ? launch_key(p) : p.key;
  if (p.thresholds) {  // the Python side never combines clipping and thresholding
    if (per_sample) step_vec_loop<T, kUncond, kNoise, kPrev, kDup, false, true, kUncond>(p, key);
    else step_vec_loop<T, kUncond, kNoise, kPrev, kDup, false, true, false>(p, key);
  } else if (p.k.clip) {
    if (per_sample) step_vec_loop<T, kUncond, kNoise, kPrev, kDup, true, false, kUncond>(p, key);
    else step_vec_loop<T, kUncond, kNoise, kPrev, kDup, true, false, false>(p, key);
  } else {
    if (per_sample) step_vec_loop<T, kUncond, kNoise, kPrev, kDup, false, false, kUncond>(p, key);
    else step_vec_loop<T, kUncond, kNoise, kPrev, kDup, false, false, false>(p, key);
  }

  const int64_t tail = p.n / V * V;  // a multiple of 4: the tail is whole Philox blocks
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < p.n && tid < (p.n - tail + 3) / 4) {
    step_group4<T>(p, key, tail / 4 + tid, kUncond, kNoise, kPrev);
  }
}

// Fallback for misaligned pointers (e.g. views at odd offsets): one Philox block per thread.
template <typename T>
__global__ void __launch_bounds__(kThreads) step_scalar_kernel(const StepParams p) {
  const int64_t groups = (p.n + 3) / 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const bool has_uncond = p.uncond != nullptr;
  const bool has_noise = p.k.anoise != 0.0f;
  const bool has_prev = p.prev != nullptr;
  const PhiloxKey key = has_noise ? launch_key(p) : p.key;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    step_group4<T>(p, key, g, has_uncond, has_noise, has_prev);
  }
}

template <typename T, bool kUncond, bool kNoise, bool kPrev, bool kDup>
void launch_vec(const StepParams& p, cudaStream_t stream) {
  constexpr int V = Vec16<T>::kWidth;
  static std::atomic<int> occupancy{0};
  auto kernel = step_vec_kernel<T, kUncond, kNoise, kPrev, kDup>;
  const int64_t nvec = p.n / V, tail_groups = (p.n - nvec * V + 3) / 4;
  const unsigned grid = grid_for(nvec > tail_groups ? nvec : tail_groups, kernel, occupancy);
  kernel<<<grid, kThreads, 0, stream>>>(p);
  GE_CUDA_CHECK_LAUNCH();
}

template <typename T, bool kUncond, bool kNoise, bool kPrev>
void launch_vec_dup(const StepParams& p, cudaStream_t stream) {
  if (p.out_dup) launch_vec<T, kUncond, kNoise, kPrev, true>(p, stream);
  else launch_vec<T, kUncond, kNoise, kPrev, false>(p, stream);
}

template <typename T, bool kUncond, bool kNoise>
void launch_vec_prev(const StepParams& p, bool has_prev, cudaStream_t stream) {
  if (has_prev) launch_vec_dup<T, kUncond, kNoise, true>(p, stream);
  else launch_vec_dup<T, kUncond, kNoise, false>(p, stream);
}

template <typename T, bool kUncond>
void launch_vec_noise(const StepParams& p, bool has_noise, bool has_prev, cudaStream_t stream) {
  if (has_noise) launch_vec_prev<T, kUncond, true>(p, has_prev, stream);
  else launch_vec_prev<T, kUncond, false>(p, has_prev, stream);
}

template <typename T>
void launch_typed(const StepParams& p, cudaStream_t stream) {
  const bool has_uncond = p.uncond != nullptr, has_prev = p.prev != nullptr;
  const bool has_noise = p.k.anoise != 0.0f;
  const bool aligned = aligned16(p.out) && aligned16(p.x) && aligned16(p.cond) &&
                       (!p.x0_out || aligned16(p.x0_out)) && (!p.out_dup || aligned16(p.out_dup)) &&
                       (!has_uncond || aligned16(p.uncond)) && (!has_prev || aligned16(p.prev));
  if (aligned) {
    if (has_uncond) launch_vec_noise<T, true>(p, has_noise, has_prev, stream);
    else launch_vec_noise<T, false>(p, has_noise, has_prev, stream);
  } else {
    static std::atomic<int> occupancy{0};
    auto kernel = step_scalar_kernel<T>;
    kernel<<<grid_for((p.n + 3) / 4, kernel, occupancy), kThreads, 0, stream>>>(p);
    GE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

// Host launcher behind genengine._cuda.sampler_step (bindings_cuda.cpp). Asynchronous on `stream`.
void sampler_step(int dtype, int64_t n, int64_t inner, void* out, void* x0_out, const void* x,
                  const void* cond, const void* uncond, const void* prev,
                  const float* guidance_per_sample, float guidance, const StepCoefs& k,
                  uint64_t seed, uint64_t offset, uintptr_t stream, const float* thresholds,
                  const uint64_t* key, void* out_dup) {
  if (dtype < kFloat32 || dtype > kFloat16) {
    throw std::runtime_error("genengine._cuda.sampler_step: unsupported dtype code " +
                             std::to_string(dtype));
  }
  if (n < 0) throw std::runtime_error("genengine._cuda.sampler_step: negative n");
  if (n == 0) return;
  if (!out || !x || !cond) {
    throw std::runtime_error("genengine._cuda.sampler_step: out, x and cond are required");
  }
  StepParams p;
  p.n = n;
  p.inner = inner > 0 ? inner : 1;
  p.out = out;
  p.x0_out = x0_out;
  p.out_dup = out_dup;
  p.x = x;
  p.cond = cond;
  p.uncond = uncond;
  p.prev = prev;
  p.guidance_per_sample = guidance_per_sample;
  p.thresholds = thresholds;
  p.key_ptr = key;
  p.guidance = guidance;
  p.k = k;
  p.key = make_philox_key(seed, offset);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: launch_typed<float>(p, s); break;
    case kBFloat16: launch_typed<__nv_bfloat16>(p, s); break;
    default: launch_typed<__half>(p, s); break;
  }
}

// Targets this object was compiled for (nvcc lists the virtual architectures, e.g. "800,900"; an
// "a" suffix such as sm_90a does not show). setup.py may pass the exact list as GE_CUDA_ARCHS.
const char* compiled_archs() {
#if defined(GE_CUDA_ARCHS)
  return GE_CUDA_ARCHS;
#elif defined(__CUDA_ARCH_LIST__)
  return GE_STR(__CUDA_ARCH_LIST__);
#else
  return "unknown";
#endif
}

}  // namespace cuda
}  // namespace ge
