// CPU kernel of the MAF layer's sampling direction (made.cpp): the D sequential steps of inverting a
// MADE-conditioned affine layer, each hidden unit computed once (see genengine/ops/flows.py,
// made_affine_inverse, for the shapes and the degree-ordered layout).
#pragma once
#include <cstdint>

namespace ge {

// Weights come relabelled by degree (units of degree k of hidden layer l are rows bounds[l][k] ..
// bounds[l][k + 1] - 1) and are the masked ones, packed in one buffer: layer l's W [H_l, in_l]
// (in_0 = d, in_l = H_{l-1}) at w_off[l], its bias [H_l] at b_off[l]; the output layer's W [d * 2, H_last]
// at w_off[L], bias at b_off[L] (rows 2 i, 2 i + 1: dimension i's shift and raw log-scale). ctx: null or
// [rows, sum H_l] of context terms added before each hidden ReLU (layer l's at column c_off[l]).
// y, x: [rows, d] contiguous; logdet [rows]: sum over i of alpha_i = bound tanh(raw_i / bound).
struct MadeInverseArgs {
  bool f64 = false;
  int64_t rows = 0, d = 0;
  int n_layers = 0;             // hidden layers, <= 8
  const int64_t* sizes = nullptr;   // [L] hidden widths
  const int64_t* bounds = nullptr;  // [L, d + 1] cumulative unit counts by degree
  const void* weights = nullptr;
  const int64_t* w_off = nullptr;  // [L + 1], in elements
  const int64_t* b_off = nullptr;  // [L + 1]
  const void* ctx = nullptr;
  int64_t ctx_stride = 0;
  const int64_t* c_off = nullptr;  // [L]
  double scale_bound = 3.0;
  const void* y = nullptr;
  void* x = nullptr;
  void* logdet = nullptr;
};

void made_affine_inverse(const MadeInverseArgs& a);

}  // namespace ge
