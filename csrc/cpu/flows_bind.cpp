// genengine._C bindings of the flow kernels (flows.cpp): raw pointers and strides, checked on the
// Python side (genengine/ops/flows.py); the GIL is released while they run.
#include <cstdint>
#include <string>

#include "common/bind_registry.h"
#include "cpu/flows.h"
#include "cpu/made.h"

namespace {

void* p(uintptr_t v) { return reinterpret_cast<void*>(v); }

ge::SplineArgs spline_args(bool f64, int64_t n, int k, int kd, bool inverse, double bound, double min_w, double min_h, double min_d,
                           uintptr_t x, uintptr_t w, uintptr_t h, uintptr_t d, int64_t sw, int64_t sh, int64_t sd,
                           int isa) {
  ge::SplineArgs a;
  a.f64 = f64; a.n = n; a.k = k; a.kd = kd; a.inverse = inverse;
  a.bound = bound; a.min_w = min_w; a.min_h = min_h; a.min_d = min_d;
  a.x = p(x); a.w = p(w); a.h = p(h); a.d = p(d);
  a.sw = sw; a.sh = sh; a.sd = sd; a.isa = isa;
  return a;
}

void rq_spline_fwd(bool f64, int64_t n, int k, int kd, bool inverse, double bound, double min_w, double min_h, double min_d,
                   uintptr_t x, uintptr_t w, uintptr_t h, uintptr_t d, int64_t sw, int64_t sh, int64_t sd,
                   uintptr_t y, uintptr_t lad, int isa) {
  ge::SplineArgs a = spline_args(f64, n, k, kd, inverse, bound, min_w, min_h, min_d, x, w, h, d, sw, sh, sd, isa);
  a.y = p(y); a.lad = p(lad);
  ge::rq_spline_fwd(a);
}

void rq_spline_bwd(bool f64, int64_t n, int k, int kd, bool inverse, double bound, double min_w, double min_h, double min_d,
                   uintptr_t x, uintptr_t w, uintptr_t h, uintptr_t d, int64_t sw, int64_t sh, int64_t sd,
                   uintptr_t gy, uintptr_t gl, uintptr_t gx, uintptr_t gw, uintptr_t gh, uintptr_t gd, int64_t gsw,
                   int64_t gsh, int64_t gsd, int isa) {
  ge::SplineArgs a = spline_args(f64, n, k, kd, inverse, bound, min_w, min_h, min_d, x, w, h, d, sw, sh, sd, isa);
  a.gsw = gsw; a.gsh = gsh; a.gsd = gsd;
  a.gy = p(gy); a.gl = p(gl);
  a.gx = p(gx); a.gw = p(gw); a.gh = p(gh); a.gd = p(gd);
  ge::rq_spline_bwd(a);
}

ge::AffineArgs affine_args(bool f64, int64_t rows, int64_t d, bool inverse, uintptr_t x, uintptr_t t, uintptr_t s, int64_t sx,
                           int64_t st, int64_t ss, int isa) {
  ge::AffineArgs a;
  a.f64 = f64; a.rows = rows; a.d = d; a.inverse = inverse;
  a.x = p(x); a.t = p(t); a.s = p(s);
  a.sx = sx; a.st = st; a.ss = ss; a.isa = isa;
  return a;
}

void affine_coupling_fwd(bool f64, int64_t rows, int64_t d, bool inverse, uintptr_t x, uintptr_t t, uintptr_t s, int64_t sx,
                         int64_t st, int64_t ss, uintptr_t y, uintptr_t logdet, int isa) {
  ge::AffineArgs a = affine_args(f64, rows, d, inverse, x, t, s, sx, st, ss, isa);
  a.y = p(y); a.logdet = p(logdet);
  ge::affine_coupling_fwd(a);
}

void affine_coupling_bwd(bool f64, int64_t rows, int64_t d, bool inverse, uintptr_t x, uintptr_t t, uintptr_t s, int64_t sx,
                         int64_t st, int64_t ss, uintptr_t gy, uintptr_t gld, uintptr_t gx, uintptr_t gt, uintptr_t gs,
                         int isa) {
  ge::AffineArgs a = affine_args(f64, rows, d, inverse, x, t, s, sx, st, ss, isa);
  a.gy = p(gy); a.gld = p(gld);
  a.gx = p(gx); a.gt = p(gt); a.gs = p(gs);
  ge::affine_coupling_bwd(a);
}

}  // namespace

void made_affine_inverse(bool f64, int64_t rows, int64_t d, int n_layers, uintptr_t sizes, uintptr_t bounds,
                         uintptr_t weights, uintptr_t w_off, uintptr_t b_off, uintptr_t ctx, int64_t ctx_stride,
                         uintptr_t c_off, double scale_bound, uintptr_t y, uintptr_t x, uintptr_t logdet) {
  ge::MadeInverseArgs a;
  a.f64 = f64; a.rows = rows; a.d = d; a.n_layers = n_layers;
  a.sizes = static_cast<const int64_t*>(p(sizes)); a.bounds = static_cast<const int64_t*>(p(bounds));
  a.weights = p(weights);
  a.w_off = static_cast<const int64_t*>(p(w_off)); a.b_off = static_cast<const int64_t*>(p(b_off));
  a.ctx = p(ctx); a.ctx_stride = ctx_stride; a.c_off = static_cast<const int64_t*>(p(c_off));
  a.scale_bound = scale_bound;
  a.y = p(y); a.x = p(x); a.logdet = p(logdet);
  ge::made_affine_inverse(a);
}

GE_BIND(flows) {
  m.def("made_affine_inverse", &made_affine_inverse, ge::nogil());
  m.def("rq_spline_fwd", &rq_spline_fwd, ge::nogil());
  m.def("rq_spline_bwd", &rq_spline_bwd, ge::nogil());
  m.def("affine_coupling_fwd", &affine_coupling_fwd, ge::nogil());
  m.def("affine_coupling_bwd", &affine_coupling_bwd, ge::nogil());
  m.def("flows_isa", [](int isa) { return std::string(ge::flows_isa(isa)); });
}
