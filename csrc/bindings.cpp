// genengine._C: the CPU kernels. Tensors cross the boundary as raw data pointers (the Python side
// has already checked shapes, dtypes, devices and made them contiguous), so the module does not
// link libtorch: it builds in seconds and survives torch upgrades. Every entry point releases the
// GIL while it runs.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/bind_registry.h"
#include "cpu/cpu_common.h"
#include "cpu/diffusion.h"
#include "cpu/group_norm.h"
#include "cpu/attention.h"
#include "cpu/mixture.h"
#include "cpu/parallel.h"

namespace py = pybind11;

namespace {

void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

void sampler_step(int dtype, int64_t n, int64_t inner, uintptr_t out, uintptr_t x0_out,
                  uintptr_t x, uintptr_t cond, uintptr_t uncond, uintptr_t prev,
                  uintptr_t guidance_per_sample, float guidance, float kx, float kp, float ax,
                  float ap, float a0, float aprev, float anoise, bool clip, float clip_lo,
                  float clip_hi, uint64_t seed, uint64_t offset, uintptr_t thresholds,
                  uintptr_t noise_key, uintptr_t out_dup) {
  ge::StepArgs a;
  a.dtype = dtype;
  a.n = n;
  a.inner = inner > 0 ? inner : 1;
  a.out = ptr(out);
  a.x0_out = ptr(x0_out);
  a.out_dup = ptr(out_dup);
  a.x = ptr(x);
  a.cond = ptr(cond);
  a.uncond = ptr(uncond);
  a.prev = ptr(prev);
  a.guidance_per_sample = static_cast<const float*>(ptr(guidance_per_sample));
  a.guidance = guidance;
  a.k = ge::StepCoefs{kx, kp, ax, ap, a0, aprev, anoise, clip_lo, clip_hi, clip ? 1 : 0};
  a.thresholds = static_cast<const float*>(ptr(thresholds));
  a.noise = anoise != 0.0f;
  if (noise_key) {  // (seed, offset) read now from a CPU int64[2] tensor: uint64 bit patterns
    const uint64_t* key = static_cast<const uint64_t*>(ptr(noise_key));
    seed = key[0];
    offset = key[1];
  }
  a.key = ge::make_philox_key(seed, offset);
  ge::sampler_step(a);
}

void dynamic_thresholds(int dtype, int64_t batch, int64_t inner, uintptr_t x, uintptr_t cond,
                        uintptr_t uncond, uintptr_t guidance_per_sample, float guidance, float kx,
                        float kp, int64_t rank, float frac, float max_value, uintptr_t thresholds) {
  ge::ThresholdArgs a;
  a.dtype = dtype;
  a.batch = batch;
  a.inner = inner;
  a.x = ptr(x);
  a.cond = ptr(cond);
  a.uncond = ptr(uncond);
  a.guidance_per_sample = static_cast<const float*>(ptr(guidance_per_sample));
  a.guidance = guidance;
  a.kx = kx;
  a.kp = kp;
  a.rank = rank;
  a.frac = frac;
  a.max_value = max_value;
  a.thresholds = static_cast<float*>(ptr(thresholds));
  ge::dynamic_thresholds(a);
}

// GroupNorm + SiLU: x/y/dy/dx of `dtype`, (n, c, hw) or channels-last (n, hw, c); weight/bias
// float32 [c] or 0; mean/rstd float32 [n, groups]; dweight/dbias float32 [c] or 0
void group_norm_silu_fwd(int dtype, int64_t n, int64_t c, int64_t hw, int64_t groups, bool channels_last,
                         uintptr_t x, uintptr_t weight, uintptr_t bias, float eps, uintptr_t y, uintptr_t mean,
                         uintptr_t rstd) {
  ge::GroupNormArgs a;
  a.dtype = dtype; a.n = n; a.c = c; a.hw = hw; a.groups = groups; a.channels_last = channels_last; a.eps = eps;
  a.x = ptr(x);
  a.weight = static_cast<const float*>(ptr(weight));
  a.bias = static_cast<const float*>(ptr(bias));
  a.y = ptr(y);
  a.mean = static_cast<float*>(ptr(mean));
  a.rstd = static_cast<float*>(ptr(rstd));
  ge::group_norm_silu_fwd(a);
}

void group_norm_silu_bwd(int dtype, int64_t n, int64_t c, int64_t hw, int64_t groups, bool channels_last,
                         uintptr_t dy, uintptr_t x, uintptr_t weight, uintptr_t bias, uintptr_t mean, uintptr_t rstd,
                         uintptr_t dx, uintptr_t dweight, uintptr_t dbias) {
  ge::GroupNormArgs a;
  a.dtype = dtype; a.n = n; a.c = c; a.hw = hw; a.groups = groups; a.channels_last = channels_last;
  a.dy = ptr(dy);
  a.x = ptr(x);
  a.weight = static_cast<const float*>(ptr(weight));
  a.bias = static_cast<const float*>(ptr(bias));
  a.mean = static_cast<float*>(ptr(mean));
  a.rstd = static_cast<float*>(ptr(rstd));
  a.dx = ptr(dx);
  a.dweight = static_cast<float*>(ptr(dweight));
  a.dbias = static_cast<float*>(ptr(dbias));
  ge::group_norm_silu_bwd(a);
}

std::string build_flags() {
#ifdef GE_BUILD_FLAGS
  return GE_BUILD_FLAGS;
#else
  return "";
#endif
}

// The multiversioned loops' clone, then the Philox generator's path ("; philox: avx512 (auto)") and
// the diagonal GMM E-step's and float32 attention's, which GENENGINE_CPU_ISA=baseline|avx2|avx512 can force (cpu_common.h).
std::string isa() {
#if defined(GE_NATIVE)
  std::string loops = "native";
#elif defined(__x86_64__)
  std::string loops = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "x86-64 + haswell clone (avx2)" : "x86-64 baseline";
#else
  std::string loops = "generic";
#endif
  return loops + "; philox: " + ge::philox_isa_report() +
         "; gmm diag/spherical: " + (ge::gmm_diag_uses_avx512() ? "avx512" : "the loops' clone") +
         "; attention float32: " +
         (ge::attention_f32_core() ? std::string(ge::attention_f32_core()) + ", prefetch " + ge::attention_prefetch_report()
                                  : std::string("the loops' clone"));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genengine CPU kernels (C++17, no libtorch link)";
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("group_norm_silu_fwd", &group_norm_silu_fwd, nogil);
  m.def("group_norm_silu_bwd", &group_norm_silu_bwd, nogil);
  m.def("sampler_step", &sampler_step, nogil, py::arg("dtype"), py::arg("n"), py::arg("inner"),
        py::arg("out"), py::arg("x0_out"), py::arg("x"), py::arg("cond"), py::arg("uncond"),
        py::arg("prev"), py::arg("guidance_per_sample"), py::arg("guidance"), py::arg("kx"),
        py::arg("kp"), py::arg("ax"), py::arg("ap"), py::arg("a0"), py::arg("aprev"),
        py::arg("anoise"), py::arg("clip"), py::arg("clip_lo"), py::arg("clip_hi"),
        py::arg("seed"), py::arg("offset"), py::arg("thresholds") = 0, py::arg("noise_key") = 0,
        py::arg("out_dup") = 0,
        "One fused sampler step (csrc/common/step.h). thresholds: optional float32 [batch] "
        "dynamic thresholds; noise_key: optional int64[2] (seed, offset) read instead of seed/offset; "
        "out_dup: optional second output that receives the same values as out.");
  m.def("dynamic_thresholds", &dynamic_thresholds, nogil,
        "Per-sample dynamic thresholds of x0 = kx x + kp p into float32 [batch] (cpu/diffusion.h).");
  m.def("philox_fill",
        [](int kind, uintptr_t out, int64_t n, uint64_t seed, uint64_t offset, uint64_t start) {
          if (kind < 0 || kind > 2) throw std::invalid_argument("kind: expected 0 (words), 1 (uniform) or 2 (normal)");
          ge::philox_fill_at(kind, ptr(out), n, seed, offset, start);
        },
        nogil, py::arg("kind"), py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("offset"),
        py::arg("start") = 0,
        "Values [start, start + n) of the Philox stream (seed, offset) into out: kind 0 = uint32 words, "
        "1 = float32 uniforms, 2 = float32 normals.");
  m.def("set_num_threads", &ge::set_num_threads, nogil);
  m.def("get_num_threads", &ge::get_num_threads);
  m.def("threading", &ge::threading_backend);
  m.def("build_flags", &build_flags);
  m.def("isa", &isa);
  ge::run_binders(m);  // the ops bound in csrc/cpu/*_bind.cpp (common/bind_registry.h)
}
