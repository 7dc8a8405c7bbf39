// Flow transforms on CUDA: the rational-quadratic spline with identity tails (forward / inverse
// with log|dy/dx|, fused backward) and the affine coupling transform with its log-determinant row
// sum. Twin of kernels/flows.py (Triton) and csrc/cpu/flows.cpp; formulas: genengine/reference/flows.py.
//
// Spline: one thread per element. The parameter row (k widths, k heights, kd derivatives) is read
// through the read-only cache in short passes (max, sum of exponentials, then a walk over the
// knots that keeps only the bin holding the point), so nothing but a handful of scalars lives in
// registers for any k and no index-dependent memory gather is needed for the knots; the bin's two
// derivatives are then read by index. Backward recomputes the same and writes every parameter's
// gradient (the cumulative sum spreads the bin's two knot gradients over the sizes below it).
// Affine coupling: one warp per row (a shuffle sum of log_scale), elementwise backward.
//
// float32 only; inputs are checked and made row-strided on the Python side (ops/_flows_cuda.py).
#include <algorithm>
#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace ge {
namespace cuda {
namespace {

constexpr int kFlowThreads = 256;

struct SplineGeom {
  int64_t n;
  int k, kd;
  bool inverse;
  float B, min_w, min_h, min_d;
  int64_t sw, sh, sd, gsw, gsh, gsd;
};

__device__ __forceinline__ float softplus_sig(float a, float* sig) {
  const float e = __expf(-fabsf(a));
  const float r = 1.0f / (1.0f + e);
  *sig = a >= 0.0f ? r : e * r;
  return fmaxf(a, 0.0f) + log1pf(e);
}

struct Row {
  const float* __restrict__ w;
  const float* __restrict__ h;
  const float* __restrict__ d;
};

struct BinInfo {
  int k;
  float lo, wk, ylo, hk, dk, dk1, sk, sk1;
  float mw, scw, mh, sch;  // softmax max and (1 - min K) / sum for widths and heights
  float sumw, sumh;
};

// Softmax statistics of a row, then the bin of q (in the heights' knots when by_heights).
__device__ __forceinline__ BinInfo find_bin(const Row& r, const SplineGeom& g, float q, bool by_heights) {
  const int K = g.k;
  float mw = -INFINITY, mh = -INFINITY;
  for (int j = 0; j < K; ++j) {
    mw = fmaxf(mw, __ldg(r.w + j));
    mh = fmaxf(mh, __ldg(r.h + j));
  }
  float sw = 0.0f, sh = 0.0f;
  for (int j = 0; j < K; ++j) {
    sw += expf(__ldg(r.w + j) - mw);
    sh += expf(__ldg(r.h + j) - mh);
  }
  const float scw = (1.0f - g.min_w * K) / sw, sch = (1.0f - g.min_h * K) / sh;
  BinInfo b;
  b.k = 0;
  b.lo = -g.B;
  b.ylo = -g.B;
  float accw = 0.0f, acch = 0.0f;
  float cw = -g.B, ch = -g.B;  // knot j
  float sz_w = 0.0f, sz_h = 0.0f;
  for (int j = 0; j < K; ++j) {
    const float ww = g.min_w + expf(__ldg(r.w + j) - mw) * scw;
    const float hh = g.min_h + expf(__ldg(r.h + j) - mh) * sch;
    accw += ww;
    acch += hh;
    const float nw = j + 1 == K ? g.B : -g.B + 2.0f * g.B * accw;  // knot j + 1
    const float nh = j + 1 == K ? g.B : -g.B + 2.0f * g.B * acch;
    const bool take = j == 0 || (by_heights ? q >= ch : q >= cw);
    if (take) {
      b.k = j;
      b.lo = cw;
      b.ylo = ch;
      sz_w = 2.0f * g.B * ww;  // the size itself, not a knot difference (precision of narrow bins)
      sz_h = 2.0f * g.B * hh;
    }
    cw = nw;
    ch = nh;
  }
  b.wk = sz_w;
  b.hk = sz_h;
  const bool interior = g.kd == K - 1;
  const int c0 = interior ? b.k - 1 : b.k;  // parameter column of d_k
  const float rlo = c0 >= 0 ? __ldg(r.d + c0) : 0.0f;
  const float rhi = c0 + 1 < g.kd ? __ldg(r.d + c0 + 1) : 0.0f;
  b.dk = g.min_d + softplus_sig(rlo, &b.sk);
  b.dk1 = g.min_d + softplus_sig(rhi, &b.sk1);
  if (interior && b.k == 0) { b.dk = 1.0f; b.sk = 0.0f; }
  if (interior && b.k == K - 1) { b.dk1 = 1.0f; b.sk1 = 0.0f; }
  b.mw = mw; b.scw = scw; b.mh = mh; b.sch = sch; b.sumw = sw; b.sumh = sh;
  return b;
}

__device__ __forceinline__ Row row_of(const float* w, const float* h, const float* d, const SplineGeom& g, int64_t i) {
  return Row{w + i * g.sw, h + i * g.sh, d + i * g.sd};
}

__global__ void rq_fwd_kernel(SplineGeom g, const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ h, const float* __restrict__ d, float* __restrict__ y,
                              float* __restrict__ lad) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.n) return;
  const float xi = x[i];
  const bool inside = xi >= -g.B && xi <= g.B;
  const float q = fminf(fmaxf(xi, -g.B), g.B);
  const BinInfo b = find_bin(row_of(w, h, d, g, i), g, q, g.inverse);
  const float s = b.hk / b.wk;
  const float c2 = b.dk + b.dk1 - 2.0f * s;
  float out, t;
  if (!g.inverse) {
    t = fminf(fmaxf((q - b.lo) / b.wk, 0.0f), 1.0f);
    const float tt = t * (1.0f - t);
    out = b.ylo + b.hk * (s * t * t + b.dk * tt) / (s + c2 * tt);
  } else {
    const float dy = q - b.ylo;
    const float qa = dy * c2 + b.hk * (s - b.dk);
    const float qb = b.hk * b.dk - dy * c2;
    const float qc = -s * dy;
    const float disc = fmaxf(qb * qb - 4.0f * qa * qc, 0.0f);
    t = (2.0f * qc) / (-qb - sqrtf(disc));
    t = t > 0.0f ? fminf(t, 1.0f) : 0.0f;  // (NaN to 0)
    // one Newton step on the forward map (the quadratic's root loses ulps where its roots are close)
    const float tt0 = t * (1.0f - t), om0 = 1.0f - t, den0 = s + c2 * tt0;
    const float f = b.hk * (s * t * t + b.dk * tt0) / den0 - dy;
    const float dydt = b.hk * s * (b.dk1 * t * t + 2.0f * s * tt0 + b.dk * om0 * om0) / (den0 * den0);
    t = fminf(fmaxf(t - f / dydt, 0.0f), 1.0f);
    out = b.lo + t * b.wk;
  }
  const float omt = 1.0f - t, tt = t * omt;
  const float den = s + c2 * tt;
  const float dnum = s * s * (b.dk1 * t * t + 2.0f * s * tt + b.dk * omt * omt);
  float l = logf(dnum / (den * den));
  if (g.inverse) l = -l;
  out = fminf(fmaxf(out, -g.B), g.B);  // the last bin's lo + size may round past B
  y[i] = inside ? out : xi;
  lad[i] = inside ? l : 0.0f;
}

