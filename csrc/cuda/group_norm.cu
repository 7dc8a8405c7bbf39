// Fused GroupNorm + SiLU on the GPU, forward and backward: the cuda backend of
// genengine.ops.group_norm_silu, twin of kernels/group_norm.py (math in float32).
//
// Shape conventions (checked by genengine/ops/_group_norm_cuda.py):
//   x, y, dy, dx   N * C * S elements of one dtype (float32, bfloat16, float16), (N, C, S) memory,
//                  or (N, S, C) memory with channels_last; G groups of cpg = C / G channels
//   weight, bias   float32 [C] or null;  dweight, dbias float32 [C] or null
//   mean, rstd     float32 [N * G]
//   part           float32 [N * G, splits, 2]   forward partials (mean, M2) of each spatial chunk
//   pc             float32 [N * splits, C, 2]   backward per-channel partials (sum g * xhat, sum g)
//   pg             float32 [N * G, splits, 2]   backward per-group partials (sum gg, sum gg * xhat)
// A block owns one group of one sample and one chunk of s_chunk spatial positions: grid
// (N * G, splits), so a few groups still fill every SM. The region of a block is `outer` rows of
// `inner` contiguous elements: the cpg channel rows of the chunk (NCS) or the chunk's spatial rows
// of cpg channels (NSC). Rows are read in W-element pieces: 16-byte vectors when every row start
// is 16-byte aligned and rows are whole vectors, else single elements (W = 1).
//
// Forward: stats (per-thread Chan merges of per-vector mean / M2, then a block merge) writes
// `part`; normalize redoes the finalize of its group from the `splits` partials (the parallel Chan
// formula, one warp) and writes y = silu(x * a_c + b_c); split 0 also writes mean and rstd.
// Backward: reduce writes `pc` and `pg` (fixed-order sums), dx finalizes the group sums and
// writes dx; block (n = 0, split = 0) of each group also sums `pc` into dweight / dbias in a fixed
// order, so the whole backward is deterministic (no atomics).
#include <cstdint>
#include <initializer_list>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

constexpr int kGnThreads = 256;
constexpr int kGnWarps = kGnThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;

struct GnGeom {
  int64_t N, C, S, G, cpg, s_chunk;
  int64_t splits;
};

// The block's region: element (o, i) is at start + o * stride + i, with o < outer, i < inner.
struct Region {
  int64_t start, stride, outer, inner, ch0;
};

template <bool CL>
__device__ __forceinline__ Region region_of(const GnGeom& g, int64_t n, int64_t grp, int64_t split) {
  Region r;
  const int64_t s_lo = split * g.s_chunk;
  const int64_t len_s = min(g.s_chunk, g.S - s_lo);
  r.ch0 = grp * g.cpg;
  if (CL) {
    r.start = (n * g.S + s_lo) * g.C + r.ch0;
    r.stride = g.C;
    r.outer = len_s;
    r.inner = g.cpg;
  } else {
    r.start = (n * g.C + r.ch0) * g.S + s_lo;
    r.stride = g.S;
    r.outer = g.cpg;
    r.inner = len_s;
  }
  return r;
}

// (o, iv): a thread's position in the block's [outer, inner / W] piece grid, moved by kGnThreads
// pieces at a time with adds instead of a 64-bit division per step.
struct Cursor {
  int64_t o, iv, d_o, d_iv, vpr;
  __device__ __forceinline__ Cursor(int64_t vpr_) : vpr(vpr_) {
    o = int64_t(threadIdx.x) / vpr;
    iv = int64_t(threadIdx.x) - o * vpr;
    d_o = kGnThreads / vpr;
    d_iv = kGnThreads - d_o * vpr;
  }
  __device__ __forceinline__ void advance() {
    o += d_o;
    iv += d_iv;
    if (iv >= vpr) { iv -= vpr; ++o; }
  }
};

template <typename T, int W>
__device__ __forceinline__ void load_w(const T* __restrict__ p, int64_t i, float* f) {
  if constexpr (W == 1) {
    f[0] = to_float(p[i]);
  } else {
    load16<T>(p, i, f);
  }
}

