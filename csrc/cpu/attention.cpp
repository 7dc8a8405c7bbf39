// Attention for autoregressive sampling on the CPU: decode attention over a contiguous or paged KV
// cache, packed variable-length prefill attention, and rotary embedding fused with the KV append.
//
// Shapes (attention.h): decode q/out [B, Q, Hq, D], caches addressed through KvLayout (contiguous
// [B, Hkv, S, D] or paged [P, page_size, Hkv, D]); prefill q/out [T, Hq, D], k/v [Tk, Hkv, D];
// rope q [T, Hq, D], k/v [T, Hkv, D]. D is a multiple of 8 (the Python side allows 16..256).
//
// Decode is memory bound: the floor is one read of K and V. A work item is (batch row, kv head, KV
// split): its whole query group (Q * Hq / Hkv rows) shares every key it reads, so each K/V byte comes
// from DRAM once and then from L1 for the other rows, where torch's SDPA with enable_gqa reads the KV
// of a head once per query head. Keys go in blocks of 16: the scores of one row against 8 keys at a
// time (8 accumulators over D, then one transposing reduction), an online softmax in base 2 (the
// queries are pre-scaled by scale * log2(e), so exp is exp2 of a polynomial), and the value update
// with the row's accumulator in registers, 64 floats at a time. Splits of the KV length write a
// normalised partial output and its log-sum-exp, merged in a second pass.
//
// Prefill runs the same core with a block of queries (times the group) as the rows, and a per-row
// key range (causal, bottom-right aligned; sliding window).
//
// float32 on a CPU with AVX-512 takes attend512_block instead (through attend_f32_core): the same
// online softmax over blocks of 128 keys, register tiles of 16-lane vectors for the scores and the
// values, rows requested by software prefetch ahead of their reads (RowsAhead) where the CPU's plan
// says the hardware does not stream them (PrefetchPlan); see the comments there. Without AVX-512
// (or with GENENGINE_CPU_ISA=avx2) float32 takes attend2_block, the same design at 8 lanes on AVX2 +
// FMA; GENENGINE_CPU_ISA=baseline keeps the loops' core (attend<float>). A paged float32 cache with
// more than one query row per kv head (on Intel: any) is walked by items of (sequence, split) over
// every kv head a block at a time (decode_item_heads), since its slots hold all heads' rows
// contiguously.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "cpu_common.h"
#include "parallel.h"

// Checked against float64 with tolerances (not bit for bit), so fused multiply-adds are welcome.
#pragma GCC optimize("fp-contract=fast")

#define GE_INLINE inline __attribute__((always_inline))

// As GE_MULTIVERSIONED, plus an AVX-512VL clone: the 8-lane vectors stay 256 bits wide, but the
// 32 vector registers hold a row's 64-float accumulator and the 8 score accumulators without spills.
#if defined(__x86_64__) && !defined(GE_NATIVE) && defined(__GNUC__) && !defined(__clang__)
#define GE_ATTN_MV(decl, ...)                                                                 \
  __attribute__((target("default"))) GE_STRIP decl __VA_ARGS__                               \
  __attribute__((target("avx2,fma,f16c"))) GE_STRIP decl __VA_ARGS__                         \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c"))) GE_STRIP decl __VA_ARGS__
#else
#define GE_ATTN_MV(decl, ...) GE_STRIP decl __VA_ARGS__
#endif

namespace ge {
namespace {

#pragma GCC diagnostic ignored "-Wpsabi"  // v8f values only cross always-inlined calls
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

constexpr int kBK = 16;           // keys per block
constexpr int64_t kMaxD = 512;    // the zero row that pads a block's last 8-key group
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

alignas(64) const float g_zero_row[kMaxD] = {};

GE_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GE_INLINE v8f load8(const BF16* p) {
  v8h h;
  std::memcpy(&h, p, sizeof h);
  return (v8f)(__builtin_convertvector(h, v8u) << 16);
}
GE_INLINE v8f load8(const F16* p) {  // as to_float(F16) in cpu_common.h, 8 lanes at a time
  v8h h16;
  std::memcpy(&h16, p, sizeof h16);
  const v8u h = __builtin_convertvector(h16, v8u), em = h & 0x7FFFu;
  const v8u scaled = (v8u)((v8f)(em << 13) * 5.192296858534828e+33f);
  const v8u inf_nan = 0x7F800000u & (v8u)(em >= 0x7C00u);
  return (v8f)(scaled | inf_nan | ((h & 0x8000u) << 16));
}
GE_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

GE_INLINE float hsum(v8f v) {
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += v[j];
  return s;
}
GE_INLINE float hmax(v8f v) {
  float m = v[0];
  for (int j = 1; j < 8; ++j) m = v[j] > m ? v[j] : m;
  return m;
}
GE_INLINE v8f vmax(v8f a, v8f b) { return (v8f)(((v8i)a & (a > b)) | ((v8i)b & ~(a > b))); }

// 2^x: x rounded to k + f with |f| <= 1/2, 2^f by its degree-7 Taylor polynomial (relative error
// ~5e-9 before float rounding), 2^k by integer arithmetic. x < -126 (and -inf) gives exactly 0, so a
// masked score contributes nothing; x is clamped at 126 (only the softcap's tanh passes positives).
// NaN stays NaN.
GE_INLINE v8f exp2v(v8f x) {
  const v8i tiny = x < -126.0f;
  const v8i big = x > 126.0f;
  x = (v8f)(((v8i)x & ~big) | ((v8i)(v8f{} + 126.0f) & big));
  x = (v8f)(((v8i)x & ~tiny) | ((v8i)(v8f{} - 126.0f) & tiny));
  const v8f kf = x + 12582912.0f;  // + 1.5 * 2^23 rounds to an integer in the low mantissa bits
  const v8f k = kf - 12582912.0f;
  const v8f f = x - k;
  v8f p = v8f{} + 1.5252733804059840e-05f;
  p = p * f + 1.5403530393381609e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f;
  p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f;
  p = p * f + 6.9314718055994531e-01f;
  p = p * f + 1.0f;
  const v8u scale = ((v8u)kf - 0x4B400000u + 127u) << 23;
  return (v8f)((v8i)(p * (v8f)scale) & ~tiny);
}

// tanh(t) = t + t^3 Q(t^2) for |t| < kTanhPolyBelow: a degree-4 Q fitted for relative error (6.6e-8 in
// float32 over the range, against float64 tanh). The other form, 1 - 2 / (exp(2t) + 1), keeps only
// absolute precision, ~1e-7, which times the cap was the score's error: at a cap of 10,000 a score
// of 1 came out 1e-3 off. Past the threshold |tanh| >= 0.5, where that form is relatively exact too.
constexpr float kTanhPolyBelow = 0.55f;
constexpr float kTanhQ[5] = {-0.33333317583376937f, 0.13332587002559224f, -0.05385240570398127f, 0.021072091626934204f,
                             -0.006274845646750267f};  // Q(u) = sum kTanhQ[i] u^i

// softcap * tanh(s / softcap) * log2(e)
GE_INLINE v8f softcap2(v8f s, float softcap) {
  const v8f t = s * (1.0f / softcap), u = t * t;
  const v8f q = (((kTanhQ[4] * u + kTanhQ[3]) * u + kTanhQ[2]) * u + kTanhQ[1]) * u + kTanhQ[0];
  const v8f near0 = t + t * u * q;
  const v8f far = 1.0f - 2.0f / (exp2v(t * (2.0f * kLog2e)) + 1.0f);
  const v8i small = (v8f)((v8u)t & 0x7FFFFFFFu) < kTanhPolyBelow;  // false for NaN: it stays NaN
  return (v8f)(((v8i)near0 & small) | ((v8i)far & ~small)) * (softcap * kLog2e);
}

GE_INLINE v8f hadd(v8f a, v8f b) {
  return __builtin_shuffle(a, b, v8i{0, 2, 8, 10, 4, 6, 12, 14}) + __builtin_shuffle(a, b, v8i{1, 3, 9, 11, 5, 7, 13, 15});
}

// lane j = the sum of a[j]'s 8 lanes
GE_INLINE v8f reduce8(const v8f* a) {
  const v8f h0 = hadd(hadd(a[0], a[1]), hadd(a[2], a[3]));
  const v8f h1 = hadd(hadd(a[4], a[5]), hadd(a[6], a[7]));
  return __builtin_shuffle(h0, h1, v8i{0, 1, 2, 3, 8, 9, 10, 11}) + __builtin_shuffle(h0, h1, v8i{4, 5, 6, 7, 12, 13, 14, 15});
}

// the dot products of q (nc * 8 floats) with 8 key rows
GE_INLINE v8f dot8(const float* __restrict q, const float* const* kp, int64_t nc) {
  v8f a[8] = {};
  for (int64_t c = 0; c < nc; ++c) {
    const v8f qv = load8(q + 8 * c);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] += qv * load8(kp[j] + 8 * c);
  }
  return reduce8(a);
}

// acc[off, off + 8 * CNT) = acc * corr + sum_{j in [jb, je)} p[j] v[j][off...]
template <int CNT>
GE_INLINE void av_group(float* __restrict acc, const float* p, const float* const* vp, int jb, int je, int64_t off,
                        float corr) {
  v8f a[CNT];
#pragma GCC unroll 8
  for (int c = 0; c < CNT; ++c) a[c] = load8(acc + off + 8 * c) * corr;
  for (int j = jb; j < je; ++j) {
    const float pj = p[j];
    const float* v = vp[j] + off;
#pragma GCC unroll 8
    for (int c = 0; c < CNT; ++c) a[c] += pj * load8(v + 8 * c);
  }
#pragma GCC unroll 8
  for (int c = 0; c < CNT; ++c) store8(acc + off + 8 * c, a[c]);
}

GE_INLINE void av_row(float* acc, const float* p, const float* const* vp, int jb, int je, int64_t D, float corr) {
  int64_t off = 0;
  for (; off + 64 <= D; off += 64) av_group<8>(acc, p, vp, jb, je, off, corr);
  switch ((D - off) / 8) {
    case 1: av_group<1>(acc, p, vp, jb, je, off, corr); break;
    case 2: av_group<2>(acc, p, vp, jb, je, off, corr); break;
    case 3: av_group<3>(acc, p, vp, jb, je, off, corr); break;
    case 4: av_group<4>(acc, p, vp, jb, je, off, corr); break;
    case 5: av_group<5>(acc, p, vp, jb, je, off, corr); break;
    case 6: av_group<6>(acc, p, vp, jb, je, off, corr); break;
    case 7: av_group<7>(acc, p, vp, jb, je, off, corr); break;
    default: break;
  }
}

// the dot products of two query rows with 8 key rows: each key vector is loaded once for both rows
// (16 accumulators: the AVX-512 clone's 32 registers hold them; the others spill a few)
GE_INLINE void dot8x2(const float* __restrict q0, const float* __restrict q1, const float* const* kp, int64_t nc, v8f& s0,
                      v8f& s1) {
  v8f a[8] = {}, b[8] = {};
  for (int64_t c = 0; c < nc; ++c) {
    const v8f qa = load8(q0 + 8 * c), qb = load8(q1 + 8 * c);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const v8f kv = load8(kp[j] + 8 * c);
      a[j] += qa * kv;
      b[j] += qb * kv;
    }
  }
  s0 = reduce8(a);
  s1 = reduce8(b);
}

