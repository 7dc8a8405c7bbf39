// genengine._C bindings of the HMM recursions (csrc/cpu/hmm.cpp). Tensors cross as raw pointers:
// genengine/ops/hmm.py has checked shapes, dtypes and lengths and made everything contiguous.
#include <cstdint>

#include "common/bind_registry.h"
#include "cpu/hmm.h"

namespace {

ge::HmmArgs args(int dtype, int64_t batch, int64_t steps, int64_t states, uintptr_t le, uintptr_t ls, uintptr_t lt,
                 uintptr_t lengths, uintptr_t ll) {
  ge::HmmArgs a;
  a.dtype = dtype;
  a.batch = batch;
  a.steps = steps;
  a.states = states;
  a.log_emissions = reinterpret_cast<const void*>(le);
  a.log_startprob = reinterpret_cast<const void*>(ls);
  a.log_transmat = reinterpret_cast<const void*>(lt);
  a.lengths = reinterpret_cast<const int64_t*>(lengths);
  a.log_likelihood = reinterpret_cast<void*>(ll);
  return a;
}

// dtype 0: float32, 1: float64; log_emissions (B, T, S), lengths int64 (B,) or 0 (all T)
void hmm_forward(int dtype, int64_t batch, int64_t steps, int64_t states, uintptr_t le, uintptr_t ls, uintptr_t lt,
                 uintptr_t lengths, uintptr_t ll) {
  ge::hmm_forward(args(dtype, batch, steps, states, le, ls, lt, lengths, ll));
}

void hmm_posteriors(int dtype, int64_t batch, int64_t steps, int64_t states, uintptr_t le, uintptr_t ls, uintptr_t lt,
                    uintptr_t lengths, uintptr_t ll, uintptr_t gamma, uintptr_t xi) {
  ge::HmmArgs a = args(dtype, batch, steps, states, le, ls, lt, lengths, ll);
  a.gamma = reinterpret_cast<void*>(gamma);
  a.xi = reinterpret_cast<void*>(xi);
  ge::hmm_posteriors(a);
}

void hmm_viterbi(int dtype, int64_t batch, int64_t steps, int64_t states, uintptr_t le, uintptr_t ls, uintptr_t lt,
                 uintptr_t lengths, uintptr_t score, uintptr_t path) {
  ge::HmmArgs a = args(dtype, batch, steps, states, le, ls, lt, lengths, score);
  a.path = reinterpret_cast<int64_t*>(path);
  ge::hmm_viterbi(a);
}

// x, out of dtype (0 float32, 1 float64); means_t, prec_t float64 (d, S); logconst float64 (S,)
void gaussian_diag_log_density(int dtype, int64_t rows, int64_t features, int64_t states, uintptr_t x, uintptr_t means_t,
                               uintptr_t prec_t, uintptr_t logconst, uintptr_t out) {
  ge::GaussArgs g;
  g.dtype = dtype;
  g.rows = rows;
  g.features = features;
  g.states = states;
  g.x = reinterpret_cast<const void*>(x);
  g.means_t = reinterpret_cast<const double*>(means_t);
  g.prec_t = reinterpret_cast<const double*>(prec_t);
  g.logconst = reinterpret_cast<const double*>(logconst);
  g.out = reinterpret_cast<void*>(out);
  ge::gaussian_diag_log_density(g);
}

}  // namespace

GE_BIND(hmm) {
  m.def("gaussian_diag_log_density", &gaussian_diag_log_density, ge::nogil());
  m.def("hmm_forward", &hmm_forward, ge::nogil());
  m.def("hmm_posteriors", &hmm_posteriors, ge::nogil());
  m.def("hmm_viterbi", &hmm_viterbi, ge::nogil());
}
