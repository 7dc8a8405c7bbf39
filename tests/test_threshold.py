"""Dynamic thresholding and the device-resident noise key of the fused sampler steps.

The per-sample thresholds (a radix selection, no sort) against torch.quantile; every step with
`dynamic_threshold=(ratio, max_value)` against the float64 textbook formulas; `noise_key` against the
generator / explicit (seed, offset) it stands for; bad input; autograd; GPU (pytest -m gpu)."""

import math

import pytest
import torch
from conftest import CPU_BACKENDS, GPU_BACKENDS

import genengine as ge
from genengine.ops import diffusion as D
from genengine.reference import diffusion as R
from genengine.reference import rng as ref_rng

TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float64: 1e-12}


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _scaled(shape, gen, scales, dtype=torch.float32, device="cpu"):
    """randn with a different scale per sample, so the samples' thresholds differ."""
    t = torch.randn(shape, generator=gen)
    s = torch.tensor(scales[: shape[0]] + [1.0] * max(0, shape[0] - len(scales)))
    return (t * s.reshape((-1,) + (1,) * (len(shape) - 1))).to(dtype).to(device)


def _x0_float32(x, e, u, w, kx, kp):
    """x0 exactly as the kernels compute it: float32, one rounding per operation, no FMA."""
    x, e = x.float(), e.float()
    p = e
    if u is not None:
        u = u.float()
        wt = w.float().reshape((-1,) + (1,) * (x.dim() - 1)) if isinstance(w, torch.Tensor) else torch.tensor(w)
        p = u + wt * (e - u)
    return torch.tensor(kx) * x + torch.tensor(kp) * p


# ----------------------------------------------------------------------------------------------
# the thresholds themselves


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_thresholds_equal_torch_quantile(backend, gen):
    """The selected order statistics are the float32 x0's own values: exact up to the float32 lerp."""
    cases = [  # (shape, ratio, max_value): rank integer and not, ratio 1, s clamped to 1 and to max_value
        ((3, 5, 7, 9), 0.995, 4.0),
        ((3, 5, 7, 9), 0.5, 4.0),      # 0.5 * 314 = 157: an integer rank
        ((1, 2, 31, 3), 0.9, 50.0),
        ((4, 33), 1.0, 2.5),
        ((2, 1), 0.7, 3.0),            # one element per sample
        ((5, 3, 17), 0.25, 1.0),       # max_value 1: s == 1 everywhere
    ]
    if backend != "triton":
        cases.append(((2, 3, 70001), 0.995, 9.0))  # several chunks / blocks per sample
    dtypes = [torch.float32, torch.bfloat16, torch.float16] if backend == "cpp" else [torch.float32]
    for shape, ratio, max_value in cases:
        for dtype in dtypes:
            for guided in (False, True):
                x = _scaled(shape, gen, [0.1, 3.0, 40.0, 1.5, 0.7], dtype)
                e = torch.randn(shape, generator=gen).to(dtype)
                u = torch.randn(shape, generator=gen).to(dtype) if guided else None
                w = torch.rand(shape[0], generator=gen) * 6 if guided and shape[0] > 1 else 2.5
                kx, kp = 1.7, -0.45
                step = D._Step(kx, kp, 0.0, 0.0, 1.0, thresh=(ratio, max_value))
                wps = w.float().contiguous() if isinstance(w, torch.Tensor) else None
                s = D._thresholds(backend, step, x.contiguous(), e, u, 1.0 if wps is not None else w, wps)
                x0 = _x0_float32(x, e, u, w, kx, kp)
                want = torch.quantile(x0.double().abs().reshape(shape[0], -1), ratio, dim=1).clamp(1.0, max_value)
                assert s.shape == (shape[0],)
                err = ((s.double() - want).abs() / want).max().item()
                # torch backend: torch.quantile in float32 (rank and lerp rounded in float32)
                assert err <= (2.5e-7 if backend != "torch" else 1e-5), (shape, ratio, dtype, guided, s, want)