// av_group for two rows sharing every value load
template <int CNT>
GE_INLINE void av_group2(float* __restrict acc0, float* __restrict acc1, const float* p0, const float* p1,
                         const float* const* vp, int jb, int je, int64_t off, float c0, float c1) {
  v8f a[CNT], b[CNT];
#pragma GCC unroll 8
  for (int c = 0; c < CNT; ++c) {
    a[c] = load8(acc0 + off + 8 * c) * c0;
    b[c] = load8(acc1 + off + 8 * c) * c1;
  }
  for (int j = jb; j < je; ++j) {
    const float pa = p0[j], pb = p1[j];
    const float* v = vp[j] + off;
#pragma GCC unroll 8
    for (int c = 0; c < CNT; ++c) {
      const v8f vv = load8(v + 8 * c);
      a[c] += pa * vv;
      b[c] += pb * vv;
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < CNT; ++c) {
    store8(acc0 + off + 8 * c, a[c]);
    store8(acc1 + off + 8 * c, b[c]);
  }
}

GE_INLINE void av_row2(float* acc0, float* acc1, const float* p0, const float* p1, const float* const* vp, int jb, int je,
                       int64_t D, float c0, float c1) {
  int64_t off = 0;
  for (; off + 64 <= D; off += 64) av_group2<8>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1);
  switch ((D - off) / 8) {
    case 1: av_group2<1>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 2: av_group2<2>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 3: av_group2<3>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 4: av_group2<4>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 5: av_group2<5>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 6: av_group2<6>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    case 7: av_group2<7>(acc0, acc1, p0, p1, vp, jb, je, off, c0, c1); break;
    default: break;
  }
}

template <typename T>
GE_INLINE void to_float_row(const T* __restrict src, float* __restrict dst, int64_t D) {
  for (int64_t i = 0; i < D; i += 8) store8(dst + i, load8(src + i));
}

// Per-thread scratch, grown on demand (a call's items reuse it).
struct Scratch {
  std::vector<float> f;
  std::vector<int64_t> i;
};
thread_local Scratch t_scratch;

// The rows of one work item and their softmax state.
struct RowSet {
  int64_t R = 0, D = 0;
  float* qs = nullptr;   // [R, D] queries times scale (* log2 e without softcap)
  float* acc = nullptr;  // [R, D] unnormalised output
  float* m = nullptr;    // [R] running max (base 2)
  float* l = nullptr;    // [R] running sum
  float* kf = nullptr;   // [kBK, D] a converted key block (half types)
  float* vf = nullptr;
  int64_t* lo = nullptr;  // [R] each row attends keys [lo, hi)
  int64_t* hi = nullptr;
};

GE_INLINE RowSet make_rows(int64_t R, int64_t D) {
  Scratch& s = t_scratch;
  const size_t nf = size_t(2 * R * D + 2 * R + 2 * kBK * D + 16);
  if (s.f.size() < nf) s.f.resize(nf);
  if (s.i.size() < size_t(2 * R)) s.i.resize(size_t(2 * R));
  RowSet r;
  r.R = R;
  r.D = D;
  r.qs = s.f.data();
  r.acc = r.qs + R * D;
  r.kf = r.acc + R * D;
  r.vf = r.kf + kBK * D;
  r.m = r.vf + kBK * D;
  r.l = r.m + R;
  r.lo = s.i.data();
  r.hi = r.lo + R;
  return r;
}

template <typename T>
GE_INLINE void load_query(const RowSet& rs, int64_t r, const T* q, float mult) {
  float* dst = rs.qs + r * rs.D;
  for (int64_t i = 0; i < rs.D; ++i) dst[i] = to_float(q[i]) * mult;
}

// One row's online-softmax step over a block: scores s0 (keys 0-7), s1 (8-15) are masked to [ra, rb),
// softcapped, and turned into probabilities p relative to the new running max; corr rescales the
// row's accumulator. False (and no update) when the row has no finite score yet.
GE_INLINE bool block_softmax(const RowSet& rs, int64_t r, v8f s0, v8f s1, int32_t ra, int32_t rb, float softcap, v8i iota,
                             float* p, float& corr) {
  if (softcap > 0.0f) {
    s0 = softcap2(s0, softcap);
    s1 = softcap2(s1, softcap);
  }
  const v8i in0 = (iota >= ra) & (iota < rb), in1 = (iota + 8 >= ra) & (iota + 8 < rb);
  s0 = (v8f)(((v8i)s0 & in0) | ((v8i)(v8f{} + kNegInf) & ~in0));
  s1 = (v8f)(((v8i)s1 & in1) | ((v8i)(v8f{} + kNegInf) & ~in1));
  float mb = hmax(vmax(s0, s1));
  const v8i nan = (s0 != s0) | (s1 != s1);  // the max drops a NaN where every other score is -inf
  for (int j = 0; j < 8; ++j)
    if (nan[j]) mb = std::numeric_limits<float>::quiet_NaN();
  const float mold = rs.m[r];
  const float mnew = mb != mb ? mb : mb > mold ? mb : mold;  // a NaN score makes the row NaN from here on
  if (mnew == kNegInf) return false;
  const v8f p0 = exp2v(s0 - mnew), p1 = exp2v(s1 - mnew);
  corr = mold == mnew ? 1.0f : std::exp2(mold - mnew);  // exp2(0) = 1: no libm call once the max settles
  rs.l[r] = rs.l[r] * corr + hsum(p0 + p1);
  rs.m[r] = mnew;
  store8(p, p0);
  store8(p + 8, p1);
  return true;
}

// Online softmax of every row over keys [klo, khi); fill(j0, n, kr, vr) sets the pointers of keys
// j0 .. j0 + n - 1 (all inside the buffers: the caller has clamped the range and the pages).
template <typename T, typename Fill>
GE_INLINE void attend(const RowSet& rs, int64_t klo, int64_t khi, float softcap, Fill fill) {
  const int64_t R = rs.R, D = rs.D, nc = D / 8;
  for (int64_t r = 0; r < R; ++r) {
    rs.m[r] = kNegInf;
    rs.l[r] = 0.0f;
  }
  std::memset(rs.acc, 0, sizeof(float) * size_t(R * D));
  const v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int64_t j0 = klo; j0 < khi; j0 += kBK) {
    const int n = int(std::min<int64_t>(kBK, khi - j0));
    const T* kr[kBK];
    const T* vr[kBK];
    fill(j0, n, kr, vr);
    const float* kp[kBK];
    const float* vp[kBK];
    for (int j = 0; j < n; ++j) {
      if constexpr (std::is_same<T, float>::value) {
        kp[j] = kr[j];
        vp[j] = vr[j];
      } else {
        to_float_row(kr[j], rs.kf + j * D, D);
        to_float_row(vr[j], rs.vf + j * D, D);
        kp[j] = rs.kf + j * D;
        vp[j] = rs.vf + j * D;
      }
    }
    for (int j = n; j < kBK; ++j) kp[j] = vp[j] = g_zero_row;
    // rows go in pairs (each K and V vector loaded once for both); a lone or half-empty pair runs singly
    for (int64_t r = 0; r < R; r += 2) {
      const int64_t a0 = std::max(rs.lo[r], j0), b0 = std::min(rs.hi[r], j0 + n);
      const bool two = r + 1 < R;
      const int64_t a1 = two ? std::max(rs.lo[r + 1], j0) : 0, b1 = two ? std::min(rs.hi[r + 1], j0 + n) : 0;
      const bool e0 = a0 >= b0, e1 = a1 >= b1;
      if (e0 && e1) continue;
      if (e0 || e1) {
        const int64_t rr = e0 ? r + 1 : r;
        const int64_t a = e0 ? a1 : a0, b = e0 ? b1 : b0;
        v8f s0, s1;
        const float* q = rs.qs + rr * D;
        s0 = dot8(q, kp, nc);
        s1 = n > 8 ? dot8(q, kp + 8, nc) : v8f{} + kNegInf;
        alignas(32) float p[kBK];
        float corr;
        if (!block_softmax(rs, rr, s0, s1, int32_t(a - j0), int32_t(b - j0), softcap, iota, p, corr)) continue;
        av_row(rs.acc + rr * D, p, vp, int(a - j0), int(b - j0), D, corr);
        continue;
      }
      v8f s00, s01, s10, s11;
      dot8x2(rs.qs + r * D, rs.qs + (r + 1) * D, kp, nc, s00, s10);
      if (n > 8) {
        dot8x2(rs.qs + r * D, rs.qs + (r + 1) * D, kp + 8, nc, s01, s11);
      } else {
        s01 = s11 = v8f{} + kNegInf;
      }
      alignas(32) float p0[kBK], p1[kBK];
      float c0, c1;
      const bool ok0 = block_softmax(rs, r, s00, s01, int32_t(a0 - j0), int32_t(b0 - j0), softcap, iota, p0, c0);
      const bool ok1 = block_softmax(rs, r + 1, s10, s11, int32_t(a1 - j0), int32_t(b1 - j0), softcap, iota, p1, c1);
      if (!ok0) { std::memset(p0, 0, sizeof p0); c0 = 1.0f; }
      if (!ok1) { std::memset(p1, 0, sizeof p1); c1 = 1.0f; }
      av_row2(rs.acc + r * D, rs.acc + (r + 1) * D, p0, p1, vp, int(std::min(a0, a1) - j0), int(std::max(b0, b1) - j0),
              D, c0, c1);
    }
  }
}

// ---- float32 keys and values on AVX-512 (16 lanes, 32 registers) ------------------------------
// The same online softmax as attend<float>, restructured so that the multiply-adds, not the
// bookkeeping, take the time: per block of 16 keys, the scores of a tile of rows x keys (4 x 4,
// 2 x 8 or 1 x 16: 16 accumulators over D) reduced 16 at a time, one 16-lane softmax per row, and
// the value update with a tile of rows x D (4 x 64, 2 x 128 or 1 x 128 floats) in registers for
// the whole block. At D = 128, G = 4 that is 64 zmm multiply-adds per key and ~1 KB read; the AVX2
// core spent ~2.5x that in shuffles, scalar reductions and accumulator reloads.
// Key j of the item: page = bt ? bt[j / page_size] (clamped) : page0, slot = j % page_size.
struct KeyAddr {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t k_sp = 0, k_ss = 0, v_sp = 0, v_ss = 0, page_size = 1, num_pages = 1, page0 = 0;
  const int32_t* bt = nullptr;
};

// keys per block of the AVX-512 and AVX2 cores: K is read 32 KB (D = 128) in order, then V; with 16-key blocks
// (8 KB) the alternation between the K and V streams cost ~20% of the streaming rate
constexpr int kBK512 = 128;

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 flags the deliberately undefined pass-through operand of its own AVX-512 intrinsics
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define GE_A512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
#define GE_A512_INLINE GE_A512 inline __attribute__((always_inline))

constexpr int kSub = kBK512 / 16;


