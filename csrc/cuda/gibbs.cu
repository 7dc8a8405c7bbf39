// CUDA kernels of the Gibbs samplers, the twins of csrc/cpu/gibbs.cpp (same contracts and Philox
// stream positions; see genengine/ops/gibbs.py). Host launchers are asynchronous on `stream`.
//
//   rbm_epilogue   after cuBLAS's GEMM (torch.mm): bias, temperature, sigmoid, Bernoulli or Gaussian
//                  draw, clamp, in place. One thread per Philox block: four consecutive stream
//                  positions, i.e. four consecutive elements of the row-major output.
//   ising_sweep    one launch per colour of each sweep (the colours must be ordered: a grid-wide
//                  barrier between them); one thread per updated site, integer threshold draw.
//   bm_gibbs       one launch per colour class of each sweep; one thread per (chain, class node).
//   langevin_step  one thread per Philox block of four elements.
#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rbm_epilogue_kernel(T* __restrict__ buf, int64_t rows, int64_t cols, const float* __restrict__ bias, float beta,
                        const float* __restrict__ beta_rows, float* __restrict__ prob, int gaussian,
                        const uint8_t* __restrict__ clamp_mask, const float* __restrict__ clamp_values,
                        const PhiloxKey key, uint64_t base) {
  const int64_t n = rows * cols;
  const uint64_t first_block = base >> 2;
  const int64_t blocks = int64_t(((base + uint64_t(n) + 3) >> 2) - first_block);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < blocks; q += stride) {
    const uint64_t blk = first_block + uint64_t(q);
    uint32_t w[4];
    philox_block(key, blk, w);
    float r[4];
    if (gaussian) {
      box_muller(w[0], w[1], &r[0], &r[1]);
      box_muller(w[2], w[3], &r[2], &r[3]);
    } else {
#pragma unroll
      for (int l = 0; l < 4; ++l) r[l] = u32_to_uniform(w[l]);
    }
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t pos = 4 * blk + uint64_t(l);
      if (pos < base || pos >= base + uint64_t(n)) continue;
      const int64_t e = int64_t(pos - base);
      const int64_t row = e / cols, col = e - row * cols;
      const float bt = beta_rows ? beta_rows[row] : beta;
      const float pre = load_f(buf + e) + bias[col];
      float sample, p;
      if (gaussian) {
        p = pre;
        sample = pre + r[l] * rsqrtf(bt);
      } else {
        const float ex = __expf(-bt * pre);
        p = 1.0f / (1.0f + ex);
        sample = (r[l] + r[l] * ex < 1.0f) ? 1.0f : 0.0f;
      }
      if (clamp_mask && clamp_mask[e]) {
        sample = clamp_values[e];
        p = sample;
      }
      store_f(buf + e, sample);
      if (prob) prob[e] = p;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    ising_colour_kernel(int8_t* __restrict__ spins, int64_t L, int64_t H, int64_t W, const int32_t* __restrict__ thr,
                        int per_lattice, int64_t t, int c, const PhiloxKey key) {
  const int64_t half = W / 2;
  const int64_t n = L * H * half;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < n; g += stride) {
    const int64_t k = g % half;
    const int64_t li = g / half;  // lattice * H + row
    const int64_t l = li / H, i = li - l * H;
    const int64_t j = 2 * k + ((i + c) & 1);
    int8_t* lat = spins + l * H * W;
    const int64_t up = (i == 0 ? H - 1 : i - 1), dn = (i == H - 1 ? 0 : i + 1);
    const int64_t jl = (j == 0 ? W - 1 : j - 1), jr = (j == W - 1 ? 0 : j + 1);
    const int s = int(lat[up * W + j]) + int(lat[dn * W + j]) + int(lat[i * W + jl]) + int(lat[i * W + jr]);
    const int32_t T = thr[(per_lattice ? 5 * l : 0) + (s + 4) / 2];
    const uint64_t pos = uint64_t((((t * L + l) * 2 + c) * H + i) * half + k);
    uint32_t w[4];
    philox_block(key, pos >> 2, w);
    const uint32_t word = w[pos & 3];
    lat[i * W + j] = int32_t(word >> 9) < T ? int8_t(1) : int8_t(-1);
  }
}

