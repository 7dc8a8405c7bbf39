// genengine._C bindings of the token sampler (sampling.cpp): raw pointers, checked in Python.
#include <cstdint>

#include "common/bind_registry.h"
#include "cpu/sampling.h"

namespace {

template <typename T>
T* as(uintptr_t p) { return reinterpret_cast<T*>(p); }

void sample_tokens(int dtype, int64_t batch, int64_t vocab, int64_t row_stride, uintptr_t logits,
                   uintptr_t temperature, float temperature_s, uintptr_t top_k, int64_t top_k_s, uintptr_t top_p,
                   float top_p_s, uintptr_t log_min_p, float log_min_p_s, uint64_t seed, uint64_t offset,
                   uintptr_t tokens, uintptr_t logprobs) {
  ge::SampleArgs a;
  a.dtype = dtype;
  a.batch = batch;
  a.vocab = vocab;
  a.row_stride = row_stride;
  a.logits = as<const void>(logits);
  a.temperature = as<const float>(temperature);
  a.temperature_s = temperature_s;
  a.top_k = as<const int64_t>(top_k);
  a.top_k_s = top_k_s;
  a.top_p = as<const float>(top_p);
  a.top_p_s = top_p_s;
  a.log_min_p = as<const float>(log_min_p);
  a.log_min_p_s = log_min_p_s;
  a.seed = seed;
  a.offset = offset;
  a.tokens = as<int64_t>(tokens);
  a.logprobs = as<float>(logprobs);
  ge::sample_tokens(a);
}

}  // namespace

GE_BIND(sampling) { m.def("sample_tokens", &sample_tokens, ge::nogil()); }
