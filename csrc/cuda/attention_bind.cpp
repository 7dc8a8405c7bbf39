// genengine._cuda bindings of the decode attention kernel (csrc/cuda/attention.cu); compiled by the
// host C++ compiler. Pointers and the stream cross as integers (genengine/ops/_attention_cuda.py).
#include <cstdint>

#include "common/bind_registry.h"

namespace ge {
namespace cuda {
void decode_attention(int dtype, int64_t B, int64_t Q, int64_t Hq, int64_t Hkv, int64_t D, const void* q, void* out,
                      float* lse, const void* k, const void* v, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp,
                      int64_t v_ss, int64_t v_sh, const int32_t* block_table, int64_t bt_stride, int64_t page_size,
                      int64_t num_pages, const int32_t* lens, float scale, float softcap, int64_t window,
                      int64_t splits, float* ws_out, float* ws_lse, uintptr_t stream);
}  // namespace cuda
}  // namespace ge

namespace {
template <typename P>
P* as(uintptr_t p) {
  return reinterpret_cast<P*>(p);
}
}  // namespace

GE_BIND(attention) {
  m.def(
      "decode_attention",
      [](int dtype, int64_t B, int64_t Q, int64_t Hq, int64_t Hkv, int64_t D, uintptr_t q, uintptr_t out, uintptr_t lse,
         uintptr_t k, uintptr_t v, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp, int64_t v_ss, int64_t v_sh,
         uintptr_t block_table, int64_t bt_stride, int64_t page_size, int64_t num_pages, uintptr_t lens, float scale,
         float softcap, int64_t window, int64_t splits, uintptr_t ws_out, uintptr_t ws_lse, uintptr_t stream) {
        ge::cuda::decode_attention(dtype, B, Q, Hq, Hkv, D, as<const void>(q), as<void>(out), as<float>(lse),
                                   as<const void>(k), as<const void>(v), k_sp, k_ss, k_sh, v_sp, v_ss, v_sh,
                                   as<const int32_t>(block_table), bt_stride, page_size, num_pages,
                                   as<const int32_t>(lens), scale, softcap, window, splits, as<float>(ws_out),
                                   as<float>(ws_lse), stream);
      },
      ge::nogil(),
      "Decode attention (csrc/cuda/attention.cu): split-KV flash-decoding over a contiguous or paged cache; "
      "ws_out float32 [B*Hkv*R*splits, D], ws_lse float32 [B*Hkv*R*splits] when splits > 1.");
}
