"""Compiles the naive-Bayes Triton kernel (genengine.kernels.naive_bayes) for sm_90 without a GPU:
every kind (Gaussian, Bernoulli with and without the threshold, normalise-only) x mode x dtype, at
the tile plan of the benchmark shape (200,000 x 64, 10 classes) and of a wide one (100 classes)."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import naive_bayes as nb


def types(dt):
    def t(name):
        if name.endswith("_ptr"):
            return f"*{dt}"
        if name in ("N", "F", "C"):
            return "i32"
        return "fp32"  # the threshold (a Python float at run time)
    return t


for (n, f, c), dt, kind, mode in itertools.product(((200000, 64, 10), (1000, 300, 100)), ("fp32", "fp64"),
                                                   (0, 1, 2), (0, 1, 2)):
    bn, bc, bf = nb.plan(n, f, c)
    for thr in ((False, True) if kind == 1 else (False,)):
        compile_variant(f"nb_jll {dt} kind {kind} mode {mode} thr {thr} C={c}", nb._nb_kernel, types(dt),
                        {"KIND": kind, "MODE": mode, "USE_THRESHOLD": thr, "BLOCK_N": bn, "BLOCK_C": bc, "BLOCK_F": bf})
finish()
