"""Compiles the token-sampling Triton kernel (kernels/sampling.py) for an H100 (sm_90) without a GPU:
scalar and per-row parameters, with and without log-probabilities, for each logits dtype."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import sampling

TYPES = {"row_stride": "i64", "V": "i64", "t_s": "fp32", "k_s": "i64", "p_s": "fp32", "lmp_s": "fp32",
         "seed_lo": "i32", "seed_hi": "i32", "off_lo": "i32", "off_hi": "i32", "tok_ptr": "*i64", "lp_ptr": "*fp32",
         "t_ptr": "*fp32", "k_ptr": "*i64", "p_ptr": "*fp32", "lmp_ptr": "*fp32"}

for dt, per_row, lp in itertools.product(("fp32", "bf16", "fp16"), (False, True), (False, True)):
    flags = {"T_PTR": per_row, "K_PTR": per_row, "P_PTR": per_row, "LMP_PTR": per_row, "WRITE_LP": lp,
             "BLOCK": sampling.SAMPLE_BLOCK}
    compile_variant(f"sample_tokens {dt} per_row={per_row} logprobs={lp}", sampling._sample_kernel,
                    lambda n, dt=dt: TYPES.get(n, f"*{dt}"), flags)

finish()