def test_thresholds_select_existing_values(gen):
    """With an integer rank no interpolation happens: s is one of |x0|'s values, bit for bit."""
    x = _scaled((3, 4, 9, 7), gen, [5.0, 20.0, 60.0])  # 252 elements: 0.75 * 251 is not an integer...
    x = x[:, :, :, :6].contiguous()                      # ... 216 elements: 0.6 * 215 = 129
    e = torch.randn_like(x)
    step = D._Step(1.0, 0.0, 0.0, 0.0, 1.0, thresh=(0.6, 1e6))
    for backend in CPU_BACKENDS:
        s = D._thresholds(backend, step, x, e, None, 1.0, None)
        want = torch.quantile(x.abs().reshape(3, -1).double(), 0.6, dim=1)
        assert torch.equal(s.double(), want), backend
        assert all(bool((x[b].abs() == s[b]).any()) for b in range(3)), backend


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_in_a_sample_spreads_to_that_sample_only(backend, gen):
    x = _scaled((3, 2, 5, 5), gen, [1.0, 8.0, 3.0])
    e = torch.randn_like(x)
    x[1, 1, 2, 3] = float("nan")
    out = ge.ops.ddim_step(x, e, 0.3, 0.5, dynamic_threshold=(0.9, 4.0), backend=backend)
    assert torch.isnan(out[1]).all()
    assert not torch.isnan(out[0]).any() and not torch.isnan(out[2]).any()


# ----------------------------------------------------------------------------------------------
# every step with dynamic thresholding against the float64 textbook formulas

CASES = [
    ("ddpm_step", dict(alpha_bar_t=0.31, alpha_bar_prev=0.52)),
    ("ddpm_step", dict(alpha_bar_t=0.2, alpha_bar_prev=0.35, prediction="v", variance_type="fixed_large")),
    ("ddim_step", dict(alpha_bar_t=0.13, alpha_bar_prev=0.41)),
    ("ddim_step", dict(alpha_bar_t=0.13, alpha_bar_prev=0.41, eta=0.7, use_clipped_model_output=True)),
    ("ddim_step", dict(alpha_bar_t=0.5, alpha_bar_prev=0.8, prediction="x0")),
    ("euler_step", dict(sigma=7.3, sigma_next=4.1)),
    ("euler_step", dict(sigma=2.3, sigma_next=1.0, prediction="v")),
    ("euler_ancestral_step", dict(sigma=7.3, sigma_next=4.1, prediction="x0")),
    ("dpmpp_2m_step", dict(sigma=5.0, sigma_next=3.2)),
    ("dpmpp_2m_step", dict(sigma=5.0, sigma_next=3.2, sigma_prev=8.0, prediction="v")),
]
THRESHOLDS = [(0.995, 2.5), (0.5, 1.5), (1.0, 4.0), (0.8, 1.0)]


def _stochastic(op, kw):
    return op in ("ddpm_step", "euler_ancestral_step") or kw.get("eta", 0) > 0


def _split(op, kw):
    args = dict(kw)
    if op in ("ddpm_step", "ddim_step"):
        return (args.pop("alpha_bar_t"), args.pop("alpha_bar_prev")), args
    return (args.pop("sigma"), args.pop("sigma_next")), args


