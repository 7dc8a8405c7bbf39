// Hidden-Markov-model recursions on the CPU: forward, forward-backward and Viterbi over B padded
// sequences (log_emissions (B, T, S), lengths (B,)), one thread per sequence.
//
// Forward / forward-backward run in linear space with per-step normalisers (Rabiner's scaling),
// in double whatever the input dtype: with the emission row shifted by its maximum m_t,
//   e_t = exp(le_t - m_t) (one exp per state and step), u_t = (alpha_{t-1} A) * e_t,
//   c_t = sum u_t, alpha_t = u_t / c_t, log p(x) = sum_t (log c_t + m_t),
// so a step costs S exps and an S x S matrix-vector product of fused multiply-adds, against S^2
// exp/log pairs for a log-space logsumexp recursion (hmmlearn's). The max shift keeps the largest
// emission at 1; what scaling cannot represent (c_t below 1e-290: the mass sits on states whose
// emissions are > 660 nats below the best state's, or beta_hat overflows in a chain that does not
// mix) sends that one sequence to a log-space recursion with a per-step max shift (exact, slower).
// What scaling loses (documented, not detected): a state whose filtered probability falls below
// 1e-308 of the total is dropped; if it later becomes dominant without being re-entered from the
// surviving states (a branch of a left-right chain), the likelihood misses its paths. That needs a
// one-step gap of > 708 nats followed by the opposite trend; the log-space fallback is exact.
// Backward: beta_hat_{t-1} = A (e_t * beta_hat_t / c_t), gamma_t = alpha_t * beta_hat_t, and the
// expected transition counts xi = A o sum_t alpha_{t-1} (e_t beta_hat_t / c_t)^T (an outer product
// per step; A multiplies once at the end).
// Viterbi is max-plus in log space (adds and compares only, no transcendental).
//
// Vectorisation: rows of S states are padded to Sp = 4 * nc doubles (v4d lanes; pads hold
// probability 0 / log-probability -inf) and, for S <= 32, the chunk count nc is a template argument
// so the accumulators of the matrix-vector product stay in registers.
#include "hmm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"

// checked against float64 references with tolerances (not bit for bit): let the AVX2 clone fuse
#pragma GCC optimize("fp-contract=fast")

#define GE_INLINE inline __attribute__((always_inline))

