// genengine._C bindings of the naive-Bayes kernels (naive_bayes.cpp): raw pointers, checked in
// genengine/ops/naive_bayes.py.
#include <cstdint>

#include "common/bind_registry.h"
#include "cpu/naive_bayes.h"

namespace {

template <typename T>
T* as(uintptr_t p) { return reinterpret_cast<T*>(p); }

void nb_jll(int kind, int mode, int dtype, int64_t n, int64_t f, int64_t c, uintptr_t x, uintptr_t p0, uintptr_t p1,
            uintptr_t cst, bool use_threshold, double threshold, uintptr_t out, uintptr_t lse) {
  ge::NBArgs a;
  a.kind = kind;
  a.mode = mode;
  a.dtype = dtype;
  a.n = n;
  a.f = f;
  a.c = c;
  a.x = as<const void>(x);
  a.p0 = as<const double>(p0);
  a.p1 = as<const double>(p1);
  a.cst = as<const double>(cst);
  a.use_threshold = use_threshold;
  a.threshold = threshold;
  a.out = as<void>(out);
  a.lse = as<void>(lse);
  ge::nb_joint_log_likelihood(a);
}

void nb_stats(int dtype, int64_t n, int64_t f, int64_t c, uintptr_t x, uintptr_t y, uintptr_t w, uintptr_t center,
              uintptr_t count, uintptr_t out) {
  ge::nb_class_stats(dtype, n, f, c, as<const void>(x), as<const int64_t>(y), as<const double>(w),
                     as<const double>(center), as<double>(count), as<double>(out));
}

pybind11::tuple label_range(int64_t n, uintptr_t y) {
  int64_t lo = 0, hi = 0;
  {
    pybind11::gil_scoped_release nogil;
    ge::nb_label_range(n, as<const int64_t>(y), &lo, &hi);
  }
  return pybind11::make_tuple(lo, hi);
}

void label_present(int64_t n, uintptr_t y, int64_t lo, int64_t span, uintptr_t present) {
  ge::nb_label_present(n, as<const int64_t>(y), lo, span, as<uint8_t>(present));
}

int64_t label_encode(int64_t n, uintptr_t y, int64_t lo, int64_t span, uintptr_t lut, uintptr_t idx) {
  return ge::nb_label_encode(n, as<const int64_t>(y), lo, span, as<const int64_t>(lut), as<int64_t>(idx));
}

}  // namespace

GE_BIND(naive_bayes) {
  m.def("nb_joint_log_likelihood", &nb_jll, ge::nogil());
  m.def("nb_class_stats", &nb_stats, ge::nogil());
  m.def("nb_label_range", &label_range);
  m.def("nb_label_present", &label_present, ge::nogil());
  m.def("nb_label_encode", &label_encode, ge::nogil());
}
