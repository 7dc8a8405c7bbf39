// genengine._C binding of the Gaussian-mixture E-step (mixture.cpp): raw pointers, checked in
// genengine/ops/mixture.py.
#include <cstdint>

#include "common/bind_registry.h"
#include "cpu/mixture.h"

namespace {

void gmm_e_step(int cov, int dtype, int resp_mode, int64_t n, int64_t d, int64_t k, uintptr_t x, uintptr_t shift, uintptr_t prec,
                uintptr_t b, uintptr_t cst, uintptr_t log_norm, uintptr_t ll_sum, uintptr_t resp, uintptr_t nk, uintptr_t sx, uintptr_t sxx) {
  ge::GmmArgs a;
  a.cov = cov;
  a.dtype = dtype;
  a.resp_mode = resp_mode;
  a.n = n;
  a.d = d;
  a.k = k;
  a.x = reinterpret_cast<const void*>(x);
  a.shift = reinterpret_cast<const double*>(shift);
  a.prec = reinterpret_cast<const double*>(prec);
  a.b = reinterpret_cast<const double*>(b);
  a.cst = reinterpret_cast<const double*>(cst);
  a.log_norm = reinterpret_cast<void*>(log_norm);
  a.ll_sum = reinterpret_cast<double*>(ll_sum);
  a.resp = reinterpret_cast<void*>(resp);
  a.nk = reinterpret_cast<double*>(nk);
  a.sx = reinterpret_cast<double*>(sx);
  a.sxx = reinterpret_cast<double*>(sxx);
  ge::gmm_e_step(a);
}

}  // namespace

GE_BIND(mixture) { m.def("gmm_e_step", &gmm_e_step, ge::nogil()); }
