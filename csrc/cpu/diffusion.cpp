// The fused sampler step on the CPU: one pass over the latent.
//
// The step is memory bound, and at the sizes users meet ((16,4,128,128) float32 is 16.8 MB moved)
// the working set sits in the last-level cache, where a copy runs at ~100 GB/s per core: the loop
// must do little more than one load per input and one store per output. So each combination of
// inputs present (uncond, prev_x0, noise, an x0 term, an x0 output) is its own template instance,
// a straight loop the compiler vectorises with no dead loads and no staging buffers, and when no
// x0 term is needed the guidance is folded into the coefficients (out = cx x + cc cond + cu uncond).
// Per-sample guidance and dynamic thresholding split the range at sample boundaries so the weight
// and the threshold are loop constants (the thresholds come from threshold.cpp, run before).
// Noise element i is normal number i of the Philox stream (seed, offset), generated in blocks of
// kNormalBatch in L1, so the result does not depend on threading or chunking.
// An optional second output (out_dup) receives the same stored values: a guided sampling loop points
// out and out_dup at the two halves of the next model input [x; x], saving a concatenation pass.
// Only guided instances (UNCOND) carry the second store in the loop, which is where loops use it;
// the others copy each finished chunk while it is still in cache, so the rarely used combinations do
// not double the (already 36 per dtype and ISA) template instances.
#include "diffusion.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu_common.h"
#include "parallel.h"

