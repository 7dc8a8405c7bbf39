"""The engine as a package: build info, backend dispatch, torch.library registration, torch.compile."""

import subprocess
import sys

import pytest
import torch

import genengine as ge
from genengine import _backends


def test_info_reports_backends_and_versions(capsys):
    report = ge.info()
    printed = capsys.readouterr().out
    assert report["built"]["_C"] is True
    assert report["backends"]["cpp"]["cpu"] == "yes"
    assert report["backends"]["torch"]["cpu"] == "yes"
    assert report["versions"]["torch"] == torch.__version__
    assert "cpp" in printed and "triton" in printed and "cuda" in printed
    assert set(report["ops"]["ddim_step"]) == {"torch", "cpp", "triton", "cuda"}


def test_cli_info_json():
    out = subprocess.run([sys.executable, "-m", "genengine", "info", "--json"], capture_output=True, text=True,
                         check=True).stdout
    import json

    assert json.loads(out)["built"]["_C"] is True


def test_import_without_gpu_reports_cuda_unavailable():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the unavailable path cannot be observed")  # GPU-only skip
    reason = _backends.unavailable_reason("cuda", "cuda")
    assert reason is not None and ("CUDA" in reason or "cuda" in reason)
    if _backends.cuda_built():
        # the module is built here (nvcc present) and must import without a driver
        from genengine import _cuda

        assert _cuda.device_count() == 0


def test_auto_and_named_dispatch(monkeypatch):
    x = torch.randn(2, 3, 4, 5)
    e = torch.randn_like(x)
    assert _backends.resolve("auto", "cpu") == "cpp"
    assert _backends.resolve("auto", "cpu", dtype_ok=False) == "torch"
    ref = ge.ops.euler_step(x, e, 2.0, 1.0, backend="torch")
    for b in ("auto", "cpp", "triton", "torch"):
        assert torch.allclose(ge.ops.euler_step(x, e, 2.0, 1.0, backend=b), ref, atol=1e-6)
    # GENENGINE_BACKEND forces a backend for backend="auto" ...
    monkeypatch.setenv("GENENGINE_BACKEND", "torch")
    assert _backends.resolve("auto", "cpu") == "torch"
    # ... and a forced backend that cannot run is an error, not a silent fallback
    monkeypatch.setenv("GENENGINE_BACKEND", "cuda")
    with pytest.raises(ge.BackendUnavailableError):
        ge.ops.euler_step(x, e, 2.0, 1.0)
    monkeypatch.setenv("GENENGINE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="backend"):
        ge.ops.euler_step(x, e, 2.0, 1.0)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ge.BackendUnavailableError, match="TRITON_INTERPRET"):
        _backends.resolve("triton", "cpu")


def test_float64_runs_on_the_reference_only():
    x = torch.randn(2, 3, dtype=torch.float64)
    assert ge.ops.euler_step(x, x.clone(), 2.0, 1.0).dtype == torch.float64
    with pytest.raises(TypeError, match="cpp"):
        ge.ops.euler_step(x, x.clone(), 2.0, 1.0, backend="cpp")


def _opcheck_samples():
    x = torch.randn(2, 3, 5, 7)
    e, u, p = torch.randn_like(x), torch.randn_like(x), torch.randn_like(x)
    w = torch.tensor([1.5, 4.0])
    coefs = [1.0, -0.5, 0.3, 0.1, 0.7, -0.2, 0.0]
    noisy = [0.5, -0.5, 0.2, 0.0, 0.8, 0.0, 0.3]
    return [
        (x, e, None, None, None, 1.0, coefs, False, 0.0, 0.0, False, 0, 0, "cpp"),
        (x, e, u, p, None, 7.5, coefs, True, -1.0, 1.0, True, 0, 0, "cpp"),
        (x, e, u, None, w, 1.0, noisy, False, 0.0, 0.0, False, 5, -3, "cpp"),
        (x.bfloat16(), e.bfloat16(), None, None, None, 1.0, noisy, False, 0.0, 0.0, True, 1, 2, "cpp"),
        (x, e, u, p, w, 1.0, coefs, True, -1.0, 1.0, True, 0, 0, "torch"),
    ]


@pytest.mark.parametrize("args", _opcheck_samples())
def test_opcheck_sampler_step(args):
    torch.library.opcheck(torch.ops.genengine.sampler_step.default, args)


def test_torch_compile_fullgraph_matches_eager():
    torch._inductor.config.compile_threads = 1
    x = torch.randn(2, 4, 9, 11)
    e, u = torch.randn_like(x), torch.randn_like(x)

    def denoise(x, e, u):
        x = ge.ops.euler_step(x, e, 3.0, 2.0, uncond=u, guidance_scale=4.0, backend="cpp")
        x, x0 = ge.ops.dpmpp_2m_step(x * 1.0, e, 2.0, 1.0, backend="cpp")
        return x + 0.0 * x0

    compiled = torch.compile(denoise, fullgraph=True, backend="inductor")
    got = compiled(x, e, u)
    assert torch.allclose(got, denoise(x, e, u), rtol=1e-6, atol=1e-6)


def test_registered_op_is_visible_to_the_dispatcher():
    x = torch.randn(3, 4)
    out, x0 = torch.ops.genengine.sampler_step(x, x, None, None, None, 1.0, [1.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
                                               False, 0.0, 0.0, True, 0, 0, "cpp")
    assert torch.allclose(out, x) and torch.allclose(x0, x)


_POOL_SCRIPT = """
import torch, genengine as ge
from genengine import _C
g = torch.Generator().manual_seed(0)
x, e, u = (torch.randn(3, 4, 61, 67, generator=g) for _ in range(3))
a = ge.ops.ddpm_step(x, e, 0.3, 0.5, uncond=u, guidance_scale=3.0, generator=torch.Generator().manual_seed(1))
b = ge.ops.euler_step(x, e, 3.0, 2.0, uncond=u, guidance_scale=torch.tensor([1.0, 2.0, 3.0]))
print(_C.threading().split(" (")[0])
print(repr(torch.cat([a.flatten(), b.flatten()]).double().sum().item()))
"""


def test_both_thread_pools_give_identical_results():
    """The CPU kernels run on torch's OpenMP runtime when one is loaded, else on their own pool."""
    import os

    runs = {}
    for pool in ("", "own"):
        env = dict(os.environ, GENENGINE_THREADPOOL=pool, GENENGINE_NUM_THREADS="2")
        out = subprocess.run([sys.executable, "-c", _POOL_SCRIPT], capture_output=True, text=True, check=True,
                             env=env).stdout.split("\n")
        runs[out[0]] = out[1]
    assert "own thread pool" in runs and len(runs) == 2, runs
    assert len(set(runs.values())) == 1, runs