// 2^x as exp2v (degree-7 polynomial on |f| <= 1/2), 2^k by vscalefps; x below -200 (and -inf) gives
// exactly 0, x is clamped at 126, NaN stays NaN (max / min return their second operand for NaN)
GE_A512_INLINE __m512 exp2_16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(126.0f), _mm512_max_ps(_mm512_set1_ps(-200.0f), x));
  const __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, k);
  __m512 p = _mm512_set1_ps(1.5252733804059840e-05f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530393381609e-04f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-02f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

// lane i = the sum of v[i]'s 16 lanes (45 shuffles and adds for 16 sums)
GE_A512_INLINE __m512 reduce16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit block: [x0+x2, y0+y2, x1+x3, y1+y3] of (x, y) = (v[2i], v[2i+1])
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per block: the block sums of v[4i .. 4i+3]
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

GE_A512_INLINE __mmask16 chunk_mask(int64_t c, int64_t nc, bool half) { return c + 1 == nc && half ? 0x00FF : 0xFFFF; }

// scores of RT rows (qs rows r0 ..) against KT keys (kp[0 .. KT)), RT * KT = 16, as lanes r * KT + j
template <int RT, int KT>
GE_A512_INLINE __m512 score_tile(const float* qs, int64_t D, const float* const* kp, int64_t nc, bool half) {
  __m512 acc[RT * KT];
  for (int i = 0; i < RT * KT; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t c = 0; c < nc; ++c) {
    const __mmask16 m = chunk_mask(c, nc, half);
    __m512 q[RT];
    for (int r = 0; r < RT; ++r) q[r] = _mm512_maskz_loadu_ps(m, qs + r * D + 16 * c);
    for (int j = 0; j < KT; ++j) {
      const __m512 kv = _mm512_maskz_loadu_ps(m, kp[j] + 16 * c);
      for (int r = 0; r < RT; ++r) acc[r * KT + j] = _mm512_fmadd_ps(q[r], kv, acc[r * KT + j]);
    }
  }
  return reduce16(acc);
}

// the scores of one query row against 16 keys with q in registers (NC = D / 16 rounded up <= 8
// vectors), each key row read in order: the single-row tile without the block copy
template <int NC>
GE_A512_INLINE __m512 score_row_seq(const float* qs, const float* const* kp, bool half) {
  __m512 q[NC], acc[16];
  for (int c = 0; c < NC; ++c) q[c] = _mm512_maskz_loadu_ps(chunk_mask(c, NC, half), qs + 16 * c);
  for (int j = 0; j < 16; ++j) {
    acc[j] = _mm512_mul_ps(q[0], _mm512_maskz_loadu_ps(chunk_mask(0, NC, half), kp[j]));
    for (int c = 1; c < NC; ++c) acc[j] = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(chunk_mask(c, NC, half), kp[j] + 16 * c), acc[j]);
  }
  return reduce16(acc);
}

GE_A512_INLINE __m512 score_row(const float* qs, const float* const* kp, int64_t nc, bool half) {
  switch (nc) {
    case 1: return score_row_seq<1>(qs, kp, half);
    case 2: return score_row_seq<2>(qs, kp, half);
    case 3: return score_row_seq<3>(qs, kp, half);
    case 4: return score_row_seq<4>(qs, kp, half);
    case 5: return score_row_seq<5>(qs, kp, half);
    case 6: return score_row_seq<6>(qs, kp, half);
    case 7: return score_row_seq<7>(qs, kp, half);
    case 8: return score_row_seq<8>(qs, kp, half);
    default: return score_tile<1, 16>(qs, nc * 16 - (half ? 8 : 0), kp, nc, half);
  }
}

// Software prefetch for the AVX-512 and AVX2 cores, by read pattern and CPU (prefetch_plan_for_cpu).
// Which level a request fills, or whether to request at all, depends on the CPU:
// - Zen 4 and unknown CPUs: prefetcht2 everywhere. The hardware prefetchers do not stream this
//   core's reads there (without software prefetch 1.2-1.45x slower); t0 at any distance measured
//   1.4-1.6x slower (the requests hold L1 miss buffers that the arithmetic's own L2 reads wait behind).
//   The AVX2 core on a Zen 4 VM that hides AVX-512 (2026-12-03): no software prefetch 2.0-2.1x and
//   t0 1.7-2.1x slower than t2.
// - Zen 5 (AMD family 1Ah): prefetcht0, 1.13-1.32x faster than t2 for contiguous caches and
//   1.03-1.14x for the paged all-heads walk; no software prefetch 1.7-3x slower.
// - Intel (measured on a family 6 Xeon, 2026-12-03): the L2 streamer follows a stream that stays
//   in order, so software requests only help where the arithmetic is long: t2 for a contiguous
//   cache's query-row groups (G >= 2: no prefetch 6-13% slower), none for a contiguous single row
//   per kv head (6% faster than t2) and none for the paged all-heads walk (5-7% faster at G = 4),
//   which then also takes single-row (MHA) paged caches: 21 ms against 28 for the one-head walk
//   with t2 at (8,32,32,2048,128), paged within 1-8% of contiguous there.
// The one-head-at-a-time paged walk (rows Hkv * D floats apart, 4-16 KB, which no hardware
// prefetcher follows, and which alias in a few L1 sets) keeps t2 (t0 measured 0.88-0.97x on Zen 5).
// GENENGINE_ATTENTION_PREFETCH=t0|t2|off sets every pattern's level (off: the paged single-row
// case takes the all-heads walk, as on Intel).
// Contiguous caches: the rows in the order the block reads them (its K rows, its V rows, then the
// next block's K rows), each requested kRowsAhead rows before it is read; whole blocks requested
// at the block's start (the previous design) left the G = 4 shapes at compute time plus memory time.
// Paged (all heads per item): each head's block requests a share of the next block's slots, spread
// over its reads (rate16). A single 64-byte line per request, a counted loop per row (one loop per
// K / V / next segment where a contiguous cache keeps the rows back to back): a test and a branch
// per line cost half as much again as the G = 4 arithmetic when the rows were cached.
enum class Fill { kL1, kL2, kOff };  // prefetcht0, prefetcht2, no software prefetch

struct PrefetchPlan {
  Fill rows = Fill::kL2;       // contiguous cache, a group of query rows per kv head
  Fill row = Fill::kL2;        // contiguous cache, one query row per kv head
  Fill heads = Fill::kL2;      // paged cache, every kv head of a slot together
  Fill one_head = Fill::kL2;   // paged cache, one kv head at a time
  bool single_row_heads = false;  // a paged cache with one query row per kv head takes the all-heads walk
  const char* why = "auto";
};

// GENENGINE_ATTENTION_PREFETCH=t0|t2|off into *f; false when unset or not one of those
bool forced_fill(Fill* f) {
  const char* env = std::getenv("GENENGINE_ATTENTION_PREFETCH");
  if (!env) return false;
  if (std::strcmp(env, "t0") == 0) return *f = Fill::kL1, true;
  if (std::strcmp(env, "t2") == 0) return *f = Fill::kL2, true;
  if (std::strcmp(env, "off") == 0) return *f = Fill::kOff, true;
  return false;
}

PrefetchPlan prefetch_plan_for_cpu() {
  PrefetchPlan plan;
  Fill f;
  if (forced_fill(&f)) {
    plan.rows = plan.row = plan.heads = plan.one_head = f;
    plan.single_row_heads = f == Fill::kOff;
    plan.why = "GENENGINE_ATTENTION_PREFETCH";
    return plan;
  }
  __builtin_cpu_init();  // this runs from a static initialiser
  if (__builtin_cpu_is("intel")) {
    plan.row = plan.heads = Fill::kOff;
    plan.single_row_heads = true;
    plan.why = "Intel";
    return plan;
  }
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__builtin_cpu_is("amd") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return plan;
  const unsigned base = (eax >> 8) & 0xF, family = base == 0xF ? base + ((eax >> 20) & 0xFF) : base;
  if (family >= 0x1A) {
    plan.rows = plan.row = plan.heads = Fill::kL1;
    plan.why = "AMD family 1Ah or later";
  }
  return plan;
}

const PrefetchPlan g_prefetch = prefetch_plan_for_cpu();

GE_INLINE void prefetch_lines(const char* b, const char* e, Fill fill) {
  if (fill == Fill::kL1) {
    for (; b < e; b += 64) _mm_prefetch(b, _MM_HINT_T0);
  } else {
    for (; b < e; b += 64) _mm_prefetch(b, _MM_HINT_T2);
  }
}

struct RowsAhead {
  const float* const* k = nullptr;     // [n]
  const float* const* v = nullptr;     // [n]
  const float* const* next = nullptr;  // [n_next]
  int n = 0, n_next = 0, dist = 0, sent = 0;
  int64_t bytes = 0;  // of each row
  int64_t rate16 = 1 << 16;  // rows requested per row read, times 2^16
  int per = 1;                // a slot of k / v / next holds `per` rows, `stride` floats apart
  int64_t stride = 0;
  bool linear = false;  // k, v and next each hold their rows back to back (bytes apart)
  Fill fill = Fill::kL2;

  GE_INLINE const float* row(int i) const {
    const int j = per == 1 ? i : i / per;
    const float* base = j < n ? k[j] : j < 2 * n ? v[j - n] : next[j - 2 * n];
    return per == 1 ? base : base + (i - j * per) * stride;
  }
  // rows [0, read) of the block are read or about to be: request the sequence up to dist + read * rate
  GE_INLINE void upto(int read) {
    if (fill == Fill::kOff) return;
    const int end = int(std::min<int64_t>(dist + (int64_t(read) * rate16 >> 16), (2 * n + n_next) * int64_t(per)));
    if (linear) {  // one byte range per segment: no row lookup per row
      while (sent < end) {
        const int seg = sent < n ? 0 : sent < 2 * n ? 1 : 2;
        const int s0 = seg * n, s1 = std::min(end, seg < 2 ? s0 + n : s0 + n_next);
        const char* b = reinterpret_cast<const char*>(seg == 0 ? k[0] : seg == 1 ? v[0] : next[0]) + (sent - s0) * bytes;
        prefetch_lines(b, b + (s1 - sent) * bytes, fill);
        sent = s1;
      }
      return;
    }
    for (; sent < end; ++sent) {
      const char* r = reinterpret_cast<const char*>(row(sent));
      prefetch_lines(r, r + bytes, fill);
    }
  }
};