template <typename T, int W>
__device__ __forceinline__ void store_w(T* __restrict__ p, int64_t i, const float* f) {
  if constexpr (W == 1) {
    p[i] = from_float<T>(f[0]);
  } else {
    store16<T>(p, i, f);
  }
}

// (count, mean, M2) of a set of values; merge() is Chan's pairwise formula.
struct Stat {
  float n, mean, m2;
};

__device__ __forceinline__ Stat merge(const Stat& a, const Stat& b) {
  const float n = a.n + b.n;
  if (n == 0.0f) return a;
  const float wb = b.n / n;
  const float d = b.mean - a.mean;
  return Stat{n, a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb};
}

__device__ __forceinline__ Stat shfl_down(const Stat& s, int delta) {
  return Stat{__shfl_down_sync(kFull, s.n, delta), __shfl_down_sync(kFull, s.mean, delta),
              __shfl_down_sync(kFull, s.m2, delta)};
}

// Result in thread 0. Every thread of the block must call it.
__device__ __forceinline__ Stat block_merge(Stat s) {
  __shared__ Stat sh[kGnWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) s = merge(s, shfl_down(s, d));
  if (lane == 0) sh[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kGnWarps ? sh[lane] : Stat{0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) s = merge(s, shfl_down(s, d));
  }
  return s;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(kFull, v, d);
  return v;  // lane 0
}

// Sums of a and b over the block, in thread 0; ends with a barrier so it can be called in a loop.
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float2 sh[kGnWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) sh[warp] = make_float2(a, b);
  __syncthreads();
  float2 r = make_float2(0.0f, 0.0f);
  if (warp == 0) {
    r = lane < kGnWarps ? sh[lane] : make_float2(0.0f, 0.0f);
    r.x = warp_sum(r.x);
    r.y = warp_sum(r.y);
  }
  __syncthreads();
  return r;
}

__device__ __forceinline__ float silu(float z) { return z * __frcp_rn(1.0f + __expf(-z)); }

// dy * silu'(z)
__device__ __forceinline__ float silu_grad(float dy, float z) {
  const float s = __frcp_rn(1.0f + __expf(-z));
  return dy * s * (1.0f + z * (1.0f - s));
}

// Values per split of the group (the last chunk may be short).
__device__ __forceinline__ float split_count(const GnGeom& g, int64_t j) {
  return float(g.cpg * min(g.s_chunk, g.S - j * g.s_chunk));
}

// ---- forward -------------------------------------------------------------------------------------

template <typename T, int W, bool CL>
__global__ void __launch_bounds__(kGnThreads)
gn_stats_kernel(const T* __restrict__ x, float* __restrict__ part, const GnGeom g) {
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const int64_t n = row / g.G;
  const Region r = region_of<CL>(g, n, row - n * g.G, split);
  Stat acc{0.0f, 0.0f, 0.0f};
  for (Cursor c(r.inner / W); c.o < r.outer; c.advance()) {
    float f[W];
    load_w<T, W>(x, r.start + c.o * r.stride + c.iv * W, f);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < W; ++k) sum += f[k];
    const float mv = sum * (1.0f / W);
    float m2 = 0.0f;
#pragma unroll
    for (int k = 0; k < W; ++k) m2 += (f[k] - mv) * (f[k] - mv);
    acc = merge(acc, Stat{float(W), mv, m2});
  }
  acc = block_merge(acc);
  if (threadIdx.x == 0) {
    float* p = part + (row * g.splits + split) * 2;
    p[0] = acc.mean;
    p[1] = acc.m2;
  }
}