def _check(op, kw, threshold, backend, dtype, shape, gen, guided, device="cpu"):
    pos, args = _split(op, kw)
    scales = [0.05, 2.0, 30.0, 0.5, 6.0]  # s_b clamps to 1, lands inside, clamps to max_value
    x = _scaled(shape, gen, scales, dtype, device)
    e = _scaled(shape, gen, scales, dtype, device)
    t = {"x": x, "model_out": e}
    w = 1.0
    if guided:
        t["uncond"] = torch.randn(shape, generator=gen).to(dtype).to(device)
        w = (torch.rand(shape[0], generator=gen) * 5).to(device) if shape[0] > 1 else 3.5
    if "sigma_prev" in args:
        t["prev_x0"] = torch.randn(shape, generator=gen).to(dtype).to(device)
    gseed = int(torch.randint(0, 2**31, (), generator=gen))
    extra = {"generator": torch.Generator().manual_seed(gseed)} if _stochastic(op, kw) else {}
    kwargs = {k: v for k, v in t.items() if k not in ("x", "model_out")}
    if guided:
        kwargs["guidance_scale"] = w
    got = getattr(ge.ops, op)(x, e, *pos, dynamic_threshold=threshold, backend=backend, **kwargs, **args, **extra)
    got = got if isinstance(got, tuple) else (got,)
    d = {k: v.double().cpu() for k, v in t.items()}
    rkw = {k: v for k, v in d.items() if k not in ("x", "model_out")}
    if "prev_x0" in rkw:
        rkw["prev_x0"] = rkw.pop("prev_x0")
    if guided:
        rkw["guidance_scale"] = w.double().cpu() if isinstance(w, torch.Tensor) else w
    if _stochastic(op, kw):
        seed, offset = ge.ops.draw_key(torch.Generator().manual_seed(gseed))
        n = math.prod(shape)
        rkw["noise"] = ref_rng.normals_from_words(ref_rng.philox_words_u32(n + (n & 1), seed, offset))[:n].reshape(shape)
    want = getattr(R, op)(d["x"], d["model_out"], *pos, dynamic_threshold=threshold, **rkw, **args)
    want = want if isinstance(want, tuple) else (want,)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype and a.shape == b.shape
        err = ((a.double().cpu() - b).abs() / (1 + b.abs())).max().item()
        assert err <= TOL[dtype], f"{op} {kw} {threshold} out {i} [{backend} {dtype} {shape} guided={guided}]: {err:.3g}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_steps_with_dynamic_threshold_match_float64_reference(op, kw, backend, gen):
    if backend == "triton":
        shapes, dtypes = [(3, 2, 5, 7), (1, 3, 11)], [torch.float32]
    else:
        shapes, dtypes = [(3, 5, 7, 9), (1, 4, 13, 17), (5, 2, 37), (2, 3, 5, 7, 3)], [torch.float32, torch.bfloat16,
                                                                                        torch.float16]
    for i, shape in enumerate(shapes):
        for j, dtype in enumerate(dtypes):
            threshold = THRESHOLDS[(i + j) % len(THRESHOLDS)]
            _check(op, kw, threshold, backend, dtype, shape, gen, guided=(i + j) % 2 == 0)


def test_torch_backend_float64_with_dynamic_threshold(gen):
    for op, kw in CASES:
        _check(op, kw, (0.9, 3.0), "torch", torch.float64, (3, 4, 7), gen, guided=True)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_backends_agree_with_torch(backend, gen):
    x = _scaled((3, 4, 9, 11), gen, [0.3, 3.0, 50.0])
    e, u = torch.randn_like(x), torch.randn_like(x)
    kw = dict(uncond=u, guidance_scale=4.0, dynamic_threshold=(0.97, 6.0))
    a = ge.ops.dpmpp_2m_step(x, e, 3.0, 2.0, backend=backend, **kw)
    b = ge.ops.dpmpp_2m_step(x, e, 3.0, 2.0, backend="torch", **kw)
    for p, q in zip(a, b):
        assert (p - q).abs().max().item() <= 2e-5 * (1 + q.abs().max().item())


def test_threshold_changes_the_result(gen):
    """Guard against the flag being ignored: thresholded and plain x0 differ where |x0| is large."""
    x = _scaled((2, 3, 8, 8), gen, [10.0, 10.0])
    e = torch.randn_like(x)
    plain = ge.ops.dpmpp_2m_step(x, e, 1.0, 0.5, backend="cpp")[1]
    thr = ge.ops.dpmpp_2m_step(x, e, 1.0, 0.5, dynamic_threshold=(0.9, 20.0), backend="cpp")[1]
    assert thr.abs().max().item() <= 1.0 + 1e-6 and plain.abs().max().item() > 5