// acc rows (RT of them) [off, off + 16 DC) = acc * corr (corr null: acc) + sum_{j0 <= j < j1} p[r][j] v[j][...];
// ra (or null): the read point of key j is base + j + 1
template <int RT, int DC>
GE_A512_INLINE void value_tile(float* acc, const float* p, const float* corr, const float* const* vp, int j0, int j1,
                               int64_t D, int64_t off, bool half_last, RowsAhead* ra, int base) {
  __m512 a[RT][DC];
  for (int r = 0; r < RT; ++r)
    for (int c = 0; c < DC; ++c) {
      const __mmask16 m = c + 1 == DC && half_last ? 0x00FF : 0xFFFF;
      a[r][c] = _mm512_maskz_loadu_ps(m, acc + r * D + off + 16 * c);
      if (corr) a[r][c] = _mm512_mul_ps(a[r][c], _mm512_set1_ps(corr[r]));
    }
  for (int j = j0; j < j1; ++j) {
    __m512 pj[RT];
    for (int r = 0; r < RT; ++r) pj[r] = _mm512_set1_ps(p[r * kBK512 + j]);
    if (ra) ra->upto(base + j + 1);
    for (int c = 0; c < DC; ++c) {
      const __mmask16 m = c + 1 == DC && half_last ? 0x00FF : 0xFFFF;
      const __m512 vv = _mm512_maskz_loadu_ps(m, vp[j] + off + 16 * c);
      for (int r = 0; r < RT; ++r) a[r][c] = _mm512_fmadd_ps(pj[r], vv, a[r][c]);
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int c = 0; c < DC; ++c) {
      const __mmask16 m = c + 1 == DC && half_last ? 0x00FF : 0xFFFF;
      _mm512_mask_storeu_ps(acc + r * D + off + 16 * c, m, a[r][c]);
    }
}

// whether every row's rescale is exactly 1 (its running max unchanged): the value tiles then skip
// the accumulators' multiply, which a short block (the paged all-heads walk's 16 keys) notices
GE_INLINE bool all_one(const float* corr, int n) {
  bool one = true;
  for (int r = 0; r < n; ++r) one &= corr[r] == 1.0f;
  return one;
}

// acc rows (RT of them) = acc * corr + p v over keys [0, n), 16 keys at a time through every column
// tile, so that a key's row is read while it is still in L1; ra (or null) steps with the first tile
template <int RT>
GE_A512_INLINE void value_rows(float* acc, const float* p, const float* corr, const float* const* vp, int n, int64_t D,
                               RowsAhead* ra, int base) {
  constexpr int DC = RT == 4 ? 4 : 8;  // RT * DC accumulators + RT broadcasts + 1 value of 32 registers
  const int64_t nc = (D + 15) / 16;
  const bool half = D % 16 != 0;
  for (int j0 = 0; j0 < n; j0 += 16) {
    const int j1 = std::min(n, j0 + 16);
    const float* cr = j0 == 0 && !all_one(corr, RT) ? corr : nullptr;
    RowsAhead* step = ra;
    int64_t c = 0;
    for (; c + DC <= nc; c += DC, step = nullptr)
      value_tile<RT, DC>(acc, p, cr, vp, j0, j1, D, 16 * c, half && c + DC == nc, step, base);
    switch (nc - c) {
      case 1: value_tile<RT, 1>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 2: value_tile<RT, 2>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 3: value_tile<RT, 3>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 4: value_tile<RT, 4>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 5: value_tile<RT, 5>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 6: value_tile<RT, 6>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      case 7: value_tile<RT, 7>(acc, p, cr, vp, j0, j1, D, 16 * c, half, step, base); break;
      default: break;
    }
  }
}

// a row's block of scores (s, nsub vectors) soft-capped (softcap > 0) and masked to [ra, rb)
// (-inf outside); returns their lane-wise max, all NaN where a score in range is NaN (maxps keeps
// a NaN only as its second operand: one NaN among -inf scores would be lost)
GE_A512_INLINE __m512 mask_scores(__m512* s, int nsub, int32_t ra, int32_t rb, float softcap) {
  ra = std::max(ra, 0);
  rb = std::min(rb, kBK512);
  __m512 mx = _mm512_set1_ps(kNegInf);
  __mmask16 nan = 0;
  for (int u = 0; u < nsub; ++u) {
    if (softcap > 0.0f) {  // as softcap2: tanh by its odd polynomial near 0, by exp2 elsewhere
      const __m512 t = _mm512_mul_ps(s[u], _mm512_set1_ps(1.0f / softcap)), t2 = _mm512_mul_ps(t, t);
      __m512 q = _mm512_set1_ps(kTanhQ[4]);
      for (int i = 3; i >= 0; --i) q = _mm512_fmadd_ps(q, t2, _mm512_set1_ps(kTanhQ[i]));
      const __m512 near0 = _mm512_fmadd_ps(_mm512_mul_ps(t, t2), q, t);
      const __m512 e = exp2_16(_mm512_mul_ps(t, _mm512_set1_ps(2.0f * kLog2e)));
      const __m512 far = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
      const __mmask16 small = _mm512_cmp_ps_mask(_mm512_abs_ps(t), _mm512_set1_ps(kTanhPolyBelow), _CMP_LT_OQ);
      s[u] = _mm512_mul_ps(_mm512_mask_mov_ps(far, small, near0), _mm512_set1_ps(softcap * kLog2e));
    }
    const int a = std::clamp(ra - 16 * u, 0, 16), b = std::clamp(rb - 16 * u, 0, 16);
    const __mmask16 in = a < b ? __mmask16(((1u << b) - 1u) & ~((1u << a) - 1u)) : __mmask16(0);
    s[u] = _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), in, s[u]);
    nan |= _mm512_cmp_ps_mask(s[u], s[u], _CMP_UNORD_Q);
    mx = _mm512_max_ps(mx, s[u]);
  }
  return nan ? _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()) : mx;
}

// one row's online-softmax step over a block of kBK512 scores (s, kSub vectors) masked to [ra, rb):
// p (kBK512 floats) relative to the new running max, corr the accumulator's rescale; all-zero p and
// corr 1 while the row has no finite score
GE_A512_INLINE void softmax_block(const RowSet& rs, int64_t r, __m512* s, int nsub, int32_t ra, int32_t rb, float softcap,
                                  float* p, float& corr) {
  const __m512 mx = mask_scores(s, nsub, ra, rb, softcap);
  const float mold = rs.m[r], mb = _mm512_reduce_max_ps(mx);
  const float mnew = mb != mb ? mb : mb > mold ? mb : mold;  // a NaN score makes the row NaN from here on
  if (mnew == kNegInf) {
    for (int u = 0; u < nsub; ++u) _mm512_store_ps(p + 16 * u, _mm512_setzero_ps());
    corr = 1.0f;
    return;
  }
  const __m512 mv = _mm512_set1_ps(mnew);
  __m512 sum = _mm512_setzero_ps();
  for (int u = 0; u < nsub; ++u) {
    const __m512 e = exp2_16(_mm512_sub_ps(s[u], mv));
    sum = _mm512_add_ps(sum, e);
    _mm512_store_ps(p + 16 * u, e);
  }
  corr = mold == mnew ? 1.0f : std::exp2(mold - mnew);  // exp2(0) = 1: no libm call once the max settles
  rs.l[r] = rs.l[r] * corr + _mm512_reduce_add_ps(sum);
  rs.m[r] = mnew;
}

// lanes 0-3 = the max (add: the sum) of each of a, b, c, d's 16 lanes
template <bool kAdd>
GE_A512_INLINE __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  auto op = [](__m512 x, __m512 y) { return kAdd ? _mm512_add_ps(x, y) : _mm512_max_ps(x, y); };
  // per 128-bit block: [a0 . a2, b0 . b2, a1 . a3, b1 . b3], the same for (c, d)
  const __m512 ab = op(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = op(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // per block: [a, b, c, d] over the block's 4 lanes
  __m512 x = op(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  x = op(x, _mm512_shuffle_f32x4(x, x, 0x4E));
  x = op(x, _mm512_shuffle_f32x4(x, x, 0xB1));
  return _mm512_castps512_ps128(x);
}

// softmax_block for rows r0 .. r0 + 3 together: one transposed reduction for their maxima and one
// for their sums, one exp2 for their rescales (per row, the scalar reductions and the libm exp2
// cost ~100 ns a block: a fifth of a 16-key block's arithmetic at G = 4, the paged block size)
GE_A512_INLINE void softmax_rows4(const RowSet& rs, int64_t r0, __m512 (*s)[kSub], int nsub, int64_t j0, int n,
                                  float softcap, float* p, float* corr) {
  __m512 mx[4];
  for (int r = 0; r < 4; ++r)
    mx[r] = mask_scores(s[r], nsub, int32_t(rs.lo[r0 + r] - j0), int32_t(std::min<int64_t>(rs.hi[r0 + r], j0 + n) - j0),
                        softcap);
  const __m128 mold = _mm_loadu_ps(rs.m + r0);
  // a NaN score (where the reduction keeps it) makes the row NaN from here on, as in softmax_block
  const __m128 red = reduce4<false>(mx[0], mx[1], mx[2], mx[3]);
  const __m128 mnew = _mm_blendv_ps(_mm_max_ps(red, mold), red, _mm_cmpunord_ps(red, red));
  // rows with no finite score yet: all-zero p, corr 1, m and l kept
  const int live = _mm_movemask_ps(_mm_cmpneq_ps(mnew, _mm_set1_ps(kNegInf)));
  alignas(16) float mn[4], cr[4];
  _mm_store_ps(mn, mnew);
  _mm_store_ps(cr, _mm512_castps512_ps128(exp2_16(_mm512_castps128_ps512(_mm_sub_ps(mold, mnew)))));
  __m512 sum[4];
  for (int r = 0; r < 4; ++r) {
    sum[r] = _mm512_setzero_ps();
    float* pr = p + kBK512 * r;
    if (!(live >> r & 1)) {
      for (int u = 0; u < nsub; ++u) _mm512_store_ps(pr + 16 * u, _mm512_setzero_ps());
      continue;
    }
    const __m512 mv = _mm512_set1_ps(mn[r]);
    for (int u = 0; u < nsub; ++u) {
      const __m512 e = exp2_16(_mm512_sub_ps(s[r][u], mv));
      sum[r] = _mm512_add_ps(sum[r], e);
      _mm512_store_ps(pr + 16 * u, e);
    }
  }
  alignas(16) float sm[4];
  _mm_store_ps(sm, reduce4<true>(sum[0], sum[1], sum[2], sum[3]));
  for (int r = 0; r < 4; ++r) {
    if (!(live >> r & 1)) {
      corr[r] = 1.0f;
      continue;
    }
    corr[r] = cr[r];
    rs.l[r0 + r] = rs.l[r0 + r] * cr[r] + sm[r];
    rs.m[r0 + r] = mn[r];
  }
}

// no row of [r0, r0 + nr) attends a key of the block [j0, j0 + n)
GE_INLINE bool rows_idle(const RowSet& rs, int64_t r0, int nr, int64_t j0, int n) {
  for (int r = 0; r < nr; ++r)
    if (std::max(rs.lo[r0 + r], j0) < std::min(rs.hi[r0 + r], j0 + n)) return false;
  return true;
}

// the row pointers of keys [j0, j0 + n) (page indices clamped into the cache)
GE_INLINE void key_rows(const KeyAddr& ka, int64_t j0, int n, const float** kp, const float** vp) {
  int64_t pi = j0 / ka.page_size, slot = j0 - pi * ka.page_size;
  for (int j = 0; j < n; ++j) {
    const int64_t page = ka.bt ? std::min<int64_t>(std::max<int32_t>(ka.bt[pi], 0), ka.num_pages - 1) : ka.page0;
    kp[j] = ka.k + page * ka.k_sp + slot * ka.k_ss;
    vp[j] = ka.v + page * ka.v_sp + slot * ka.v_ss;
    if (++slot == ka.page_size) {
      slot = 0;
      ++pi;
    }
  }
}

// rows' softmax state before the first block (both float32 cores)
GE_INLINE void core_rows_init(const RowSet& rs) {
  for (int64_t r = 0; r < rs.R; ++r) {
    rs.m[r] = kNegInf;
    rs.l[r] = 0.0f;
  }
  std::memset(rs.acc, 0, sizeof(float) * size_t(rs.R * rs.D));
}

// the online-softmax step of every row of rs over keys [j0, j0 + n), n <= kBK512, whose rows are kp
// and vp (kBK512 entries: those from n to the next multiple of 16 are set to a zero row here); ra
// requests this block's rows and the next ones ahead of the reads (the first row group that attends
// the block steps it; whatever is left is requested at the end)
GE_A512 void attend512_block(const RowSet& rs, int64_t j0, int n, const float** kp, const float** vp, float softcap,
                             RowsAhead& ra) {
  const int64_t R = rs.R, D = rs.D, nc = (D + 15) / 16;
  const bool half = D % 16 != 0;
  alignas(64) float pbuf[4 * kBK512];
  float corr[4];
  const int nsub = (n + 15) / 16;
  for (int j = n; j < 16 * nsub; ++j) kp[j] = vp[j] = g_zero_row;
  RowsAhead* step = &ra;
  int64_t r0 = 0;
  for (; r0 + 4 <= R; r0 += 4) {  // ---- 4 rows: scores 4 x 4 keys at a time, values 4 x 64 floats
    if (rows_idle(rs, r0, 4, j0, n)) continue;
    __m512 rows[4][kSub];
    for (int u = 0; u < nsub; ++u) {
      __m512 d[4];
      for (int g = 0; g < 4; ++g) {
        if (step) step->upto(16 * u + 4 * g + 4);
        d[g] = score_tile<4, 4>(rs.qs + r0 * D, D, kp + 16 * u + 4 * g, nc, half);
      }
      const __m512 t0 = _mm512_shuffle_f32x4(d[0], d[1], 0x44), t1 = _mm512_shuffle_f32x4(d[2], d[3], 0x44);
      const __m512 t2 = _mm512_shuffle_f32x4(d[0], d[1], 0xEE), t3 = _mm512_shuffle_f32x4(d[2], d[3], 0xEE);
      rows[0][u] = _mm512_shuffle_f32x4(t0, t1, 0x88);
      rows[1][u] = _mm512_shuffle_f32x4(t0, t1, 0xDD);
      rows[2][u] = _mm512_shuffle_f32x4(t2, t3, 0x88);
      rows[3][u] = _mm512_shuffle_f32x4(t2, t3, 0xDD);
    }
    softmax_rows4(rs, r0, rows, nsub, j0, n, softcap, pbuf, corr);
    value_rows<4>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n);
    step = nullptr;
  }
  for (; r0 + 2 <= R; r0 += 2) {  // ---- 2 rows: 2 x 8 keys, 2 x 128 floats
    if (rows_idle(rs, r0, 2, j0, n)) continue;
    __m512 rows[2][kSub];
    for (int u = 0; u < nsub; ++u) {
      if (step) step->upto(16 * u + 8);
      const __m512 a = score_tile<2, 8>(rs.qs + r0 * D, D, kp + 16 * u, nc, half);
      if (step) step->upto(16 * u + 16);
      const __m512 b = score_tile<2, 8>(rs.qs + r0 * D, D, kp + 16 * u + 8, nc, half);
      rows[0][u] = _mm512_shuffle_f32x4(a, b, 0x44);
      rows[1][u] = _mm512_shuffle_f32x4(a, b, 0xEE);
    }
    for (int r = 0; r < 2; ++r) {
      softmax_block(rs, r0 + r, rows[r], nsub, int32_t(rs.lo[r0 + r] - j0), int32_t(std::min<int64_t>(rs.hi[r0 + r], j0 + n) - j0),
                    softcap, pbuf + kBK512 * r, corr[r]);
    }
    value_rows<2>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n);
    step = nullptr;
  }
  for (; r0 < R; ++r0) {  // ---- a single row: 16 keys, 128 floats
    if (rows_idle(rs, r0, 1, j0, n)) continue;
    __m512 row[kSub];
    for (int u = 0; u < nsub; ++u) {
      if (step) step->upto(16 * u + 16);
      row[u] = score_row(rs.qs + r0 * D, kp + 16 * u, nc, half);
    }
    softmax_block(rs, r0, row, nsub, int32_t(rs.lo[r0] - j0), int32_t(std::min<int64_t>(rs.hi[r0], j0 + n) - j0), softcap, pbuf,
                  corr[0]);
    value_rows<1>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n);
    step = nullptr;
  }
  ra.upto(2 * n);
}

