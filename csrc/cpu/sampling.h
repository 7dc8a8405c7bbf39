// CPU kernel of fused token sampling (sampling.cpp): temperature, top-k, top-p, min-p and the draw
// in a few passes over each row of logits, without sorting the vocabulary.
#pragma once
#include <cstdint>

namespace ge {

// logits: batch rows of `vocab` values of `dtype` (DType), row r at logits + r * row_stride
// elements; per-row parameters are float32 / int64 [batch] arrays, or null to use the scalar.
// log_min_p is log(min_p) in float32 (-inf: off). tokens int64 [batch] out, logprobs float32
// [batch] out or null. Row b draws its uniform from Philox words 2b, 2b + 1 of (seed, offset).
struct SampleArgs {
  int dtype = 0;
  int64_t batch = 0, vocab = 0, row_stride = 0;
  const void* logits = nullptr;
  const float* temperature = nullptr;
  float temperature_s = 1.0f;
  const int64_t* top_k = nullptr;
  int64_t top_k_s = 0;
  const float* top_p = nullptr;
  float top_p_s = 1.0f;
  const float* log_min_p = nullptr;
  float log_min_p_s = 0.0f;
  uint64_t seed = 0, offset = 0;
  int64_t* tokens = nullptr;
  float* logprobs = nullptr;
};

void sample_tokens(const SampleArgs& a);

}  // namespace ge
