// pybind11 entry points of the CUDA Gibbs kernels (csrc/cuda/gibbs.cu) in genengine._cuda: the
// arguments of their genengine._C twins (csrc/cpu/gibbs_bind.cpp) plus a trailing stream.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/bind_registry.h"

namespace ge {
namespace cuda {
void rbm_epilogue(int dtype, int64_t rows, int64_t cols, void* buf, const float* bias, float beta,
                  const float* beta_rows, float* prob, int gaussian, const uint8_t* clamp_mask,
                  const float* clamp_values, uint64_t seed, uint64_t offset, uint64_t base, uintptr_t stream);
void ising_sweep(int8_t* spins, int64_t L, int64_t H, int64_t W, const int32_t* thr, int per_lattice, int64_t sweeps,
                 uint64_t seed, uint64_t offset, uintptr_t stream);
void bm_gibbs(int64_t batch, int64_t n, float* x, const int64_t* indptr, const int64_t* indices, const float* values,
              const float* bias, const int64_t* class_ptr_host, const int64_t* nodes, int64_t n_classes, float beta,
              int64_t sweeps, uint64_t seed, uint64_t offset, uintptr_t stream);
void langevin_step(int64_t n, const float* x, const float* grad, float* out, float half_step, float noise_coef,
                   int clamp, float lo, float hi, uint64_t seed, uint64_t offset, uintptr_t stream);
}  // namespace cuda
}  // namespace ge

namespace {
template <typename T>
T* p(uintptr_t v) { return reinterpret_cast<T*>(v); }
}  // namespace

GE_BIND(gibbs) {
  m.def("rbm_epilogue",
        [](int dtype, int64_t rows, int64_t cols, uintptr_t buf, uintptr_t bias, float beta, uintptr_t beta_rows,
           uintptr_t prob, int gaussian, uintptr_t mask, uintptr_t vals, uint64_t seed, uint64_t offset, uint64_t base,
           uintptr_t stream) {
          ge::cuda::rbm_epilogue(dtype, rows, cols, p<void>(buf), p<const float>(bias), beta, p<const float>(beta_rows),
                                 p<float>(prob), gaussian, p<const uint8_t>(mask), p<const float>(vals), seed, offset,
                                 base, stream);
        },
        ge::nogil());
  m.def("ising_sweep",
        [](uintptr_t spins, int64_t L, int64_t H, int64_t W, uintptr_t thr, int per, int64_t sweeps, uint64_t seed,
           uint64_t offset, uintptr_t stream) {
          ge::cuda::ising_sweep(p<int8_t>(spins), L, H, W, p<const int32_t>(thr), per, sweeps, seed, offset, stream);
        },
        ge::nogil());
  m.def("bm_gibbs",
        [](int64_t batch, int64_t n, uintptr_t x, uintptr_t indptr, uintptr_t indices, uintptr_t values, uintptr_t bias,
           uintptr_t class_ptr_host, uintptr_t nodes, int64_t n_classes, float beta, int64_t sweeps, uint64_t seed,
           uint64_t offset, uintptr_t stream) {
          ge::cuda::bm_gibbs(batch, n, p<float>(x), p<const int64_t>(indptr), p<const int64_t>(indices),
                             p<const float>(values), p<const float>(bias), p<const int64_t>(class_ptr_host),
                             p<const int64_t>(nodes), n_classes, beta, sweeps, seed, offset, stream);
        },
        ge::nogil());
  m.def("langevin_step",
        [](int64_t n, uintptr_t x, uintptr_t grad, uintptr_t out, float half_step, float noise_coef, int clamp, float lo,
           float hi, uint64_t seed, uint64_t offset, uintptr_t stream) {
          ge::cuda::langevin_step(n, p<const float>(x), p<const float>(grad), p<float>(out), half_step, noise_coef, clamp,
                                  lo, hi, seed, offset, stream);
        },
        ge::nogil());
}
