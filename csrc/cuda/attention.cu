// Decode attention on the GPU (flash-decoding): the cuda backend of genengine.ops.decode_attention,
// twin of the decode kernel in kernels/attention.py. Compiled, not yet run on a GPU (none was lent
// to this work): its tests are marked gpu.
//
// Shapes (checked by genengine/ops/attention.py; pointers and element strides from
// genengine/ops/_attention_cuda.py):
//   q, out     [B, Q, Hq, D] contiguous, one dtype (float32, bfloat16, float16)
//   k, v       key j of sequence b, kv head h at page * sp + slot * ss + h * sh, with page =
//              block_table[b * bt_stride + j / page_size] (clamped into [0, num_pages)), slot =
//              j % page_size; a contiguous [B, Hkv, S, D] cache is block_table = null, page = b
//   lens       int32 [B], clamped into [0, capacity]
//   lse        float32 [B, Q, Hq]
//   ws_out     float32 [B * Hkv * R, splits, D], ws_lse float32 [B * Hkv * R, splits] (splits > 1)
// Query i of Q sits at position L - Q + i and attends keys (pos - window, pos] (window 0: [0, pos]).
//
// Work: a block of 4 warps owns (sequence, kv head, KV split, a chunk of up to kRows rows of the
// query group: R = Q * Hq / Hkv rows), so each key of the chunk is read once for all its rows. Warp
// w takes keys w, w + 4, ... of the split; a lane holds elements lane + 32 i of a row (EPL = ceil(D
// / 32) per lane), each row's score is a warp-wide shuffle sum, and every lane keeps the same
// running max / sum, so the online softmax needs no further communication. The four warps' states
// merge through shared memory by log-sum-exp; with several splits the block writes a normalised
// partial and its lse, and decode_merge_kernel combines the splits (base-2 math throughout: the
// queries are pre-scaled by scale * log2 e, or by scale alone when a softcap applies).
#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRows = 8;  // rows of the query group per block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct DecodeGeom {
  int64_t B, Q, Hq, Hkv, G, R, D;
  int64_t k_sp, k_ss, k_sh, v_sp, v_ss, v_sh;
  int64_t bt_stride, page_size, num_pages, capacity;
  float mult, softcap;
  int64_t window, splits;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// softcap * tanh(s / softcap) * log2(e). tanh(t) = t + t^3 Q(t^2) for |t| < 0.55 (relative error
// 6.6e-8; the coefficients are the CPU kernel's kTanhQ), else 1 - 2 / (exp(2t) + 1), which is only
// absolutely exact (~1e-7) and so would put an error of ~1e-7 * softcap on every small score.
__device__ __forceinline__ float softcap2(float s, float softcap) {
  const float t = s * (1.0f / softcap), u = t * t;
  const float q = fmaf(fmaf(fmaf(fmaf(-0.006274845646750267f, u, 0.021072091626934204f), u, -0.05385240570398127f), u,
                            0.13332587002559224f), u, -0.33333317583376937f);
  const float e = exp2f(fminf(t * (2.0f * kLog2e), 126.0f));
  const float th = fabsf(t) < 0.55f ? fmaf(t * u, q, t) : 1.0f - 2.0f / (e + 1.0f);
  return th * (softcap * kLog2e);
}