// rows requested ahead of the reads (contiguous caches). Measured in a Python process against a
// pure read of the same cold K and V (benchmarks/NOTES.md, sixth session): 24-96 alike, 128 6% and
// 256 25% slower at (1,32,8,4096,128), 48-96 2-4% faster than 128 at (8,32,8,2048,128), MHA alike;
// (our reading, with no hardware counters on this VM: requests further ahead hold the miss
// buffers the arithmetic's own loads then wait for)
constexpr int kRowsAhead = 64;

// ---- float32 keys and values on AVX2 + FMA (8 lanes, 16 registers) -----------------------------
// attend512_block's structure at half the width, for CPUs without AVX-512 (and VMs that hide it):
// 128-key blocks, the scores of a tile of rows x keys (4 x 2, 2 x 4 or 1 x 8: 8 accumulators over D,
// one transposing reduction), a row's softmax over the whole block, the value update with a tile
// of rows x D (4 x 16, 2 x 32 or 1 x 64 floats: 8 accumulators and a broadcast per row) over 16 keys
// at a time, and the same software prefetch (RowsAhead, PrefetchPlan). The loops' core spilled its
// 16 score accumulators, reloaded a row's accumulator every 16 keys and reduced each row scalar:
// 2.1-2.5x slower than this one on a Zen 4 VM without AVX-512 (benchmarks/NOTES.md, eleventh session).
#define GE_AVX2 __attribute__((target("avx2,fma")))
#define GE_AVX2_INLINE GE_AVX2 inline __attribute__((always_inline))

// scores of RT rows (qs rows r0 ..) against KT keys (kp[0 .. KT)), RT * KT = 8, as lanes r * KT + j
template <int RT, int KT>
GE_AVX2_INLINE v8f score_tile8(const float* qs, int64_t D, const float* const* kp, int64_t nc) {
  v8f acc[8] = {};
  for (int64_t c = 0; c < nc; ++c) {
    v8f q[RT];
    for (int r = 0; r < RT; ++r) {
      // kept in a register: GCC otherwise folds the q load into each key's FMA (RT * KT loads a chunk
      // instead of RT + KT); 4 x 2 tiles measured 10-13% faster per key at G = 4 and 8 (NOTES, twelfth
      // session). Through a local: the barrier on q[r] itself left q in memory, stored every chunk.
      v8f qr = load8(qs + r * D + 8 * c);
      if (KT > 1) __asm__("" : "+x"(qr));
      q[r] = qr;
    }
    for (int j = 0; j < KT; ++j) {
      const v8f kv = load8(kp[j] + 8 * c);
      for (int r = 0; r < RT; ++r) acc[r * KT + j] += q[r] * kv;
    }
  }
  return reduce8(acc);
}

// acc rows (RT of them) [off, off + 8 DC) = acc * corr (corr null: acc) + sum_{j0 <= j < j1} p[r][j] v[j][...];
// ra (or null): the read point of key j is base + j + 1
template <int RT, int DC>
GE_AVX2_INLINE void value_tile8(float* acc, const float* p, const float* corr, const float* const* vp, int j0, int j1,
                                int64_t D, int64_t off, RowsAhead* ra, int base) {
  v8f a[RT][DC];
  for (int r = 0; r < RT; ++r)
    for (int c = 0; c < DC; ++c) {
      a[r][c] = load8(acc + r * D + off + 8 * c);
      if (corr) a[r][c] *= corr[r];
    }
  for (int j = j0; j < j1; ++j) {
    v8f pj[RT];
    // vbroadcastss from memory (a load), where v8f{} + p[..] compiled to an add and a shuffle on the FMA port
    for (int r = 0; r < RT; ++r) pj[r] = (v8f)_mm256_broadcast_ss(p + r * kBK512 + j);
    if (ra) ra->upto(base + j + 1);
    for (int c = 0; c < DC; ++c) {
      const v8f vv = load8(vp[j] + off + 8 * c);
      for (int r = 0; r < RT; ++r) a[r][c] += pj[r] * vv;
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int c = 0; c < DC; ++c) store8(acc + r * D + off + 8 * c, a[r][c]);
}

// value_rows at 8 lanes: kg keys at a time through every column tile, ra steps with the first tile
template <int RT>
GE_AVX2_INLINE void value_rows8(float* acc, const float* p, const float* corr, const float* const* vp, int n, int64_t D,
                                RowsAhead* ra, int base, int kg) {
  constexpr int DC = 8 / RT;  // RT * DC accumulators + RT broadcasts + 1 value of 16 registers
  const int64_t nc = D / 8;
  for (int j0 = 0; j0 < n; j0 += kg) {
    const int j1 = std::min(n, j0 + kg);
    const float* cr = j0 == 0 && !all_one(corr, RT) ? corr : nullptr;
    RowsAhead* step = ra;
    int64_t c = 0;
    for (; c + DC <= nc; c += DC, step = nullptr) value_tile8<RT, DC>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base);
    switch (nc - c) {
      case 1: value_tile8<RT, 1>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 2: value_tile8<RT, 2>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 3: value_tile8<RT, 3>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 4: value_tile8<RT, 4>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 5: value_tile8<RT, 5>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 6: value_tile8<RT, 6>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      case 7: value_tile8<RT, 7>(acc, p, cr, vp, j0, j1, D, 8 * c, step, base); break;
      default: break;
    }
  }
}

// one row's online-softmax step over a block of scores s (nsub vectors of 8, soft-capped and masked
// to [ra, rb) here, in place): p relative to the new running max, corr the accumulator's rescale;
// all-zero p and corr 1 while the row has no finite score; a NaN score in range makes the row NaN
GE_AVX2_INLINE void softmax_row8(const RowSet& rs, int64_t r, float* s, int nsub, int32_t ra, int32_t rb, float softcap,
                                 float* p, float& corr) {
  const v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
  v8f mx = v8f{} + kNegInf;
  v8i nan = {};
  for (int u = 0; u < nsub; ++u) {
    v8f x = load8(s + 8 * u);
    if (softcap > 0.0f) x = softcap2(x, softcap);
    const v8i in = (iota + 8 * u >= ra) & (iota + 8 * u < rb);
    x = (v8f)(((v8i)x & in) | ((v8i)(v8f{} + kNegInf) & ~in));
    nan |= x != x;
    mx = vmax(mx, x);
    store8(s + 8 * u, x);
  }
  float mb = hmax(mx);
  if (_mm256_movemask_ps((__m256)nan)) mb = std::numeric_limits<float>::quiet_NaN();
  const float mold = rs.m[r];
  const float mnew = mb != mb ? mb : mb > mold ? mb : mold;
  if (mnew == kNegInf) {
    for (int u = 0; u < nsub; ++u) store8(p + 8 * u, v8f{});
    corr = 1.0f;
    return;
  }
  v8f sum = {};
  for (int u = 0; u < nsub; ++u) {
    const v8f e = exp2v(load8(s + 8 * u) - mnew);
    sum += e;
    store8(p + 8 * u, e);
  }
  corr = mold == mnew ? 1.0f : std::exp2(mold - mnew);  // exp2(0) = 1: no libm call once the max settles
  rs.l[r] = rs.l[r] * corr + hsum(sum);
  rs.m[r] = mnew;
}