namespace ge {
namespace {

#pragma GCC diagnostic ignored "-Wpsabi"  // v4d values only cross always-inlined calls
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef int32_t v4i __attribute__((vector_size(16)));

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTiny = 1e-290;  // smallest normaliser the scaled recursion accepts
constexpr double kHuge = 1e290;   // largest backward value it accepts

GE_INLINE v4d ld(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GE_INLINE void st(double* p, v4d v) { std::memcpy(p, &v, sizeof v); }
GE_INLINE v4d splat(double x) { return v4d{} + x; }
GE_INLINE v4d select(v4l m, v4d a, v4d b) { return (v4d)(((v4l)a & m) | ((v4l)b & ~m)); }

// exp(x) for x <= 0 (inputs are shifted by their maximum): x = k ln2 + r with |r| <= ln2 / 2, a
// degree-12 Taylor polynomial (relative error < 2e-16) and 2^k from integer arithmetic; flushed to
// 0 below -708 (under 1e-307, negligible next to the 1 at the maximum), -inf -> 0, NaN -> NaN.
GE_INLINE v4d exp_nonpos(v4d x) {
  const v4l tiny = x < -708.0;
  const v4d xc = select(tiny, splat(-708.0), x);
  const v4d kf = xc * 1.4426950408889634 + 6755399441055744.0;  // + 1.5 * 2^52 rounds to an integer
  const v4d k = kf - 6755399441055744.0;
  const v4l ki = (v4l)kf - (v4l)splat(6755399441055744.0);
  v4d r = xc - k * 6.93147180369123816490e-01;  // ln 2 in two parts (fdlibm): k * hi is exact
  r = r - k * 1.90821492927058770002e-10;
  v4d p = splat(1.0 / 479001600.0);
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const v4d scale = (v4d)((ki + 1023) << 52);
  return (v4d)((v4l)(p * scale) & ~tiny);
}

GE_INLINE double hsum(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }

inline double to_double(float v) { return v; }
inline double to_double(double v) { return v; }

// row[0..S) = le[0..S) as double, row[S..Sp) = -inf; returns max (NaN-blind: NaN is caught later,
// as a NaN normaliser)
template <typename T>
GE_INLINE double load_row(const T* le, int S, int Sp, double* row) {
  double m = -kInf;
  for (int j = 0; j < S; ++j) {
    const double v = to_double(le[j]);
    row[j] = v;
    m = v > m ? v : m;
  }
  for (int j = S; j < Sp; ++j) row[j] = -kInf;
  return m;
}

// out[0..Sp) = sum_i x[i] * M[i, 0..Sp) (M rows padded to Sp); NC chunks fixed, or nc at run time
template <int NC>
GE_INLINE void matvec(const double* x, const double* M, int S, int nc, double* out) {
  if constexpr (NC > 0) {
    v4d a0[NC], a1[NC];  // two accumulator sets: half the dependency chain of one
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) a0[c] = a1[c] = v4d{};
    int i = 0;
    for (; i + 1 < S; i += 2) {
      const v4d x0 = splat(x[i]), x1 = splat(x[i + 1]);
      const double* m0 = M + int64_t(i) * 4 * NC;
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        a0[c] += x0 * ld(m0 + 4 * c);
        a1[c] += x1 * ld(m0 + 4 * NC + 4 * c);
      }
    }
    if (i < S) {
      const v4d x0 = splat(x[i]);
      const double* m0 = M + int64_t(i) * 4 * NC;
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) a0[c] += x0 * ld(m0 + 4 * c);
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) st(out + 4 * c, a0[c] + a1[c]);
  } else {
    const int64_t Sp = 4 * int64_t(nc);
    for (int c = 0; c < nc; ++c) st(out + 4 * c, v4d{});
    for (int i = 0; i < S; ++i) {
      const v4d xi = splat(x[i]);
      const double* mi = M + i * Sp;
      for (int c = 0; c < nc; ++c) st(out + 4 * c, ld(out + 4 * c) + xi * ld(mi + 4 * c));
    }
  }
}

struct Model {
  int S, nc, Sp;
  std::vector<double> pi, A, AT, logpi, logA;  // A, AT, logA padded to (S, Sp); pads 0 / -inf
};

template <typename T>
Model make_model(const HmmArgs& a) {
  Model m;
  m.S = int(a.states);
  m.nc = (m.S + 3) / 4;
  m.Sp = 4 * m.nc;
  const T* ls = static_cast<const T*>(a.log_startprob);
  const T* lt = static_cast<const T*>(a.log_transmat);
  m.pi.assign(m.Sp, 0.0);
  m.logpi.assign(m.Sp, -kInf);
  m.A.assign(size_t(m.S) * m.Sp, 0.0);
  m.AT.assign(size_t(m.S) * m.Sp, 0.0);
  m.logA.assign(size_t(m.S) * m.Sp, -kInf);
  for (int i = 0; i < m.S; ++i) {
    m.logpi[i] = to_double(ls[i]);
    m.pi[i] = std::exp(m.logpi[i]);
    for (int j = 0; j < m.S; ++j) {
      const double v = to_double(lt[int64_t(i) * m.S + j]);
      m.logA[size_t(i) * m.Sp + j] = v;
      m.A[size_t(i) * m.Sp + j] = std::exp(v);
      m.AT[size_t(j) * m.Sp + i] = std::exp(v);
    }
  }
  return m;
}