__global__ void rq_bwd_kernel(SplineGeom g, const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ h, const float* __restrict__ d, const float* __restrict__ gy,
                              const float* __restrict__ gl_in, float* __restrict__ gx, float* __restrict__ gw,
                              float* __restrict__ gh, float* __restrict__ gd) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.n) return;
  const int K = g.k;
  const float xi = x[i];  // the point in the spline's domain
  const float gout = gy ? gy[i] : 0.0f;
  float g1 = gout, gl = gl_in ? gl_in[i] : 0.0f;
  const bool inside = xi >= -g.B && xi <= g.B;
  const float q = fminf(fmaxf(xi, -g.B), g.B);
  const Row r = row_of(w, h, d, g, i);
  const BinInfo b = find_bin(r, g, q, false);
  const float rw = 1.0f / b.wk, s = b.hk * rw, c2 = b.dk + b.dk1 - 2.0f * s;
  const float t = fminf(fmaxf((q - b.lo) * rw, 0.0f), 1.0f);
  const float omt = 1.0f - t, tt = t * omt, up = 1.0f - 2.0f * t;
  const float A = s * t * t + b.dk * tt, den = s + c2 * tt, rden = 1.0f / den, R = A * rden;
  const float Bq = b.dk1 * t * t + 2.0f * s * tt + b.dk * omt * omt, rB = 1.0f / Bq;
  const float dden_dt = c2 * up, dden_ds = 1.0f - 2.0f * tt;
  const float dR_dt = (2.0f * s * t + b.dk * up - R * dden_dt) * rden;
  const float dR_ds = (t * t - R * dden_ds) * rden;
  const float dR_ddk = tt * (1.0f - R) * rden, dR_ddk1 = -R * tt * rden;
  const float dL_dt = (2.0f * b.dk1 * t + 2.0f * s * up - 2.0f * b.dk * omt) * rB - 2.0f * dden_dt * rden;
  const float dL_ds = 2.0f / s + 2.0f * tt * rB - 2.0f * dden_ds * rden;
  const float dL_ddk = omt * omt * rB - 2.0f * tt * rden, dL_ddk1 = t * t * rB - 2.0f * tt * rden;
  float gin;
  if (g.inverse) {  // implicit function theorem at x = g^{-1}(y)
    const float F = s * s * Bq * rden * rden;
    gin = (g1 - gl * dL_dt * rw) / F;
    g1 = -gin;
    gl = -gl;
  }
  const float hg = g1 * b.hk;
  // the inverse holds y fixed: G_t is exactly -gy wk, which the sum reaches only as the difference of
  // two terms of size gl Lx wk (6% off in float32 at a steep bin's edge); as the C++ kernel
  const float G_t = g.inverse ? -gout * b.wk : hg * dR_dt + gl * dL_dt, G_s = hg * dR_ds + gl * dL_ds;
  const float G_dk = (hg * dR_ddk + gl * dL_ddk) * b.sk, G_dk1 = (hg * dR_ddk1 + gl * dL_ddk1) * b.sk1;
  if (!g.inverse) gin = G_t * rw;
  const float g_lo = -G_t * rw, g_wk = -(G_t * t + G_s * s) * rw, g_hk = G_s * rw + g1 * R;
  const float gck = inside ? g_lo - g_wk : 0.0f, gck1 = inside && b.k <= K - 2 ? g_wk : 0.0f;
  const float ghk = inside ? g1 - g_hk : 0.0f, ghk1 = inside && b.k <= K - 2 ? g_hk : 0.0f;
  // sizes: gsm_j = c ([j < k] gk + [j <= k] gk1), then through the softmax: p_j (gsm_j - sum p gsm)
  const float cw = (1.0f - g.min_w * K) * 2.0f * g.B, chh = (1.0f - g.min_h * K) * 2.0f * g.B;
  float pbw = 0.0f, pbh = 0.0f, pkw = 0.0f, pkh = 0.0f;  // probability mass below the bin, and of the bin
  for (int j = 0; j < K; ++j) {
    const float pw = expf(__ldg(r.w + j) - b.mw) / b.sumw, ph = expf(__ldg(r.h + j) - b.mh) / b.sumh;
    if (j < b.k) { pbw += pw; pbh += ph; }
    if (j == b.k) { pkw = pw; pkh = ph; }
  }
  const float dotw = cw * (gck * pbw + gck1 * (pbw + pkw)), doth = chh * (ghk * pbh + ghk1 * (pbh + pkh));
  float* __restrict__ gwr = gw + i * g.gsw;
  float* __restrict__ ghr = gh + i * g.gsh;
  for (int j = 0; j < K; ++j) {
    const float pw = expf(__ldg(r.w + j) - b.mw) / b.sumw, ph = expf(__ldg(r.h + j) - b.mh) / b.sumh;
    const float sw = cw * ((j < b.k ? gck : 0.0f) + (j <= b.k ? gck1 : 0.0f));
    const float sh = chh * ((j < b.k ? ghk : 0.0f) + (j <= b.k ? ghk1 : 0.0f));
    gwr[j] = pw * (sw - dotw);
    ghr[j] = ph * (sh - doth);
  }
  const int c0 = g.kd == K - 1 ? b.k - 1 : b.k;
  float* __restrict__ gdr = gd + i * g.gsd;
  for (int j = 0; j < g.kd; ++j) gdr[j] = inside ? (j == c0 ? G_dk : 0.0f) + (j == c0 + 1 ? G_dk1 : 0.0f) : 0.0f;
  gx[i] = inside ? gin : gout;
}