// attend512_block on AVX2: the online-softmax step of every row of rs over keys [j0, j0 + n)
GE_AVX2 void attend2_block(const RowSet& rs, int64_t j0, int n, const float** kp, const float** vp, float softcap,
                           RowsAhead& ra) {
  const int64_t R = rs.R, D = rs.D, nc = D / 8;
  alignas(32) float sc[4 * kBK512];
  alignas(32) float pbuf[4 * kBK512];
  float corr[4];
  const int nsub = (n + 7) / 8;
  for (int j = n; j < 8 * nsub; ++j) kp[j] = vp[j] = g_zero_row;
  // keys per value group: 16 where the block's V rows lie back to back, 8 where they are a stride
  // apart (a paged slot, Hkv * D floats): 16 rows 4-16 KB apart share a few L1 sets, and a group's
  // column tiles then ran 1.2-1.6x slower (hot, G = 2 and 4, NOTES twelfth session); 8 keys cost a
  // contiguous cache 3-7% (more accumulator loads and stores)
  const int kg = vp[1] == vp[0] + D ? 16 : 8;
  auto softmax = [&](int64_t r0, int r) __attribute__((always_inline)) {
    softmax_row8(rs, r0 + r, sc + kBK512 * r, nsub, int32_t(rs.lo[r0 + r] - j0),
                 int32_t(std::min<int64_t>(rs.hi[r0 + r], j0 + n) - j0), softcap, pbuf + kBK512 * r, corr[r]);
  };
  RowsAhead* step = &ra;
  int64_t r0 = 0;
  for (; r0 + 4 <= R; r0 += 4) {  // ---- 4 rows: scores 4 x 2 keys at a time, values 4 x 16 floats
    if (rows_idle(rs, r0, 4, j0, n)) continue;
    for (int u = 0; u < nsub; ++u) {
      v8f d[4];  // d[g] lane 2 r + j: row r, key 8 u + 2 g + j
      for (int g = 0; g < 4; ++g) {
        if (step) step->upto(8 * u + 2 * g + 2);
        d[g] = score_tile8<4, 2>(rs.qs + r0 * D, D, kp + 8 * u + 2 * g, nc);
      }
      // rows (0, 1) and (2, 3) of keys 0-3, then of keys 4-7; then each row's 8 keys
      const v8i lo01 = {0, 1, 8, 9, 2, 3, 10, 11}, lo23 = {4, 5, 12, 13, 6, 7, 14, 15};
      const v8f a01 = __builtin_shuffle(d[0], d[1], lo01), a23 = __builtin_shuffle(d[0], d[1], lo23);
      const v8f b01 = __builtin_shuffle(d[2], d[3], lo01), b23 = __builtin_shuffle(d[2], d[3], lo23);
      const v8i first = {0, 1, 2, 3, 8, 9, 10, 11}, second = {4, 5, 6, 7, 12, 13, 14, 15};
      store8(sc + 8 * u, __builtin_shuffle(a01, b01, first));
      store8(sc + kBK512 + 8 * u, __builtin_shuffle(a01, b01, second));
      store8(sc + 2 * kBK512 + 8 * u, __builtin_shuffle(a23, b23, first));
      store8(sc + 3 * kBK512 + 8 * u, __builtin_shuffle(a23, b23, second));
    }
    for (int r = 0; r < 4; ++r) softmax(r0, r);
    value_rows8<4>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n, kg);
    step = nullptr;
  }
  for (; r0 + 2 <= R; r0 += 2) {  // ---- 2 rows: 2 x 4 keys, 2 x 32 floats
    if (rows_idle(rs, r0, 2, j0, n)) continue;
    for (int u = 0; u < nsub; ++u) {
      if (step) step->upto(8 * u + 4);
      const v8f a = score_tile8<2, 4>(rs.qs + r0 * D, D, kp + 8 * u, nc);
      if (step) step->upto(8 * u + 8);
      const v8f b = score_tile8<2, 4>(rs.qs + r0 * D, D, kp + 8 * u + 4, nc);
      store8(sc + 8 * u, __builtin_shuffle(a, b, v8i{0, 1, 2, 3, 8, 9, 10, 11}));
      store8(sc + kBK512 + 8 * u, __builtin_shuffle(a, b, v8i{4, 5, 6, 7, 12, 13, 14, 15}));
    }
    for (int r = 0; r < 2; ++r) softmax(r0, r);
    value_rows8<2>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n, kg);
    step = nullptr;
  }
  for (; r0 < R; ++r0) {  // ---- a single row: 8 keys, 64 floats
    if (rows_idle(rs, r0, 1, j0, n)) continue;
    for (int u = 0; u < nsub; ++u) {
      if (step) step->upto(8 * u + 8);
      store8(sc + 8 * u, score_tile8<1, 8>(rs.qs + r0 * D, D, kp + 8 * u, nc));
    }
    softmax(r0, 0);
    value_rows8<1>(rs.acc + r0 * D, pbuf, corr, vp, n, D, step, n, kg);
    step = nullptr;
  }
  ra.upto(2 * n);
}

// The step of one block of keys for every row of an item: attend512_block or attend2_block.
using BlockStep = void (*)(const RowSet&, int64_t, int, const float**, const float**, float, RowsAhead&);

// The online softmax of rs's rows over keys [klo, khi) of one kv head, a block at a time (step).
void attend_f32_core(BlockStep step, const RowSet& rs, int64_t klo, int64_t khi, float softcap, const KeyAddr& ka) {
  core_rows_init(rs);
  const float* rows[2][2][kBK512];  // [this block, the next][K, V][key]
  int cur = 0, n = int(std::min<int64_t>(kBK512, khi - klo));
  if (n > 0) key_rows(ka, klo, n, rows[0][0], rows[0][1]);
  int sent = 0;  // rows of this block requested by the last one
  for (int64_t j0 = klo; j0 < khi; j0 += n, n = int(std::min<int64_t>(kBK512, khi - j0)), cur ^= 1) {
    const int n1 = int(std::min<int64_t>(kBK512, khi - j0 - n));
    if (n1 > 0) key_rows(ka, j0 + n, n1, rows[cur ^ 1][0], rows[cur ^ 1][1]);
    RowsAhead ra;
    ra.k = rows[cur][0];
    ra.v = rows[cur][1];
    ra.next = rows[cur ^ 1][0];
    ra.n = n;
    ra.n_next = std::max(n1, 0);
    ra.dist = kRowsAhead;
    ra.sent = sent;
    ra.bytes = rs.D * 4;
    // rows back to back (a contiguous cache): 4-5% at (1,32,8,4096,128), 1-2% at (8,32,8,2048,128)
    // against the row-by-row loop, in one Python process; at one row per kv head 0.7% slower
    ra.linear = rs.R >= 2 && ka.bt == nullptr && ka.k_ss == rs.D && ka.v_ss == rs.D;
    ra.fill = ka.bt != nullptr ? g_prefetch.one_head : rs.R >= 2 ? g_prefetch.rows : g_prefetch.row;
    step(rs, j0, n, rows[cur][0], rows[cur][1], softcap, ra);
    sent = ra.sent - 2 * n;
  }
}

// Every kv head of a sequence, a block of nb keys at a time for all heads: in the paged layout
// [pages, page_size, Hkv, D] a slot holds all heads' rows contiguously, so this walks the cache
// slot by slot where one head at a time reads rows Hkv * D apart (which alias in the caches).
// rows: the heads' rows, R per head.
void attend_f32_core_heads(BlockStep step, const RowSet& rows, int64_t Hkv, int64_t R, int64_t klo, int64_t khi,
                           float softcap, const KeyAddr& ka, int64_t k_sh, int64_t v_sh, int nb) {
  const int64_t D = rows.D;
  auto head = [&](int64_t h) {
    RowSet v = rows;
    v.R = R;
    v.qs += h * R * D;
    v.acc += h * R * D;
    v.m += h * R;
    v.l += h * R;
    v.lo += h * R;
    v.hi += h * R;
    return v;
  };
  for (int64_t h = 0; h < Hkv; ++h) core_rows_init(head(h));
  const float* next_k[kBK512];
  const float* next_v[kBK512];
  for (int64_t j0 = klo; j0 < khi; j0 += nb) {
    const int n = int(std::min<int64_t>(nb, khi - j0));
    const int n1 = int(std::clamp<int64_t>(khi - j0 - n, 0, nb));
    if (n1 > 0) key_rows(ka, j0 + n, n1, next_k, next_v);
    for (int64_t h = 0; h < Hkv; ++h) {
      KeyAddr kh = ka;
      kh.k += h * k_sh;
      kh.v += h * v_sh;
      const float* kp[kBK512];
      const float* vp[kBK512];
      key_rows(kh, j0, n, kp, vp);
      // each head requests its share of the next block's slots whole (all heads' rows), the K
      // rows while its scores run and the V rows while its values run (one head's own rows ahead
      // of its reads, Hkv * D apart, measured 1.25-1.35x contiguous against 1.05-1.2x for this)
      const int a = int(h * n1 / Hkv), m = int((h + 1) * n1 / Hkv) - a;
      RowsAhead ra;
      ra.k = next_k + a;
      ra.v = next_v + a;
      ra.n = m;
      ra.per = int(Hkv);
      ra.stride = k_sh;  // the caller has v_sh == k_sh
      ra.bytes = D * 4;
      ra.rate16 = ((int64_t(m * Hkv) << 16) + n - 1) / n;  // rounded up: every row by the block's end
      ra.fill = g_prefetch.heads;
      step(head(h), j0, n, kp, vp, softcap, ra);
    }
  }
}

bool attend_avx512_usable() {
  static const bool yes = g_cpu_isa >= kIsaAvx512 && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  return yes;
}

// The float32 core: the AVX-512 one, else the AVX2 one (GENENGINE_CPU_ISA=avx2 picks it on an
// AVX-512 CPU), else null: the loops' clone (attend<float>; GENENGINE_CPU_ISA=baseline picks it)
BlockStep f32_block_step() {
  static const BlockStep step = attend_avx512_usable() ? attend512_block
                                : g_cpu_isa >= kIsaAvx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                    ? attend2_block
                                    : nullptr;
  return step;
}
#else
using BlockStep = void*;
BlockStep f32_block_step() { return nullptr; }
bool attend_avx512_usable() { return false; }
struct PrefetchPlan {
  bool single_row_heads = false;
};
const PrefetchPlan g_prefetch;
#endif

// float32 through the AVX-512 or AVX2 core (f32_block_step() not null)
void attend_f32_fast(const RowSet& rs, int64_t klo, int64_t khi, float softcap, const KeyAddr& ka) {
#if defined(__x86_64__) && defined(__GNUC__)
  attend_f32_core(f32_block_step(), rs, klo, khi, softcap, ka);
#endif
}
void attend_f32_fast_heads(const RowSet& rows, int64_t Hkv, int64_t R, int64_t klo, int64_t khi, float softcap,
                           const KeyAddr& ka, int64_t k_sh, int64_t v_sh, int nb) {
#if defined(__x86_64__) && defined(__GNUC__)
  attend_f32_core_heads(f32_block_step(), rows, Hkv, R, klo, khi, softcap, ka, k_sh, v_sh, nb);
#endif
}

// normalised output row r (zeros when it attended nothing, NaN when one of its scores was NaN, as in
// the reference) and its natural-log LSE
template <typename O>
GE_INLINE float finish_row(const RowSet& rs, int64_t r, O* out) {
  const float l = rs.l[r];
  const float* acc = rs.acc + r * rs.D;
  if (!(l > 0.0f)) {
    const float fill = l == 0.0f ? 0.0f : std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = 0; i < rs.D; ++i) out[i] = from_float<O>(fill);
    return l == 0.0f ? kNegInf : fill;
  }
  const float inv = 1.0f / l;
  for (int64_t i = 0; i < rs.D; ++i) out[i] = from_float<O>(acc[i] * inv);
  return (rs.m[r] + std::log2(l)) * kLn2;
}

// ----------------------------------------------------------------------------------------------
// decode

struct DecodePlan {
  const DecodeArgs* a;
  int64_t G, R, splits, capacity;
  float* ws_out;  // [B * Hkv * R, splits, D] partial outputs (splits > 1)
  float* ws_lse;  // [B * Hkv * R, splits]
};

GE_INLINE int64_t clamp_len(const DecodePlan& p, int64_t b) {
  const int64_t L = p.a->seqlens[b];
  return std::max<int64_t>(0, std::min<int64_t>(L, p.capacity));
}

// kv head h's query rows of sequence b into rs rows [row0, row0 + R): queries pre-scaled, and each
// row's key range (causal at its position, sliding window)
template <typename T>
GE_INLINE void load_head_rows(const DecodePlan& p, const RowSet& rs, int64_t row0, int64_t b, int64_t h, int64_t L) {
  const DecodeArgs& a = *p.a;
  const float mult = a.softcap > 0.0f ? a.scale : a.scale * kLog2e;
  const T* q = static_cast<const T*>(a.q);
  for (int64_t qi = 0; qi < a.Q; ++qi) {
    const int64_t pos = L - a.Q + qi;
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t r = row0 + qi * p.G + g;
      load_query(rs, r, q + ((b * a.Q + qi) * a.Hq + h * p.G + g) * a.D, mult);
      rs.hi[r] = pos >= 0 ? pos + 1 : 0;
      rs.lo[r] = (pos >= 0 && a.window > 0) ? std::max<int64_t>(0, pos - a.window + 1) : 0;
      if (rs.lo[r] > rs.hi[r]) rs.lo[r] = rs.hi[r];
    }
  }
}