struct Scratch {
  std::vector<double> row, u, alpha, e, c, beta, w, xacc, la, lb;
  std::vector<int32_t> back;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// ---- the scaled forward recursion -----------------------------------------------------------
// Returns log p(x_1..x_L), or NaN when scaling cannot represent this sequence (the caller then
// runs the log-space recursion). With `store`, alpha_t (L x Sp), e_t (L x Sp) and c_t (L) are kept.
template <typename T, int NC>
GE_INLINE double forward_scaled(const Model& m, const T* le, int64_t L, bool store, Scratch& s) {
  const int S = m.S, nc = NC > 0 ? NC : m.nc, Sp = 4 * nc;
  double* row = s.row.data();
  double* u = s.u.data();
  double ll = 0.0;
  const double* prev = nullptr;
  for (int64_t t = 0; t < L; ++t) {
    const double mx = load_row(le + t * S, S, Sp, row);
    if (!(mx > -kInf)) return mx == -kInf ? -kInf : std::nan("");  // every state impossible
    double* e = store ? s.e.data() + t * Sp : s.w.data();
    double* alpha = store ? s.alpha.data() + t * Sp : s.beta.data() + (t & 1) * Sp;
    for (int c = 0; c < nc; ++c) st(e + 4 * c, exp_nonpos(ld(row + 4 * c) - mx));
    if (t == 0) {
      for (int c = 0; c < nc; ++c) st(u + 4 * c, ld(m.pi.data() + 4 * c) * ld(e + 4 * c));
    } else {
      matvec<NC>(prev, m.A.data(), S, nc, u);
      for (int c = 0; c < nc; ++c) st(u + 4 * c, ld(u + 4 * c) * ld(e + 4 * c));
    }
    v4d acc = v4d{};
    for (int c = 0; c < nc; ++c) acc += ld(u + 4 * c);
    const double ct = hsum(acc);
    if (!(ct > kTiny && ct < kInf)) return std::nan("");  // underflow, overflow or NaN input
    const v4d inv = splat(1.0 / ct);
    for (int c = 0; c < nc; ++c) st(alpha + 4 * c, ld(u + 4 * c) * inv);
    if (store) s.c[t] = ct;
    ll += std::log(ct) + mx;
    prev = alpha;
  }
  return ll;
}

// ---- log-space recursions (the fallback): per-step max shift, exact for any input ---------------

// log(sum_i exp(v[i])) without overflow; -inf when every v is -inf; NaN when any is NaN
inline double logsumexp(const double* v, int n) {
  double mx = -kInf;
  bool nan = false;
  for (int i = 0; i < n; ++i) {
    nan |= v[i] != v[i];
    mx = v[i] > mx ? v[i] : mx;
  }
  if (nan) return std::nan("");
  if (mx == -kInf) return -kInf;
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(v[i] - mx);
  return mx + std::log(sum);
}

// la (L x S) = log alpha; returns log p(x). Each entry shifts by the maximum of its own terms
// la_{t-1}[i] + log A[i, j], so no term that matters can underflow.
template <typename T>
double forward_log(const Model& m, const T* le, int64_t L, double* la) {
  const int S = m.S;
  std::vector<double> w(S);
  for (int j = 0; j < S; ++j) la[j] = m.logpi[j] + to_double(le[j]);
  for (int64_t t = 1; t < L; ++t) {
    const double* a = la + (t - 1) * S;
    double* o = la + t * S;
    for (int j = 0; j < S; ++j) {
      for (int i = 0; i < S; ++i) w[i] = a[i] + m.logA[size_t(i) * m.Sp + j];
      o[j] = logsumexp(w.data(), S) + to_double(le[t * S + j]);
    }
  }
  return L > 0 ? logsumexp(la + (L - 1) * S, S) : 0.0;
}

template <typename T>
void posteriors_log(const Model& m, const T* le, int64_t L, Scratch& s, double* ll_out, T* gamma, T* xi) {
  const int S = m.S;
  s.la.resize(size_t(L) * S);
  s.lb.resize(size_t(L) * S);
  double* la = s.la.data();
  double* lb = s.lb.data();
  const double ll = forward_log(m, le, L, la);
  *ll_out = ll;
  std::vector<double> v(S), acc(size_t(S) * S, 0.0);
  for (int j = 0; j < S; ++j) lb[(L - 1) * S + j] = 0.0;
  std::vector<double> w(S);
  for (int64_t t = L - 1; t >= 1; --t) {
    for (int j = 0; j < S; ++j) v[j] = to_double(le[t * S + j]) + lb[t * S + j];
    for (int i = 0; i < S; ++i) {
      for (int j = 0; j < S; ++j) w[j] = m.logA[size_t(i) * m.Sp + j] + v[j];
      lb[(t - 1) * S + i] = logsumexp(w.data(), S);
    }
  }
  const bool ok = std::isfinite(ll);
  for (int64_t t = 0; t < L; ++t)
    for (int j = 0; j < S; ++j)
      gamma[t * S + j] = T(ok ? std::exp(la[t * S + j] + lb[t * S + j] - ll) : 0.0);
  if (ok) {
    for (int64_t t = 1; t < L; ++t) {
      for (int j = 0; j < S; ++j) v[j] = to_double(le[t * S + j]) + lb[t * S + j] - ll;
      for (int i = 0; i < S; ++i) {
        const double ai = la[(t - 1) * S + i];
        for (int j = 0; j < S; ++j) acc[size_t(i) * S + j] += std::exp(ai + m.logA[size_t(i) * m.Sp + j] + v[j]);
      }
    }
  }
  for (int i = 0; i < S * S; ++i) xi[i] = T(acc[i]);
}

// ---- per-sequence drivers -------------------------------------------------------------------

void reserve(Scratch& s, const Model& m, int64_t L, bool store) {
  const size_t Sp = m.Sp;
  s.row.resize(Sp);
  s.u.resize(Sp);
  s.w.resize(Sp);
  s.beta.resize(2 * Sp);
  if (store) {
    s.alpha.resize(std::max<int64_t>(L, 1) * Sp);
    s.e.resize(std::max<int64_t>(L, 1) * Sp);
    s.c.resize(std::max<int64_t>(L, 1));
    s.xacc.resize(size_t(m.S) * Sp);
  }
}

template <typename T, int NC>
GE_INLINE double forward_one(const Model& m, const T* le, int64_t L) {
  if (L == 0) return 0.0;
  Scratch& s = scratch();
  reserve(s, m, L, false);
  const double ll = forward_scaled<T, NC>(m, le, L, false, s);
  if (ll == ll) return ll;
  s.la.resize(size_t(L) * m.S);
  return forward_log(m, le, L, s.la.data());
}

template <typename T, int NC>
GE_INLINE void posteriors_one(const Model& m, const T* le, int64_t L, double* ll_out, T* gamma, T* xi) {
  const int S = m.S, nc = NC > 0 ? NC : m.nc, Sp = 4 * nc;
  if (L == 0) {
    *ll_out = 0.0;
    for (int i = 0; i < S * S; ++i) xi[i] = T(0);
    return;
  }
  Scratch& s = scratch();
  reserve(s, m, L, true);
  const double ll = forward_scaled<T, NC>(m, le, L, true, s);
  if (ll == -kInf) {  // impossible sequence: zero posteriors
    *ll_out = ll;
    for (int64_t i = 0; i < L * S; ++i) gamma[i] = T(0);
    for (int i = 0; i < S * S; ++i) xi[i] = T(0);
    return;
  }
  bool ok = ll == ll;
  if (ok) {
    double* beta = s.beta.data();
    double* w = s.w.data();
    double* xa = s.xacc.data();
    for (int j = 0; j < Sp; ++j) beta[j] = j < S ? 1.0 : 0.0;
    std::fill(s.xacc.begin(), s.xacc.end(), 0.0);
    for (int64_t t = L - 1; t >= 0 && ok; --t) {
      const double* alpha = s.alpha.data() + t * Sp;
      T* g = gamma + t * S;
      for (int j = 0; j < S; ++j) g[j] = T(alpha[j] * beta[j]);
      if (t == 0) break;
      const double* e = s.e.data() + t * Sp;
      const v4d inv = splat(1.0 / s.c[t]);
      for (int c = 0; c < nc; ++c) st(w + 4 * c, ld(e + 4 * c) * ld(beta + 4 * c) * inv);
      const double* ap = s.alpha.data() + (t - 1) * Sp;
      for (int i = 0; i < S; ++i) {
        const v4d ai = splat(ap[i]);
        double* xr = xa + size_t(i) * Sp;
        for (int c = 0; c < nc; ++c) st(xr + 4 * c, ld(xr + 4 * c) + ai * ld(w + 4 * c));
      }
      matvec<NC>(w, m.AT.data(), S, nc, beta);
      v4d bsum = v4d{};
      for (int c = 0; c < nc; ++c) bsum += ld(beta + 4 * c);
      ok = hsum(bsum) < kHuge;  // overflow (or NaN): a chain that does not mix; redo in log space
    }
    if (ok) {
      *ll_out = ll;
      for (int i = 0; i < S; ++i)
        for (int j = 0; j < S; ++j) xi[i * S + j] = T(m.A[size_t(i) * Sp + j] * xa[size_t(i) * Sp + j]);
      return;
    }
  }
  posteriors_log<T>(m, le, L, s, ll_out, gamma, xi);
}

template <typename T, int NC>
GE_INLINE void viterbi_one(const Model& m, const T* le, int64_t L, double* score, int64_t* path) {
  const int S = m.S, nc = NC > 0 ? NC : m.nc, Sp = 4 * nc;
  if (L == 0) {
    *score = 0.0;
    return;
  }
  Scratch& s = scratch();
  s.row.resize(Sp);
  s.beta.resize(2 * Sp);
  s.back.resize(size_t(L) * Sp);
  double* row = s.row.data();
  double* delta = s.beta.data();
  double* nxt = s.beta.data() + Sp;
  load_row(le, S, Sp, row);
  for (int c = 0; c < nc; ++c) st(delta + 4 * c, ld(m.logpi.data() + 4 * c) + ld(row + 4 * c));
  for (int64_t t = 1; t < L; ++t) {
    load_row(le + t * S, S, Sp, row);
    int32_t* bp = s.back.data() + t * Sp;
    if constexpr (NC > 0) {
      // i outer, the NC column chunks inner: NC independent compare-select chains
      v4d best[NC], arg[NC];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) best[c] = splat(-kInf), arg[c] = v4d{};
      for (int i = 0; i < S; ++i) {
        const v4d di = splat(delta[i]), fi = splat(double(i));
        const double* la = m.logA.data() + size_t(i) * Sp;
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) {
          const v4d cand = di + ld(la + 4 * c);
          const v4l better = cand > best[c];  // strict: ties keep the lowest i
          best[c] = select(better, cand, best[c]);
          arg[c] = select(better, fi, arg[c]);
        }
      }
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        st(nxt + 4 * c, best[c] + ld(row + 4 * c));
        const v4i ai = __builtin_convertvector(arg[c], v4i);
        std::memcpy(bp + 4 * c, &ai, sizeof ai);
      }
    } else {
      for (int c = 0; c < nc; ++c) {
        v4d best = splat(-kInf), arg = v4d{};
        for (int i = 0; i < S; ++i) {
          const v4d cand = splat(delta[i]) + ld(m.logA.data() + size_t(i) * Sp + 4 * c);
          const v4l better = cand > best;
          best = select(better, cand, best);
          arg = select(better, splat(double(i)), arg);
        }
        st(nxt + 4 * c, best + ld(row + 4 * c));
        const v4i ai = __builtin_convertvector(arg, v4i);
        std::memcpy(bp + 4 * c, &ai, sizeof ai);
      }
    }
    std::swap(delta, nxt);
  }
  int last = 0;
  for (int j = 1; j < S; ++j)
    if (delta[j] > delta[last]) last = j;
  *score = delta[last];
  int state = last;
  for (int64_t t = L - 1; t >= 0; --t) {
    path[t] = state;
    if (t > 0) state = s.back[size_t(t) * Sp + state];
  }
}

