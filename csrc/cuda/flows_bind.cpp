// genengine._cuda bindings of the flow kernels (csrc/cuda/flows.cu): raw device pointers, strides
// and the torch stream handle, checked on the Python side (genengine/ops/_flows_cuda.py).
#include <cstdint>

#include "common/bind_registry.h"

namespace ge {
namespace cuda {
void rq_spline_fwd(int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                   const float* x, const float* w, const float* h, const float* d, int64_t sw, int64_t sh, int64_t sd,
                   float* y, float* lad, uintptr_t stream);
void rq_spline_bwd(int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                   const float* x, const float* w, const float* h, const float* d, int64_t sw, int64_t sh, int64_t sd,
                   const float* gy, const float* gl, float* gx, float* gw, float* gh, float* gd, int64_t gsw,
                   int64_t gsh, int64_t gsd, uintptr_t stream);
void affine_coupling_fwd(int64_t rows, int64_t d, bool inverse, const float* x, const float* t, const float* s,
                         int64_t sx, int64_t st, int64_t ss, float* y, float* logdet, uintptr_t stream);
void affine_coupling_bwd(int64_t rows, int64_t d, bool inverse, const float* x, const float* t, const float* s,
                         int64_t sx, int64_t st, int64_t ss, const float* gy, const float* gld, float* gx, float* gt,
                         float* gs, uintptr_t stream);
}  // namespace cuda
}  // namespace ge

namespace {
const float* cf(uintptr_t p) { return reinterpret_cast<const float*>(p); }
float* f(uintptr_t p) { return reinterpret_cast<float*>(p); }
}  // namespace

GE_BIND(flows) {
  m.def("rq_spline_fwd", [](int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                            uintptr_t x, uintptr_t w, uintptr_t h, uintptr_t d, int64_t sw, int64_t sh, int64_t sd,
                            uintptr_t y, uintptr_t lad, uintptr_t stream) {
    ge::cuda::rq_spline_fwd(n, k, kd, inverse, bound, min_w, min_h, min_d, cf(x), cf(w), cf(h), cf(d), sw, sh, sd, f(y),
                            f(lad), stream);
  }, ge::nogil());
  m.def("rq_spline_bwd", [](int64_t n, int k, int kd, bool inverse, float bound, float min_w, float min_h, float min_d,
                            uintptr_t x, uintptr_t w, uintptr_t h, uintptr_t d, int64_t sw, int64_t sh, int64_t sd,
                            uintptr_t gy, uintptr_t gl, uintptr_t gx, uintptr_t gw, uintptr_t gh, uintptr_t gd,
                            int64_t gsw, int64_t gsh, int64_t gsd, uintptr_t stream) {
    ge::cuda::rq_spline_bwd(n, k, kd, inverse, bound, min_w, min_h, min_d, cf(x), cf(w), cf(h), cf(d), sw, sh, sd,
                            cf(gy), cf(gl), f(gx), f(gw), f(gh), f(gd), gsw, gsh, gsd, stream);
  }, ge::nogil());
  m.def("affine_coupling_fwd", [](int64_t rows, int64_t d, bool inverse, uintptr_t x, uintptr_t t, uintptr_t s,
                                  int64_t sx, int64_t st, int64_t ss, uintptr_t y, uintptr_t logdet, uintptr_t stream) {
    ge::cuda::affine_coupling_fwd(rows, d, inverse, cf(x), cf(t), cf(s), sx, st, ss, f(y), f(logdet), stream);
  }, ge::nogil());
  m.def("affine_coupling_bwd", [](int64_t rows, int64_t d, bool inverse, uintptr_t x, uintptr_t t, uintptr_t s,
                                  int64_t sx, int64_t st, int64_t ss, uintptr_t gy, uintptr_t gld, uintptr_t gx,
                                  uintptr_t gt, uintptr_t gs, uintptr_t stream) {
    ge::cuda::affine_coupling_bwd(rows, d, inverse, cf(x), cf(t), cf(s), sx, st, ss, cf(gy), cf(gld), f(gx), f(gt),
                                  f(gs), stream);
  }, ge::nogil());
}
