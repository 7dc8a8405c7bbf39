"""Shared by the tests/gpu_compile/compile_*_for_sm90.py scripts: compiles one Triton kernel
variant for an H100 (sm_90) without a GPU and prints "ok  LABEL" or "FAIL LABEL reason".
Import it before anything imports triton with TRITON_INTERPRET set (it clears that variable)."""

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
_failures = []


def compile_variant(label, fn, types, constexprs):
    """fn: a @triton.jit kernel; types(name) -> its Triton type ("*fp32", "i32", ...) for each
    non-constexpr argument; constexprs: {name: value}."""
    names = fn.arg_names
    sig = {n: ("constexpr" if n in constexprs else types(n)) for n in names}
    const = {(names.index(n),): v for n, v in constexprs.items()}
    try:
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=TARGET)
        print("ok  ", label, flush=True)
    except Exception as e:  # report every failing variant, not just the first
        _failures.append(label)
        print("FAIL", label, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "", flush=True)


def finish():
    """Exit status for the script: 1 when any variant failed."""
    sys.exit(1 if _failures else 0)
