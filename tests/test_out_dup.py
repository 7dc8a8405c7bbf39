"""out_dup: the fused sampler step's optional second output (genengine/ops/diffusion.py LoopStepper, _run,
_launch), which a guided sampling loop points at the second half of its next model input [x; x].

Every backend must store into out_dup exactly the bits it stores into out, and out must not change
because out_dup was asked for."""

import pytest
import torch
from conftest import CPU_BACKENDS, GPU_BACKENDS

from genengine.ops import diffusion as D

# (2, 4, 48, 45): 17280 elements, more than one 16384-element chunk of the C++ kernel, and a chunk
# boundary inside the second sample (per-sample guidance and thresholds split there)
SHAPE = (2, 4, 48, 45)
ODD_SHAPE = (2, 3, 37, 29)  # numel % 8 != 0: the vector kernels' scalar tails


def _steps():
    """(name, step, uses prev_x0, draws noise)."""
    return [
        ("ddim", D.ddim_plan(0.3, 0.5), False, False),
        ("ddpm", D.ddpm_plan(0.3, 0.5), False, True),
        ("ddim_threshold", D.ddim_plan(0.3, 0.5, dynamic_threshold=(0.9, 1.5)), False, False),
        ("dpmpp_2m_x0", D.dpmpp_2m_plan(4.0, 2.0, sigma_prev=5.0), True, False),
    ]


STEP_IDS = [s[0] for s in _steps()]


