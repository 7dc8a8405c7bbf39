// Flow transforms on the CPU: the rational-quadratic spline (Durkan et al. 2019) with identity tails,
// forward and inverse with log|dy/dx|, its fused backward, and the affine coupling transform with
// its log-determinant row sum.
//
// Spline shapes (see flows.h): n elements, each with k widths, k heights and kd = k - 1 (interior
// knots; boundary derivatives 1) or k + 1 (every knot) unnormalised derivatives; the formulas are
// those of genengine/reference/flows.py.
//
// Where the time goes: per element the softmaxes of widths and heights cost 2k exponentials and the
// log-determinant one logarithm; only the two derivatives of the selected bin go through the
// softplus (an exponential and a log1p each), so k = 8 costs 18 exp + 3 log-like evaluations.
// Bytes are few (x, 3k - 1 parameters, y and logabsdet: 104 bytes at k = 8), so the kernel is bound
// by that arithmetic: it runs 16 elements per lane-set (one zmm register per quantity with AVX-512,
// two ymm with AVX2, four xmm in the baseline clone) through exp/log written with integer exponent
// arithmetic and short polynomials (no libm calls), with the knots of 16 elements held as k + 1
// vectors. The bin search compares the point with the k - 1 interior knots and selects the bin's
// values with masks as it goes: no branch, no gather, k - 1 compare-and-select steps (a binary
// search over lanes that each hold a different bin would need the same number of selects).
//
// Backward recomputes the knots (a saved copy would cost 3x the bytes of the inputs) and applies
// the chain rule by hand: only the bin's two knots and two derivatives carry gradient, which the
// cumulative sum spreads to every width below the bin and the softmax Jacobian to every width.
// The inverse's backward differentiates the forward at the inverse's result (implicit function
// theorem): d x / d y = 1 / g'(x), d x / d theta = -(d g / d theta) / g'(x).
//
// ISA: three clones of each loop (baseline x86-64, AVX2+FMA, AVX-512), picked per call from what
// the CPU has (or a lower one asked for, which the tests use to check all three).
#include "flows.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu_common.h"
#include "parallel.h"

// Fused multiply-adds are welcome here: the results are checked against float64 with tolerances.
#pragma GCC optimize("fp-contract=fast")
#pragma GCC diagnostic ignored "-Wpsabi"  // vector values only cross always-inlined calls

#define GE_INLINE inline __attribute__((always_inline))

namespace ge {
namespace {

constexpr int L = 16;         // elements per lane-set
constexpr int kMaxK = 64;     // bins the generic (runtime-k) path holds on its stack (the op checks k)
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(128)));
typedef int64_t vl __attribute__((vector_size(128)));

// float32 lanes: exp / log / log1p by polynomials (the hot path). float64 lanes run the same
// formulas with libm's exp and log per lane: they exist so that torch.autograd.gradcheck can check
// this file's backward in float64, not for speed.
struct F32 {
  using S = float;
  using V = vf;
  using M = vi;
};
struct F64 {
  using S = double;
  using V = vd;
  using M = vl;
};

template <class V, class S> GE_INLINE V splat(S a) { return V{} + a; }
template <class M> GE_INLINE M splati(int a) { return M{} + a; }
template <class V, class M> GE_INLINE V sel(M m, V a, V b) { return (V)((m & (M)a) | (~m & (M)b)); }
template <class M> GE_INLINE M seli(M m, M a, M b) { return (m & a) | (~m & b); }
template <class V> GE_INLINE V vmax(V a, V b) { return sel(a > b, a, b); }
template <class V> GE_INLINE V vmin(V a, V b) { return sel(a < b, a, b); }
// NaN goes to lo (comparisons with NaN are false), so a clamped value is always in [lo, hi]
template <class V> GE_INLINE V clampv(V a, V lo, V hi) { return vmin(vmax(a, lo), hi); }

GE_INLINE vf vabs(vf a) { return (vf)((vi)a & 0x7FFFFFFF); }
GE_INLINE vd vabs(vd a) { return (vd)((vl)a & 0x7FFFFFFFFFFFFFFFLL); }

