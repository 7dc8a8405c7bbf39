// The per-element math of every diffusion sampler step, shared by the CPU and CUDA kernels
// (kernels/diffusion.py is its Triton twin, genengine/ops/diffusion.py derives the coefficients).
//
// Every supported sampler step (DDPM, DDIM, Euler, Euler ancestral, DPM-Solver++(2M)) with every
// prediction type is, per element, an affine map of the model prediction p and the sample x, with
// one non-linearity (clipping or dynamic thresholding of the predicted x0) in the middle:
//   p    = uncond + w * (cond - uncond)             (classifier-free guidance; p = cond without it)
//   x0   = kx * x + kp * p,  clamped to [lo, hi] when clipping,
//          or clamp(x0, -s_b, s_b) / s_b with the per-sample threshold s_b (dynamic thresholding,
//          s_b from a per-sample selection pass over |x0|: csrc/cpu/threshold.cpp)
//   out  = ax * x + ap * p + a0 * x0 + aprev * prev_x0 + anoise * z,   z ~ N(0, 1) from Philox
// The Python side computes the coefficients in float64 once per step; the kernel does float32 math.
#pragma once
#include <cstdint>

#include "philox.h"

namespace ge {

struct StepCoefs {
  float kx, kp;                       // x0 = kx * x + kp * p
  float ax, ap, a0, aprev, anoise;    // out = ax x + ap p + a0 x0 + aprev prev + anoise z
  float clip_lo, clip_hi;
  int clip;                           // clamp x0 to [clip_lo, clip_hi]
};

// NaN-propagating clamp (fminf/fmaxf would silently replace a NaN prediction by a bound).
GE_HD float clamp_keep_nan(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

GE_HD float guided(float cond, float uncond, float w) { return uncond + w * (cond - uncond); }

// a * v, where a zero coefficient drops its term: a sampler formula that does not use v (DDPM's
// posterior mean reads only the clipped x0, not p; an x0 prediction's x0 does not read x) must not
// turn an inf in v into 0 * inf = NaN. A NaN coefficient still gives NaN.
GE_HD float term(float a, float v) { return a == 0.0f ? 0.0f : a * v; }

// term(a, .) for a loop over elements: the zero test made once, as a bit mask on the product
// (kDrop; else a plain product, for loops whose coefficients are all nonzero). GCC leaves a loop
// holding several invariant selects scalar ("control flow in loop"): the CPU step with an x0 term
// ran 3-4x slower with term() in its loop.
template <bool kDrop>
struct LoopTerm {
  float a;
  uint32_t keep;  // all ones, or 0 for a zero coefficient
  GE_HD explicit LoopTerm(float coef) : a(coef), keep(coef == 0.0f ? 0u : 0xFFFFFFFFu) {}
  GE_HD float operator()(float v) const {
    if constexpr (kDrop) return bits_to_float(float_to_bits(a * v) & keep);
    return a * v;
  }
};

GE_HD float predicted_x0(const StepCoefs& k, float x, float p) {
  const float x0 = term(k.kx, x) + k.kp * p;
  return k.clip ? clamp_keep_nan(x0, k.clip_lo, k.clip_hi) : x0;
}

// Dynamic thresholding (Imagen): s is the sample's threshold (>= 1, or NaN when the sample's x0
// holds a NaN, which then spreads to the whole sample, as torch.quantile does). A true division,
// not a multiply by 1/s, so that every backend rounds the same way.
GE_HD float thresholded_x0(const StepCoefs& k, float x, float p, float s) {
  return clamp_keep_nan(term(k.kx, x) + k.kp * p, -s, s) / s;
}

// Sort key of |v| for the per-sample selection: the bits of a non-negative float grow with its
// value, so order statistics of |x0| are order statistics of these uint32 keys. Every NaN maps to
// 0x7FFFFFFF, the largest key and alone in the top bin of the first 11-bit digit (inf is 0x7F800000).
GE_HD uint32_t abs_key(float v) {
  const uint32_t a = float_to_bits(v) & 0x7FFFFFFFu;
  return a > 0x7F800000u ? 0x7FFFFFFFu : a;
}

// The selection runs in three radix passes over the key's 31 bits: digits of 11, 10 and 10 bits.
constexpr int kSelectPasses = 3;
GE_HD int select_shift(int pass) { return pass == 0 ? 20 : (pass == 1 ? 10 : 0); }
GE_HD int select_bits(int pass) { return pass == 0 ? 11 : 10; }
constexpr int kSelectBins = 2048;             // bins of the widest digit
constexpr uint32_t kNaNDigit = 0x7FFu;        // first-pass bin that holds exactly the NaNs

// torch.quantile's linear interpolation (torch.lerp's two-sided form) between the order statistics
// lo <= hi at weight frac in [0, 1), then clamped to [1, max_value] (NaN passes).
GE_HD float threshold_from_order_stats(float lo, float hi, float frac, float max_value) {
  const float q = frac < 0.5f ? lo + frac * (hi - lo) : hi - (hi - lo) * (1.0f - frac);
  return clamp_keep_nan(q, 1.0f, max_value);
}

GE_HD float step_update(const StepCoefs& k, float x, float p, float x0, float prev, float z) {
  return term(k.ax, x) + term(k.ap, p) + term(k.a0, x0) + term(k.aprev, prev) + k.anoise * z;
}

}  // namespace ge