// ---- dispatch over the chunk count and dtype ----------------------------------------------------

enum class Kind { kForward, kPosteriors, kViterbi };

template <typename T, int NC>
GE_INLINE void run_one(Kind kind, const HmmArgs& a, const Model& m, int64_t b) {
  const int64_t T_ = a.steps, S = a.states;
  const int64_t L = a.lengths ? a.lengths[b] : T_;
  const T* le = static_cast<const T*>(a.log_emissions) + b * T_ * S;
  T* ll = static_cast<T*>(a.log_likelihood) + b;
  if (kind == Kind::kForward) {
    *ll = T(forward_one<T, NC>(m, le, L));
  } else if (kind == Kind::kPosteriors) {
    T* gamma = static_cast<T*>(a.gamma) + b * T_ * S;
    double lld = 0.0;
    posteriors_one<T, NC>(m, le, L, &lld, gamma, static_cast<T*>(a.xi) + b * S * S);
    *ll = T(lld);
    for (int64_t i = L * S; i < T_ * S; ++i) gamma[i] = T(0);
  } else {
    int64_t* path = a.path + b * T_;
    double score = 0.0;
    viterbi_one<T, NC>(m, le, L, &score, path);
    *ll = T(score);
    for (int64_t t = L; t < T_; ++t) path[t] = -1;
  }
}