namespace ge {
namespace {

constexpr int64_t kChunk = 1 << 14;  // elements per parallel chunk (a multiple of 4)

template <typename T, bool UNCOND, bool X0, bool PREV, bool NOISE, bool WRITE_X0, bool THRESH, bool DUP, int ZEROS>
inline __attribute__((always_inline)) void step_segment(const StepArgs& a, int64_t i0, int64_t i1, float w, float s) {
  const T* __restrict x = static_cast<const T*>(a.x);
  const T* __restrict cond = static_cast<const T*>(a.cond);
  const T* __restrict uncond = static_cast<const T*>(a.uncond);
  const T* __restrict prev = static_cast<const T*>(a.prev);
  T* __restrict out = static_cast<T*>(a.out);
  T* __restrict x0_out = static_cast<T*>(a.x0_out);
  T* __restrict out_dup = static_cast<T*>(a.out_dup);
  const StepCoefs k = a.k;
  // without an x0 term: out = cx x + cc cond + cu uncond (+ noise); else the full form of step.h
  const float cc = UNCOND ? k.ap * w : k.ap, cu = k.ap * (1.0f - w);
  const float inf = std::numeric_limits<float>::infinity();
  const float lo = THRESH ? -s : (k.clip ? k.clip_lo : -inf), hi = THRESH ? s : (k.clip ? k.clip_hi : inf);
  // step.h's term()s: ZEROS 0, no coefficient is zero; 1, only ap (DDPM's posterior mean, DPM-Solver++
  // from an eps or v prediction), whose term is then left out; 2, any others, masked
  constexpr bool kMask = ZEROS == 2;
  const LoopTerm<kMask> tkx(k.kx), tax(k.ax), tap(k.ap), ta0(k.a0), taprev(k.aprev);

  auto element = [&](int64_t i, float z) __attribute__((always_inline)) {
    const float xv = to_float(x[i]);
    const float cv = to_float(cond[i]);
    float o;
    if constexpr (!X0) {
      o = k.ax * xv + cc * cv;
      if constexpr (UNCOND) o = o + cu * to_float(uncond[i]);
    } else {
      const float p = UNCOND ? guided(cv, to_float(uncond[i]), w) : cv;
      float x0 = clamp_keep_nan(tkx(xv) + k.kp * p, lo, hi);
      if constexpr (THRESH) x0 = x0 / s;  // = thresholded_x0 (step.h)
      o = ZEROS == 1 ? tax(xv) + ta0(x0) : tax(xv) + tap(p) + ta0(x0);  // as step_update (step.h)
      if constexpr (PREV) o = o + taprev(to_float(prev[i]));
      if constexpr (WRITE_X0) x0_out[i] = from_float<T>(x0);
    }
    if constexpr (NOISE) o = o + k.anoise * z;
    out[i] = from_float<T>(o);
    if constexpr (DUP) out_dup[i] = from_float<T>(o);  // (a named 16-bit struct temp defeats the vectoriser)
  };

  if constexpr (!NOISE) {
    // ivdep: the pointers are distinct or (out, x) identical, element i touching index i only; GCC
    // cannot see the __restrict through the lambda and would otherwise version the loop on alias
    // checks, which it gives up on past ten pointer pairs (the guided x0 + prev + out_dup case)
#pragma GCC ivdep
    for (int64_t i = i0; i < i1; ++i) element(i, 0.0f);
  } else {
    alignas(64) float z[kNormalBatch];
    for (int64_t i = i0; i < i1;) {
      const int len = int(std::min<int64_t>(kNormalBatch, i1 - i));
      philox_values(2, a.key, uint64_t(i), len, z);  // the CPU's best path, whichever clone this is
#pragma GCC ivdep
      for (int j = 0; j < len; ++j) element(i + j, z[j]);
      i += len;
    }
  }
}

template <typename T, bool UNCOND, bool X0, bool PREV, bool NOISE, bool WRITE_X0, bool THRESH, bool DUP>
inline __attribute__((always_inline)) void step_range(const StepArgs& a, int64_t begin, int64_t end) {
  // a zero coefficient of the x0 form drops its term (step.h's term()); the loop that does so
  // without masking when ap is the only zero, the masked one for any other
  const StepCoefs& k = a.k;
  const bool others_zero = k.kx == 0.0f || k.ax == 0.0f || k.a0 == 0.0f || (PREV && k.aprev == 0.0f);
  const int zeros = !X0 ? 0 : others_zero ? 2 : k.ap == 0.0f ? 1 : 0;
  auto segment = [&](int64_t i, int64_t e, float w, float s) __attribute__((always_inline)) {
    if constexpr (X0) {
      if (zeros == 1) return step_segment<T, UNCOND, X0, PREV, NOISE, WRITE_X0, THRESH, DUP, 1>(a, i, e, w, s);
      if (zeros == 2) return step_segment<T, UNCOND, X0, PREV, NOISE, WRITE_X0, THRESH, DUP, 2>(a, i, e, w, s);
    }
    step_segment<T, UNCOND, X0, PREV, NOISE, WRITE_X0, THRESH, DUP, 0>(a, i, e, w, s);
  };
  const bool per_sample_w = UNCOND && a.guidance_per_sample;
  if (!per_sample_w && !THRESH) {
    segment(begin, end, a.guidance, 1.0f);
    return;
  }
  for (int64_t i = begin; i < end;) {  // one segment per sample: weight and threshold are loop constants
    const int64_t b = i / a.inner;
    const int64_t seg_end = std::min(end, (b + 1) * a.inner);
    segment(i, seg_end, per_sample_w ? a.guidance_per_sample[b] : a.guidance, THRESH ? a.thresholds[b] : 1.0f);
    i = seg_end;
  }
}

template <typename T>
inline __attribute__((always_inline)) void step_dispatch(const StepArgs& a, int64_t begin, int64_t end) {
  const bool write_x0 = a.x0_out != nullptr;
  const bool thresh = a.thresholds != nullptr;
  const bool x0_term = write_x0 || a.k.clip || thresh || a.k.a0 != 0.0f || a.prev != nullptr;
  const bool dup = a.out_dup != nullptr;
  const bool fused_dup = dup && a.uncond != nullptr;
  const int flags = (a.uncond ? 1 : 0) | (x0_term ? 2 : 0) | (a.prev ? 4 : 0) | (a.noise ? 8 : 0) | (write_x0 ? 16 : 0) |
                    (thresh ? 32 : 0) | (fused_dup ? 64 : 0);
  switch (flags) {
#define GE_STEP_CASE(F)                                                                                     \
  case F:                                                                                                   \
    step_range<T, ((F) & 1) != 0, ((F) & 2) != 0, ((F) & 4) != 0, ((F) & 8) != 0, ((F) & 16) != 0,          \
               ((F) & 32) != 0, ((F) & 64) != 0>(a, begin, end);                                            \
    break;
    // x0_term is set whenever prev, write_x0 or thresholding is, so only these 36 combinations occur
    GE_STEP_CASE(0) GE_STEP_CASE(1) GE_STEP_CASE(8) GE_STEP_CASE(9)
    GE_STEP_CASE(2) GE_STEP_CASE(3) GE_STEP_CASE(10) GE_STEP_CASE(11)
    GE_STEP_CASE(6) GE_STEP_CASE(7) GE_STEP_CASE(14) GE_STEP_CASE(15)
    GE_STEP_CASE(18) GE_STEP_CASE(19) GE_STEP_CASE(26) GE_STEP_CASE(27)
    GE_STEP_CASE(22) GE_STEP_CASE(23) GE_STEP_CASE(30) GE_STEP_CASE(31)
    GE_STEP_CASE(34) GE_STEP_CASE(35) GE_STEP_CASE(42) GE_STEP_CASE(43)
    GE_STEP_CASE(38) GE_STEP_CASE(39) GE_STEP_CASE(46) GE_STEP_CASE(47)
    GE_STEP_CASE(50) GE_STEP_CASE(51) GE_STEP_CASE(58) GE_STEP_CASE(59)
    GE_STEP_CASE(54) GE_STEP_CASE(55) GE_STEP_CASE(62) GE_STEP_CASE(63)
    // and the guided ones (odd) again with the fused second store
    GE_STEP_CASE(65) GE_STEP_CASE(73) GE_STEP_CASE(67) GE_STEP_CASE(75)
    GE_STEP_CASE(71) GE_STEP_CASE(79) GE_STEP_CASE(83) GE_STEP_CASE(91)
    GE_STEP_CASE(87) GE_STEP_CASE(95) GE_STEP_CASE(99) GE_STEP_CASE(107)
    GE_STEP_CASE(103) GE_STEP_CASE(111) GE_STEP_CASE(115) GE_STEP_CASE(123)
    GE_STEP_CASE(119) GE_STEP_CASE(127)
#undef GE_STEP_CASE
    default: break;
  }
  if (dup && !fused_dup) {  // unguided: the chunk just written is still in L2
    std::memcpy(static_cast<T*>(a.out_dup) + begin, static_cast<const T*>(a.out) + begin, size_t(end - begin) * sizeof(T));
  }
}

GE_MULTIVERSIONED((void step_range_f32(const StepArgs& a, int64_t b, int64_t e)), { step_dispatch<float>(a, b, e); })
GE_MULTIVERSIONED((void step_range_bf16(const StepArgs& a, int64_t b, int64_t e)), { step_dispatch<BF16>(a, b, e); })
GE_MULTIVERSIONED((void step_range_f16(const StepArgs& a, int64_t b, int64_t e)), { step_dispatch<F16>(a, b, e); })

}  // namespace

void sampler_step(const StepArgs& a) {
  const int64_t n_chunks = (a.n + kChunk - 1) / kChunk;
  parallel_chunks(n_chunks, [&](int64_t c) {
    const int64_t begin = c * kChunk, end = std::min(a.n, begin + kChunk);
    switch (a.dtype) {
      case kFloat32: step_range_f32(a, begin, end); break;
      case kBFloat16: step_range_bf16(a, begin, end); break;
      default: step_range_f16(a, begin, end); break;
    }
  });
}

}  // namespace ge