template <typename T, int EPL>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                             const T* __restrict__ v, const int32_t* __restrict__ bt,
                                                             const int32_t* __restrict__ lens, T* __restrict__ out,
                                                             float* __restrict__ lse, float* __restrict__ ws_out,
                                                             float* __restrict__ ws_lse, DecodeGeom g) {
  const int64_t bh = blockIdx.x, split = blockIdx.y, r0 = int64_t(blockIdx.z) * kRows;
  const int64_t b = bh / g.Hkv, h = bh - b * g.Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t L = min(max(int64_t(lens[b]), int64_t(0)), g.capacity);
  const int nr = int(min(int64_t(kRows), g.R - r0));

  float qv[kRows][EPL], acc[kRows][EPL], m[kRows], l[kRows];
  int64_t lo[kRows], hi[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    lo[r] = hi[r] = 0;
#pragma unroll
    for (int i = 0; i < EPL; ++i) qv[r][i] = acc[r][i] = 0.0f;
    if (r < nr) {
      const int64_t row = r0 + r, qi = row / g.G, gg = row - qi * g.G;
      const int64_t pos = L - g.Q + qi;
      hi[r] = pos >= 0 ? pos + 1 : 0;
      lo[r] = (pos >= 0 && g.window > 0) ? max(int64_t(0), pos - g.window + 1) : 0;
      if (lo[r] > hi[r]) lo[r] = hi[r];
      const T* qr = q + ((b * g.Q + qi) * g.Hq + h * g.G + gg) * g.D;
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        const int d = lane + 32 * i;
        qv[r][i] = d < g.D ? to_float(qr[d]) * g.mult : 0.0f;
      }
    }
  }
  const int64_t kb = g.window > 0 ? max(int64_t(0), L - g.Q - g.window + 1) : 0;
  const int64_t total = max(int64_t(0), L - kb);
  const int64_t chunk = (total + g.splits - 1) / g.splits;
  const int64_t klo = min(L, kb + split * chunk), khi = min(L, kb + (split + 1) * chunk);
  const T* kh = k + h * g.k_sh;
  const T* vh = v + h * g.v_sh;

  for (int64_t j = klo + warp; j < khi; j += kWarps) {
    int64_t page = b, slot = j;
    if (bt != nullptr) {
      const int64_t pi = j / g.page_size;
      page = min(max(int64_t(bt[b * g.bt_stride + pi]), int64_t(0)), g.num_pages - 1);
      slot = j - pi * g.page_size;
    }
    const T* kr = kh + page * g.k_sp + slot * g.k_ss;
    const T* vr = vh + page * g.v_sp + slot * g.v_ss;
    float kx[EPL], vx[EPL];
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      const int d = lane + 32 * i;
      kx[i] = d < g.D ? to_float(kr[d]) : 0.0f;
      vx[i] = d < g.D ? to_float(vr[d]) : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= nr) break;
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < EPL; ++i) s += qv[r][i] * kx[i];
      s = warp_sum(s);
      if (g.softcap > 0.0f) s = softcap2(s, g.softcap);
      if (j < lo[r] || j >= hi[r]) continue;  // the same for every lane: no divergence inside the warp
      const float mn = fmaxf(m[r], s);
      const float corr = exp2f(m[r] - mn), p = exp2f(s - mn);
      l[r] = l[r] * corr + p;
      m[r] = mn;
#pragma unroll
      for (int i = 0; i < EPL; ++i) acc[r][i] = acc[r][i] * corr + p * vx[i];
    }
  }

  // merge the warps: per row, weights 2^(m_w - M)
  __shared__ float sm_m[kWarps][kRows], sm_l[kWarps][kRows];
  extern __shared__ float sm_acc[];  // [kWarps][kRows][32 * EPL]
  const int width = 32 * EPL;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (lane == 0) {
      sm_m[warp][r] = m[r];
      sm_l[warp][r] = l[r];
    }
#pragma unroll
    for (int i = 0; i < EPL; ++i) sm_acc[(warp * kRows + r) * width + lane + 32 * i] = acc[r][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nr * width; idx += kWarps * 32) {
    const int r = idx / width, d = idx - r * width;
    // a NaN score leaves its warp's l NaN (fmaxf drops it from m): the row and its lse are NaN, as in
    // the reference, even where every warp's max is still -inf
    float M = -INFINITY;
    bool nan = false;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      M = fmaxf(M, sm_m[w][r]);
      nan |= isnan(sm_l[w][r]);
    }
    float tot = 0.0f, o = 0.0f;
    if (M > -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float wt = exp2f(sm_m[w][r] - M);
        tot += wt * sm_l[w][r];
        o += wt * sm_acc[(w * kRows + r) * width + d];
      }
    }
    const bool has = tot > 0.0f;
    const float val = nan ? NAN : has ? o / tot : 0.0f;
    const float ls = nan ? NAN : has ? (M + log2f(tot)) * kLn2 : -INFINITY;
    const int64_t row = r0 + r, qi = row / g.G, gg = row - qi * g.G;
    const int64_t orow = (b * g.Q + qi) * g.Hq + h * g.G + gg;
    if (g.splits == 1) {
      if (d < g.D) out[orow * g.D + d] = from_float<T>(val);
      if (d == 0) lse[orow] = ls;
    } else {
      const int64_t w = (bh * g.R + row) * g.splits + split;
      if (d < g.D) ws_out[w * g.D + d] = val;
      if (d == 0) ws_lse[w] = ls;
    }
  }
}

// one block per (sequence, kv head, row): combine the splits' partials by their natural-log lse
template <typename T>
__global__ void decode_merge_kernel(const float* __restrict__ ws_out, const float* __restrict__ ws_lse,
                                    T* __restrict__ out, float* __restrict__ lse, DecodeGeom g) {
  const int64_t item = blockIdx.x;  // (b * Hkv + h) * R + row
  const int64_t row = item % g.R, bh = item / g.R, b = bh / g.Hkv, h = bh - b * g.Hkv;
  const int64_t qi = row / g.G, gg = row - qi * g.G;
  const int64_t orow = (b * g.Q + qi) * g.Hq + h * g.G + gg;
  const float* pl = ws_lse + item * g.splits;
  float M = -INFINITY;
  bool nan = false;  // a NaN split (its lse NaN) makes the row NaN
  for (int64_t s = 0; s < g.splits; ++s) {
    M = fmaxf(M, pl[s]);
    nan |= isnan(pl[s]);
  }
  float tot = 0.0f;
  if (M > -INFINITY)
    for (int64_t s = 0; s < g.splits; ++s) tot += expf(pl[s] - M);
  const bool has = tot > 0.0f && !nan;
  for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
    float o = 0.0f;
    if (has)
      for (int64_t s = 0; s < g.splits; ++s) o += expf(pl[s] - M) * ws_out[(item * g.splits + s) * g.D + d];
    out[orow * g.D + d] = from_float<T>(nan ? NAN : has ? o / tot : 0.0f);
  }
  if (threadIdx.x == 0) lse[orow] = nan ? NAN : has ? M + logf(tot) : -INFINITY;
}

