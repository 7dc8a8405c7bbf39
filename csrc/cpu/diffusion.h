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
  const void* x = nullptr;
  const void* cond = nullptr;      // model output (the conditional one when guiding)
  const void* uncond = nullptr;    // optional unconditional model output
  const void* prev = nullptr;      // optional previous x0 (multistep samplers)
  const float* guidance_per_sample = nullptr;  // optional [batch] guidance weights
  float guidance = 1.0f;
  StepCoefs k{};
  bool noise = false;
  PhiloxKey key{};
};

void sampler_step(const StepArgs& args);
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset);

}  // namespace ge