def _inputs(shape, dtype, device, guided, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = shape[0]
    x = torch.randn(shape, generator=g).to(dtype=dtype, device=device)
    mshape = (2 * b,) + shape[1:] if guided else shape
    model_out = (2.5 * torch.randn(mshape, generator=g)).to(dtype=dtype, device=device)
    prev = torch.randn(shape, generator=g).to(dtype=dtype, device=device)
    return x, model_out, prev


def _step_twice(backend, guidance, step, x, model_out, prev, noisy, dup, requires_grad=False):
    """Two calls of one LoopStepper (the first through _run, the second through _launch directly),
    each into the halves of a fresh (2B, ...) buffer when dup. Returns [(out, out_dup or None, x0)]."""
    stepper = D.LoopStepper(backend, guidance)
    gen = torch.Generator().manual_seed(1234) if noisy else None
    b = x.shape[0]
    results = []
    for _ in range(2):
        mo = model_out.detach().clone().requires_grad_(True) if requires_grad else model_out
        buf = torch.full((2 * b,) + x.shape[1:], float("nan"), dtype=x.dtype, device=x.device)
        x0_buf = torch.empty_like(x) if step.want_x0 else None
        out, out_dup = (buf[:b], buf[b:]) if dup else (torch.empty_like(x), None)
        res, x0 = stepper(step, x, mo, prev=prev if step.uses_prev else None, generator=gen, out=out, x0_out=x0_buf,
                          out_dup=out_dup)
        assert res.data_ptr() == out.data_ptr()
        results.append((out.detach().clone(), None if out_dup is None else out_dup.detach().clone(),
                        None if x0 is None else x0.detach().clone()))
    return results


def _bits(t):
    """Bit patterns, so that NaNs and signed zeros compare too."""
    return t.view({torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}[t.dtype])


def _check(backend, shape, dtype, device, guided, step_case, requires_grad=False):
    _, step, _, noisy = step_case
    x, model_out, prev = _inputs(shape, dtype, device, guided)
    guidance = 3.0 if guided else None
    want = _step_twice(backend, guidance, step, x, model_out, prev, noisy, dup=False, requires_grad=requires_grad)
    got = _step_twice(backend, guidance, step, x, model_out, prev, noisy, dup=True, requires_grad=requires_grad)
    for (w_out, _, w_x0), (g_out, g_dup, g_x0) in zip(want, got):
        assert torch.equal(_bits(g_out), _bits(w_out)), "out changed because out_dup was asked for"
        assert torch.equal(_bits(g_dup), _bits(g_out)), "out_dup differs from out"
        assert not torch.isnan(g_out).any()
        if step.want_x0:
            assert torch.equal(_bits(g_x0), _bits(w_x0))
    if noisy:  # the two calls drew different noise: the check saw a real second key
        assert not torch.equal(got[0][0], got[1][0])


@pytest.mark.parametrize("step_case", _steps(), ids=STEP_IDS)
@pytest.mark.parametrize("guided", [True, False], ids=["guided", "unguided"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_out_dup_equals_out(backend, guided, step_case):
    _check(backend, SHAPE, torch.float32, "cpu", guided, step_case)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_out_dup_half_dtypes(backend, dtype):
    for case in _steps()[1:4:2]:  # ddpm (noise) and dpmpp_2m (prev, x0)
        _check(backend, ODD_SHAPE, dtype, "cpu", True, case)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_out_dup_per_sample_guidance(backend):
    x, model_out, _ = _inputs(SHAPE, torch.float32, "cpu", True)
    w = torch.tensor([2.0, 5.5])
    step = D.ddpm_plan(0.3, 0.5)
    want = _step_twice(backend, w, step, x, model_out, None, True, dup=False)
    got = _step_twice(backend, w, step, x, model_out, None, True, dup=True)
    for (w_out, _, _), (g_out, g_dup, _) in zip(want, got):
        assert torch.equal(g_out, w_out) and torch.equal(g_dup, g_out)


@pytest.mark.parametrize("step_case", _steps(), ids=STEP_IDS)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_out_dup_registered_op_path(backend, step_case):
    """requires_grad inputs take _run's registered-op (autograd) path every call."""
    _check(backend, ODD_SHAPE, torch.float32, "cpu", True, step_case, requires_grad=True)


def test_out_dup_gradient_flows_through_out():
    """Under autograd the step's result is what out_dup holds too (the buffer is the next model input)."""
    x, model_out, _ = _inputs((1, 2, 4, 4), torch.float32, "cpu", True)
    mo = model_out.clone().requires_grad_(True)
    buf = torch.empty((2, 2, 4, 4))
    D.LoopStepper("torch", 3.0)(D.ddim_plan(0.3, 0.5), x, mo, out=buf[:1], out_dup=buf[1:])
    buf.sum().backward()
    assert mo.grad is not None and mo.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_out_dup_raises_naming_it(backend):
    x, model_out, prev = _inputs(SHAPE, torch.float32, "cpu", True)
    b = x.shape[0]
    step = D.dpmpp_2m_plan(4.0, 2.0, sigma_prev=5.0)
    buf = torch.empty((2 * b,) + x.shape[1:])
    flat = buf.view(-1)

    def call(out_dup, out=buf[:b], x0_out=None, x_=x):
        D.LoopStepper(backend, 3.0)(step, x_, model_out, prev=prev, out=out, x0_out=x0_out, out_dup=out_dup)

    bad = {
        "shape": torch.empty((b + 1,) + x.shape[1:]),
        "dtype": torch.empty(x.shape, dtype=torch.float16),
        "not contiguous": torch.empty(x.shape[::-1]).permute(3, 2, 1, 0),
        "is out": buf[:b],
        "overlaps out": flat[5:5 + x.numel()].view(x.shape),
        "overlaps x": x,
        "overlaps model_out": model_out[b:],
        "overlaps prev_x0": prev,
    }
    for what, t in bad.items():
        with pytest.raises(ValueError, match="out_dup"):
            call(t)
        assert what
    x0 = torch.empty_like(x)
    with pytest.raises(ValueError, match="out_dup"):
        call(x0, x0_out=x0)
    # an in-place step (out is x) must not write out_dup over x either
    xx = x.clone()
    with pytest.raises(ValueError, match="out_dup"):
        call(xx, out=xx, x_=xx)
    with pytest.raises(TypeError, match="out_dup"):
        call(x.numpy())
    # the two halves of one buffer are fine (that is the point)
    call(buf[b:])


def test_cpp_binding_keeps_positional_calls():
    """Old positional calls of _C.sampler_step (no thresholds / noise_key / out_dup) still work."""
    from genengine import _backends

    mod = _backends.load_cpp()
    x = torch.randn(3, 5)
    c = torch.randn(3, 5)
    out, out2, dup = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    args = [0, x.numel(), 5, out.data_ptr(), 0, x.data_ptr(), c.data_ptr(), 0, 0, 0, 1.0,
            1.0, -0.5, 0.7, 0.2, 0.3, 0.0, 0.0, False, 0.0, 0.0, 0, 0]
    mod.sampler_step(*args)
    args[3] = out2.data_ptr()
    mod.sampler_step(*args, 0, 0, dup.data_ptr())
    assert torch.equal(out, out2) and torch.equal(dup, out)


@pytest.mark.gpu
@pytest.mark.parametrize("step_case", _steps(), ids=STEP_IDS)
@pytest.mark.parametrize("guided", [True, False], ids=["guided", "unguided"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_out_dup_equals_out(backend, guided, step_case):
    for shape in (SHAPE, ODD_SHAPE):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            _check(backend, shape, dtype, "cuda", guided, step_case)
    _check(backend, ODD_SHAPE, torch.float32, "cuda", True, step_case, requires_grad=True)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_out_dup_misaligned(backend):
    """An out_dup at an offset that is not 16-byte aligned takes the CUDA scalar kernel."""
    x, model_out, _ = _inputs(ODD_SHAPE, torch.float32, "cuda", True)
    step = D.ddpm_plan(0.3, 0.5)
    n = x.numel()
    store = torch.empty(2 * n + 1, device="cuda")
    out, out_dup = store[:n].view(x.shape), store[n + 1:].view(x.shape)
    want = D.LoopStepper(backend, 3.0)(step, x, model_out, generator=torch.Generator().manual_seed(5))[0]
    D.LoopStepper(backend, 3.0)(step, x, model_out, generator=torch.Generator().manual_seed(5), out=out,
                                out_dup=out_dup)
    assert torch.equal(out, want) and torch.equal(out_dup, want)