template <typename T, int W, bool CL>
__global__ void __launch_bounds__(kGnThreads)
gn_norm_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ weight,
               const float* __restrict__ bias, const float* __restrict__ part,
               float* __restrict__ mean_out, float* __restrict__ rstd_out, float eps, const GnGeom g) {
  __shared__ float sh_stat[2];
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const int64_t n = row / g.G;
  const Region r = region_of<CL>(g, n, row - n * g.G, split);
  if (threadIdx.x < 32) {  // finalize: parallel Chan merge of the group's partials, in warp 0
    const int lane = threadIdx.x;
    const float total = float(g.cpg * g.S);
    const float* p = part + row * g.splits * 2;
    float s = 0.0f;
    for (int64_t j = lane; j < g.splits; j += 32) s += split_count(g, j) * p[2 * j];
    const float mean = __shfl_sync(kFull, warp_sum(s), 0) / total;
    float m2 = 0.0f;
    for (int64_t j = lane; j < g.splits; j += 32) {
      const float d = p[2 * j] - mean;
      m2 += p[2 * j + 1] + split_count(g, j) * d * d;
    }
    m2 = warp_sum(m2);
    if (lane == 0) {
      const float var = m2 / total;
      const float rstd = 1.0f / sqrtf((var < 0.0f ? 0.0f : var) + eps);  // a NaN stays NaN (fmaxf would drop it)
      sh_stat[0] = mean;
      sh_stat[1] = rstd;
      if (split == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
      }
    }
  }
  __syncthreads();
  const float mean = sh_stat[0], rstd = sh_stat[1];
  for (Cursor c(r.inner / W); c.o < r.outer; c.advance()) {
    const int64_t i = r.start + c.o * r.stride + c.iv * W;
    float f[W];
    load_w<T, W>(x, i, f);
    if (!CL) {  // one channel per row
      const int64_t ch = r.ch0 + c.o;
      const float a = weight ? rstd * __ldg(weight + ch) : rstd;
      const float b = (bias ? __ldg(bias + ch) : 0.0f) - mean * a;
#pragma unroll
      for (int k = 0; k < W; ++k) f[k] = silu(f[k] * a + b);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const int64_t ch = r.ch0 + c.iv * W + k;
        const float a = weight ? rstd * __ldg(weight + ch) : rstd;
        const float b = (bias ? __ldg(bias + ch) : 0.0f) - mean * a;
        f[k] = silu(f[k] * a + b);
      }
    }
    store_w<T, W>(y, i, f);
  }
}

// ---- backward ------------------------------------------------------------------------------------

struct BwdArgs {
  const void* dy;
  const void* x;
  const float* weight;
  const float* bias;
  const float* mean;
  const float* rstd;
  float* pc;
  float* pg;
  void* dx;
  float* dweight;
  float* dbias;
};

// NCS: a row is one channel; the block sums each row in turn (fixed order).
template <typename T, int W>
__global__ void __launch_bounds__(kGnThreads) gn_bwd_reduce_ncs_kernel(const BwdArgs a, const GnGeom g) {
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const int64_t n = row / g.G;
  const Region r = region_of<false>(g, n, row - n * g.G, split);
  const float mean = a.mean[row], rstd = a.rstd[row];
  const int64_t vpr = r.inner / W;
  float agg = 0.0f, aggx = 0.0f;
  for (int64_t o = 0; o < r.outer; ++o) {
    const int64_t ch = r.ch0 + o;
    const float gam = a.weight ? __ldg(a.weight + ch) : 1.0f;
    const float bet = a.bias ? __ldg(a.bias + ch) : 0.0f;
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t iv = threadIdx.x; iv < vpr; iv += kGnThreads) {
      const int64_t i = r.start + o * r.stride + iv * W;
      float fx[W], fd[W];
      load_w<T, W>(x, i, fx);
      load_w<T, W>(dy, i, fd);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const float xhat = (fx[k] - mean) * rstd;
        const float gr = silu_grad(fd[k], xhat * gam + bet);
        sg += gr;
        sgx += gr * xhat;
      }
    }
    const float2 t = block_sum2(sg, sgx);
    if (threadIdx.x == 0) {
      float* p = a.pc + ((n * g.splits + split) * g.C + ch) * 2;
      p[0] = t.y;
      p[1] = t.x;
      agg += gam * t.x;
      aggx += gam * t.y;
    }
  }
  if (threadIdx.x == 0) {
    a.pg[(row * g.splits + split) * 2] = agg;
    a.pg[(row * g.splits + split) * 2 + 1] = aggx;
  }
}

// NSC: a row is the chunk's cpg channels at one spatial position. Threads form a [rt, ctw] grid
// over (rows, pieces of a column tile): each keeps W per-channel sums over its rows, then the rt
// partial sums of each channel are added in shared memory in a fixed order.
constexpr int kMaxW = 8;