template <typename T>
GE_INLINE void run_seq(Kind kind, const HmmArgs& a, const Model& m, int64_t b) {
  switch (m.nc) {
    case 1: return run_one<T, 1>(kind, a, m, b);
    case 2: return run_one<T, 2>(kind, a, m, b);
    case 3: return run_one<T, 3>(kind, a, m, b);
    case 4: return run_one<T, 4>(kind, a, m, b);
    case 5: return run_one<T, 5>(kind, a, m, b);
    case 6: return run_one<T, 6>(kind, a, m, b);
    case 7: return run_one<T, 7>(kind, a, m, b);
    case 8: return run_one<T, 8>(kind, a, m, b);
    default: return run_one<T, 0>(kind, a, m, b);
  }
}

GE_MULTIVERSIONED((void seq_f32(Kind kind, const HmmArgs& a, const Model& m, int64_t b)), { run_seq<float>(kind, a, m, b); })
GE_MULTIVERSIONED((void seq_f64(Kind kind, const HmmArgs& a, const Model& m, int64_t b)), { run_seq<double>(kind, a, m, b); })

void run(Kind kind, const HmmArgs& a) {
  if (a.batch <= 0 || a.states <= 0) return;
  const Model m = a.dtype == 1 ? make_model<double>(a) : make_model<float>(a);
  parallel_chunks(a.batch, [&](int64_t b) {
    if (a.dtype == 1)
      seq_f64(kind, a, m, b);
    else
      seq_f32(kind, a, m, b);
  });
}

