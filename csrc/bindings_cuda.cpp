// genengine._cuda: the CUDA kernels, the twin of genengine._C (csrc/bindings.cpp) with the same
// functions and argument order plus a trailing `stream` (a cudaStream_t as an int, 0 = the legacy
// default stream). Tensors cross the boundary as raw device pointers, so the module does not link
// libtorch. This file is compiled by the host C++ compiler; the launchers live in the .cu files.
//
// cudart is linked statically and nothing here runs at import time, so importing the module never
// touches the driver: a machine without a GPU can import it and ask device_count() (0).
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/bind_registry.h"
#include "common/step.h"

namespace py = pybind11;

namespace ge {
namespace cuda {
// csrc/cuda/diffusion.cu
void sampler_step(int dtype, int64_t n, int64_t inner, void* out, void* x0_out, const void* x,
                  const void* cond, const void* uncond, const void* prev,
                  const float* guidance_per_sample, float guidance, const StepCoefs& k,
                  uint64_t seed, uint64_t offset, uintptr_t stream, const float* thresholds,
                  const uint64_t* key, void* out_dup);
const char* compiled_archs();
// csrc/cuda/threshold.cu
int64_t threshold_workspace_words();
void dynamic_thresholds(int dtype, int64_t batch, int64_t inner, const void* x, const void* cond,
                        const void* uncond, const float* guidance_per_sample, float guidance, float kx,
                        float kp, int64_t rank, float frac, float max_value, float* thresholds,
                        void* workspace, uintptr_t stream);
// csrc/cuda/rng.cu
void philox_fill(int kind, void* out, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream);
// csrc/cuda/group_norm.cu
void group_norm_silu_fwd(int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last,
                         const void* x, const float* weight, const float* bias, float eps, void* y,
                         float* mean, float* rstd, float* part, int64_t s_chunk, int64_t splits,
                         uintptr_t stream);
void group_norm_silu_bwd(int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last,
                         const void* dy, const void* x, const float* weight, const float* bias,
                         const float* mean, const float* rstd, void* dx, float* dweight, float* dbias,
                         float* pc, float* pg, int64_t s_chunk, int64_t splits, uintptr_t stream);
}  // namespace cuda
}  // namespace ge

