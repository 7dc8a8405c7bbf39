// CPU kernels of fused GroupNorm + SiLU (group_norm.cpp): y = silu(group_norm(x)), and its backward.
#pragma once
#include <cstdint>

namespace ge {

// x, y, dy, dx: n * c * hw elements of `dtype` (DType), laid out (n, c, hw) or, when channels_last,
// (n, hw, c); weight, bias: float32 [c] or null (1 / 0); mean, rstd: float32 [n, groups];
// dweight, dbias: float32 [c] outputs, or null when not wanted.
struct GroupNormArgs {
  int dtype = 0;
  int64_t n = 0, c = 0, hw = 0, groups = 1;
  bool channels_last = false;
  float eps = 0.0f;
  const void* x = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  void* y = nullptr;        // forward output
  float* mean = nullptr;    // written by forward, read by backward
  float* rstd = nullptr;
  const void* dy = nullptr;  // backward
  void* dx = nullptr;
  float* dweight = nullptr;
  float* dbias = nullptr;
};

void group_norm_silu_fwd(const GroupNormArgs& a);
void group_norm_silu_bwd(const GroupNormArgs& a);

}  // namespace ge
