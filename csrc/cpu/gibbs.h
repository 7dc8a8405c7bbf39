// Gibbs sampling and energy-based-model kernels for the CPU (gibbs.cpp), bound in gibbs_bind.cpp.
//
//   rbm_epilogue     the fused pass after an RBM half-step's GEMM: bias, inverse temperature,
//                    sigmoid and Bernoulli draw (or Gaussian unit-variance draw), clamping, in place
//   ising_sweep      checkerboard heat-bath sweeps of int8 +-1 lattices [L, H, W], periodic
//   bm_gibbs         block Gibbs over the colour classes of a sparse pairwise Boltzmann machine
//   langevin_step    x - step/2 * grad + sqrt(step) * noise_scale * N(0, 1), optionally clamped
//
// Every random value is a Philox value at a fixed stream position (see genengine/ops/gibbs.py for
// the layouts), so the Triton and CUDA twins draw the same numbers.
#pragma once
#include <cstdint>

#include "cpu_common.h"

namespace ge {

struct RbmEpilogueArgs {
  int dtype = kFloat32;                 // of buf: kFloat32 or kBFloat16
  int64_t rows = 0, cols = 0;
  void* buf = nullptr;                  // [rows, cols]: x @ W in; samples out (in place)
  const float* bias = nullptr;          // [cols]
  float beta = 1.0f;                    // inverse temperature, or per row:
  const float* beta_rows = nullptr;     // [rows] or null
  float* prob = nullptr;                // [rows, cols] probabilities / Gaussian means, or null
  int gaussian = 0;                     // 0: Bernoulli units, 1: Gaussian units of variance 1 / beta
  const uint8_t* clamp_mask = nullptr;  // [rows, cols] or null: where set, the unit is clamp_values
  const float* clamp_values = nullptr;  // [rows, cols]
  PhiloxKey key{};
  uint64_t base = 0;                    // stream position of element (0, 0); element (r, c) at base + r * cols + c
};
void rbm_epilogue(const RbmEpilogueArgs& a);

// thresholds: int32 [L, 5] (or [5] when thr_per_lattice == 0): site becomes +1 iff
// (word >> 9) < thresholds[(neighbour_sum + 4) / 2].
void ising_sweep(int8_t* spins, int64_t L, int64_t H, int64_t W, const int32_t* thresholds, int thr_per_lattice,
                 int64_t sweeps, uint64_t seed, uint64_t offset);

struct BmGibbsArgs {
  int64_t batch = 0, n = 0;
  float* x = nullptr;                   // [batch, n] of 0 / 1
  const int64_t* indptr = nullptr;      // CSR of the symmetric coupling matrix, [n + 1]
  const int64_t* indices = nullptr;
  const float* values = nullptr;
  const float* bias = nullptr;          // [n]
  const int64_t* class_ptr = nullptr;   // [n_classes + 1] into class_nodes
  const int64_t* class_nodes = nullptr; // [n]
  int64_t n_classes = 0;
  float beta = 1.0f;
  int64_t sweeps = 1;
  PhiloxKey key{};
};
void bm_gibbs(const BmGibbsArgs& a);

void langevin_step(int64_t n, const float* x, const float* grad, float* out, float half_step, float noise_coef,
                   int clamp, float lo, float hi, uint64_t seed, uint64_t offset);

}  // namespace ge