template <typename T, int EPL>
void launch_epl(const void* q, const void* k, const void* v, const int32_t* bt, const int32_t* lens, void* out,
                float* lse, float* ws_out, float* ws_lse, const DecodeGeom& g, cudaStream_t st) {
  const dim3 grid(unsigned(g.B * g.Hkv), unsigned(g.splits), unsigned((g.R + kRows - 1) / kRows));
  const size_t smem = sizeof(float) * kWarps * kRows * 32 * EPL;
  decode_kernel<T, EPL><<<grid, kWarps * 32, smem, st>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                                                        static_cast<const T*>(v), bt, lens, static_cast<T*>(out), lse,
                                                        ws_out, ws_lse, g);
  GE_CUDA_CHECK_LAUNCH();
  if (g.splits > 1) {
    decode_merge_kernel<T><<<unsigned(g.B * g.Hkv * g.R), 128, 0, st>>>(ws_out, ws_lse, static_cast<T*>(out), lse, g);
    GE_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void launch(const void* q, const void* k, const void* v, const int32_t* bt, const int32_t* lens, void* out, float* lse,
            float* ws_out, float* ws_lse, const DecodeGeom& g, cudaStream_t st) {
  switch ((g.D + 31) / 32) {
    case 1: launch_epl<T, 1>(q, k, v, bt, lens, out, lse, ws_out, ws_lse, g, st); break;
    case 2: launch_epl<T, 2>(q, k, v, bt, lens, out, lse, ws_out, ws_lse, g, st); break;
    case 3: launch_epl<T, 3>(q, k, v, bt, lens, out, lse, ws_out, ws_lse, g, st); break;
    case 4: launch_epl<T, 4>(q, k, v, bt, lens, out, lse, ws_out, ws_lse, g, st); break;
    case 8: launch_epl<T, 8>(q, k, v, bt, lens, out, lse, ws_out, ws_lse, g, st); break;
    default: throw std::invalid_argument("decode_attention: head dim must be 16, 32, 64, 80, 96, 128 or 256");
  }
}

}  // namespace

void decode_attention(int dtype, int64_t B, int64_t Q, int64_t Hq, int64_t Hkv, int64_t D, const void* q, void* out,
                      float* lse, const void* k, const void* v, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp,
                      int64_t v_ss, int64_t v_sh, const int32_t* block_table, int64_t bt_stride, int64_t page_size,
                      int64_t num_pages, const int32_t* lens, float scale, float softcap, int64_t window,
                      int64_t splits, float* ws_out, float* ws_lse, uintptr_t stream) {
  if (B <= 0 || Hq <= 0) return;
  if (Hkv <= 0 || Hq % Hkv) throw std::invalid_argument("decode_attention: Hq must be a multiple of Hkv");
  if (splits < 1) throw std::invalid_argument("decode_attention: splits must be >= 1");
  if (splits > 1 && (ws_out == nullptr || ws_lse == nullptr))
    throw std::invalid_argument("decode_attention: splits > 1 needs the workspaces");
  DecodeGeom g;
  g.B = B; g.Q = Q; g.Hq = Hq; g.Hkv = Hkv; g.G = Hq / Hkv; g.R = Q * g.G; g.D = D;
  g.k_sp = k_sp; g.k_ss = k_ss; g.k_sh = k_sh; g.v_sp = v_sp; g.v_ss = v_ss; g.v_sh = v_sh;
  g.bt_stride = bt_stride; g.page_size = page_size; g.num_pages = num_pages;
  g.capacity = block_table ? bt_stride * page_size : page_size;
  g.mult = softcap > 0.0f ? scale : scale * kLog2e;
  g.softcap = softcap; g.window = window; g.splits = splits;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: launch<float>(q, k, v, block_table, lens, out, lse, ws_out, ws_lse, g, st); break;
    case kBFloat16: launch<__nv_bfloat16>(q, k, v, block_table, lens, out, lse, ws_out, ws_lse, g, st); break;
    case kFloat16: launch<__half>(q, k, v, block_table, lens, out, lse, ws_out, ws_lse, g, st); break;
    default: throw std::invalid_argument("decode_attention: dtype must be float32, bfloat16 or float16");
  }
}

}  // namespace cuda
}  // namespace ge
