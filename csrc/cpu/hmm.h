// Hidden-Markov-model recursions on the CPU: forward (log-likelihood), forward-backward (state
// posteriors and expected transition counts) and Viterbi, for B padded sequences at once.
#pragma once
#include <cstdint>

namespace ge {

struct HmmArgs {
  int dtype = 0;                 // 0: float32, 1: float64 (log_emissions, start, trans, outputs)
  int64_t batch = 0, steps = 0;  // B, T (padded length)
  int64_t states = 0;            // S
  const void* log_emissions = nullptr;  // (B, T, S) contiguous
  const void* log_startprob = nullptr;  // (S,)
  const void* log_transmat = nullptr;   // (S, S)
  const int64_t* lengths = nullptr;     // (B,), each in [0, T]
  void* log_likelihood = nullptr;       // (B,) forward / posteriors; the best path's log-probability for Viterbi
  void* gamma = nullptr;                // (B, T, S) posteriors (zero at padded steps)
  void* xi = nullptr;                   // (B, S, S) expected transition counts
  int64_t* path = nullptr;              // (B, T) Viterbi states (-1 at padded steps)
};

// Diagonal-Gaussian emission log-densities, out[r, s] = logconst[s] - 1/2 sum_j (x[r, j] - mu[s, j])^2 prec[s, j]
// (the direct form, not the expansion: no cancellation for data far from the origin)
struct GaussArgs {
  int dtype = 0;                        // x and out: 0 float32, 1 float64
  int64_t rows = 0, features = 0, states = 0;
  const void* x = nullptr;              // (rows, features)
  const double* means_t = nullptr;      // (features, states): means transposed
  const double* prec_t = nullptr;       // (features, states): 1 / variances, transposed
  const double* logconst = nullptr;     // (states,): -1/2 (d log 2 pi + sum_j log var[s, j])
  void* out = nullptr;                  // (rows, states)
};
void gaussian_diag_log_density(const GaussArgs& g);

void hmm_forward(const HmmArgs& a);
void hmm_posteriors(const HmmArgs& a);
void hmm_viterbi(const HmmArgs& a);

}  // namespace ge
