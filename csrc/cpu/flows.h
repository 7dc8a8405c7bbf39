// CPU kernels of the flow transforms (flows.cpp): the rational-quadratic spline with identity tails
// and the affine coupling transform, each forward/inverse with its log-determinant and a fused backward.
#pragma once
#include <cstdint>

namespace ge {

// n elements of float32 (float64 when f64: a plain per-lane libm path for checking gradients).
// x, y, lad, gy, gl, gx: [n] contiguous. Parameter rows: element i's k widths
// at w + i * sw (unit stride along the row), likewise heights (sh) and kd = k - 1 or k + 1
// derivatives (sd). Gradients gw, gh, gd: rows of k, k, kd at row strides gsw, gsh, gsd (unit
// stride along a row; e.g. the three column blocks of one packed [n, 2k + kd] gradient).
// inverse: forward maps y = g^{-1}(x). Backward takes the point in the spline's domain: the forward
// input when !inverse, the forward output (the inverse's result) when inverse; gy / gl are the
// gradients of the op's two outputs (either may be null = zero), gx the gradient of its input.
struct SplineArgs {
  int64_t n = 0;
  int k = 0, kd = 0;
  bool inverse = false;
  bool f64 = false;
  double bound = 3.0, min_w = 1e-3, min_h = 1e-3, min_d = 1e-3;
  const void* x = nullptr;
  const void* w = nullptr;
  const void* h = nullptr;
  const void* d = nullptr;
  int64_t sw = 0, sh = 0, sd = 0;
  int64_t gsw = 0, gsh = 0, gsd = 0;
  void* y = nullptr;
  void* lad = nullptr;
  const void* gy = nullptr;
  const void* gl = nullptr;
  void* gx = nullptr;
  void* gw = nullptr;
  void* gh = nullptr;
  void* gd = nullptr;
  int isa = -1;  // -1: the best the CPU has; 0 baseline, 1 avx2, 2 avx512 (capped at the CPU's)
};

void rq_spline_fwd(const SplineArgs& a);
void rq_spline_bwd(const SplineArgs& a);

// rows x d. x: row stride sx; shift, log_scale: row strides st, ss (unit stride along a row);
// y, gx, gt, gs: contiguous [rows, d]; logdet, gld: [rows]. inverse: y = (x - t) exp(-s), logdet = -sum s.
// Backward reads x (the op's input), shift, log_scale, gy (may be null) and gld (may be null).
struct AffineArgs {
  int64_t rows = 0, d = 0;
  bool inverse = false, f64 = false;
  const void* x = nullptr;
  const void* t = nullptr;
  const void* s = nullptr;
  int64_t sx = 0, st = 0, ss = 0;
  void* y = nullptr;
  void* logdet = nullptr;
  const void* gy = nullptr;
  const void* gld = nullptr;
  void* gx = nullptr;
  void* gt = nullptr;
  void* gs = nullptr;
  int isa = -1;
};

void affine_coupling_fwd(const AffineArgs& a);
void affine_coupling_bwd(const AffineArgs& a);

const char* flows_isa(int isa);  // the clone a call with this isa argument runs

}  // namespace ge