def test_dynamic_threshold_equals_diffusers_threshold_sample(gen):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.97, sample_max_value=3.0)
    x0 = _scaled((3, 4, 6, 6), gen, [0.5, 3.0, 30.0])
    want = sched._threshold_sample(x0.clone())
    got = ge.ops.dpmpp_2m_step(x0, x0, 1.0, 0.0, prediction="x0", dynamic_threshold=(0.97, 3.0), backend="cpp")[1]
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# noise_key


def _launch_with(backend, x, e, seed, offset):
    """A DDPM step launched with an explicit (seed, offset) (what a generator would hand over)."""
    return D._launch(backend, _noisy_step(), x, e, None, None, 1.0, None, seed, offset, None)[0]


def _noisy_step():
    """Exactly these coefficients (the registered op's form, no folding)."""
    return D._Step.from_coefs([1.0, -0.5, 0.9, 0.0, 0.3, 0.0, 0.4], (False, 0.0, 0.0), False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_noise_key_equals_explicit_seed_and_offset(backend, gen):
    x = torch.randn(2, 3, 7, 5, generator=gen)
    e = torch.randn_like(x)
    step = _noisy_step()
    for seed, offset in ((123, 45), (2**64 - 7, 2**63 + 11), (0, 2**62)):
        key = torch.tensor([_signed(seed), _signed(offset)], dtype=torch.int64)
        a = D._launch(backend, step, x, e, None, None, 1.0, None, 0, 0, None, key=key)[0]
        b = _launch_with(backend, x, e, seed, offset)
        assert torch.equal(a, b), (backend, seed, offset)
        c = _launch_with(backend, x, e, seed, offset + 1)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op,args", [("ddpm_step", (0.3, 0.5)), ("ddim_step", (0.3, 0.5)),
                                     ("euler_ancestral_step", (3.0, 2.0))])
def test_noise_key_equals_generator(op, args, backend, gen):
    x = torch.randn(3, 2, 5, 7, generator=gen)
    e, u = torch.randn_like(x), torch.randn_like(x)
    extra = dict(eta=1.0) if op == "ddim_step" else {}
    key_table = torch.tensor([[0, 0], [0, 0], [_signed(s) for s in ge.ops.draw_key(torch.Generator().manual_seed(9))]])
    fn = getattr(ge.ops, op)
    want = fn(x, e, *args, uncond=u, guidance_scale=2.0, generator=torch.Generator().manual_seed(9), backend=backend,
              **extra)
    got = fn(x, e, *args, uncond=u, guidance_scale=2.0, noise_key=key_table[2], backend=backend, **extra)
    assert key_table[2].storage_offset() == 4 and torch.equal(got, want)
    col = key_table.t().contiguous().t()[2]  # a strided view: accepted (copied)
    assert torch.equal(fn(x, e, *args, uncond=u, guidance_scale=2.0, noise_key=col, backend=backend, **extra), want)


def test_noise_key_through_the_registered_op(gen):
    """Autograd and torch.compile go through genengine::sampler_step: same key, same noise."""
    x = torch.randn(2, 3, 5, 5, generator=gen)
    e = torch.randn_like(x)
    key = torch.tensor([77, -3])
    eager = ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=key, dynamic_threshold=(0.9, 2.0), backend="cpp")
    xg = x.clone().requires_grad_()
    traced = ge.ops.ddpm_step(xg, e, 0.3, 0.5, noise_key=key, dynamic_threshold=(0.9, 2.0), backend="cpp")
    assert torch.equal(traced.detach(), eager)
    out, _ = torch.ops.genengine.sampler_step(x, e, None, None, None, 1.0, [1.0, -0.5, 0.9, 0.0, 0.3, 0.0, 0.4],
                                              False, 0.0, 0.0, False, 0, 0, "cpp", None, key)
    assert torch.equal(out, _launch_with("cpp", x, e, 77, 2**64 - 3))


