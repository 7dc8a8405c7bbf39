// Helpers shared by the CUDA kernels: error checks that surface as Python RuntimeError (pybind11
// translates std::runtime_error), dtype load/store in float32, 16-byte vector access, and the
// launch-geometry cache. Only nvcc sees this file; the pybind11 glue is compiled by g++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/philox.h"
#include "common/step.h"

namespace ge {
namespace cuda {

enum DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("genengine._cuda: ") + what + " failed: " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") at " +
                           file + ":" + std::to_string(line));
}

#define GE_CUDA_CHECK(expr)                                                      \
  do {                                                                           \
    const cudaError_t ge_err_ = (expr);                                          \
    if (ge_err_ != cudaSuccess) {                                                \
      (void)cudaGetLastError(); /* clear a non-sticky error for the next call */ \
      ::ge::cuda::throw_cuda_error(ge_err_, #expr, __FILE__, __LINE__);          \
    }                                                                            \
  } while (0)

// After a <<<>>> launch: configuration errors only show up in cudaGetLastError.
#define GE_CUDA_CHECK_LAUNCH() GE_CUDA_CHECK(cudaGetLastError())

// ---- scalar conversions (round to nearest even on the way out, like the CPU kernels) ------------

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// ---- 16-byte vectors: kWidth consecutive elements of T in one uint4 -----------------------------

template <typename T> struct Vec16 { static constexpr int kWidth = 16 / int(sizeof(T)); };

// The caller guarantees p + i is 16-byte aligned (all pointers aligned, i a multiple of kWidth).
template <typename T>
__device__ __forceinline__ void load16(const T* __restrict__ p, int64_t i, float* f);

template <>
__device__ __forceinline__ void load16<float>(const float* __restrict__ p, int64_t i, float* f) {
  const float4 v = *reinterpret_cast<const float4*>(p + i);
  f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}

template <>
__device__ __forceinline__ void load16<__nv_bfloat16>(const __nv_bfloat16* __restrict__ p,
                                                      int64_t i, float* f) {
  const uint4 v = *reinterpret_cast<const uint4*>(p + i);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // bf16 -> f32 is exact: the bits are the top half of the float
    f[2 * j] = __uint_as_float(w[j] << 16);
    f[2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
  }
}

template <>
__device__ __forceinline__ void load16<__half>(const __half* __restrict__ p, int64_t i, float* f) {
  const uint4 v = *reinterpret_cast<const uint4*>(p + i);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    __half2 h;
    memcpy(&h, &w[j], 4);
    const float2 t = __half22float2(h);
    f[2 * j] = t.x;
    f[2 * j + 1] = t.y;
  }
}

template <typename T>
__device__ __forceinline__ void store16(T* __restrict__ p, int64_t i, const float* f);

template <>
__device__ __forceinline__ void store16<float>(float* __restrict__ p, int64_t i, const float* f) {
  *reinterpret_cast<float4*>(p + i) = make_float4(f[0], f[1], f[2], f[3]);
}

template <>
__device__ __forceinline__ void store16<__nv_bfloat16>(__nv_bfloat16* __restrict__ p, int64_t i,
                                                       const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);  // .x = low half
    memcpy(&w[j], &h, 4);
  }
  *reinterpret_cast<uint4*>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
}

template <>
__device__ __forceinline__ void store16<__half>(__half* __restrict__ p, int64_t i, const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const __half2 h = __floats2half2_rn(f[2 * j], f[2 * j + 1]);
    memcpy(&w[j], &h, 4);
  }
  *reinterpret_cast<uint4*>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- launch geometry -----------------------------------------------------------------------------

constexpr int kThreads = 256;
constexpr int kWaves = 4;       // grid cap, in full waves of resident blocks
constexpr int kMaxDevices = 64;

// SM count of the current device, queried once per device. Never called at import time: the first
// kernel launch is the first time the module talks to the driver.
inline int sm_count(int* device_out = nullptr) {
  static std::atomic<int> cache[kMaxDevices];
  int dev = 0;
  GE_CUDA_CHECK(cudaGetDevice(&dev));
  if (device_out) *device_out = dev;
  if (dev >= 0 && dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int sms = 0;
  GE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (sms <= 0) sms = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(sms, std::memory_order_relaxed);
  return sms;
}

// Resident blocks of kThreads per SM for one kernel (register use differs per instantiation);
// cached per kernel, assuming all GPUs in the process share an architecture (else only the grid
// cap is off, never correctness).
template <typename Kernel>
inline int blocks_per_sm(Kernel kernel, std::atomic<int>& cache) {
  int b = cache.load(std::memory_order_relaxed);
  if (b > 0) return b;
  GE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kThreads, 0));
  if (b <= 0) b = 1;
  cache.store(b, std::memory_order_relaxed);
  return b;
}

// Blocks for `work` items (one item per thread per grid-stride iteration): enough to cover the
// work, capped at a few waves so large inputs loop instead of paying per-block start-up.
template <typename Kernel>
inline unsigned grid_for(int64_t work, Kernel kernel, std::atomic<int>& occupancy_cache) {
  const int64_t needed = (work + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(sm_count()) * blocks_per_sm(kernel, occupancy_cache) * kWaves;
  const int64_t blocks = needed < cap ? needed : cap;
  return unsigned(blocks > 0 ? blocks : 1);
}

}  // namespace cuda
}  // namespace ge