namespace {

void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

void sampler_step(int dtype, int64_t n, int64_t inner, uintptr_t out, uintptr_t x0_out,
                  uintptr_t x, uintptr_t cond, uintptr_t uncond, uintptr_t prev,
                  uintptr_t guidance_per_sample, float guidance, float kx, float kp, float ax,
                  float ap, float a0, float aprev, float anoise, bool clip, float clip_lo,
                  float clip_hi, uint64_t seed, uint64_t offset, uintptr_t stream,
                  uintptr_t thresholds, uintptr_t noise_key, uintptr_t out_dup) {
  const ge::StepCoefs k{kx, kp, ax, ap, a0, aprev, anoise, clip_lo, clip_hi, clip ? 1 : 0};
  ge::cuda::sampler_step(dtype, n, inner, ptr(out), ptr(x0_out), ptr(x), ptr(cond), ptr(uncond),
                         ptr(prev), static_cast<const float*>(ptr(guidance_per_sample)), guidance,
                         k, seed, offset, stream, static_cast<const float*>(ptr(thresholds)),
                         static_cast<const uint64_t*>(ptr(noise_key)), ptr(out_dup));
}

void dynamic_thresholds(int dtype, int64_t batch, int64_t inner, uintptr_t x, uintptr_t cond,
                        uintptr_t uncond, uintptr_t guidance_per_sample, float guidance, float kx,
                        float kp, int64_t rank, float frac, float max_value, uintptr_t thresholds,
                        uintptr_t workspace, uintptr_t stream) {
  ge::cuda::dynamic_thresholds(dtype, batch, inner, ptr(x), ptr(cond), ptr(uncond),
                               static_cast<const float*>(ptr(guidance_per_sample)), guidance, kx, kp,
                               rank, frac, max_value, static_cast<float*>(ptr(thresholds)),
                               ptr(workspace), stream);
}

// Never raises: no driver, no device or a broken install all read as "no GPU".
int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so the next runtime call does not report it
    return 0;
  }
  return count;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "genengine CUDA kernels (raw device pointers, no libtorch link)";
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("sampler_step", &sampler_step, nogil, py::arg("dtype"), py::arg("n"), py::arg("inner"),
        py::arg("out"), py::arg("x0_out"), py::arg("x"), py::arg("cond"), py::arg("uncond"),
        py::arg("prev"), py::arg("guidance_per_sample"), py::arg("guidance"), py::arg("kx"),
        py::arg("kp"), py::arg("ax"), py::arg("ap"), py::arg("a0"), py::arg("aprev"),
        py::arg("anoise"), py::arg("clip"), py::arg("clip_lo"), py::arg("clip_hi"),
        py::arg("seed"), py::arg("offset"), py::arg("stream") = 0, py::arg("thresholds") = 0,
        py::arg("noise_key") = 0, py::arg("out_dup") = 0,
        "One fused sampler step (see csrc/common/step.h), asynchronous on `stream`. thresholds: "
        "optional float32 [batch] dynamic thresholds; noise_key: optional device uint64[2] "
        "(seed, offset) the kernel reads instead of seed/offset; out_dup: optional second output "
        "that receives the same values as out.");
  m.def("dynamic_thresholds", &dynamic_thresholds, nogil, py::arg("dtype"), py::arg("batch"),
        py::arg("inner"), py::arg("x"), py::arg("cond"), py::arg("uncond"),
        py::arg("guidance_per_sample"), py::arg("guidance"), py::arg("kx"), py::arg("kp"),
        py::arg("rank"), py::arg("frac"), py::arg("max_value"), py::arg("thresholds"),
        py::arg("workspace"), py::arg("stream") = 0,
        "Per-sample dynamic thresholds into float32 [batch] (cuda/threshold.cu); workspace: "
        "batch * threshold_workspace_words() zeroed uint64 words.");
  m.def("threshold_workspace_words", &ge::cuda::threshold_workspace_words,
        "uint64 words of workspace per sample that dynamic_thresholds needs.");
  m.def("philox_fill",
        [](int kind, uintptr_t out, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream) {
          ge::cuda::philox_fill(kind, ptr(out), n, seed, offset, stream);
        },
        nogil, py::arg("kind"), py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("offset"),
        py::arg("stream") = 0,
        "Values 0 .. n-1 of the Philox stream: kind 0 = uint32 words, 1 = uniforms, 2 = normals.");
  m.def("group_norm_silu_fwd",
        [](int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last, uintptr_t x,
           uintptr_t weight, uintptr_t bias, float eps, uintptr_t y, uintptr_t mean, uintptr_t rstd,
           uintptr_t part, int64_t s_chunk, int64_t splits, uintptr_t stream) {
          auto f = [](uintptr_t p) { return static_cast<float*>(ptr(p)); };
          ge::cuda::group_norm_silu_fwd(dtype, n, c, s, groups, channels_last, ptr(x), f(weight), f(bias), eps,
                                        ptr(y), f(mean), f(rstd), f(part), s_chunk, splits, stream);
        },
        nogil, py::arg("dtype"), py::arg("n"), py::arg("c"), py::arg("s"), py::arg("groups"),
        py::arg("channels_last"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("y"), py::arg("mean"), py::arg("rstd"), py::arg("part"), py::arg("s_chunk"),
        py::arg("splits"), py::arg("stream") = 0,
        "Fused GroupNorm + SiLU forward (csrc/cuda/group_norm.cu); part: float32 [n*groups*splits*2] workspace.");
  m.def("group_norm_silu_bwd",
        [](int dtype, int64_t n, int64_t c, int64_t s, int64_t groups, bool channels_last, uintptr_t dy,
           uintptr_t x, uintptr_t weight, uintptr_t bias, uintptr_t mean, uintptr_t rstd, uintptr_t dx,
           uintptr_t dweight, uintptr_t dbias, uintptr_t pc, uintptr_t pg, int64_t s_chunk, int64_t splits,
           uintptr_t stream) {
          auto f = [](uintptr_t p) { return static_cast<float*>(ptr(p)); };
          ge::cuda::group_norm_silu_bwd(dtype, n, c, s, groups, channels_last, ptr(dy), ptr(x), f(weight),
                                        f(bias), f(mean), f(rstd), ptr(dx), f(dweight), f(dbias), f(pc),
                                        f(pg), s_chunk, splits, stream);
        },
        nogil, py::arg("dtype"), py::arg("n"), py::arg("c"), py::arg("s"), py::arg("groups"),
        py::arg("channels_last"), py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("mean"), py::arg("rstd"), py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("pc"),
        py::arg("pg"), py::arg("s_chunk"), py::arg("splits"), py::arg("stream") = 0,
        "Fused GroupNorm + SiLU backward; pc: float32 [n*splits*c*2], pg: [n*groups*splits*2] workspaces.");
  m.def("device_count", &device_count, nogil, "CUDA devices visible; 0 (never an error) without a driver.");
  m.def("build_info", []() {
    py::dict info;
    info["cuda_runtime"] = std::to_string(CUDART_VERSION);
    info["archs"] = std::string(ge::cuda::compiled_archs());
    return info;
  }, "CUDA runtime version the module was built against and the compiled architectures.");
  ge::run_binders(m);  // the ops bound in csrc/cuda/*_bind.cpp (common/bind_registry.h)
}