template <typename T, int W>
__global__ void __launch_bounds__(kGnThreads) gn_bwd_reduce_nsc_kernel(const BwdArgs a, const GnGeom g) {
  __shared__ float sh_g[kGnThreads * kMaxW];
  __shared__ float sh_gx[kGnThreads * kMaxW];
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const int64_t n = row / g.G;
  const Region r = region_of<true>(g, n, row - n * g.G, split);
  const float mean = a.mean[row], rstd = a.rstd[row];
  const int64_t vpr = r.inner / W;
  const int ctw = int(vpr < kGnThreads ? vpr : kGnThreads);
  const int rt = kGnThreads / ctw;
  const int tr = int(threadIdx.x) / ctw, tc = int(threadIdx.x) - tr * ctw;
  float agg = 0.0f, aggx = 0.0f;
  for (int64_t ct = 0; ct < vpr; ct += ctw) {
    const int64_t iv = ct + tc;
    const bool active = tr < rt && iv < vpr;
    float sg[W], sgx[W], gam[W], bet[W];
#pragma unroll
    for (int k = 0; k < W; ++k) {
      sg[k] = 0.0f;
      sgx[k] = 0.0f;
      const int64_t ch = r.ch0 + iv * W + k;
      gam[k] = active && a.weight ? __ldg(a.weight + ch) : 1.0f;
      bet[k] = active && a.bias ? __ldg(a.bias + ch) : 0.0f;
    }
    if (active) {
      for (int64_t o = tr; o < r.outer; o += rt) {
        const int64_t i = r.start + o * r.stride + iv * W;
        float fx[W], fd[W];
        load_w<T, W>(x, i, fx);
        load_w<T, W>(dy, i, fd);
#pragma unroll
        for (int k = 0; k < W; ++k) {
          const float xhat = (fx[k] - mean) * rstd;
          const float gr = silu_grad(fd[k], xhat * gam[k] + bet[k]);
          sg[k] += gr;
          sgx[k] += gr * xhat;
        }
      }
#pragma unroll
      for (int k = 0; k < W; ++k) {
        sh_g[(tr * ctw + tc) * W + k] = sg[k];
        sh_gx[(tr * ctw + tc) * W + k] = sgx[k];
      }
    }
    __syncthreads();
    const int64_t left = vpr - ct;
    const int ncols = int(left < ctw ? left : ctw) * W;  // channels of this column tile
    for (int cc = threadIdx.x; cc < ncols; cc += kGnThreads) {
      float tg = 0.0f, tgx = 0.0f;
      for (int q = 0; q < rt; ++q) {
        tg += sh_g[q * ctw * W + cc];
        tgx += sh_gx[q * ctw * W + cc];
      }
      const int64_t ch = r.ch0 + ct * W + cc;
      float* p = a.pc + ((n * g.splits + split) * g.C + ch) * 2;
      p[0] = tgx;
      p[1] = tg;
    }
    __syncthreads();  // the column sums are in pc (global): read back by thread 0 below
    if (threadIdx.x == 0) {
      for (int cc = 0; cc < ncols; ++cc) {
        const int64_t ch = r.ch0 + ct * W + cc;
        const float* p = a.pc + ((n * g.splits + split) * g.C + ch) * 2;
        const float gm = a.weight ? __ldg(a.weight + ch) : 1.0f;
        agg += gm * p[1];
        aggx += gm * p[0];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    a.pg[(row * g.splits + split) * 2] = agg;
    a.pg[(row * g.splits + split) * 2 + 1] = aggx;
  }
}

template <typename T, int W, bool CL>
__global__ void __launch_bounds__(kGnThreads) gn_bwd_dx_kernel(const BwdArgs a, const GnGeom g) {
  __shared__ float sh_m[2];
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const T* __restrict__ x = static_cast<const T*>(a.x);
  T* __restrict__ dx = static_cast<T*>(a.dx);
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const int64_t n = row / g.G;
  const Region r = region_of<CL>(g, n, row - n * g.G, split);
  if (threadIdx.x < 32) {
    const float* p = a.pg + row * g.splits * 2;
    float s1 = 0.0f, s2 = 0.0f;
    for (int64_t j = threadIdx.x; j < g.splits; j += 32) {
      s1 += p[2 * j];
      s2 += p[2 * j + 1];
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    if (threadIdx.x == 0) {
      const float inv_total = 1.0f / float(g.cpg * g.S);
      sh_m[0] = s1 * inv_total;
      sh_m[1] = s2 * inv_total;
    }
  }
  __syncthreads();
  const float m1 = sh_m[0], m2 = sh_m[1];
  const float mean = a.mean[row], rstd = a.rstd[row];
  for (Cursor c(r.inner / W); c.o < r.outer; c.advance()) {
    const int64_t i = r.start + c.o * r.stride + c.iv * W;
    float fx[W], fd[W];
    load_w<T, W>(x, i, fx);
    load_w<T, W>(dy, i, fd);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const int64_t ch = CL ? r.ch0 + c.iv * W + k : r.ch0 + c.o;
      const float gam = a.weight ? __ldg(a.weight + ch) : 1.0f;
      const float bet = a.bias ? __ldg(a.bias + ch) : 0.0f;
      const float xhat = (fx[k] - mean) * rstd;
      const float gg = silu_grad(fd[k], xhat * gam + bet) * gam;
      fx[k] = rstd * (gg - m1 - xhat * m2);
    }
    store_w<T, W>(dx, i, fx);
  }
  if ((a.dweight || a.dbias) && n == 0 && split == 0) {
    const int64_t rows = g.N * g.splits;
    for (int64_t cc = threadIdx.x; cc < g.cpg; cc += kGnThreads) {
      const int64_t ch = r.ch0 + cc;
      float sw = 0.0f, sb = 0.0f;
      for (int64_t q = 0; q < rows; ++q) {
        sw += a.pc[(q * g.C + ch) * 2];
        sb += a.pc[(q * g.C + ch) * 2 + 1];
      }
      if (a.dweight) a.dweight[ch] = sw;
      if (a.dbias) a.dbias[ch] = sb;
    }
  }
}

// ---- host side -----------------------------------------------------------------------------------

// 16-byte pieces when every row start is a whole number of vectors from an aligned base.
template <typename T>
bool vector_ok(const GnGeom& g, bool cl, std::initializer_list<const void*> ptrs) {
  constexpr int V = Vec16<T>::kWidth;
  for (const void* p : ptrs) {
    if (!aligned16(p)) return false;
  }
  if (cl) return g.cpg % V == 0;
  return g.S % V == 0 && (g.splits == 1 || g.s_chunk % V == 0);
}

template <typename T, int W, bool CL>
void launch_fwd(const GnGeom& g, const void* x, void* y, const float* w, const float* b, float eps,
                float* mean, float* rstd, float* part, cudaStream_t s) {
  const dim3 grid(unsigned(g.N * g.G), unsigned(g.splits));
  gn_stats_kernel<T, W, CL><<<grid, kGnThreads, 0, s>>>(static_cast<const T*>(x), part, g);
  GE_CUDA_CHECK_LAUNCH();
  gn_norm_kernel<T, W, CL><<<grid, kGnThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), w, b,
                                                        part, mean, rstd, eps, g);
  GE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void fwd_typed(const GnGeom& g, bool cl, const void* x, void* y, const float* w, const float* b, float eps,
               float* mean, float* rstd, float* part, cudaStream_t s) {
  constexpr int V = Vec16<T>::kWidth;
  const bool vec = vector_ok<T>(g, cl, {x, y});
  if (cl) {
    if (vec) launch_fwd<T, V, true>(g, x, y, w, b, eps, mean, rstd, part, s);
    else launch_fwd<T, 1, true>(g, x, y, w, b, eps, mean, rstd, part, s);
  } else {
    if (vec) launch_fwd<T, V, false>(g, x, y, w, b, eps, mean, rstd, part, s);
    else launch_fwd<T, 1, false>(g, x, y, w, b, eps, mean, rstd, part, s);
  }
}

template <typename T, int W, bool CL>
void launch_bwd(const GnGeom& g, const BwdArgs& a, cudaStream_t s) {
  const dim3 grid(unsigned(g.N * g.G), unsigned(g.splits));
  if constexpr (CL) {
    gn_bwd_reduce_nsc_kernel<T, W><<<grid, kGnThreads, 0, s>>>(a, g);
  } else {
    gn_bwd_reduce_ncs_kernel<T, W><<<grid, kGnThreads, 0, s>>>(a, g);
  }
  GE_CUDA_CHECK_LAUNCH();
  gn_bwd_dx_kernel<T, W, CL><<<grid, kGnThreads, 0, s>>>(a, g);
  GE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void bwd_typed(const GnGeom& g, bool cl, const BwdArgs& a, cudaStream_t s) {
  constexpr int V = Vec16<T>::kWidth;
  const bool vec = vector_ok<T>(g, cl, {a.x, a.dy, a.dx});
  if (cl) {
    if (vec) launch_bwd<T, V, true>(g, a, s);
    else launch_bwd<T, 1, true>(g, a, s);
  } else {
    if (vec) launch_bwd<T, V, false>(g, a, s);
    else launch_bwd<T, 1, false>(g, a, s);
  }
}

GnGeom make_geom(const char* who, int64_t n, int64_t c, int64_t s, int64_t groups, int64_t s_chunk,
                 int64_t splits) {
  if (n <= 0 || c <= 0 || s <= 0 || groups <= 0 || c % groups != 0 || s_chunk <= 0 || splits <= 0 ||
      splits > 65535 || (splits - 1) * s_chunk >= s || splits * s_chunk < s || n * groups > 0x7FFFFFFF) {
    throw std::runtime_error(std::string("genengine._cuda.") + who + ": invalid geometry");
  }
  return GnGeom{n, c, s, groups, c / groups, s_chunk, splits};
}

}  // namespace

// Host launchers behind genengine._cuda.group_norm_silu_fwd / _bwd (bindings_cuda.cpp); asynchronous
// on `stream`. `part`, `pc` and `pg` are caller-allocated float32 workspaces (see the top).
void group_norm_silu_fwd(int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last,
                         const void* x, const float* weight, const float* bias, float eps, void* y,
                         float* mean, float* rstd, float* part, int64_t s_chunk, int64_t splits,
                         uintptr_t stream) {
  const GnGeom g = make_geom("group_norm_silu_fwd", n, c, s, groups, s_chunk, splits);
  if (!x || !y || !mean || !rstd || !part) {
    throw std::runtime_error("genengine._cuda.group_norm_silu_fwd: x, y, mean, rstd and part are required");
  }
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: fwd_typed<float>(g, channels_last, x, y, weight, bias, eps, mean, rstd, part, st); break;
    case kBFloat16: fwd_typed<__nv_bfloat16>(g, channels_last, x, y, weight, bias, eps, mean, rstd, part, st); break;
    case kFloat16: fwd_typed<__half>(g, channels_last, x, y, weight, bias, eps, mean, rstd, part, st); break;
    default:
      throw std::runtime_error("genengine._cuda.group_norm_silu_fwd: unsupported dtype code " + std::to_string(dtype));
  }
}

void group_norm_silu_bwd(int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last,
                         const void* dy, const void* x, const float* weight, const float* bias,
                         const float* mean, const float* rstd, void* dx, float* dweight, float* dbias,
                         float* pc, float* pg, int64_t s_chunk, int64_t splits, uintptr_t stream) {
  const GnGeom g = make_geom("group_norm_silu_bwd", n, c, s, groups, s_chunk, splits);
  if (!dy || !x || !mean || !rstd || !dx || !pc || !pg) {
    throw std::runtime_error("genengine._cuda.group_norm_silu_bwd: dy, x, mean, rstd, dx, pc and pg are required");
  }
  const BwdArgs a{dy, x, weight, bias, mean, rstd, pc, pg, dx, dweight, dbias};
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: bwd_typed<float>(g, channels_last, a, st); break;
    case kBFloat16: bwd_typed<__nv_bfloat16>(g, channels_last, a, st); break;
    case kFloat16: bwd_typed<__half>(g, channels_last, a, st); break;
    default:
      throw std::runtime_error("genengine._cuda.group_norm_silu_bwd: unsupported dtype code " + std::to_string(dtype));
  }
}

}  // namespace cuda
}  // namespace ge
