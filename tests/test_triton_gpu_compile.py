"""Every Triton kernel compiles for an H100 (sm_90) on this GPU-less machine.

The CPU suite runs the Triton kernels under the interpreter, which accepts some code the GPU
compiler rejects (and checks no register or shared-memory limits); compiling each kernel variant
for sm_90 here catches that without a GPU. The compile runs in a subprocess because the
interpreter mode (TRITON_INTERPRET=1, set by conftest) changes what @triton.jit builds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="triton is part of the `test` extra")


def test_triton_kernels_compile_for_sm90():
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip(f"triton {triton.__version__} has no ahead-of-time compile API")
    script = Path(__file__).parent / "gpu_compile" / "compile_triton_for_sm90.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    report = run.stdout + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert report.count("ok  ") >= 30, report