// the keys [klo, khi) of KV split `split` of a sequence of length L
GE_INLINE void split_range(const DecodePlan& p, int64_t L, int64_t split, int64_t& klo, int64_t& khi) {
  const DecodeArgs& a = *p.a;
  const int64_t kb = a.window > 0 ? std::max<int64_t>(0, L - a.Q - a.window + 1) : 0;
  const int64_t total = std::max<int64_t>(0, L - kb);
  const int64_t chunk = (total + p.splits - 1) / p.splits;
  klo = std::min(L, kb + split * chunk);
  khi = std::min(L, kb + (split + 1) * chunk);
}

// float32 key addressing of kv head h of sequence b, for the AVX-512 and AVX2 cores
GE_INLINE KeyAddr key_addr(const KvLayout& kv, int64_t b, int64_t h) {
  KeyAddr ka;
  ka.k = static_cast<const float*>(kv.k) + h * kv.k_sh;
  ka.v = static_cast<const float*>(kv.v) + h * kv.v_sh;
  ka.k_sp = kv.k_sp;
  ka.k_ss = kv.k_ss;
  ka.v_sp = kv.v_sp;
  ka.v_ss = kv.v_ss;
  ka.page_size = kv.page_size;
  ka.num_pages = kv.num_pages;
  ka.page0 = b;
  ka.bt = kv.block_table ? kv.block_table + b * kv.bt_stride : nullptr;
  return ka;
}

// kv head h's rows [row0, row0 + R) of rs: the output (one split) or the split's partial and LSE
template <typename T>
GE_INLINE void write_head_rows(const DecodePlan& p, const RowSet& rs, int64_t row0, int64_t b, int64_t h, int64_t split) {
  const DecodeArgs& a = *p.a;
  for (int64_t qi = 0; qi < a.Q; ++qi) {
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t r = qi * p.G + g, orow = (b * a.Q + qi) * a.Hq + h * p.G + g;
      if (p.splits == 1) {
        const float lse = finish_row(rs, row0 + r, static_cast<T*>(a.out) + orow * a.D);
        if (a.lse) a.lse[orow] = lse;
      } else {
        const int64_t w = ((b * a.Hkv + h) * p.R + r) * p.splits + split;
        p.ws_lse[w] = finish_row(rs, row0 + r, p.ws_out + w * a.D);
      }
    }
  }
}

template <typename T>
GE_INLINE void decode_item(const DecodePlan& p, int64_t item) {
  const DecodeArgs& a = *p.a;
  const int64_t split = item % p.splits, bh = item / p.splits, h = bh % a.Hkv, b = bh / a.Hkv;
  const int64_t L = clamp_len(p, b);
  RowSet rs = make_rows(p.R, a.D);
  load_head_rows<T>(p, rs, 0, b, h, L);
  int64_t klo, khi;
  split_range(p, L, split, klo, khi);
  const KvLayout& kv = a.kv;
  const T* kbase = static_cast<const T*>(kv.k) + h * kv.k_sh;
  const T* vbase = static_cast<const T*>(kv.v) + h * kv.v_sh;
  const int32_t* bt = kv.block_table ? kv.block_table + b * kv.bt_stride : nullptr;
  auto fill = [&](int64_t j0, int n, const T** kr, const T** vr) __attribute__((always_inline)) {
    int64_t pi = j0 / kv.page_size, slot = j0 - pi * kv.page_size;
    int64_t page = bt ? std::min<int64_t>(std::max<int32_t>(bt[pi], 0), kv.num_pages - 1) : b;
    for (int j = 0; j < n; ++j) {
      kr[j] = kbase + page * kv.k_sp + slot * kv.k_ss;
      vr[j] = vbase + page * kv.v_sp + slot * kv.v_ss;
      if (++slot == kv.page_size && j + 1 < n) {
        slot = 0;
        ++pi;
        page = bt ? std::min<int64_t>(std::max<int32_t>(bt[pi], 0), kv.num_pages - 1) : b;
      }
    }
  };
  if constexpr (std::is_same<T, float>::value) {
    if (f32_block_step()) {
      attend_f32_fast(rs, klo, khi, a.softcap, key_addr(kv, b, h));
    } else {
      attend<T>(rs, klo, khi, a.softcap, fill);
    }
  } else {
    attend<T>(rs, klo, khi, a.softcap, fill);
  }
  write_head_rows<T>(p, rs, 0, b, h, split);
}

// A paged float32 item on the AVX-512 or AVX2 core: (batch row, KV split) with every kv head;
// outputs and partials land where decode_item's would
void decode_item_heads(const DecodePlan& p, int64_t item) {
  const DecodeArgs& a = *p.a;
  const int64_t split = item % p.splits, b = item / p.splits, R = p.R, Hkv = a.Hkv;
  const int64_t L = clamp_len(p, b);
  RowSet rs = make_rows(Hkv * R, a.D);
  for (int64_t h = 0; h < Hkv; ++h) load_head_rows<float>(p, rs, h * R, b, h, L);
  int64_t klo, khi;
  split_range(p, L, split, klo, khi);
  // keys per block: the block's K and V for all heads within ~128 KB (256 KB and more measured
  // 5-15% slower at (8,32,8,2048,128): more of the block and the next one's requests in L2)
  const int64_t per_key = 2 * Hkv * a.D * int64_t(sizeof(float));
  const int nb = int(std::clamp<int64_t>((int64_t(128) << 10) / per_key / 16 * 16, 16, kBK512));
  attend_f32_fast_heads(rs, Hkv, R, klo, khi, a.softcap, key_addr(a.kv, b, 0), a.kv.k_sh, a.kv.v_sh, nb);
  for (int64_t h = 0; h < Hkv; ++h) write_head_rows<float>(p, rs, h * R, b, h, split);
}

template <typename T>
GE_INLINE void decode_merge(const DecodePlan& p, int64_t bh) {
  const DecodeArgs& a = *p.a;
  const int64_t h = bh % a.Hkv, b = bh / a.Hkv, D = a.D, S = p.splits;
  for (int64_t qi = 0; qi < a.Q; ++qi) {
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t r = qi * p.G + g, orow = (b * a.Q + qi) * a.Hq + h * p.G + g;
      const int64_t w0 = (bh * p.R + r) * S;
      float mx = kNegInf;
      for (int64_t s = 0; s < S; ++s) {  // a NaN partial, once seen, is kept
        const float ls = p.ws_lse[w0 + s];
        mx = ls != ls || ls > mx ? ls : mx;
      }
      T* out = static_cast<T*>(a.out) + orow * D;
      if (!(mx > kNegInf)) {  // no split saw a key (-inf: zeros), or one saw a NaN (NaN)
        for (int64_t i = 0; i < D; ++i) out[i] = from_float<T>(mx == kNegInf ? 0.0f : mx);
        if (a.lse) a.lse[orow] = mx;
        continue;
      }
      alignas(32) float o[kMaxD];
      std::memset(o, 0, sizeof(float) * size_t(D));
      float tot = 0.0f;
      for (int64_t s = 0; s < S; ++s) {
        const float ls = p.ws_lse[w0 + s];
        if (!(ls > kNegInf)) continue;
        const float wgt = std::exp(ls - mx);
        tot += wgt;
        const float* po = p.ws_out + (w0 + s) * D;
        for (int64_t i = 0; i < D; ++i) o[i] += wgt * po[i];
      }
      const float inv = 1.0f / tot;
      for (int64_t i = 0; i < D; ++i) out[i] = from_float<T>(o[i] * inv);
      if (a.lse) a.lse[orow] = mx + std::log(tot);
    }
  }
}

GE_ATTN_MV((void decode_item_f32(const DecodePlan& p, int64_t i)), { decode_item<float>(p, i); })
GE_ATTN_MV((void decode_item_bf16(const DecodePlan& p, int64_t i)), { decode_item<BF16>(p, i); })
GE_ATTN_MV((void decode_item_f16(const DecodePlan& p, int64_t i)), { decode_item<F16>(p, i); })
void decode_item_any(const DecodePlan& p, int64_t i) {
  switch (p.a->dtype) {
    case kFloat32: decode_item_f32(p, i); break;
    case kBFloat16: decode_item_bf16(p, i); break;
    default: decode_item_f16(p, i); break;
  }
}
void decode_merge_any(const DecodePlan& p, int64_t i) {
  switch (p.a->dtype) {
    case kFloat32: decode_merge<float>(p, i); break;
    case kBFloat16: decode_merge<BF16>(p, i); break;
    default: decode_merge<F16>(p, i); break;
  }
}

// ----------------------------------------------------------------------------------------------
// prefill

struct PrefillPlan {
  const PrefillArgs* a;
  int64_t G, bq;
  std::vector<int64_t> blocks;  // per item: (batch row << 32) | query block, then times Hkv
};

template <typename T>
GE_INLINE void prefill_item(const PrefillPlan& p, int64_t item) {
  const PrefillArgs& a = *p.a;
  const int64_t h = item % a.Hkv, blk = p.blocks[size_t(item / a.Hkv)];
  const int64_t b = blk >> 32, qb = blk & 0xFFFFFFFF;
  const int64_t q0 = a.cu_q[b], lq = a.cu_q[b + 1] - q0, k0 = a.cu_k[b], lk = a.cu_k[b + 1] - k0;
  const int64_t i0 = qb * p.bq, nq = std::min(p.bq, lq - i0), D = a.D, G = p.G;
  RowSet rs = make_rows(nq * G, D);
  const float mult = a.softcap > 0.0f ? a.scale : a.scale * kLog2e;
  const T* q = static_cast<const T*>(a.q);
  int64_t klo = lk, khi = 0;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t pos = i0 + i + lk - lq;
    int64_t hi = a.causal ? std::min(lk, pos + 1) : lk;
    int64_t lo = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
    hi = std::max<int64_t>(hi, 0);
    lo = std::min(lo, hi);
    if (lo < hi) {
      klo = std::min(klo, lo);
      khi = std::max(khi, hi);
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t r = i * G + g;
      load_query(rs, r, q + ((q0 + i0 + i) * a.Hq + h * G + g) * D, mult);
      rs.lo[r] = lo;
      rs.hi[r] = hi;
    }
  }
  const T* kbase = static_cast<const T*>(a.k) + k0 * a.k_st + h * a.k_sh;
  const T* vbase = static_cast<const T*>(a.v) + k0 * a.v_st + h * a.v_sh;
  auto fill = [&](int64_t j0, int n, const T** kr, const T** vr) __attribute__((always_inline)) {
    for (int j = 0; j < n; ++j) {
      kr[j] = kbase + (j0 + j) * a.k_st;
      vr[j] = vbase + (j0 + j) * a.v_st;
    }
  };
  if constexpr (std::is_same<T, float>::value) {
    if (f32_block_step()) {
      KeyAddr ka;  // one "page" holding every key of the sequence
      ka.k = kbase;
      ka.v = vbase;
      ka.k_ss = a.k_st;
      ka.v_ss = a.v_st;
      ka.page_size = std::numeric_limits<int64_t>::max() / 2;
      attend_f32_fast(rs, klo, std::max(klo, khi), a.softcap, ka);
    } else {
      attend<T>(rs, klo, std::max(klo, khi), a.softcap, fill);
    }
  } else {
    attend<T>(rs, klo, std::max(klo, khi), a.softcap, fill);
  }
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t orow = (q0 + i0 + i) * a.Hq + h * G + g;
      const float lse = finish_row(rs, i * G + g, static_cast<T*>(a.out) + orow * D);
      if (a.lse) a.lse[orow] = lse;
    }
  }
}

