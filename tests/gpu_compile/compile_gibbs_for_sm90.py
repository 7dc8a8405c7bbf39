"""Compiles the Gibbs-sampling Triton kernels (kernels/gibbs.py) for an H100 (sm_90) without a GPU:
the fused RBM half-step (float32 IEEE and bfloat16 tensor-core dots, Bernoulli and Gaussian units,
with and without probabilities, per-row temperatures and clamping), the Ising colour update, the
sparse Boltzmann-machine class update and the Langevin step. Run by tests/test_triton_gpu_compile.py."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import gibbs


def rbm_types(dt):
    def types(n):
        if n in ("x_ptr", "w_ptr", "out_ptr"):
            return f"*{dt}"
        if n == "mask_ptr":
            return "*u8"
        if n.endswith("_ptr"):
            return "*fp32"
        if n == "base":
            return "i64"
        if n == "beta":
            return "fp32"
        return "i32"
    return types


BM, BN, BK = 64, 64, 32
for dt, gaussian, extras in itertools.product(("fp32", "bf16"), (False, True), (False, True)):
    compile_variant(f"rbm_half {dt} {'gaussian' if gaussian else 'bernoulli'} extras={extras}", gibbs._rbm_half_kernel,
                    rbm_types(dt), {"HAS_PROB": extras, "BETA_ROWS": extras, "GAUSSIAN": gaussian, "CLAMP": extras,
                                    "IEEE": dt == "fp32", "BM": BM, "BN": BN, "BK": BK})

for per in (False, True):
    compile_variant(f"ising colour per_lattice={per}", gibbs._ising_kernel,
                    lambda n: {"s_ptr": "*i8", "thr_ptr": "*i32"}.get(n, "i32"), {"PER_LATTICE": per, "BLOCK": 1024})

BM_TYPES = {"x_ptr": "*fp32", "indptr_ptr": "*i64", "indices_ptr": "*i64", "values_ptr": "*fp32", "bias_ptr": "*fp32",
            "nodes_ptr": "*i64", "beta": "fp32"}
compile_variant("boltzmann class", gibbs._bm_kernel, lambda n: BM_TYPES.get(n, "i32"), {"BLOCK": 256})

for clamp in (False, True):
    compile_variant(f"langevin clamp={clamp}", gibbs._langevin_kernel,
                    lambda n: "*fp32" if n.endswith("_ptr") else ("i64" if n == "n" else
                                                                  ("fp32" if n in ("half", "coef", "lo", "hi") else "i32")),
                    {"CLAMP": clamp, "BLOCK": gibbs.LANGEVIN_BLOCK})

finish()
