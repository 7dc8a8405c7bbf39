// The per-element math of every diffusion sampler step, shared by the CPU and CUDA kernels
// (kernels/diffusion.py is its Triton twin, genengine/ops/diffusion.py derives the coefficients).
//
// Every supported sampler step (DDPM, DDIM, Euler, Euler ancestral, DPM-Solver++(2M)) with every
// prediction type is, per element, an affine map of the model prediction p and the sample x, with
// one non-linearity (clipping of the predicted x0) in the middle:
//   p    = uncond + w * (cond - uncond)             (classifier-free guidance; p = cond without it)
//   x0   = kx * x + kp * p,  clamped to [lo, hi] when clipping
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

GE_HD float predicted_x0(const StepCoefs& k, float x, float p) {
  const float x0 = k.kx * x + k.kp * p;
  return k.clip ? clamp_keep_nan(x0, k.clip_lo, k.clip_hi) : x0;
}

GE_HD float step_update(const StepCoefs& k, float x, float p, float x0, float prev, float z) {
  return k.ax * x + k.ap * p + k.a0 * x0 + k.aprev * prev + k.anoise * z;
}

}  // namespace ge