GE_INLINE vf vsqrt(vf a) {
  vf r;
  for (int l = 0; l < L; ++l) r[l] = __builtin_sqrtf(a[l]);  // -fno-math-errno: one vsqrtps
  return r;
}
GE_INLINE vd vsqrt(vd a) {
  vd r;
  for (int l = 0; l < L; ++l) r[l] = __builtin_sqrt(a[l]);
  return r;
}

// exp(a): a = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial to degree 7 (truncation
// 5e-9 relative), 2^k by integer arithmetic on the exponent field. a is clamped to [-87, 88] so
// 2^k stays normal: below e^-87 the result is within 2e-38 of 0, which is all any caller needs.
GE_INLINE vf vexp(vf a) {
  a = clampv(a, splat<vf>(-87.0f), splat<vf>(88.0f));
  const vf kf = a * 1.44269504088896341f + 12582912.0f;  // + 1.5 * 2^23 rounds to an integer
  const vf k = kf - 12582912.0f;
  const vi scale = ((vi)kf - 0x4B400000 + 127) << 23;
  vf r = a - k * 0.693359375f;  // ln 2 in two parts: k * hi is exact
  r = r - k * -2.12194440e-4f;
  vf p = splat<vf>(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * (vf)scale;
}
GE_INLINE vd vexp(vd a) {
  vd r;
  for (int l = 0; l < L; ++l) r[l] = std::exp(a[l]);
  return r;
}

// 2 atanh(s) = log((1 + s) / (1 - s)) by its series in s^2 to s^9: |s| <= 0.1716, truncation 2e-9 relative
GE_INLINE vf atanh2_series9(vf s) {
  const vf z = s * s;
  vf p = splat<vf>(1.0f / 9.0f);
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}

// log(a), a > 0 (subnormals included): a = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)).
GE_INLINE vf vlog(vf a) {
  const vi tiny = a < 1.17549435e-38f;
  a = sel(tiny, a * 8388608.0f, a);  // * 2^23
  const vi bits = (vi)a;
  vi e = ((bits >> 23) & 0xFF) - 127 - (tiny & 23);
  vf m = (vf)((bits & 0x007FFFFF) | 0x3F800000);  // [1, 2)
  const vi big = m > 1.41421356f;
  m = sel(big, m * 0.5f, m);
  e = e - big;  // big is -1 where true
  const vf ef = __builtin_convertvector(e, vf);
  const vf s = (m - 1.0f) / (m + 1.0f);
  return ef * 0.693359375f + (ef * -2.12194440e-4f + atanh2_series9(s));
}
GE_INLINE vd vlog(vd a) {
  vd r;
  for (int l = 0; l < L; ++l) r[l] = std::log(a[l]);
  return r;
}

// log(1 + e) for e in [0, 1]: 2 atanh(e / (2 + e)) keeps full relative precision for tiny e.
GE_INLINE vf vlog1p01(vf e) {
  const vf s = e / (2.0f + e);  // [0, 1/3]: series to s^15, truncation 1.5e-9 relative
  const vf z = s * s;
  vf p = splat<vf>(1.0f / 15.0f);
  p = p * z + 1.0f / 13.0f;
  p = p * z + 1.0f / 11.0f;
  p = p * z + 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}
GE_INLINE vd vlog1p01(vd e) {
  vd r;
  for (int l = 0; l < L; ++l) r[l] = std::log1p(e[l]);
  return r;
}

// softplus(a) = max(a, 0) + log1p(exp(-|a|)), and sigmoid(a) from the same exponential
template <class V>
GE_INLINE V softplus(V a, V* sig) {
  const V e = vexp(-vabs(a));
  const V r = 1.0f / (1.0f + e);
  *sig = sel(a >= 0.0f, r, e * r);
  return vmax(a, V{}) + vlog1p01(e);
}

// ----------------------------------------------------------------------------------------------
// rows of parameters <-> lane-sets (column j of 16 rows into one vector)

template <class S, class V>
GE_INLINE void load_cols(const S* __restrict p, int64_t stride, int cols, int cnt, V* __restrict out) {
  if (cnt == L) {
    for (int j = 0; j < cols; ++j)
      for (int l = 0; l < L; ++l) out[j][l] = p[l * stride + j];
  } else {
    for (int j = 0; j < cols; ++j)
      for (int l = 0; l < L; ++l) out[j][l] = l < cnt ? p[l * stride + j] : S(0);
  }
}

template <class S, class V>
GE_INLINE void store_cols(S* __restrict p, int64_t stride, int cols, int cnt, const V* __restrict v) {
  for (int l = 0; l < cnt; ++l)
    for (int j = 0; j < cols; ++j) p[l * stride + j] = v[j][l];
}

template <class V, class S>
GE_INLINE V load_lanes(const S* p, int cnt) {
  V v;
  if (cnt == L) {
    std::memcpy(&v, p, sizeof v);
  } else {
    v = V{};
    for (int l = 0; l < cnt; ++l) v[l] = p[l];
  }
  return v;
}

template <class S, class V>
GE_INLINE void store_lanes(S* p, int cnt, V v) {
  if (cnt == L) {
    std::memcpy(p, &v, sizeof v);
  } else {
    for (int l = 0; l < cnt; ++l) p[l] = v[l];
  }
}

// ----------------------------------------------------------------------------------------------
// the spline on one lane-set

template <class T>
struct Cfg {
  using S = typename T::S;
  int K, kd;
  bool interior_d, inverse;
  S B, min_w, min_h, min_d;
};

// Knots kn[0..K] on [-B, B] and bin sizes sz[0..K-1] from unnormalised sizes u[0..K-1]; prob[j] =
// softmax(u)_j when asked. A size is 2B w_j itself, not a difference of knots, so a narrow bin keeps
// its relative precision (the reference computes the same).
template <int KT, class V, class S>
GE_INLINE void knots(const V* u, int K, S minv, S B, V* kn, V* sz, V* prob) {
  V m = u[0];
  for (int j = 1; j < K; ++j) m = vmax(m, u[j]);
  V e[KT ? KT : kMaxK];
  V sum = V{};
  for (int j = 0; j < K; ++j) {
    e[j] = vexp(u[j] - m);
    sum += e[j];
  }
  const V rs = 1.0f / sum;
  const V scale = (S(1) - minv * S(K)) * rs;
  V acc = V{};
  kn[0] = V{} - B;
  for (int j = 0; j < K; ++j) {
    const V w = minv + e[j] * scale;
    sz[j] = (S(2) * B) * w;
    acc += w;
    if (j < K - 1) kn[j + 1] = -B + (S(2) * B) * acc;
  }
  kn[K] = V{} + B;
  if (prob)
    for (int j = 0; j < K; ++j) prob[j] = e[j] * rs;
}

template <class V, class M>
struct Bin {
  M k;               // bin index
  V lo, wk;          // left knot, width
  V ylo, hk;         // bottom knot, height
  V dk, dk1;         // derivatives at the two knots
  V sk, sk1;         // sigmoid of their unnormalised values (0 at constant boundary knots)
};

// The bin holding q (q in [-B, B]) among the knots `by` (cw forward, ch inverse), and its values.
template <class T, class V = typename T::V, class M = typename T::M>
GE_INLINE Bin<V, M> find_bin(V q, const V* by, const V* cw, const V* ch, const V* sw, const V* sh, const V* raw,
                              const Cfg<T>& c) {
  M k = splati<M>(0);
  V lo = cw[0], wk = sw[0], ylo = ch[0], hk = sh[0], rlo = raw[0], rhi = raw[1];
  for (int j = 1; j < c.K; ++j) {
    const M m = q >= by[j];
    k = seli(m, splati<M>(j), k);
    lo = sel(m, cw[j], lo);
    wk = sel(m, sw[j], wk);
    ylo = sel(m, ch[j], ylo);
    hk = sel(m, sh[j], hk);
    rlo = sel(m, raw[j], rlo);
    rhi = sel(m, raw[j + 1], rhi);
  }
  Bin<V, M> b;
  b.k = k;
  b.lo = lo;
  b.wk = wk;
  b.ylo = ylo;
  b.hk = hk;
  b.dk = c.min_d + softplus(rlo, &b.sk);
  b.dk1 = c.min_d + softplus(rhi, &b.sk1);
  if (c.interior_d) {  // boundary derivatives are the constant 1
    const M first = k == 0, last = k == c.K - 1;
    const V one = V{} + 1.0f;
    b.dk = sel(first, one, b.dk);
    b.sk = sel(first, V{}, b.sk);
    b.dk1 = sel(last, one, b.dk1);
    b.sk1 = sel(last, V{}, b.sk1);
  }
  return b;
}

template <class T>
struct Ptrs {  // the arguments, typed
  using S = typename T::S;
  int64_t n;
  const S *x, *w, *h, *d;
  int64_t sw, sh, sd, gsw, gsh, gsd;
  S *y, *lad;
  const S *gy, *gl;
  S *gx, *gw, *gh, *gd;
};

// Loads the parameters of lane-set [e0, e0 + cnt) and builds the knots (and softmax probabilities).
template <int KT, class T, class V = typename T::V>
GE_INLINE void setup(const Ptrs<T>& a, const Cfg<T>& c, int64_t e0, int cnt, V* cw, V* ch, V* sw, V* sh, V* raw, V* pw,
                     V* ph) {
  V u[KT ? KT : kMaxK];
  load_cols(a.w + e0 * a.sw, a.sw, c.K, cnt, u);
  knots<KT>(u, c.K, c.min_w, c.B, cw, sw, pw);
  load_cols(a.h + e0 * a.sh, a.sh, c.K, cnt, u);
  knots<KT>(u, c.K, c.min_h, c.B, ch, sh, ph);
  if (c.interior_d) {
    raw[0] = raw[c.K] = V{};
    load_cols(a.d + e0 * a.sd, a.sd, c.kd, cnt, raw + 1);
  } else {
    load_cols(a.d + e0 * a.sd, a.sd, c.kd, cnt, raw);
  }
}

template <int KT, class T>
GE_INLINE void spline_fwd_chunk(const Ptrs<T>& a, Cfg<T> c, int64_t begin, int64_t end) {
  using V = typename T::V;
  using M = typename T::M;
  if (KT) c.K = KT;
  const auto B = c.B;
  const V zero = V{}, one = V{} + 1.0f;
  for (int64_t e0 = begin; e0 < end; e0 += L) {
    const int cnt = int(std::min<int64_t>(L, end - e0));
    constexpr int N1 = (KT ? KT : kMaxK) + 1;
    V cw[N1], ch[N1], sw[N1], sh[N1], raw[N1];
    setup<KT>(a, c, e0, cnt, cw, ch, sw, sh, raw, (V*)nullptr, (V*)nullptr);
    const V x = load_lanes<V>(a.x + e0, cnt);
    const M inside = (x >= -B) & (x <= B);
    const V q = clampv(x, zero - B, zero + B);
    const auto b = find_bin(q, c.inverse ? ch : cw, cw, ch, sw, sh, raw, c);
    const V s = b.hk / b.wk;
    const V c2 = b.dk + b.dk1 - 2.0f * s;
    V out, t;
    if (!c.inverse) {
      t = clampv((q - b.lo) / b.wk, zero, one);
      const V tt = t * (1.0f - t);
      const V num = s * t * t + b.dk * tt;
      const V den = s + c2 * tt;
      out = b.ylo + b.hk * num / den;
    } else {
      const V dy = q - b.ylo;
      const V qa = dy * c2 + b.hk * (s - b.dk);
      const V qb = b.hk * b.dk - dy * c2;
      const V qc = -s * dy;
      const V disc = vmax(qb * qb - 4.0f * qa * qc, zero);
      t = clampv((2.0f * qc) / (-qb - vsqrt(disc)), zero, one);
      // one Newton step on the forward map in t: where the quadratic's two roots lie close, its
      // float32 root is off by many ulps, while y(t) - dy is evaluated with dy's (small) rounding
      const V tt0 = t * (1.0f - t), om0 = 1.0f - t;
      const V den0 = s + c2 * tt0;
      const V f = b.hk * (s * t * t + b.dk * tt0) / den0 - dy;
      const V dydt = b.hk * s * (b.dk1 * t * t + 2.0f * s * tt0 + b.dk * om0 * om0) / (den0 * den0);
      t = clampv(t - f / dydt, zero, one);
      out = b.lo + t * b.wk;
    }
    const V omt = 1.0f - t, tt = t * omt;
    const V den = s + c2 * tt;
    const V dnum = s * s * (b.dk1 * t * t + 2.0f * s * tt + b.dk * omt * omt);
    V lad = vlog(dnum / (den * den));
    if (c.inverse) lad = -lad;
    out = clampv(out, zero - B, zero + B);  // the last bin's lo + size may round past B
    store_lanes(a.y + e0, cnt, sel(inside, out, x));
    store_lanes(a.lad + e0, cnt, sel(inside, lad, zero));
  }
}

// Gradients of the unnormalised sizes through the cumulative sum and the softmax: only knots k and
// k + 1 carry gradient (gk, gk1); interior knot j depends on sizes 0..j-1, the end knots on none.
template <class V, class M, class S>
GE_INLINE void size_grads(const V* prob, int K, M k, V gk, V gk1, S minv, S B, V* g) {
  const V c = V{} + (S(1) - minv * S(K)) * S(2) * B;
  const V b = sel(k <= K - 2, gk1, V{});  // knot K is fixed at B
  V dot = V{};
  for (int i = 0; i < K; ++i) {
    const M ii = splati<M>(i);
    g[i] = c * (sel(ii < k, gk, V{}) + sel(ii <= k, b, V{}));
    dot += prob[i] * g[i];
  }
  for (int i = 0; i < K; ++i) g[i] = prob[i] * (g[i] - dot);
}

template <int KT, class T>
GE_INLINE void spline_bwd_chunk(const Ptrs<T>& a, Cfg<T> c, int64_t begin, int64_t end) {
  using V = typename T::V;
  using M = typename T::M;
  if (KT) c.K = KT;
  const int K = c.K;
  const auto B = c.B;
  const V zero = V{}, one = V{} + 1.0f;
  for (int64_t e0 = begin; e0 < end; e0 += L) {
    const int cnt = int(std::min<int64_t>(L, end - e0));
    constexpr int N1 = (KT ? KT : kMaxK) + 1;
    V cw[N1], ch[N1], sw[N1], sh[N1], raw[N1], pw[N1], ph[N1];
    setup<KT>(a, c, e0, cnt, cw, ch, sw, sh, raw, pw, ph);
    const V x = load_lanes<V>(a.x + e0, cnt);  // the point in the spline's domain
    const V gout = a.gy ? load_lanes<V>(a.gy + e0, cnt) : zero;
    V g1 = gout;
    V gl = a.gl ? load_lanes<V>(a.gl + e0, cnt) : zero;
    const M inside = (x >= -B) & (x <= B);
    const V q = clampv(x, zero - B, zero + B);
    const auto b = find_bin(q, cw, cw, ch, sw, sh, raw, c);
    const V rw = 1.0f / b.wk;
    const V s = b.hk * rw;
    const V c2 = b.dk + b.dk1 - 2.0f * s;
    const V t = clampv((q - b.lo) * rw, zero, one);
    const V omt = 1.0f - t, tt = t * omt, up = 1.0f - 2.0f * t;
    const V A = s * t * t + b.dk * tt;
    const V den = s + c2 * tt;
    const V rden = 1.0f / den;
    const V R = A * rden;
    const V Bq = b.dk1 * t * t + 2.0f * s * tt + b.dk * omt * omt;
    const V rB = 1.0f / Bq;
    const V dden_dt = c2 * up, dden_ds = 1.0f - 2.0f * tt;
    const V dR_dt = (2.0f * s * t + b.dk * up - R * dden_dt) * rden;
    const V dR_ds = (t * t - R * dden_ds) * rden;
    const V dR_ddk = tt * (1.0f - R) * rden;
    const V dR_ddk1 = -R * tt * rden;
    const V dL_dt = (2.0f * b.dk1 * t + 2.0f * s * up - 2.0f * b.dk * omt) * rB - 2.0f * dden_dt * rden;
    const V dL_ds = 2.0f / s + 2.0f * tt * rB - 2.0f * dden_ds * rden;
    const V dL_ddk = omt * omt * rB - 2.0f * tt * rden;
    const V dL_ddk1 = t * t * rB - 2.0f * tt * rden;
    V gin;  // gradient of the op's input
    if (c.inverse) {
      // the op maps y -> x = g^{-1}(y) and -log g'(x): with F = g'(x), Lx = d log g'(x) / dx,
      // dL/dy = (g1 - gl Lx) / F, and the parameters see the forward with (gy, gl) = (-dL/dy, -gl)
      const V F = s * s * Bq * rden * rden;
      const V Lx = dL_dt * rw;
      gin = (g1 - gl * Lx) / F;
      g1 = -gin;
      gl = -gl;
    }
    const V hg = g1 * b.hk;
    // the inverse holds y fixed, so x = lo + t wk moves with lo one for one and the log-det not at
    // all: G_t is exactly -gy wk, which the forward's sum below reaches only as the difference of
    // two terms of size gl Lx wk (at a steep bin's edge 6% off in float32, where torch's float32
    // autograd of the same formulas stayed under 1% of the test's bound)
    const V G_t = c.inverse ? -gout * b.wk : hg * dR_dt + gl * dL_dt;
    const V G_s = hg * dR_ds + gl * dL_ds;
    const V G_dk = (hg * dR_ddk + gl * dL_ddk) * b.sk;
    const V G_dk1 = (hg * dR_ddk1 + gl * dL_ddk1) * b.sk1;
    if (!c.inverse) gin = G_t * rw;
    const V g_lo = -G_t * rw;
    const V g_wk = -(G_t * t + G_s * s) * rw;
    const V g_hk = G_s * rw + g1 * R;
    // knot gradients: x_k = lo gets g_lo - g_wk, x_{k+1} gets g_wk (likewise the heights, y_k = ylo)
    const V gck = sel(inside, g_lo - g_wk, zero), gck1 = sel(inside, g_wk, zero);
    const V ghk = sel(inside, g1 - g_hk, zero), ghk1 = sel(inside, g_hk, zero);
    V g[N1];
    size_grads(pw, K, b.k, gck, gck1, c.min_w, B, g);
    store_cols(a.gw + e0 * a.gsw, a.gsw, K, cnt, g);
    size_grads(ph, K, b.k, ghk, ghk1, c.min_h, B, g);
    store_cols(a.gh + e0 * a.gsh, a.gsh, K, cnt, g);
    const M koff = b.k - (c.interior_d ? 1 : 0);  // column of d_k among the parameters
    const V gdk = sel(inside, G_dk, zero), gdk1 = sel(inside, G_dk1, zero);
    for (int i = 0; i < c.kd; ++i) {
      const M ii = splati<M>(i);
      g[i] = sel(ii == koff, gdk, zero) + sel(ii == koff + 1, gdk1, zero);
    }
    store_cols(a.gd + e0 * a.gsd, a.gsd, c.kd, cnt, g);
    store_lanes(a.gx + e0, cnt, sel(inside, gin, gout));  // the tails are the identity
  }
}

// ----------------------------------------------------------------------------------------------
// affine coupling on one row

template <class T>
struct APtrs {
  using S = typename T::S;
  int64_t rows, d;
  bool inverse;
  const S *x, *t, *s;
  int64_t sx, st, ss;
  S *y, *logdet;
  const S *gy, *gld;
  S *gx, *gt, *gs;
};

template <class T>
GE_INLINE void affine_fwd_row(const APtrs<T>& a, int64_t r) {
  using V = typename T::V;
  using S = typename T::S;
  const S* __restrict x = a.x + r * a.sx;
  const S* __restrict t = a.t + r * a.st;
  const S* __restrict s = a.s + r * a.ss;
  S* __restrict y = a.y + r * a.d;
  V acc = V{};
  for (int64_t j = 0; j < a.d; j += L) {
    const int cnt = int(std::min<int64_t>(L, a.d - j));
    const V sv = load_lanes<V>(s + j, cnt), xv = load_lanes<V>(x + j, cnt), tv = load_lanes<V>(t + j, cnt);
    acc += sv;
    const V out = a.inverse ? (xv - tv) * vexp(-sv) : xv * vexp(sv) + tv;
    store_lanes(y + j, cnt, out);
  }
  S sum = 0;
  for (int l = 0; l < L; ++l) sum += acc[l];
  a.logdet[r] = a.inverse ? -sum : sum;
}

template <class T>
GE_INLINE void affine_bwd_row(const APtrs<T>& a, int64_t r) {
  using V = typename T::V;
  using S = typename T::S;
  const S* __restrict x = a.x + r * a.sx;
  const S* __restrict t = a.t + r * a.st;
  const S* __restrict s = a.s + r * a.ss;
  const S* __restrict gy = a.gy ? a.gy + r * a.d : nullptr;
  const S gld = a.gld ? a.gld[r] : S(0);
  S* __restrict gx = a.gx + r * a.d;
  S* __restrict gt = a.gt ? a.gt + r * a.d : nullptr;  // null: the caller uses gy (y = x e^s + t)
  S* __restrict gs = a.gs + r * a.d;
  for (int64_t j = 0; j < a.d; j += L) {
    const int cnt = int(std::min<int64_t>(L, a.d - j));
    const V sv = load_lanes<V>(s + j, cnt), xv = load_lanes<V>(x + j, cnt);
    const V g = gy ? load_lanes<V>(gy + j, cnt) : V{};
    if (!a.inverse) {  // y = x e^s + t
      const V ge = g * vexp(sv);
      store_lanes(gx + j, cnt, ge);
      if (gt) store_lanes(gt + j, cnt, g);
      store_lanes(gs + j, cnt, ge * xv + gld);
    } else {  // y = (x - t) e^-s
      const V tv = load_lanes<V>(t + j, cnt);
      const V ge = g * vexp(-sv);
      store_lanes(gx + j, cnt, ge);
      store_lanes(gt + j, cnt, -ge);
      store_lanes(gs + j, cnt, -(ge * (xv - tv)) - gld);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// clones and dispatch

template <int KT, class T>
GE_INLINE void spline_chunk(bool bwd, const Ptrs<T>& a, const Cfg<T>& c, int64_t b, int64_t e) {
  if (bwd)
    spline_bwd_chunk<KT>(a, c, b, e);
  else
    spline_fwd_chunk<KT>(a, c, b, e);
}

template <class T>
GE_INLINE void spline_any(bool bwd, const SplineArgs& sa, int64_t b, int64_t e) {
  using S = typename T::S;
  const Ptrs<T> a{sa.n, (const S*)sa.x, (const S*)sa.w, (const S*)sa.h, (const S*)sa.d, sa.sw, sa.sh, sa.sd,
                  sa.gsw ? sa.gsw : sa.k, sa.gsh ? sa.gsh : sa.k, sa.gsd ? sa.gsd : sa.kd, (S*)sa.y, (S*)sa.lad, (const S*)sa.gy, (const S*)sa.gl, (S*)sa.gx, (S*)sa.gw, (S*)sa.gh, (S*)sa.gd};
  const Cfg<T> c{sa.k, sa.kd, sa.kd == sa.k - 1, sa.inverse, S(sa.bound), S(sa.min_w), S(sa.min_h), S(sa.min_d)};
  // the common bin count gets fully unrolled loops with the knots in registers; any other k the
  // generic loops (each more specialisation costs about a minute of build time)
  if (c.K == 8)
    spline_chunk<8>(bwd, a, c, b, e);
  else
    spline_chunk<0>(bwd, a, c, b, e);
}

template <class T>
GE_INLINE void affine_any(bool bwd, const AffineArgs& sa, int64_t r0, int64_t r1) {
  using S = typename T::S;
  const APtrs<T> a{sa.rows, sa.d, sa.inverse, (const S*)sa.x, (const S*)sa.t, (const S*)sa.s, sa.sx, sa.st, sa.ss,
                   (S*)sa.y, (S*)sa.logdet, (const S*)sa.gy, (const S*)sa.gld, (S*)sa.gx, (S*)sa.gt, (S*)sa.gs};
  for (int64_t r = r0; r < r1; ++r) bwd ? affine_bwd_row(a, r) : affine_fwd_row(a, r);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GE_FLOWS_AVX2 __attribute__((target("avx2,fma")))
#define GE_FLOWS_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#define GE_FLOWS_CLONES 1
#else
#define GE_FLOWS_AVX2
#define GE_FLOWS_AVX512
#endif

void spline_base(bool bwd, const SplineArgs& a, int64_t b, int64_t e) { spline_any<F32>(bwd, a, b, e); }
GE_FLOWS_AVX2 void spline_avx2(bool bwd, const SplineArgs& a, int64_t b, int64_t e) { spline_any<F32>(bwd, a, b, e); }
GE_FLOWS_AVX512 void spline_avx512(bool bwd, const SplineArgs& a, int64_t b, int64_t e) { spline_any<F32>(bwd, a, b, e); }
void spline_f64(bool bwd, const SplineArgs& a, int64_t b, int64_t e) { spline_any<F64>(bwd, a, b, e); }

void affine_base(bool bwd, const AffineArgs& a, int64_t r0, int64_t r1) { affine_any<F32>(bwd, a, r0, r1); }
GE_FLOWS_AVX2 void affine_avx2(bool bwd, const AffineArgs& a, int64_t r0, int64_t r1) { affine_any<F32>(bwd, a, r0, r1); }
GE_FLOWS_AVX512 void affine_avx512(bool bwd, const AffineArgs& a, int64_t r0, int64_t r1) { affine_any<F32>(bwd, a, r0, r1); }
void affine_f64(bool bwd, const AffineArgs& a, int64_t r0, int64_t r1) { affine_any<F64>(bwd, a, r0, r1); }

int pick_isa(int want) {
#ifdef GE_FLOWS_CLONES
  static const int best = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
                              ? 2
                              : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0);
  return want < 0 ? best : std::min(want, best);
#else
  (void)want;
  return 0;
#endif
}

constexpr int64_t kChunk = 2048;  // elements per parallel work unit (128 lane-sets)

void run_spline(bool bwd, const SplineArgs& a) {
  if (a.n <= 0) return;
  auto fn = spline_base;
  if (a.f64) {
    fn = spline_f64;
  } else {
    switch (pick_isa(a.isa)) {
      case 2: fn = spline_avx512; break;
      case 1: fn = spline_avx2; break;
      default: break;
    }
  }
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  if (chunks == 1) {
    fn(bwd, a, 0, a.n);
    return;
  }
  parallel_chunks(chunks, [&](int64_t i) { fn(bwd, a, i * kChunk, std::min(a.n, (i + 1) * kChunk)); });
}

void run_affine(bool bwd, const AffineArgs& a) {
  if (a.rows <= 0) return;
  auto fn = affine_base;
  if (a.f64) {
    fn = affine_f64;
  } else {
    switch (pick_isa(a.isa)) {
      case 2: fn = affine_avx512; break;
      case 1: fn = affine_avx2; break;
      default: break;
    }
  }
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, a.d));  // rows per unit: ~16K elements
  const int64_t chunks = (a.rows + per - 1) / per;
  if (chunks == 1) {
    fn(bwd, a, 0, a.rows);
    return;
  }
  parallel_chunks(chunks, [&](int64_t i) { fn(bwd, a, i * per, std::min(a.rows, (i + 1) * per)); });
}

}  // namespace

void rq_spline_fwd(const SplineArgs& a) { run_spline(false, a); }
void rq_spline_bwd(const SplineArgs& a) { run_spline(true, a); }
void affine_coupling_fwd(const AffineArgs& a) { run_affine(false, a); }
void affine_coupling_bwd(const AffineArgs& a) { run_affine(true, a); }

const char* flows_isa(int isa) {
  static const char* const names[] = {"baseline", "avx2", "avx512"};
  return names[pick_isa(isa)];
}

}  // namespace ge
