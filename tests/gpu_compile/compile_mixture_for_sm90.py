"""Compiles the Gaussian-mixture E-step Triton kernel (genengine.kernels.mixture) for sm_90 without a
GPU: every covariance type x dtype x output mode, with and without statistics, at the tile plans of
the benchmark shapes (100,000 x 16 and the GPU bar's 4M x 64)."""

import itertools

import torch
from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import mixture as mx

STATS = ("nk_ptr", "sx_ptr", "sxx_ptr")


def types(dt):
    def t(name):
        if name in STATS:
            return "*fp64"
        if name.endswith("_ptr"):
            return f"*{dt}"
        return "i32"
    return t


for (n, d), (dt, tdt), cov, resp, stats in itertools.product(
        ((100000, 16), (4_000_000, 64)), (("fp32", torch.float32), ("fp64", torch.float64)), (0, 1, 2, 3), (0, 1, 2),
        (False, True)):
    if resp == 2 and stats:
        continue
    bn, bd, use_dot = mx.plan(n, d, tdt, cov)
    compile_variant(f"gmm_e_step {dt} D={d} cov {cov} resp {resp} stats {stats} dot {use_dot}", mx._gmm_kernel, types(dt),
                    {"COV": cov, "RESP_MODE": resp, "STATS": stats, "HAS_SHIFT": True, "BLOCK_N": bn, "BLOCK_D": bd,
                     "USE_DOT": use_dot})
finish()
