// The Philox stream itself on the GPU (raw words, uniforms, normals), the twin of csrc/cpu/rng.cpp:
// value i of the output is value i of the stream (seed, offset) whatever the launch geometry, so the
// tests can compare it with the CPU element for element (words and uniforms exactly, normals to one
// float32 ulp: see the FMA note in diffusion.cu). One thread computes one Philox block (four
// values) and writes it with one 16-byte store when it can.
#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

// kKind: 0 = raw uint32 words, 1 = uniforms in (0, 1), 2 = standard normals (float32 bits).
template <int kKind>
__global__ void __launch_bounds__(kThreads)
    philox_fill_kernel(uint32_t* __restrict__ out, int64_t n, const PhiloxKey key, bool vec_ok) {
  const int64_t blocks = (n + 3) / 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += stride) {
    uint32_t w[4], v[4];
    philox_block(key, uint64_t(b), w);
    if (kKind == 0) {
#pragma unroll
      for (int l = 0; l < 4; ++l) v[l] = w[l];
    } else if (kKind == 1) {
#pragma unroll
      for (int l = 0; l < 4; ++l) v[l] = __float_as_uint(u32_to_uniform(w[l]));
    } else {
      float z[4];
      box_muller(w[0], w[1], &z[0], &z[1]);
      box_muller(w[2], w[3], &z[2], &z[3]);
#pragma unroll
      for (int l = 0; l < 4; ++l) v[l] = __float_as_uint(z[l]);
    }
    const int64_t i = 4 * b;
    if (vec_ok && i + 4 <= n) {
      *reinterpret_cast<uint4*>(out + i) = make_uint4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        if (i + l < n) out[i + l] = v[l];
      }
    }
  }
}

template <int kKind>
void launch_fill(uint32_t* out, int64_t n, const PhiloxKey& key, cudaStream_t stream) {
  static std::atomic<int> occupancy{0};
  auto kernel = philox_fill_kernel<kKind>;
  const unsigned grid = grid_for((n + 3) / 4, kernel, occupancy);
  kernel<<<grid, kThreads, 0, stream>>>(out, n, key, aligned16(out));
  GE_CUDA_CHECK_LAUNCH();
}

}  // namespace

// Host launcher behind genengine._cuda.philox_fill (bindings_cuda.cpp). Asynchronous on `stream`.
// out holds n uint32 (kind 0) or float32 (kinds 1 and 2) values.
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset,
                 uintptr_t stream) {
  if (kind < 0 || kind > 2) {
    throw std::runtime_error("genengine._cuda.philox_fill: unsupported kind " +
                             std::to_string(kind) + " (0 = words, 1 = uniforms, 2 = normals)");
  }
  if (n < 0) throw std::runtime_error("genengine._cuda.philox_fill: negative n");
  if (n == 0) return;
  if (!out) throw std::runtime_error("genengine._cuda.philox_fill: null output pointer");
  uint32_t* words = static_cast<uint32_t*>(out);
  const PhiloxKey key = make_philox_key(seed, offset);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (kind) {
    case 0: launch_fill<0>(words, n, key, s); break;
    case 1: launch_fill<1>(words, n, key, s); break;
    default: launch_fill<2>(words, n, key, s); break;
  }
}

}  // namespace cuda
}  // namespace ge
