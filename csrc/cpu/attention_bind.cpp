// genengine._C bindings of the attention kernels (attention.h). Pointers cross as integers; the
// Python side (genengine/ops/attention.py) has checked shapes, dtypes, indices and lengths.
#include <cstdint>

#include "common/bind_registry.h"
#include "cpu/attention.h"

namespace {

template <typename P>
P* as(uintptr_t p) {
  return reinterpret_cast<P*>(p);
}

ge::KvLayout layout(uintptr_t k, uintptr_t v, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp, int64_t v_ss,
                    int64_t v_sh, uintptr_t block_table, int64_t bt_stride, int64_t page_size, int64_t num_pages) {
  ge::KvLayout kv;
  kv.k = as<const void>(k);
  kv.v = as<const void>(v);
  kv.k_sp = k_sp; kv.k_ss = k_ss; kv.k_sh = k_sh;
  kv.v_sp = v_sp; kv.v_ss = v_ss; kv.v_sh = v_sh;
  kv.block_table = as<const int32_t>(block_table);
  kv.bt_stride = bt_stride;
  kv.page_size = page_size;
  kv.num_pages = num_pages;
  return kv;
}

void decode_attention(int dtype, int64_t B, int64_t Q, int64_t Hq, int64_t Hkv, int64_t D, uintptr_t q, uintptr_t out,
                      uintptr_t lse, uintptr_t k, uintptr_t v, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp,
                      int64_t v_ss, int64_t v_sh, uintptr_t block_table, int64_t bt_stride, int64_t page_size,
                      int64_t num_pages, uintptr_t seqlens, float scale, float softcap, int64_t window,
                      int64_t num_splits) {
  ge::DecodeArgs a;
  a.dtype = dtype; a.B = B; a.Q = Q; a.Hq = Hq; a.Hkv = Hkv; a.D = D;
  a.q = as<const void>(q);
  a.out = as<void>(out);
  a.lse = as<float>(lse);
  a.kv = layout(k, v, k_sp, k_ss, k_sh, v_sp, v_ss, v_sh, block_table, bt_stride, page_size, num_pages);
  a.seqlens = as<const int32_t>(seqlens);
  a.scale = scale; a.softcap = softcap; a.window = window; a.num_splits = num_splits;
  ge::decode_attention(a);
}

void prefill_attention(int dtype, int64_t B, int64_t Hq, int64_t Hkv, int64_t D, uintptr_t q, uintptr_t out,
                       uintptr_t lse, uintptr_t k, uintptr_t v, int64_t k_st, int64_t k_sh, int64_t v_st, int64_t v_sh,
                       uintptr_t cu_q, uintptr_t cu_k, bool causal, float scale, float softcap, int64_t window) {
  ge::PrefillArgs a;
  a.dtype = dtype; a.B = B; a.Hq = Hq; a.Hkv = Hkv; a.D = D;
  a.q = as<const void>(q);
  a.out = as<void>(out);
  a.lse = as<float>(lse);
  a.k = as<const void>(k);
  a.v = as<const void>(v);
  a.k_st = k_st; a.k_sh = k_sh; a.v_st = v_st; a.v_sh = v_sh;
  a.cu_q = as<const int32_t>(cu_q);
  a.cu_k = as<const int32_t>(cu_k);
  a.causal = causal; a.scale = scale; a.softcap = softcap; a.window = window;
  ge::prefill_attention(a);
}

void rope_append_kv(int dtype, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t rotary_dim, bool interleaved,
                    uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t q_out, uintptr_t k_out, uintptr_t k_cache,
                    uintptr_t v_cache, int64_t k_sp, int64_t k_ss, int64_t k_sh, int64_t v_sp, int64_t v_ss, int64_t v_sh,
                    uintptr_t block_table, int64_t bt_stride, int64_t page_size, int64_t num_pages, uintptr_t positions,
                    uintptr_t seq_ids, uintptr_t cos, uintptr_t sin, int64_t cs_stride) {
  ge::RopeArgs a;
  a.dtype = dtype; a.T = T; a.Hq = Hq; a.Hkv = Hkv; a.D = D; a.rotary_dim = rotary_dim; a.interleaved = interleaved;
  a.q = as<const void>(q);
  a.k = as<const void>(k);
  a.v = as<const void>(v);
  a.q_out = as<void>(q_out);
  a.k_out = as<void>(k_out);
  a.k_cache = as<void>(k_cache);
  a.v_cache = as<void>(v_cache);
  a.kv = layout(0, 0, k_sp, k_ss, k_sh, v_sp, v_ss, v_sh, block_table, bt_stride, page_size, num_pages);
  a.positions = as<const int32_t>(positions);
  a.seq_ids = as<const int32_t>(seq_ids);
  a.cos = as<const float>(cos);
  a.sin = as<const float>(sin);
  a.cs_stride = cs_stride;
  ge::rope_append_kv(a);
}

}  // namespace

GE_BIND(attention) {
  m.def("decode_attention", &decode_attention, ge::nogil(),
        "Decode attention over a contiguous or paged KV cache (csrc/cpu/attention.h), split-KV with an LSE merge.");
  m.def("decode_default_splits", &ge::decode_default_splits, "The KV split count decode_attention picks for num_splits=0.");
  m.def("attention_check_lengths",
        [](uintptr_t seqlens, int64_t B, int64_t capacity, uintptr_t bt, int64_t bt_stride, int64_t page_size,
           int64_t num_pages) {
          return ge::check_lengths(as<const int32_t>(seqlens), B, capacity, as<const int32_t>(bt), bt_stride, page_size,
                                   num_pages);
        },
        "Validates decode lengths and block-table entries (csrc/cpu/attention.h): 0, or 4 * index + kind.");
  m.def("attention_rope_values_ok",
        [](uintptr_t positions, uintptr_t seq_ids, int64_t T, int64_t B, int64_t max_position, int64_t capacity,
           uintptr_t bt, int64_t bt_stride, int64_t page_size, int64_t num_pages) {
          return ge::rope_values_ok(as<const int32_t>(positions), as<const int32_t>(seq_ids), T, B, max_position, capacity,
                                    as<const int32_t>(bt), bt_stride, page_size, num_pages);
        },
        "Validates rope_append_kv's positions, seq_ids and written pages (csrc/cpu/attention.h).");
  m.def("prefill_attention", &prefill_attention, ge::nogil(),
        "Packed variable-length prefill attention (causal bottom-right, sliding window, softcap).");
  m.def("rope_append_kv", &rope_append_kv, ge::nogil(),
        "Rotary embedding of q and k, and the rotated k and v written into the KV cache, in one pass.");
}
