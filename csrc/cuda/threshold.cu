// Per-sample dynamic thresholds on the GPU (the twin of csrc/cpu/threshold.cpp): for each sample b
// of x0 = kx * x + kp * p (p guided; x0 recomputed on the fly, never stored)
//   s_b = clamp(lerp(v_rank0, v_rank1, frac), 1, max_value),  v_j = j-th smallest |x0| of sample b
// which is torch.quantile's linear interpolation (rank1 = min(rank0 + 1, inner - 1)). A NaN in a
// sample's x0 makes s_b NaN.
//
// Shapes: x, cond, uncond contiguous [batch, inner] of one dtype; guidance_per_sample float32
// [batch] (optional); thresholds float32 [batch] out; workspace kWorkspaceWords uint64 words per
// sample, zeroed by the caller (the kernels leave it zeroed again).
//
// Selection: three radix passes over the 31-bit key of |x0| (abs_key in step.h), digits of 11, 10
// and 10 bits. One launch per pass on a (blocks_per_sample, batch) grid: each block histograms its
// slice of the sample in shared memory (the keys matching each wanted rank's prefix; one histogram
// while the two ranks share a prefix), adds the non-zero bins to the sample's global histogram with
// 64-bit atomics, and the last block of the sample to finish (a counter in the workspace, after a
// __threadfence) scans the histogram, moves each rank's prefix one digit down, zeroes the histogram
// and the counter for the next pass and, in the last pass, writes s_b. No host sync anywhere, so
// the three launches can be captured in a CUDA graph.
#include <cub/block/block_scan.cuh>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

constexpr int kSelectThreads = 256;
constexpr int kBinsPerThread = kSelectBins / kSelectThreads;     // 8
constexpr int kHistWords = 2 * kSelectBins;                       // two 2048-bin histograms
// state after the histograms: prefix0, prefix1, rank0, rank1, nan, done counter (+ 2 spare)
constexpr int kStatePrefix = kHistWords, kStateRank = kHistWords + 2, kStateNaN = kHistWords + 4,
              kStateDone = kHistWords + 5;
constexpr int kWorkspaceWords = kHistWords + 8;
constexpr int kMaxGridY = 65535;

struct SelectParams {
  int64_t inner;
  const void* x;
  const void* cond;
  const void* uncond;
  const float* guidance_per_sample;
  float guidance;
  StepCoefs k;          // kx, kp used
  int64_t rank0, rank1;
  float frac, max_value;
  float* thresholds;
  unsigned long long* workspace;
  int64_t batch0;       // first sample of this launch (grids are at most 65535 samples high)
};

using BlockScan = cub::BlockScan<unsigned long long, kSelectThreads>;

// In the last block: the digit of `hist` whose cumulative count passes *rank; moves prefix and rank.
__device__ void descend(const unsigned long long* hist, int bits, unsigned long long* prefix,
                        unsigned long long* rank, typename BlockScan::TempStorage& scan_tmp,
                        unsigned long long* found) {
  const int bins = 1 << bits;
  const int per = bins / kSelectThreads;  // 8 or 4
  unsigned long long local[kBinsPerThread];
  unsigned long long sum = 0;
  for (int j = 0; j < per; ++j) {
    local[j] = __ldcg(hist + threadIdx.x * per + j);  // L2: other SMs' atomics live there
    sum += local[j];
  }
  unsigned long long before;
  BlockScan(scan_tmp).ExclusiveSum(sum, before);
  const unsigned long long r = *rank;
  if (before <= r && r < before + sum) {  // exactly one thread holds the rank
    for (int j = 0; j < per; ++j) {
      if (before + local[j] > r) {
        found[0] = (*prefix << bits) | unsigned(threadIdx.x * per + j);
        found[1] = r - before;
        break;
      }
      before += local[j];
    }
  }
  __syncthreads();
  *prefix = found[0];
  *rank = found[1];
  __syncthreads();  // found[] and the scan storage are reused by the next call
}

