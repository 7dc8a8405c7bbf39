// The MAF layer's sampling direction on the CPU: x_i = y_i exp(alpha_i(x_<i)) + mu_i(x_<i), i = 0..d-1,
// with (mu, alpha) from a MADE. Step i needs only the hidden units of degree <= i (the masks), and a
// unit of degree k is final once x_<k is, so each unit is computed exactly once, at step k: the whole
// inverse costs one MADE forward pass of multiply-adds instead of d of them. With the units relabelled
// by degree (made.h) every step is a few dot products over prefixes of contiguous rows.
//
// Rows are independent: each thread takes a chunk of rows, and one row's state (x, the hidden
// activations) lives in a small stack buffer. The dot products keep 8 partial sums (vectorised
// without reassociating the loop: the order is fixed, so results do not depend on the ISA clone).
#include "made.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"

namespace ge {
namespace {

template <typename T>
inline __attribute__((always_inline)) T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

template <typename T>
inline __attribute__((always_inline)) void rows_inverse(const MadeInverseArgs& a, int64_t r0, int64_t r1) {
  const int64_t d = a.d;
  const int L = a.n_layers;
  const T* W = static_cast<const T*>(a.weights);
  const T* ctx = static_cast<const T*>(a.ctx);
  const T bound = T(a.scale_bound);
  int64_t total_h = 0;
  for (int l = 0; l < L; ++l) total_h += a.sizes[l];
  std::vector<T> state(static_cast<size_t>(total_h));
  for (int64_t r = r0; r < r1; ++r) {
    const T* y = static_cast<const T*>(a.y) + r * d;
    T* x = static_cast<T*>(a.x) + r * d;
    std::fill(x, x + d, T(0));
    std::fill(state.begin(), state.end(), T(0));
    T logdet = 0;
    for (int64_t i = 0; i < d; ++i) {
      const T* src = x;
      int64_t src_len = i;  // layer 0's units of degree i read x_<i
      T* h = state.data();
      for (int l = 0; l < L; ++l) {
        const int64_t H = a.sizes[l], in = l == 0 ? d : a.sizes[l - 1];
        const int64_t* bl = a.bounds + l * (d + 1);
        const T* Wl = W + a.w_off[l];
        const T* bias = W + a.b_off[l];
        const T* cl = ctx ? ctx + r * a.ctx_stride + a.c_off[l] : nullptr;
        for (int64_t u = bl[i]; u < bl[i + 1]; ++u) {
          T v = bias[u] + dot(Wl + u * in, src, src_len);
          if (cl) v += cl[u];
          h[u] = v > T(0) ? v : T(0);
        }
        src = h;
        src_len = bl[i + 1];  // the next layer's units of degree i read this layer's units of degree <= i
        h += H;
      }
      const T* Wo = W + a.w_off[L] + 2 * i * (L ? a.sizes[L - 1] : d);
      const T* bo = W + a.b_off[L] + 2 * i;
      const int64_t ho = L ? a.sizes[L - 1] : d;
      const T mu = bo[0] + dot(Wo, src, src_len);
      const T raw = bo[1] + dot(Wo + ho, src, src_len);
      const T alpha = bound * std::tanh(raw / bound);
      x[i] = y[i] * std::exp(alpha) + mu;
      logdet += alpha;
    }
    static_cast<T*>(a.logdet)[r] = logdet;
  }
}

GE_MULTIVERSIONED((void inverse_f32(const MadeInverseArgs& a, int64_t r0, int64_t r1)), { rows_inverse<float>(a, r0, r1); })
GE_MULTIVERSIONED((void inverse_f64(const MadeInverseArgs& a, int64_t r0, int64_t r1)), { rows_inverse<double>(a, r0, r1); })

}  // namespace

void made_affine_inverse(const MadeInverseArgs& a) {
  if (a.rows <= 0 || a.d <= 0) return;
  const int64_t per = 16;  // rows per chunk: a row is ~one MADE forward pass of work
  parallel_chunks((a.rows + per - 1) / per, [&](int64_t c) {
    const int64_t r0 = c * per, r1 = std::min(a.rows, r0 + per);
    if (a.f64) inverse_f64(a, r0, r1);
    else inverse_f32(a, r0, r1);
  });
}

}  // namespace ge
