"""Compiles the HMM Triton kernels (kernels/hmm.py) for an H100 (sm_90) without a GPU, float32 and
float64, with and without lengths, at 16 and 64 states. Run by tests/test_triton_gpu_compile.py."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import hmm


def types(dt):
    def t(name):
        if name == "len_ptr":
            return "*i64"
        if name == "path_ptr":
            return "*i64"
        if name == "bp_ptr":
            return "*i32"
        if name.endswith("_ptr"):
            return f"*{dt}"
        return "i32"
    return t


for dt, has_len, s in itertools.product(("fp32", "fp64"), (False, True), (16, 64)):
    for fn in (hmm._hmm_forward_kernel, hmm._hmm_posteriors_kernel, hmm._hmm_viterbi_kernel):
        compile_variant(f"{fn.fn.__name__} {dt} lengths={has_len} S={s}", fn, types(dt),
                        {"HAS_LEN": has_len, "BS": hmm.block_states(s)})

finish()