template <typename T, bool kUncond>
__global__ void __launch_bounds__(kSelectThreads) select_pass_kernel(const SelectParams p, int pass) {
  __shared__ unsigned int sh[2][kSelectBins];
  __shared__ typename BlockScan::TempStorage scan_tmp;
  __shared__ unsigned long long found[2];
  __shared__ bool last;
  const int64_t b = p.batch0 + blockIdx.y;
  unsigned long long* ws = p.workspace + b * kWorkspaceWords;
  const unsigned long long p0 = pass ? __ldcg(ws + kStatePrefix) : 0ull;
  const unsigned long long p1 = pass ? __ldcg(ws + kStatePrefix + 1) : 0ull;
  const bool same = p0 == p1;
  const int shift = select_shift(pass), bits = select_bits(pass), high = shift + bits;
  const uint32_t mask = (1u << bits) - 1u;
  for (int d = threadIdx.x; d < 2 * kSelectBins; d += kSelectThreads) (&sh[0][0])[d] = 0u;
  __syncthreads();

  const T* __restrict__ x = static_cast<const T*>(p.x) + b * p.inner;
  const T* __restrict__ cond = static_cast<const T*>(p.cond) + b * p.inner;
  const T* __restrict__ uncond = kUncond ? static_cast<const T*>(p.uncond) + b * p.inner : nullptr;
  const float w = kUncond ? (p.guidance_per_sample ? __ldg(p.guidance_per_sample + b) : p.guidance) : 1.0f;
  const int64_t stride = int64_t(gridDim.x) * kSelectThreads;
  for (int64_t i = int64_t(blockIdx.x) * kSelectThreads + threadIdx.x; i < p.inner; i += stride) {
    const float xv = to_float(x[i]), cv = to_float(cond[i]);
    const float pv = kUncond ? guided(cv, to_float(uncond[i]), w) : cv;
    const uint32_t key = abs_key(term(p.k.kx, xv) + p.k.kp * pv);  // as predicted_x0 in the step kernel
    if (pass == 0) {
      atomicAdd(&sh[0][key >> 20], 1u);
    } else {
      const unsigned long long top = key >> high;
      const uint32_t d = (key >> shift) & mask;
      if (top == p0) atomicAdd(&sh[0][d], 1u);
      if (!same && top == p1) atomicAdd(&sh[1][d], 1u);
    }
  }
  __syncthreads();
  const int bins = 1 << bits;
  for (int d = threadIdx.x; d < bins; d += kSelectThreads) {
    if (sh[0][d]) atomicAdd(ws + d, (unsigned long long)sh[0][d]);
    if (!same && sh[1][d]) atomicAdd(ws + kSelectBins + d, (unsigned long long)sh[1][d]);
  }
  // the last block of this sample to get here sees every block's counts
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(ws + kStateDone, 1ull) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();

  unsigned long long r0 = pass ? __ldcg(ws + kStateRank) : (unsigned long long)p.rank0;
  unsigned long long r1 = pass ? __ldcg(ws + kStateRank + 1) : (unsigned long long)p.rank1;
  unsigned long long nan = pass ? __ldcg(ws + kStateNaN) : (__ldcg(ws + kNaNDigit) != 0 ? 1ull : 0ull);
  unsigned long long q0 = p0, q1 = p1;
  descend(ws, bits, &q0, &r0, scan_tmp, found);
  descend(ws + (same ? 0 : kSelectBins), bits, &q1, &r1, scan_tmp, found);
  for (int d = threadIdx.x; d < kHistWords; d += kSelectThreads) ws[d] = 0ull;
  if (threadIdx.x == 0) {
    ws[kStateDone] = 0ull;
    if (pass + 1 < kSelectPasses) {
      ws[kStatePrefix] = q0;
      ws[kStatePrefix + 1] = q1;
      ws[kStateRank] = r0;
      ws[kStateRank + 1] = r1;
      ws[kStateNaN] = nan;
    } else {
      for (int j = kStatePrefix; j < kWorkspaceWords; ++j) ws[j] = 0ull;
      const float s = threshold_from_order_stats(__uint_as_float(uint32_t(q0)), __uint_as_float(uint32_t(q1)),
                                                 p.frac, p.max_value);
      p.thresholds[b] = nan ? __uint_as_float(0x7FC00000u) : s;
    }
  }
}