struct AffineGeom {
  int64_t rows, d, sx, st, ss;
  bool inverse;
};

__global__ void affine_fwd_kernel(AffineGeom g, const float* __restrict__ x, const float* __restrict__ t,
                                  const float* __restrict__ s, float* __restrict__ y, float* __restrict__ logdet) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * (kFlowThreads / 32) + (threadIdx.x >> 5);
  if (r >= g.rows) return;
  float acc = 0.0f;
  for (int64_t j = lane; j < g.d; j += 32) {
    const float sv = s[r * g.ss + j], xv = x[r * g.sx + j], tv = t[r * g.st + j];
    acc += sv;
    y[r * g.d + j] = g.inverse ? (xv - tv) * __expf(-sv) : fmaf(xv, __expf(sv), tv);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, o);
  if (lane == 0) logdet[r] = g.inverse ? -acc : acc;
}

__global__ void affine_bwd_kernel(AffineGeom g, const float* __restrict__ x, const float* __restrict__ t,
                                  const float* __restrict__ s, const float* __restrict__ gy,
                                  const float* __restrict__ gld, float* __restrict__ gx, float* __restrict__ gt,
                                  float* __restrict__ gs) {
  const int64_t n = g.rows * g.d;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / g.d, j = i - r * g.d;
    const float sv = s[r * g.ss + j], xv = x[r * g.sx + j];
    const float gv = gy ? gy[i] : 0.0f, gl = gld ? gld[r] : 0.0f;
    if (!g.inverse) {
      const float e = gv * __expf(sv);
      gx[i] = e;
      gt[i] = gv;
      gs[i] = fmaf(e, xv, gl);
    } else {
      const float e = gv * __expf(-sv);
      gx[i] = e;
      gt[i] = -e;
      gs[i] = -(e * (xv - t[r * g.st + j])) - gl;
    }
  }
}

}  // namespace

