"""Compiles the attention Triton kernels (kernels/attention.py) for an H100 (sm_90) without a GPU:
decode (contiguous and paged, with and without softcap / window, partial and final outputs) and its
merge, prefill and rotary + KV append, for float32, bfloat16 and float16 at head dims 64 and 128.
Run by tests/test_triton_gpu_compile.py; prints one line per variant and exits 1 on a failure."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import attention as A

TY = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
F32_ARGS = {"mult", "softcap"}


def types_for(dt, f32_ptrs=(), i32_ptrs=()):
    def types(n):
        if n in f32_ptrs:
            return "*fp32"
        if n in i32_ptrs:
            return "*i32"
        if n.endswith("_ptr"):
            return f"*{dt}"
        if n in F32_ARGS:
            return "fp32"
        return "i32"
    return types


for dt, D, paged, softcap, partial in itertools.product(("fp32", "bf16", "fp16"), (64, 128), (False, True), (False, True),
                                                        (False, True)):
    if D == 64 and (softcap or partial):
        continue
    consts = {"PAGED": paged, "SOFTCAP": softcap, "WINDOW": softcap, "PARTIAL": partial, "BLOCK_R": 16,
              "BLOCK_N": A.BLOCK_N, "BLOCK_D": D}
    compile_variant(f"decode {dt} D={D} paged={paged} softcap/window={softcap} partial={partial}", A._decode_kernel,
                    types_for(dt, ("lse_ptr", "po_ptr", "pl_ptr"), ("bt_ptr", "len_ptr")), consts)

for dt in ("fp32", "bf16"):
    compile_variant(f"decode merge {dt}", A._merge_kernel, types_for(dt, ("po_ptr", "pl_ptr", "lse_ptr")),
                    {"BLOCK_R": 16, "BLOCK_D": 128})

for dt, causal, window in itertools.product(("fp32", "bf16", "fp16"), (False, True), (False, True)):
    if window and not causal:
        continue
    compile_variant(f"prefill {dt} causal={causal} window={window}", A._prefill_kernel,
                    types_for(dt, ("lse_ptr",), ("cuq_ptr", "cuk_ptr")),
                    {"CAUSAL": causal, "SOFTCAP": window, "WINDOW": window, "BLOCK_M": A.BLOCK_M, "BLOCK_N": A.BLOCK_N,
                     "BLOCK_D": 128})

for dt, paged, inter in itertools.product(("fp32", "bf16"), (False, True), (False, True)):
    compile_variant(f"rope_append_kv {dt} paged={paged} interleaved={inter}", A._rope_kernel,
                    types_for(dt, ("cos_ptr", "sin_ptr"), ("pos_ptr", "sid_ptr", "bt_ptr")),
                    {"PAGED": paged, "HAS_SID": paged, "INTERLEAVED": inter, "BLOCK_HQ": 32, "BLOCK_HK": 8, "BLOCK_D": 128})

finish()
