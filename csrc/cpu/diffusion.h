// CPU diffusion kernels (see csrc/common/step.h for the math).
#pragma once
#include <cstdint>

#include "../common/step.h"

namespace ge {

struct StepArgs {
  int dtype = 0;                   // DType of every latent tensor
  int64_t n = 0;                   // elements of x (all tensors contiguous, same shape)
  int64_t inner = 1;               // elements per sample (n / batch), for per-sample guidance
  void* out = nullptr;
  void* x0_out = nullptr;          // optional: the (clipped) predicted x0
  void* out_dup = nullptr;         // optional: a second copy of out (bit-identical), e.g. the other half of [x; x]
  const void* x = nullptr;
  const void* cond = nullptr;      // model output (the conditional one when guiding)
  const void* uncond = nullptr;    // optional unconditional model output
  const void* prev = nullptr;      // optional previous x0 (multistep samplers)
  const float* guidance_per_sample = nullptr;  // optional [batch] guidance weights
  const float* thresholds = nullptr;           // optional [batch] dynamic thresholds s_b (>= 1)
  float guidance = 1.0f;
  StepCoefs k{};
  bool noise = false;
  PhiloxKey key{};
};

void sampler_step(const StepArgs& args);

// Per-sample dynamic thresholds (threshold.cpp): for each sample b of the x0 = kx x + kp p that the
// step would compute (p guided as in StepArgs; x0 itself is never stored),
//   s_b = clamp(lerp(v_rank, v_rank+1, frac), 1, max_value)
// where v_j is the j-th smallest |x0| of the sample (rank + 1 capped at inner - 1), i.e.
// torch.quantile(|x0_b|, ratio) with rank = floor(ratio (inner - 1)), frac the remainder. A NaN
// anywhere in a sample's x0 makes s_b NaN (as torch.quantile does).
struct ThresholdArgs {
  int dtype = 0;
  int64_t batch = 0, inner = 0;    // x is [batch, inner], contiguous
  const void* x = nullptr;
  const void* cond = nullptr;
  const void* uncond = nullptr;    // optional
  const float* guidance_per_sample = nullptr;  // optional [batch]
  float guidance = 1.0f;
  float kx = 0.0f, kp = 0.0f;
  int64_t rank = 0;                // in [0, inner)
  float frac = 0.0f;               // in [0, 1)
  float max_value = 1.0f;
  float* thresholds = nullptr;     // out: float32 [batch]
};

void dynamic_thresholds(const ThresholdArgs& args);
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset);

}  // namespace ge
