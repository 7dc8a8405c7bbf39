// pybind11 entry points of the Gibbs kernels (gibbs.h) in genengine._C. Tensors cross as raw data
// pointers; genengine/ops/gibbs.py has checked shapes, dtypes and contiguity.
#include <pybind11/pybind11.h>

#include "common/bind_registry.h"
#include "cpu/gibbs.h"

namespace {

template <typename T>
T* p(uintptr_t v) { return reinterpret_cast<T*>(v); }

void rbm_epilogue(int dtype, int64_t rows, int64_t cols, uintptr_t buf, uintptr_t bias, float beta, uintptr_t beta_rows,
                  uintptr_t prob, int gaussian, uintptr_t clamp_mask, uintptr_t clamp_values, uint64_t seed,
                  uint64_t offset, uint64_t base) {
  ge::RbmEpilogueArgs a;
  a.dtype = dtype;
  a.rows = rows;
  a.cols = cols;
  a.buf = p<void>(buf);
  a.bias = p<const float>(bias);
  a.beta = beta;
  a.beta_rows = p<const float>(beta_rows);
  a.prob = p<float>(prob);
  a.gaussian = gaussian;
  a.clamp_mask = p<const uint8_t>(clamp_mask);
  a.clamp_values = p<const float>(clamp_values);
  a.key = ge::make_philox_key(seed, offset);
  a.base = base;
  ge::rbm_epilogue(a);
}

void ising_sweep(uintptr_t spins, int64_t L, int64_t H, int64_t W, uintptr_t thresholds, int per_lattice, int64_t sweeps,
                 uint64_t seed, uint64_t offset) {
  ge::ising_sweep(p<int8_t>(spins), L, H, W, p<const int32_t>(thresholds), per_lattice, sweeps, seed, offset);
}

void bm_gibbs(int64_t batch, int64_t n, uintptr_t x, uintptr_t indptr, uintptr_t indices, uintptr_t values,
              uintptr_t bias, uintptr_t class_ptr, uintptr_t class_nodes, int64_t n_classes, float beta, int64_t sweeps,
              uint64_t seed, uint64_t offset) {
  ge::BmGibbsArgs a;
  a.batch = batch;
  a.n = n;
  a.x = p<float>(x);
  a.indptr = p<const int64_t>(indptr);
  a.indices = p<const int64_t>(indices);
  a.values = p<const float>(values);
  a.bias = p<const float>(bias);
  a.class_ptr = p<const int64_t>(class_ptr);
  a.class_nodes = p<const int64_t>(class_nodes);
  a.n_classes = n_classes;
  a.beta = beta;
  a.sweeps = sweeps;
  a.key = ge::make_philox_key(seed, offset);
  ge::bm_gibbs(a);
}

void langevin_step(int64_t n, uintptr_t x, uintptr_t grad, uintptr_t out, float half_step, float noise_coef, int clamp,
                   float lo, float hi, uint64_t seed, uint64_t offset) {
  ge::langevin_step(n, p<const float>(x), p<const float>(grad), p<float>(out), half_step, noise_coef, clamp, lo, hi,
                    seed, offset);
}

}  // namespace

GE_BIND(gibbs) {
  m.def("rbm_epilogue", &rbm_epilogue, ge::nogil(),
        "Fused bias + beta + sigmoid + Bernoulli (or Gaussian) draw + clamp, in place over a GEMM output.");
  m.def("ising_sweep", &ising_sweep, ge::nogil(), "Checkerboard heat-bath sweeps of int8 +-1 lattices [L, H, W].");
  m.def("bm_gibbs", &bm_gibbs, ge::nogil(), "Block Gibbs sweeps over the colour classes of a sparse Boltzmann machine.");
  m.def("langevin_step", &langevin_step, ge::nogil(), "x - step/2 * grad + sqrt(step) * noise * N(0, 1), clamped.");
}