GE_ATTN_MV((void prefill_item_f32(const PrefillPlan& p, int64_t i)), { prefill_item<float>(p, i); })
GE_ATTN_MV((void prefill_item_bf16(const PrefillPlan& p, int64_t i)), { prefill_item<BF16>(p, i); })
GE_ATTN_MV((void prefill_item_f16(const PrefillPlan& p, int64_t i)), { prefill_item<F16>(p, i); })
void prefill_item_any(const PrefillPlan& p, int64_t i) {
  switch (p.a->dtype) {
    case kFloat32: prefill_item_f32(p, i); break;
    case kBFloat16: prefill_item_bf16(p, i); break;
    default: prefill_item_f16(p, i); break;
  }
}

// ----------------------------------------------------------------------------------------------
// rotary embedding + KV append

// out[0, rd) = the rotation of x[0, rd) by the angles (c, s); out[rd, D) = x[rd, D)
template <typename T>
GE_INLINE void rotate_row(const T* __restrict x, T* __restrict out, const float* c, const float* s, int64_t D,
                          int64_t rd, bool interleaved) {
  const int64_t half = rd / 2;
  if (interleaved) {
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = to_float(x[2 * i]), x2 = to_float(x[2 * i + 1]);
      out[2 * i] = from_float<T>(x1 * c[i] - x2 * s[i]);
      out[2 * i + 1] = from_float<T>(x2 * c[i] + x1 * s[i]);
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = to_float(x[i]), x2 = to_float(x[i + half]);
      out[i] = from_float<T>(x1 * c[i] - x2 * s[i]);
      out[i + half] = from_float<T>(x2 * c[i] + x1 * s[i]);
    }
  }
  for (int64_t i = rd; i < D; ++i) out[i] = x[i];
}

template <typename T>
GE_INLINE void rope_token(const RopeArgs& a, int64_t t) {
  const int64_t D = a.D, rd = a.rotary_dim;
  const int64_t pos = a.positions[t];
  const int64_t b = a.seq_ids ? a.seq_ids[t] : t;
  const float* c = a.cos + pos * a.cs_stride;
  const float* s = a.sin + pos * a.cs_stride;
  const T* q = static_cast<const T*>(a.q) + t * a.Hq * D;
  T* qo = static_cast<T*>(a.q_out) + t * a.Hq * D;
  for (int64_t h = 0; h < a.Hq; ++h) rotate_row(q + h * D, qo + h * D, c, s, D, rd, a.interleaved);
  const KvLayout& kv = a.kv;
  const int64_t pi = pos / kv.page_size, slot = pos - pi * kv.page_size;
  const int64_t page = kv.block_table ? std::min<int64_t>(std::max<int32_t>(kv.block_table[b * kv.bt_stride + pi], 0),
                                                          kv.num_pages - 1)
                                      : b;
  const T* k = static_cast<const T*>(a.k) + t * a.Hkv * D;
  const T* v = static_cast<const T*>(a.v) + t * a.Hkv * D;
  T* ko = static_cast<T*>(a.k_out) + t * a.Hkv * D;
  T* kc = static_cast<T*>(a.k_cache) + page * kv.k_sp + slot * kv.k_ss;
  T* vc = static_cast<T*>(a.v_cache) + page * kv.v_sp + slot * kv.v_ss;
  for (int64_t h = 0; h < a.Hkv; ++h) {
    rotate_row(k + h * D, ko + h * D, c, s, D, rd, a.interleaved);
    std::memcpy(kc + h * kv.k_sh, ko + h * D, sizeof(T) * size_t(D));
    std::memcpy(vc + h * kv.v_sh, v + h * D, sizeof(T) * size_t(D));
  }
}

GE_ATTN_MV((void rope_tokens_f32(const RopeArgs& a, int64_t t0, int64_t t1)), {
  for (int64_t t = t0; t < t1; ++t) rope_token<float>(a, t);
})
GE_ATTN_MV((void rope_tokens_bf16(const RopeArgs& a, int64_t t0, int64_t t1)), {
  for (int64_t t = t0; t < t1; ++t) rope_token<BF16>(a, t);
})
GE_ATTN_MV((void rope_tokens_f16(const RopeArgs& a, int64_t t0, int64_t t1)), {
  for (int64_t t = t0; t < t1; ++t) rope_token<F16>(a, t);
})
void rope_tokens_any(const RopeArgs& a, int64_t t0, int64_t t1) {
  switch (a.dtype) {
    case kFloat32: rope_tokens_f32(a, t0, t1); break;
    case kBFloat16: rope_tokens_bf16(a, t0, t1); break;
    default: rope_tokens_f16(a, t0, t1); break;
  }
}

}  // namespace

const char* attention_f32_core() {
  return attend_avx512_usable() ? "avx512" : f32_block_step() ? "avx2" : nullptr;
}

const char* attention_prefetch_report() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const std::string report = [] {
    auto name = [](Fill f) { return std::string(f == Fill::kL1 ? "t0" : f == Fill::kL2 ? "t2" : "off"); };
    const PrefetchPlan& p = g_prefetch;
    std::string levels = name(p.rows);
    if (p.row != p.rows || p.heads != p.rows || p.one_head != p.rows)
      levels = "contiguous rows " + name(p.rows) + ", single row " + name(p.row) + ", paged all heads " + name(p.heads) +
               ", paged one head " + name(p.one_head);
    if (p.single_row_heads) levels += ", paged single rows by the all-heads walk";
    const char* env = std::getenv("GENENGINE_ATTENTION_PREFETCH");
    Fill forced;
    if (env && *env && !forced_fill(&forced) && std::strcmp(env, "auto") != 0)
      return levels + " (" + p.why + "; GENENGINE_ATTENTION_PREFETCH=" + env + " not understood: t0|t2|off|auto)";
    return levels + " (" + p.why + ")";
  }();
  return report.c_str();
#else
  return "none";
#endif
}

int64_t decode_default_splits(int64_t B, int64_t Hkv, int64_t max_keys) {
  // enough items for 4 per thread (dynamic hand-out evens out unequal lengths), but no split
  // shorter than 256 keys: below that the merge and the per-item set-up cost more than they save
  const int64_t threads = std::max(1, get_num_threads()), items = std::max<int64_t>(1, B * Hkv);
  const int64_t want = (4 * threads + items - 1) / items;
  const int64_t most = std::max<int64_t>(1, max_keys / 256);
  return std::max<int64_t>(1, std::min<int64_t>({want, most, 64}));
}

void decode_attention(const DecodeArgs& a) {
  if (a.B <= 0 || a.Hq <= 0 || a.D <= 0) return;
  DecodePlan p;
  p.a = &a;
  p.G = a.Hq / a.Hkv;
  p.R = a.Q * p.G;
  p.capacity = a.kv.block_table ? a.kv.bt_stride * a.kv.page_size : a.kv.page_size;
  int64_t max_keys = 0;
  for (int64_t b = 0; b < a.B; ++b) max_keys = std::max<int64_t>(max_keys, std::min<int64_t>(a.seqlens[b], p.capacity));
  // paged float32 on AVX-512: an item takes every kv head of its sequence (decode_item_heads), so
  // there are B * splits items, not B * Hkv * splits
  // (with software prefetch a single row per kv head streams its own rows faster: its arithmetic is
  // too short to cover walking every head's slot, 1.13-1.17x contiguous against 1.28-1.32x at
  // (8,32,32,2048,128) on Zen 4; where the hardware streams the walk, it takes it: single_row_heads)
  const bool heads = (p.R >= 2 || g_prefetch.single_row_heads) && a.dtype == kFloat32 && a.kv.block_table != nullptr && f32_block_step() &&
                     a.kv.k_sh == a.D && a.kv.v_sh == a.D && a.kv.k_ss == a.Hkv * a.D && a.kv.v_ss == a.Hkv * a.D;
  p.splits = a.num_splits > 0 ? a.num_splits : decode_default_splits(a.B, heads ? 1 : a.Hkv, max_keys);
  std::vector<float> ws;
  if (p.splits > 1) {
    const size_t rows = size_t(a.B * a.Hkv * p.R * p.splits);
    ws.resize(rows * size_t(a.D + 1));
    p.ws_out = ws.data();
    p.ws_lse = ws.data() + rows * size_t(a.D);
  }
  // a tiny step (a few thousand multiply-adds) runs on the calling thread: waking a worker costs more
  const int64_t work = a.B * a.Hkv * p.R * max_keys * a.D;
  const int64_t items = (heads ? a.B : a.B * a.Hkv) * p.splits;
  if (heads) {
    if (work < (int64_t(1) << 18)) {
      for (int64_t i = 0; i < items; ++i) decode_item_heads(p, i);
    } else {
      parallel_chunks(items, [&](int64_t i) { decode_item_heads(p, i); });
    }
    if (p.splits > 1) parallel_chunks(a.B * a.Hkv, [&](int64_t i) { decode_merge_any(p, i); });
    return;
  }
  if (work < (int64_t(1) << 18)) {
    for (int64_t i = 0; i < items; ++i) decode_item_any(p, i);
    if (p.splits > 1)
      for (int64_t i = 0; i < a.B * a.Hkv; ++i) decode_merge_any(p, i);
    return;
  }
  parallel_chunks(items, [&](int64_t i) { decode_item_any(p, i); });
  if (p.splits > 1) parallel_chunks(a.B * a.Hkv, [&](int64_t i) { decode_merge_any(p, i); });
}

int64_t check_lengths(const int32_t* seqlens, int64_t B, int64_t capacity, const int32_t* bt, int64_t bt_stride,
                      int64_t page_size, int64_t num_pages) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = seqlens[b];
    if (L < 0) return 1 + 4 * b;
    if (L > capacity) return 2 + 4 * b;
  }
  if (bt != nullptr) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t pages = (int64_t(seqlens[b]) + page_size - 1) / page_size;
      for (int64_t j = 0; j < pages; ++j) {
        const int64_t e = bt[b * bt_stride + j];
        if (e < 0 || e >= num_pages) return 3 + 4 * (b * bt_stride + j);
      }
    }
  }
  return 0;
}

bool rope_values_ok(const int32_t* positions, const int32_t* seq_ids, int64_t T, int64_t B, int64_t max_position,
                    int64_t capacity, const int32_t* bt, int64_t bt_stride, int64_t page_size, int64_t num_pages) {
  const int64_t limit = std::min(max_position, capacity);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = positions[t], b = seq_ids ? seq_ids[t] : t;
    if (pos < 0 || pos >= limit || b < 0 || b >= B) return false;
    if (bt) {
      const int64_t e = bt[b * bt_stride + pos / page_size];
      if (e < 0 || e >= num_pages) return false;
    }
  }
  return true;
}

void prefill_attention(const PrefillArgs& a) {
  if (a.B <= 0 || a.Hq <= 0 || a.D <= 0) return;
  PrefillPlan p;
  p.a = &a;
  p.G = a.Hq / a.Hkv;
  p.bq = std::max<int64_t>(2, 32 / p.G);  // about 32 rows per item: queries and accumulators stay in L1/L2
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t lq = a.cu_q[b + 1] - a.cu_q[b];
    for (int64_t qb = 0; qb * p.bq < lq; ++qb) p.blocks.push_back((b << 32) | qb);
  }
  // longest (latest, under causal masking) blocks first, so the dynamic hand-out ends evenly
  std::stable_sort(p.blocks.begin(), p.blocks.end(), [](int64_t x, int64_t y) { return (x & 0xFFFFFFFF) > (y & 0xFFFFFFFF); });
  parallel_chunks(int64_t(p.blocks.size()) * a.Hkv, [&](int64_t i) { prefill_item_any(p, i); });
}

void rope_append_kv(const RopeArgs& a) {
  if (a.T <= 0) return;
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, (a.Hq + 2 * a.Hkv) * a.D));
  const int64_t chunks = (a.T + per - 1) / per;
  parallel_chunks(chunks, [&](int64_t c) { rope_tokens_any(a, c * per, std::min(a.T, (c + 1) * per)); });
}

}  // namespace ge