template <typename T>
void launch_passes(SelectParams p, int64_t batch, cudaStream_t stream) {
  static std::atomic<int> occ_u{0}, occ_n{0};
  const bool uncond = p.uncond != nullptr;
  auto kernel = uncond ? select_pass_kernel<T, true> : select_pass_kernel<T, false>;
  std::atomic<int>& occ = uncond ? occ_u : occ_n;
  // enough blocks to fill the GPU a few times over, split among the samples; each thread takes at
  // least a handful of elements so the flush of 2048 bins per block stays small
  int blocks_per_sm = 0;
  {
    int b = occ.load(std::memory_order_relaxed);
    if (b <= 0) {
      GE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kSelectThreads, 0));
      if (b <= 0) b = 1;
      occ.store(b, std::memory_order_relaxed);
    }
    blocks_per_sm = b;
  }
  const int64_t target = int64_t(sm_count()) * blocks_per_sm * 2;
  const int64_t by_work = (p.inner + kSelectThreads * 16 - 1) / (kSelectThreads * 16);
  int64_t per_sample = (target + batch - 1) / batch;
  per_sample = per_sample < by_work ? per_sample : by_work;
  if (per_sample < 1) per_sample = 1;
  for (int pass = 0; pass < kSelectPasses; ++pass) {
    for (int64_t b0 = 0; b0 < batch; b0 += kMaxGridY) {
      const int64_t rows = batch - b0 < kMaxGridY ? batch - b0 : kMaxGridY;
      p.batch0 = b0;
      kernel<<<dim3(unsigned(per_sample), unsigned(rows)), kSelectThreads, 0, stream>>>(p, pass);
      GE_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace

int64_t threshold_workspace_words() { return kWorkspaceWords; }

// Host launcher behind genengine._cuda.dynamic_thresholds (bindings_cuda.cpp). Asynchronous on `stream`.
void dynamic_thresholds(int dtype, int64_t batch, int64_t inner, const void* x, const void* cond,
                        const void* uncond, const float* guidance_per_sample, float guidance, float kx,
                        float kp, int64_t rank, float frac, float max_value, float* thresholds,
                        void* workspace, uintptr_t stream) {
  if (dtype < kFloat32 || dtype > kFloat16) {
    throw std::runtime_error("genengine._cuda.dynamic_thresholds: unsupported dtype code " + std::to_string(dtype));
  }
  if (batch <= 0 || inner <= 0) return;
  if (!x || !cond || !thresholds || !workspace) {
    throw std::runtime_error("genengine._cuda.dynamic_thresholds: x, cond, thresholds and workspace are required");
  }
  if (rank < 0 || rank >= inner) throw std::runtime_error("genengine._cuda.dynamic_thresholds: rank out of range");
  SelectParams p;
  p.inner = inner;
  p.x = x;
  p.cond = cond;
  p.uncond = uncond;
  p.guidance_per_sample = guidance_per_sample;
  p.guidance = guidance;
  p.k = StepCoefs{};
  p.k.kx = kx;
  p.k.kp = kp;
  p.rank0 = rank;
  p.rank1 = rank + 1 < inner ? rank + 1 : inner - 1;
  p.frac = frac;
  p.max_value = max_value;
  p.thresholds = thresholds;
  p.workspace = static_cast<unsigned long long*>(workspace);
  p.batch0 = 0;
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: launch_passes<float>(p, batch, s); break;
    case kBFloat16: launch_passes<__nv_bfloat16>(p, batch, s); break;
    default: launch_passes<__half>(p, batch, s); break;
  }
}

}  // namespace cuda
}  // namespace ge