def test_torch_compile_with_threshold_and_key(gen):
    torch._inductor.config.compile_threads = 1
    x = torch.randn(2, 4, 5, 7, generator=gen) * 4
    e = torch.randn_like(x)
    key = torch.tensor([5, 6])

    def f(x, e, key):
        return ge.ops.ddim_step(x, e, 0.3, 0.6, eta=1.0, noise_key=key, dynamic_threshold=(0.95, 3.0), backend="cpp")

    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x, e, key), f(x, e, key))
    key2 = torch.tensor([5, 7])
    assert torch.equal(compiled(x, e, key2), f(x, e, key2))  # the key is data, read at run time


# ----------------------------------------------------------------------------------------------
# autograd


def test_gradcheck_through_the_threshold():
    g = torch.Generator().manual_seed(1)
    shape = (2, 3, 4)  # 12 elements: rank 0.55 * 11 = 6.05 -> both order statistics strictly inside
    mk = lambda s: (torch.randn(shape, generator=g, dtype=torch.float64) * s).requires_grad_()  # noqa: E731
    x, c, u = mk(3.0), mk(1.0), mk(1.0)

    def f(x, c, u):
        return ge.ops.dpmpp_2m_step(x, c, 3.0, 2.0, uncond=u, guidance_scale=2.0, dynamic_threshold=(0.55, 50.0),
                                    backend="torch")

    assert torch.autograd.gradcheck(f, (x, c, u))


def test_cpp_gradients_match_torch_with_threshold(gen):
    x = _scaled((2, 3, 5, 7), gen, [4.0, 0.5])
    e = torch.randn_like(x)
    grads = []
    for backend in ("cpp", "torch"):
        xl, el = x.clone().requires_grad_(), e.clone().requires_grad_()
        out = ge.ops.ddim_step(xl, el, 0.3, 0.5, dynamic_threshold=(0.9, 3.0), backend=backend)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append((xl.grad, el.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# bad input


def _good():
    x = torch.randn(2, 3, 4, 4)
    return x, torch.randn_like(x)


BAD = [
    ("clip_x0, dynamic_threshold", lambda x, e: ge.ops.ddim_step(x, e, 0.3, 0.5, clip_x0=1.0, dynamic_threshold=(0.9, 2.0))),
    ("dynamic_threshold", lambda x, e: ge.ops.ddim_step(x, e, 0.3, 0.5, dynamic_threshold=0.9)),
    ("dynamic_threshold", lambda x, e: ge.ops.ddim_step(x, e, 0.3, 0.5, dynamic_threshold=(0.0, 2.0))),
    ("dynamic_threshold", lambda x, e: ge.ops.ddim_step(x, e, 0.3, 0.5, dynamic_threshold=(1.5, 2.0))),
    ("dynamic_threshold", lambda x, e: ge.ops.euler_step(x, e, 2.0, 1.0, dynamic_threshold=(0.9, 0.5))),
    ("dynamic_threshold", lambda x, e: ge.ops.euler_step(x, e, 2.0, 1.0, dynamic_threshold=(0.9, float("nan")))),
    ("dynamic_threshold", lambda x, e: ge.ops.euler_step(x, e, 2.0, 1.0, dynamic_threshold=(0.9, 2.0, 3.0))),
    ("noise_key, generator", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=torch.tensor([1, 2]),
                                                           generator=torch.Generator())),
    ("noise_key", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=torch.tensor([1, 2], dtype=torch.int32))),
    ("noise_key", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=torch.tensor([1, 2, 3]))),
    ("noise_key", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=torch.tensor([[1, 2]]))),
    ("noise_key", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=(1, 2))),
    ("noise_key", lambda x, e: ge.ops.ddpm_step(x, e, 0.3, 0.5, noise_key=torch.tensor([1, 2], device="meta"))),
    ("noise_key", lambda x, e: ge.ops.euler_step(x, e, 2.0, 1.0, noise_key=torch.tensor([1.0, 2.0]))),
]