template <typename T>
GE_INLINE void diag_rows(const GaussArgs& g, int64_t r0, int64_t r1) {
  const int64_t d = g.features, S = g.states;
  const T* x = static_cast<const T*>(g.x);
  const double* mt = g.means_t;
  const double* pt = g.prec_t;
  T* out = static_cast<T*>(g.out);
  thread_local std::vector<double> acc;
  acc.resize(S);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t s = 0; s < S; ++s) acc[s] = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double xv = to_double(x[r * d + j]);
      const double* mj = mt + j * S;
      const double* pj = pt + j * S;
      for (int64_t s = 0; s < S; ++s) {
        const double diff = xv - mj[s];
        acc[s] += diff * diff * pj[s];
      }
    }
    for (int64_t s = 0; s < S; ++s) out[r * S + s] = T(g.logconst[s] - 0.5 * acc[s]);
  }
}

GE_MULTIVERSIONED((void diag_rows_f32(const GaussArgs& g, int64_t r0, int64_t r1)), { diag_rows<float>(g, r0, r1); })
GE_MULTIVERSIONED((void diag_rows_f64(const GaussArgs& g, int64_t r0, int64_t r1)), { diag_rows<double>(g, r0, r1); })

}  // namespace

void gaussian_diag_log_density(const GaussArgs& g) {
  if (g.rows <= 0 || g.states <= 0) return;
  const int64_t per = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.states));
  const int64_t tasks = (g.rows + per - 1) / per;
  parallel_chunks(tasks, [&](int64_t t) {
    const int64_t r0 = t * per, r1 = std::min(g.rows, r0 + per);
    if (g.dtype == 1)
      diag_rows_f64(g, r0, r1);
    else
      diag_rows_f32(g, r0, r1);
  });
}

void hmm_forward(const HmmArgs& a) { run(Kind::kForward, a); }
void hmm_posteriors(const HmmArgs& a) { run(Kind::kPosteriors, a); }
void hmm_viterbi(const HmmArgs& a) { run(Kind::kViterbi, a); }

}  // namespace ge
