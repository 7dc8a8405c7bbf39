"""Every Triton kernel compiles for an H100 (sm_90) on this GPU-less machine.

The CPU suite runs the Triton kernels under the interpreter, which accepts some code the GPU
compiler rejects (and checks no register or shared-memory limits); compiling each kernel variant
for sm_90 here catches that without a GPU. Each op family has a script
tests/gpu_compile/compile_NAME_for_sm90.py (built on tests/gpu_compile/aot.py); each runs in a
subprocess because the interpreter mode (TRITON_INTERPRET=1, set by conftest) changes what
@triton.jit builds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="triton is part of the `test` extra")

SCRIPTS = sorted((Path(__file__).parent / "gpu_compile").glob("compile_*_for_sm90.py"))
# the fewest variants each script must compile (a script that silently compiles nothing fails)
MIN_VARIANTS = {"diffusion": 30, "attention": 40}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name[len("compile_"):-len("_for_sm90.py")])
def test_triton_kernels_compile_for_sm90(script):
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip(f"triton {triton.__version__} has no ahead-of-time compile API")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600,
                         cwd=script.parent)
    report = run.stdout + run.stderr[-2000:]
    assert run.returncode == 0, report
    name = script.name[len("compile_"):-len("_for_sm90.py")]
    assert report.count("ok  ") >= MIN_VARIANTS.get(name, 1), report
