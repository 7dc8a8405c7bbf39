"""Compiles the flow Triton kernels (genengine.kernels.flows) for an H100 (sm_90) without a GPU:
the spline forward / inverse / backward at the benchmark's K = 8 (interior and every-knot
derivatives) and an odd K in float32, K = 8 in float64, K = 8 with bfloat16 parameters, and the
affine coupling forward / backward.
Run by tests/test_triton_gpu_compile.py; prints one line per variant, exits 1 on a failure."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import flows


def types(dt):
    def t(name):
        if name.endswith("_ptr"):
            return f"*{dt}"
        if name in ("n", "sw", "sh", "sd", "gsw", "gsh", "gsd", "rows", "D", "sx", "st", "ss"):
            return "i64"
        return dt
    return t


SPLINES = [("fp32", kk) for kk in ((8, 7), (8, 9), (5, 4))] + [("fp64", (8, 7))]
for (dt, (k, kd)), inverse in itertools.product(SPLINES, (False, True)):
    kp = flows._next_pow2(k + 1)
    meta = {"K": k, "KD": kd, "KP": kp, "INVERSE": inverse, "BLOCK": flows.BLOCK}
    compile_variant(f"rq_spline fwd {dt} K={k} KD={kd} inverse={inverse}", flows._rq_fwd_kernel, types(dt), meta)
    compile_variant(f"rq_spline bwd {dt} K={k} KD={kd} inverse={inverse}", flows._rq_bwd_kernel, types(dt),
                    {**meta, "HAS_GY": True, "HAS_GL": not inverse})

_PARAMS = ("w_ptr", "h_ptr", "d_ptr", "gw_ptr", "gh_ptr", "gd_ptr")


def bf16_params(name):  # float32 x with bfloat16 parameters (and parameter gradients)
    return "*bf16" if name in _PARAMS else types("fp32")(name)


for inverse in (False, True):
    meta = {"K": 8, "KD": 7, "KP": flows._next_pow2(9), "INVERSE": inverse, "BLOCK": flows.BLOCK}
    compile_variant(f"rq_spline fwd fp32 x, bf16 params K=8 inverse={inverse}", flows._rq_fwd_kernel, bf16_params, meta)
    compile_variant(f"rq_spline bwd fp32 x, bf16 params K=8 inverse={inverse}", flows._rq_bwd_kernel, bf16_params,
                    {**meta, "HAS_GY": True, "HAS_GL": True})

for dt, inverse in itertools.product(("fp32",), (False, True)):
    meta = {"INVERSE": inverse, "ROWS": flows.AFFINE_ROWS, "BLOCK_D": 64}
    compile_variant(f"affine_coupling fwd {dt} inverse={inverse}", flows._affine_fwd_kernel, types(dt), meta)
    compile_variant(f"affine_coupling bwd {dt} inverse={inverse}", flows._affine_bwd_kernel, types(dt),
                    {**meta, "HAS_GY": True, "HAS_GLD": True})

finish()