@pytest.mark.parametrize("name,call", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_naming_the_argument(name, call):
    x, e = _good()
    with pytest.raises((ValueError, TypeError)) as info:
        call(x, e)
    assert name in str(info.value), str(info.value)


# ----------------------------------------------------------------------------------------------
# GPU (pytest -m gpu on a CUDA machine)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_thresholds_equal_torch_quantile(backend, gen):
    for shape, ratio in (((3, 5, 7, 9), 0.995), ((1, 4, 128, 128), 0.995), ((16, 4, 64, 64), 0.5),
                         ((2, 1), 0.3), ((70000, 3), 1.0)):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = _scaled(shape, gen, [0.1, 3.0, 40.0], dtype, "cuda")
            e = torch.randn(shape, generator=gen).to(dtype).cuda()
            u = torch.randn(shape, generator=gen).to(dtype).cuda()
            step = D._Step(1.3, -0.6, 0.0, 0.0, 1.0, thresh=(ratio, 5.0))
            s = D._thresholds(backend, step, x, e, u, 2.0, None)
            x0 = _x0_float32(x.cpu(), e.cpu(), u.cpu(), 2.0, 1.3, -0.6)
            want = torch.quantile(x0.double().abs().reshape(shape[0], -1), ratio, dim=1).clamp(1.0, 5.0)
            # nvcc / Triton may contract x0's multiply-adds: one float32 ulp of x0
            err = ((s.double().cpu() - want).abs() / want).max().item()
            assert err <= 3e-7, (backend, shape, dtype, err)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("op,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_gpu_steps_with_dynamic_threshold(op, kw, backend, gen):
    for i, shape in enumerate([(3, 5, 7, 9), (1, 4, 13, 17), (4, 4, 64, 64)]):
        for j, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16]):
            _check(op, kw, THRESHOLDS[(i + j) % len(THRESHOLDS)], backend, dtype, shape, gen, guided=(i + j) % 2 == 0,
                   device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_noise_key_equals_explicit_key(backend, gen):
    x = torch.randn(2, 4, 33, 17, generator=gen).cuda()
    e = torch.randn_like(x)
    for seed, offset in ((123, 45), (2**64 - 7, 2**63 + 11)):
        key = torch.tensor([_signed(seed), _signed(offset)], device="cuda")
        step = _noisy_step()
        a = D._launch(backend, step, x, e, None, None, 1.0, None, 0, 0, None, key=key)[0]
        assert torch.equal(a, _launch_with(backend, x, e, seed, offset))
        b = _launch_with("cpp", x.cpu(), e.cpu(), seed, offset)
        assert (a.cpu() - b).abs().max().item() <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_cuda_graph_replays_with_the_key_in_memory(backend, gen):
    """A captured DDIM(eta=1) step with dynamic thresholding: each replay uses the key written into the
    key table's row before it, and equals the eager step with that key."""
    x = _scaled((2, 4, 32, 32), gen, [0.5, 9.0], torch.float32, "cuda")
    e = torch.randn_like(x)
    table = torch.zeros(3, 2, dtype=torch.int64, device="cuda")
    out = torch.empty_like(x)
    kw = dict(eta=1.0, dynamic_threshold=(0.95, 4.0), backend=backend)
    ge.ops.ddim_step(x, e, 0.3, 0.6, noise_key=table[1], out=out, **kw)  # warm-up (compiles kernels)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ge.ops.ddim_step(x, e, 0.3, 0.6, noise_key=table[1], out=out, **kw)
    for seed, offset in ((1, 2), (99, -5)):
        table[1] = torch.tensor([seed, offset], device="cuda")
        graph.replay()
        want = ge.ops.ddim_step(x, e, 0.3, 0.6, noise_key=torch.tensor([seed, offset], device="cuda"), **kw)
        assert torch.equal(out, want)
