// CPU kernels of the attention ops for autoregressive sampling (attention.cpp): decode attention over
// a contiguous or paged KV cache (split-KV with a log-sum-exp merge), packed variable-length prefill
// attention, and rotary embedding fused with the KV-cache append. The Python side
// (genengine/ops/attention.py) has checked every shape, dtype, index and length; the kernels still
// clamp lengths and page indices so that no input can make them read outside the buffers.
#pragma once
#include <cstdint>

namespace ge {

// the core float32 decode / prefill run (attention.cpp): "avx512" where the CPU has AVX-512 F/VL/BW/DQ,
// else "avx2" where it has AVX2 and FMA (GENENGINE_CPU_ISA=avx2|baseline asks for less), else null
// (the multiversioned loops)
const char* attention_f32_core();
// the AVX-512 and AVX2 cores' software-prefetch plan, e.g. "t0 (AMD family 1Ah or later)", "t2 (auto)", or a
// level per read pattern on Intel (GENENGINE_ATTENTION_PREFETCH=t0|t2|off overrides the CPU's plan)
const char* attention_prefetch_report();

// Key j of sequence b, kv head h lives at k + page * k_sp + slot * k_ss + h * k_sh with
// page = block_table[b * bt_stride + j / page_size], slot = j % page_size. A contiguous cache
// [B, Hkv, S, D] is the same with block_table = null (page = b) and page_size = S.
struct KvLayout {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_sp = 0, k_ss = 0, k_sh = 0;  // element strides: page (batch), slot (position), head
  int64_t v_sp = 0, v_ss = 0, v_sh = 0;
  const int32_t* block_table = nullptr;
  int64_t bt_stride = 0, page_size = 1, num_pages = 1;
};

// q, out: contiguous [B, Q, Hq, D] of `dtype`; lse: float32 [B, Q, Hq] or null. Query i of Q sits
// at position seqlens[b] - Q + i and attends keys (pos - window, pos] (window 0: [0, pos]).
struct DecodeArgs {
  int dtype = 0;
  int64_t B = 0, Q = 1, Hq = 0, Hkv = 0, D = 0;
  const void* q = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  KvLayout kv;
  const int32_t* seqlens = nullptr;
  float scale = 1.0f, softcap = 0.0f;
  int64_t window = 0;
  int64_t num_splits = 0;  // <= 0: chosen from the shape and the thread count
};

// q, out: contiguous [T, Hq, D]; k, v: [Tk, Hkv, D] with element strides (token, head); lse: float32
// [T, Hq] or null. cu_q, cu_k: int32 [B + 1] offsets of each sequence's queries and keys.
struct PrefillArgs {
  int dtype = 0;
  int64_t B = 0, Hq = 0, Hkv = 0, D = 0;
  const void* q = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_st = 0, k_sh = 0, v_st = 0, v_sh = 0;
  const int32_t* cu_q = nullptr;
  const int32_t* cu_k = nullptr;
  bool causal = true;
  float scale = 1.0f, softcap = 0.0f;
  int64_t window = 0;
};

// q [T, Hq, D], k, v [T, Hkv, D] contiguous; q_out, k_out likewise; caches as KvLayout (writable);
// positions, seq_ids (or null: token t is batch row t) int32 [T]; cos, sin float32 with row stride
// cs_stride, rotary_dim / 2 values used per row.
struct RopeArgs {
  int dtype = 0;
  int64_t T = 0, Hq = 0, Hkv = 0, D = 0, rotary_dim = 0;
  bool interleaved = false;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* q_out = nullptr;
  void* k_out = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  KvLayout kv;  // strides, block table and page size of the caches (its k / v pointers unused)
  const int32_t* positions = nullptr;
  const int32_t* seq_ids = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t cs_stride = 0;
};

void decode_attention(const DecodeArgs& a);
int64_t decode_default_splits(int64_t B, int64_t Hkv, int64_t max_keys);
// 0 when every length is in [0, capacity] and every block-table entry a length reaches (bt non-null)
// is in [0, num_pages); else 4 * index + kind: kind 1 = negative length, 2 = length > capacity (index
// = sequence), 3 = bad entry (index = b * bt_stride + j).
int64_t check_lengths(const int32_t* seqlens, int64_t B, int64_t capacity, const int32_t* bt, int64_t bt_stride,
                      int64_t page_size, int64_t num_pages);
void prefill_attention(const PrefillArgs& a);
void rope_append_kv(const RopeArgs& a);
// true when every token's position is in [0, min(max_position, capacity)), its batch row (seq_ids[t],
// or t when seq_ids is null) in [0, B), and (bt non-null) the page it writes in [0, num_pages): the
// fast path of the Python checks, which describe a failure
bool rope_values_ok(const int32_t* positions, const int32_t* seq_ids, int64_t T, int64_t B, int64_t max_position,
                    int64_t capacity, const int32_t* bt, int64_t bt_stride, int64_t page_size, int64_t num_pages);

}  // namespace ge