void rq_spline_fwd(int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                   const float* x, const float* w, const float* h, const float* d, int64_t sw, int64_t sh, int64_t sd,
                   float* y, float* lad, uintptr_t stream) {
  if (n <= 0) return;
  const SplineGeom g{n, k, kd, inverse, bound, min_w, min_h, min_d, sw, sh, sd, k, k, kd};
  const unsigned blocks = unsigned((n + kFlowThreads - 1) / kFlowThreads);
  rq_fwd_kernel<<<blocks, kFlowThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(g, x, w, h, d, y, lad);
  GE_CUDA_CHECK_LAUNCH();
}

void rq_spline_bwd(int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                   const float* x, const float* w, const float* h, const float* d, int64_t sw, int64_t sh, int64_t sd,
                   const float* gy, const float* gl, float* gx, float* gw, float* gh, float* gd, int64_t gsw,
                   int64_t gsh, int64_t gsd, uintptr_t stream) {
  if (n <= 0) return;
  const SplineGeom g{n, k, kd, inverse, bound, min_w, min_h, min_d, sw, sh, sd, gsw, gsh, gsd};
  const unsigned blocks = unsigned((n + kFlowThreads - 1) / kFlowThreads);
  rq_bwd_kernel<<<blocks, kFlowThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(g, x, w, h, d, gy, gl, gx, gw, gh,
                                                                                 gd);
  GE_CUDA_CHECK_LAUNCH();
}

void affine_coupling_fwd(int64_t rows, int64_t d, bool inverse, const float* x, const float* t, const float* s,
                         int64_t sx, int64_t st, int64_t ss, float* y, float* logdet, uintptr_t stream) {
  if (rows <= 0) return;
  const AffineGeom g{rows, d, sx, st, ss, inverse};
  const int64_t per = kFlowThreads / 32;
  affine_fwd_kernel<<<unsigned((rows + per - 1) / per), kFlowThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      g, x, t, s, y, logdet);
  GE_CUDA_CHECK_LAUNCH();
}

void affine_coupling_bwd(int64_t rows, int64_t d, bool inverse, const float* x, const float* t, const float* s,
                         int64_t sx, int64_t st, int64_t ss, const float* gy, const float* gld, float* gx, float* gt,
                         float* gs, uintptr_t stream) {
  const int64_t n = rows * d;
  if (n <= 0) return;
  const AffineGeom g{rows, d, sx, st, ss, inverse};
  const int64_t blocks = std::min<int64_t>((n + kFlowThreads - 1) / kFlowThreads, int64_t(65536));
  affine_bwd_kernel<<<unsigned(blocks), kFlowThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(g, x, t, s, gy, gld, gx,
                                                                                             gt, gs);
  GE_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace ge