__global__ void __launch_bounds__(kThreads)
    bm_class_kernel(float* __restrict__ x, int64_t batch, int64_t n, const int64_t* __restrict__ indptr,
                    const int64_t* __restrict__ indices, const float* __restrict__ values, const float* __restrict__ bias,
                    const int64_t* __restrict__ nodes, int64_t start, int64_t count, float beta, int64_t t,
                    const PhiloxKey key) {
  const int64_t total = batch * count;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < total; g += stride) {
    const int64_t b = g / count, q = g - b * count;
    const int64_t i = nodes[start + q];
    float* xr = x + b * n;
    float acc = bias[i];
    for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) acc += values[e] * xr[indices[e]];
    const uint64_t pos = uint64_t((t * batch + b) * n + i);
    uint32_t w[4];
    philox_block(key, pos >> 2, w);
    const float u = u32_to_uniform(w[pos & 3]);
    const float ex = __expf(-beta * acc);
    xr[i] = (u + u * ex < 1.0f) ? 1.0f : 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads)
    langevin_kernel(int64_t n, const float* __restrict__ x, const float* __restrict__ grad, float* __restrict__ out,
                    float half_step, float noise_coef, int clamp, float lo, float hi, const PhiloxKey key) {
  const int64_t blocks = (n + 3) / 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < blocks; q += stride) {
    uint32_t w[4];
    philox_block(key, uint64_t(q), w);
    float z[4];
    box_muller(w[0], w[1], &z[0], &z[1]);
    box_muller(w[2], w[3], &z[2], &z[3]);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t e = 4 * q + l;
      if (e >= n) break;
      // the same float32 operations as the CPU (no contraction), so results agree to rounding of z
      float v = __fadd_rn(__fsub_rn(x[e], __fmul_rn(half_step, grad[e])), __fmul_rn(noise_coef, z[l]));
      if (clamp) v = clamp_keep_nan(v, lo, hi);  // fminf/fmaxf would pin a NaN to lo; the CPU keeps it
      out[e] = v;
    }
  }
}

template <typename Kernel>
unsigned grid_of(int64_t work, Kernel kernel, std::atomic<int>& occ) {
  return grid_for(work, kernel, occ);
}

}  // namespace

void rbm_epilogue(int dtype, int64_t rows, int64_t cols, void* buf, const float* bias, float beta,
                  const float* beta_rows, float* prob, int gaussian, const uint8_t* clamp_mask,
                  const float* clamp_values, uint64_t seed, uint64_t offset, uint64_t base, uintptr_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const PhiloxKey key = make_philox_key(seed, offset);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t blocks = int64_t(((base + uint64_t(rows * cols) + 3) >> 2) - (base >> 2));
  if (dtype == 1) {
    static std::atomic<int> occ{0};
    auto k = rbm_epilogue_kernel<__nv_bfloat16>;
    k<<<grid_of(blocks, k, occ), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(buf), rows, cols, bias, beta, beta_rows,
                                                   prob, gaussian, clamp_mask, clamp_values, key, base);
  } else {
    static std::atomic<int> occ{0};
    auto k = rbm_epilogue_kernel<float>;
    k<<<grid_of(blocks, k, occ), kThreads, 0, s>>>(static_cast<float*>(buf), rows, cols, bias, beta, beta_rows, prob,
                                                   gaussian, clamp_mask, clamp_values, key, base);
  }
  GE_CUDA_CHECK_LAUNCH();
}

void ising_sweep(int8_t* spins, int64_t L, int64_t H, int64_t W, const int32_t* thr, int per_lattice, int64_t sweeps,
                 uint64_t seed, uint64_t offset, uintptr_t stream) {
  if (L <= 0 || H <= 0 || W <= 0) return;
  const PhiloxKey key = make_philox_key(seed, offset);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  static std::atomic<int> occ{0};
  const unsigned grid = grid_of(L * H * (W / 2), ising_colour_kernel, occ);
  for (int64_t t = 0; t < sweeps; ++t)
    for (int c = 0; c < 2; ++c) {
      ising_colour_kernel<<<grid, kThreads, 0, s>>>(spins, L, H, W, thr, per_lattice, t, c, key);
      GE_CUDA_CHECK_LAUNCH();
    }
}

// class_ptr is read on the host (the Python side passes a CPU copy): the launches are per class.
void bm_gibbs(int64_t batch, int64_t n, float* x, const int64_t* indptr, const int64_t* indices, const float* values,
              const float* bias, const int64_t* class_ptr_host, const int64_t* nodes, int64_t n_classes, float beta,
              int64_t sweeps, uint64_t seed, uint64_t offset, uintptr_t stream) {
  if (batch <= 0 || n <= 0) return;
  const PhiloxKey key = make_philox_key(seed, offset);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  static std::atomic<int> occ{0};
  for (int64_t t = 0; t < sweeps; ++t)
    for (int64_t c = 0; c < n_classes; ++c) {
      const int64_t start = class_ptr_host[c], count = class_ptr_host[c + 1] - start;
      if (count <= 0) continue;
      bm_class_kernel<<<grid_of(batch * count, bm_class_kernel, occ), kThreads, 0, s>>>(
          x, batch, n, indptr, indices, values, bias, nodes, start, count, beta, t, key);
      GE_CUDA_CHECK_LAUNCH();
    }
}

void langevin_step(int64_t n, const float* x, const float* grad, float* out, float half_step, float noise_coef,
                   int clamp, float lo, float hi, uint64_t seed, uint64_t offset, uintptr_t stream) {
  if (n <= 0) return;
  const PhiloxKey key = make_philox_key(seed, offset);
  static std::atomic<int> occ{0};
  langevin_kernel<<<grid_of((n + 3) / 4, langevin_kernel, occ), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      n, x, grad, out, half_step, noise_coef, clamp, lo, hi, key);
  GE_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace ge
