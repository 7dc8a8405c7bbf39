"""The fused sampler steps: every backend against the float64 textbook formulas, noise statistics,
determinism, layouts (strided, stacked guidance, per-sample guidance, in place) and bad input."""

import math

import pytest
import torch
from conftest import CPU_BACKENDS, GPU_BACKENDS

import genengine as ge
from genengine.reference import diffusion as R
from genengine.reference import rng as ref_rng

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# tolerance on |out - ref| <= TOL * (1 + |ref|), the reference computed in float64 from the same
# (already rounded) inputs; the half types are dominated by rounding the output itself
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float64: 1e-12}
# odd, batched shapes of several ranks (images, video, audio, flat)
SHAPES = [(3, 5, 7, 9), (2, 3, 5, 7, 3), (5, 2, 37), (7, 1), (1, 4, 13, 17)]

# (op name, op kwargs, reference kwargs); scalars chosen inside each sampler's valid range
CASES = [
    ("ddpm_step", dict(alpha_bar_t=0.31, alpha_bar_prev=0.52), {}),
    ("ddpm_step", dict(alpha_bar_t=0.31, alpha_bar_prev=0.52, variance_type="fixed_large", prediction="v"), {}),
    ("ddpm_step", dict(alpha_bar_t=0.9, alpha_bar_prev=1.0, prediction="x0", clip_x0=1.0), {}),
    ("ddim_step", dict(alpha_bar_t=0.13, alpha_bar_prev=0.41), {}),
    ("ddim_step", dict(alpha_bar_t=0.13, alpha_bar_prev=0.41, eta=1.0, prediction="v"), {}),
    ("ddim_step", dict(alpha_bar_t=0.13, alpha_bar_prev=0.41, eta=0.5, clip_x0=(-1.5, 2.0),
                       use_clipped_model_output=True), {}),
    ("ddim_step", dict(alpha_bar_t=0.7, alpha_bar_prev=0.2, prediction="x0"), {}),  # inversion direction
    ("euler_step", dict(sigma=7.3, sigma_next=4.1), {}),
    ("euler_step", dict(sigma=2.3, sigma_next=0.0, prediction="v", clip_x0=1.0), {}),
    ("euler_ancestral_step", dict(sigma=7.3, sigma_next=4.1), {}),
    ("euler_ancestral_step", dict(sigma=1.1, sigma_next=0.6, prediction="x0"), {}),
    ("dpmpp_2m_step", dict(sigma=5.0, sigma_next=3.2), {}),
    ("dpmpp_2m_step", dict(sigma=5.0, sigma_next=3.2, sigma_prev=8.0, prediction="v"), dict(prev=True)),
    ("dpmpp_2m_step", dict(sigma=0.5, sigma_next=0.0, sigma_prev=0.9, clip_x0=1.0), dict(prev=True)),
]
STOCHASTIC = {"ddpm_step", "euler_ancestral_step"}


def _is_stochastic(op, kw):
    return op in STOCHASTIC or (op == "ddim_step" and kw.get("eta", 0) > 0)


def _inputs(shape, dtype, gen, device="cpu", guided=True, prev=False):
    mk = lambda: torch.randn(shape, generator=gen).to(dtype).to(device)  # noqa: E731
    t = dict(x=mk() * 3, model_out=mk())
    if guided:
        t["uncond"] = mk()
    if prev:
        t["prev_x0"] = mk()
    return t


def _call_args(op, kw, tensors, guidance):
    """(positional scalars, keyword arguments) of `op` for a CASES entry and its input tensors."""
    args = dict(kw)
    if op in ("ddpm_step", "ddim_step"):
        pos = (args.pop("alpha_bar_t"), args.pop("alpha_bar_prev"))
    else:
        pos = (args.pop("sigma"), args.pop("sigma_next"))
    if "sigma_prev" in args and "prev_x0" not in tensors:
        args.pop("sigma_prev")
    if "uncond" in tensors:
        args["uncond"] = tensors["uncond"]
        args["guidance_scale"] = guidance
    if "prev_x0" in tensors:
        args["prev_x0"] = tensors["prev_x0"]
    return pos, args


def _run_op(op, tensors, kw, backend, generator=None, guidance=3.5, **extra):
    pos, args = _call_args(op, kw, tensors, guidance)
    if _is_stochastic(op, kw):
        args["generator"] = generator
    res = getattr(ge.ops, op)(tensors["x"], tensors["model_out"], *pos, backend=backend, **args, **extra)
    return res if isinstance(res, tuple) else (res,)


def _reference(op, tensors, kw, noise=None, guidance=3.5):
    d = {k: v.double().cpu() for k, v in tensors.items()}
    pos, args = _call_args(op, kw, d, guidance)
    if _is_stochastic(op, kw):
        args["noise"] = noise
    res = getattr(R, op)(d["x"], d["model_out"], *pos, **args)
    return res if isinstance(res, tuple) else (res,)


def _noise_for(generator_seed, shape):
    """The normals a stochastic op draws from a generator seeded with `generator_seed`."""
    seed, offset = ge.ops.draw_key(torch.Generator().manual_seed(generator_seed))
    n = math.prod(shape)
    return ref_rng.normals_from_words(ref_rng.philox_words_u32(n + (n & 1), seed, offset))[:n].reshape(shape)


def _assert_close(got, want, dtype, what):
    got, want = got.double().cpu(), want.double()
    assert got.shape == want.shape, what
    assert not torch.isnan(got).any(), f"{what}: NaN in output"
    err = ((got - want).abs() / (1 + want.abs())).max().item()
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:.3g}"


def _check_case(op, kw, extra, backend, dtype, shape, gen, device="cpu"):
    prev = extra.get("prev", False)
    tensors = _inputs(shape, dtype, gen, device=device, guided=True, prev=prev)
    gseed = int(torch.randint(0, 2**31, (), generator=gen))
    outs = _run_op(op, tensors, kw, backend, generator=torch.Generator().manual_seed(gseed))
    noise = _noise_for(gseed, shape) if _is_stochastic(op, kw) else None
    wants = _reference(op, tensors, kw, noise=noise)
    for i, (got, want) in enumerate(zip(outs, wants)):
        assert got.dtype == dtype and got.device.type == torch.device(device).type
        _assert_close(got, want, dtype, f"{op} {kw} output {i} [{backend}, {dtype}, {shape}]")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op,kw,extra", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_float64_reference(op, kw, extra, backend, gen):
    dtypes = DTYPES if backend != "triton" else [torch.float32, torch.bfloat16]
    shapes = SHAPES if backend != "triton" else SHAPES[:2]  # the interpreter is slow
    for dtype in dtypes:
        for shape in shapes:
            _check_case(op, kw, extra, backend, dtype, shape, gen)


@pytest.mark.parametrize("op,kw,extra", CASES[:6:2], ids=["ddpm", "ddim-eta", "ddim"])
def test_triton_float16(op, kw, extra, gen):
    _check_case(op, kw, extra, "triton", torch.float16, (3, 5, 7), gen)


def test_torch_backend_float64(gen):
    for op, kw, extra in CASES:
        _check_case(op, kw, extra, "torch", torch.float64, (3, 5, 7), gen)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_backends_agree_with_each_other(backend, gen):
    """Same generator seed: the compiled backends give the torch backend's result (noise included)."""
    for op, kw, extra in CASES:
        tensors = _inputs((2, 3, 11, 5), torch.float32, gen, prev=extra.get("prev", False))
        a = _run_op(op, tensors, kw, backend, generator=torch.Generator().manual_seed(5))
        b = _run_op(op, tensors, kw, "torch", generator=torch.Generator().manual_seed(5))
        for u, v in zip(a, b):
            assert (u - v).abs().max().item() <= 2e-5 * (1 + v.abs().max().item()), (op, kw)


def test_large_tensor_all_chunks(gen):
    """Sizes spanning many parallel chunks with a ragged tail, float16 and per-sample guidance."""
    shape = (5, 4, 97, 131)
    for dtype in (torch.float32, torch.float16):
        t = _inputs(shape, dtype, gen)
        w = torch.rand(5, generator=gen) * 8
        gseed = 11
        got = ge.ops.ddpm_step(t["x"], t["model_out"], 0.2, 0.3, uncond=t["uncond"], guidance_scale=w,
                               generator=torch.Generator().manual_seed(gseed), backend="cpp")
        want = R.ddpm_step(t["x"].double(), t["model_out"].double(), 0.2, 0.3, uncond=t["uncond"].double(),
                           guidance_scale=w.double(), noise=_noise_for(gseed, shape))
        _assert_close(got, want, dtype, f"ddpm large {dtype}")


# ----------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_stacked_model_out_equals_separate(backend, gen):
    t = _inputs((3, 4, 5, 7), torch.float32, gen)
    stacked = torch.cat([t["uncond"], t["model_out"]])
    a = ge.ops.ddim_step(t["x"], stacked, 0.3, 0.6, guidance_scale=7.5, backend=backend)
    b = ge.ops.ddim_step(t["x"], t["model_out"], 0.3, 0.6, uncond=t["uncond"], guidance_scale=7.5, backend=backend)
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_sample_guidance(backend, gen):
    t = _inputs((4, 3, 5, 5), torch.float32, gen)
    w = torch.tensor([1.0, 2.5, 7.5, -1.0])
    got = ge.ops.euler_step(t["x"], t["model_out"], 3.0, 2.0, uncond=t["uncond"], guidance_scale=w.reshape(4, 1, 1, 1),
                            backend=backend)
    for i in range(4):
        one = ge.ops.euler_step(t["x"][i:i + 1], t["model_out"][i:i + 1], 3.0, 2.0, uncond=t["uncond"][i:i + 1],
                                guidance_scale=float(w[i]), backend=backend)
        assert torch.allclose(got[i:i + 1], one, rtol=1e-6, atol=1e-6)
    # a 0-d / one-element tensor is the same weight for every sample
    a = ge.ops.euler_step(t["x"], t["model_out"], 3.0, 2.0, uncond=t["uncond"], guidance_scale=torch.tensor(2.5),
                          backend=backend)
    b = ge.ops.euler_step(t["x"], t["model_out"], 3.0, 2.0, uncond=t["uncond"], guidance_scale=2.5, backend=backend)
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_strided_inputs(backend, gen):
    base = torch.randn(3, 7, 6, 5, generator=gen)
    x = base.transpose(1, 3)  # non-contiguous
    e = torch.randn(3, 5, 6, 7, generator=gen)[:, :, :, :]
    u = torch.randn(3, 5, 12, 7, generator=gen)[:, :, ::2, :]  # strided view
    got = ge.ops.ddim_step(x, e, 0.3, 0.6, uncond=u, guidance_scale=2.0, backend=backend)
    want = ge.ops.ddim_step(x.contiguous(), e.contiguous(), 0.3, 0.6, uncond=u.contiguous(), guidance_scale=2.0,
                            backend=backend)
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_in_place_and_out(backend, gen):
    t = _inputs((2, 3, 9, 7), torch.float32, gen)
    want = ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 4.0, 2.0, uncond=t["uncond"], guidance_scale=2.0,
                                backend=backend)[0]
    x = t["x"].clone()
    res, _ = ge.ops.dpmpp_2m_step(x, t["model_out"], 4.0, 2.0, uncond=t["uncond"], guidance_scale=2.0, out=x,
                                  backend=backend)
    assert res.data_ptr() == x.data_ptr() and torch.equal(x, want)
    with pytest.raises(ValueError, match="out"):
        ge.ops.euler_step(t["x"], t["model_out"], 4.0, 2.0, out=t["model_out"], backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_x0_out(backend, gen):
    t = _inputs((2, 3, 9, 7), torch.float32, gen, prev=True)
    want, want_x0 = ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 4.0, 2.0, prev_x0=t["prev_x0"], sigma_prev=5.0,
                                         backend=backend)
    out, x0_buf = torch.empty_like(t["x"]), torch.empty_like(t["x"])
    res, x0 = ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 4.0, 2.0, prev_x0=t["prev_x0"], sigma_prev=5.0, out=out,
                                   x0_out=x0_buf, backend=backend)
    assert res is out and x0 is x0_buf and torch.equal(out, want) and torch.equal(x0_buf, want_x0)
    with pytest.raises(ValueError, match="x0_out"):
        ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 4.0, 2.0, prev_x0=t["prev_x0"], sigma_prev=5.0, out=out,
                             x0_out=t["prev_x0"], backend=backend)
    with pytest.raises(ValueError, match="x0_out"):
        ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 4.0, 2.0, out=out, x0_out=out, backend=backend)


def test_empty_batch():
    x = torch.empty(0, 4, 8, 8)
    assert ge.ops.euler_step(x, x.clone(), 2.0, 1.0, backend="cpp").shape == x.shape


# ----------------------------------------------------------------------------------------------
# noise: statistics, determinism, independence


def _noise_of(op_kwargs, shape, backend, generator, op="ddpm_step"):
    """Run a stochastic step whose deterministic part is zero, so the result is std * z."""
    x = torch.zeros(shape)
    return getattr(ge.ops, op)(x, torch.zeros(shape), *op_kwargs, generator=generator, backend=backend)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_noise_statistics(backend, gen):
    a_t, a_prev = 0.5, 0.6
    std = math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    shape = (4, 4, 64, 64) if backend == "cpp" else (2, 4, 32, 32)
    z = _noise_of((a_t, a_prev), shape, backend, gen).double().reshape(-1) / std
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    for lag in (1, 2, 4, shape[-1]):  # neighbours along the row and down the column
        r = float(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1])
        assert abs(r) < 5 / math.sqrt(n), (lag, r)


def test_noise_independent_across_steps_and_seeds(gen):
    shape = (2, 4, 64, 64)
    n = math.prod(shape)
    z1 = _noise_of((0.5, 0.6), shape, "cpp", gen).reshape(-1).double()
    z2 = _noise_of((0.5, 0.6), shape, "cpp", gen).reshape(-1).double()  # next step, same generator
    z3 = _noise_of((0.5, 0.6), shape, "cpp", torch.Generator().manual_seed(1)).reshape(-1).double()
    z4 = _noise_of((0.5, 0.6), shape, "cpp", torch.Generator().manual_seed(2)).reshape(-1).double()
    for a, b in ((z1, z2), (z3, z4), (z1, z3)):
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert abs(r) < 5 / math.sqrt(n), r


@pytest.mark.parametrize("op,args", [("ddpm_step", (0.5, 0.6)), ("euler_ancestral_step", (3.0, 2.0))])
def test_determinism(op, args):
    shape = (3, 4, 33, 17)
    a = _noise_of(args, shape, "cpp", torch.Generator().manual_seed(123), op=op)
    b = _noise_of(args, shape, "cpp", torch.Generator().manual_seed(123), op=op)
    assert torch.equal(a, b)
    # independent of the thread count
    from genengine import _C

    threads = _C.get_num_threads()
    try:
        _C.set_num_threads(1)
        c = _noise_of(args, shape, "cpp", torch.Generator().manual_seed(123), op=op)
    finally:
        _C.set_num_threads(threads)
    assert torch.equal(a, c)
    # the default generator follows torch.manual_seed
    torch.manual_seed(9)
    d = _noise_of(args, shape, "cpp", None, op=op)
    torch.manual_seed(9)
    e = _noise_of(args, shape, "cpp", None, op=op)
    assert torch.equal(d, e) and not torch.equal(a, d)


def test_triton_noise_equals_cpp():
    shape = (2, 3, 7, 5)
    a = _noise_of((0.5, 0.6), shape, "cpp", torch.Generator().manual_seed(77))
    b = _noise_of((0.5, 0.6), shape, "triton", torch.Generator().manual_seed(77))
    assert (a - b).abs().max().item() <= 1e-6


def test_final_ddpm_step_is_noise_free(gen):
    t = _inputs((2, 3, 5, 5), torch.float32, gen, guided=False)
    a = ge.ops.ddpm_step(t["x"], t["model_out"], 0.99, 1.0, generator=torch.Generator().manual_seed(1), backend="cpp")
    b = ge.ops.ddpm_step(t["x"], t["model_out"], 0.99, 1.0, generator=torch.Generator().manual_seed(2), backend="cpp")
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# bad input: a clear ValueError / TypeError naming the argument


def _good():
    x = torch.randn(2, 3, 4, 4)
    return x, torch.randn_like(x), torch.randn_like(x)


BAD = [
    ("x", lambda x, e, u: ge.ops.ddim_step(x.numpy(), e, 0.3, 0.5)),
    ("x", lambda x, e, u: ge.ops.ddim_step(x.long(), e.long(), 0.3, 0.5)),
    ("x", lambda x, e, u: ge.ops.ddim_step(torch.tensor(1.0), torch.tensor(1.0), 0.3, 0.5)),
    ("model_out", lambda x, e, u: ge.ops.ddim_step(x, e[:, :2], 0.3, 0.5)),
    ("model_out", lambda x, e, u: ge.ops.ddim_step(x, e.half(), 0.3, 0.5)),
    ("model_out", lambda x, e, u: ge.ops.ddim_step(x, e.to("meta"), 0.3, 0.5)),
    ("uncond", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u[:1], guidance_scale=2.0)),
    ("uncond", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u.double(), guidance_scale=2.0)),
    ("uncond", lambda x, e, u: ge.ops.euler_step(x, torch.cat([e, e]), 2.0, 1.0, uncond=u, guidance_scale=2.0)),
    ("guidance_scale", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u, guidance_scale=torch.ones(3))),
    ("guidance_scale", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u, guidance_scale=torch.ones(2, 3))),
    ("guidance_scale", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u, guidance_scale=float("nan"))),
    ("guidance_scale", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, guidance_scale=7.5)),
    ("guidance_scale", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, uncond=u, guidance_scale="7")),
    ("alpha_bar_t", lambda x, e, u: ge.ops.ddim_step(x, e, float("nan"), 0.5)),
    ("alpha_bar_t", lambda x, e, u: ge.ops.ddim_step(x, e, 1.0, 0.5)),
    ("alpha_bar_prev", lambda x, e, u: ge.ops.ddpm_step(x, e, 0.5, 0.3)),
    ("alpha_bar_prev", lambda x, e, u: ge.ops.ddim_step(x, e, 0.5, float("inf"))),
    ("alpha_bar_t", lambda x, e, u: ge.ops.ddim_step(x, e, torch.ones(2), 0.5)),
    ("eta", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, eta=-1.0)),
    ("eta", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, eta=5.0)),
    # ints past float's range: float() raises OverflowError, which must become a ValueError naming the argument
    ("eta", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, eta=10**400)),
    ("sigma", lambda x, e, u: ge.ops.euler_step(x, e, 10**400, 1.0)),
    ("sigma", lambda x, e, u: ge.ops.euler_step(x, e, 0.0, 1.0)),
    ("sigma", lambda x, e, u: ge.ops.euler_step(x, e, float("nan"), 1.0)),
    ("sigma_next", lambda x, e, u: ge.ops.euler_ancestral_step(x, e, 1.0, 2.0)),
    ("sigma_next", lambda x, e, u: ge.ops.euler_step(x, e, 1.0, -2.0)),
    ("sigma_prev", lambda x, e, u: ge.ops.dpmpp_2m_step(x, e, 2.0, 1.0, prev_x0=u)),
    ("sigma_prev", lambda x, e, u: ge.ops.dpmpp_2m_step(x, e, 2.0, 1.0, prev_x0=u, sigma_prev=1.5)),
    ("prev_x0", lambda x, e, u: ge.ops.dpmpp_2m_step(x, e, 2.0, 1.0, prev_x0=u[:, :1], sigma_prev=3.0)),
    ("prediction", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, prediction="noise")),
    ("clip_x0", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, clip_x0=-1.0)),
    ("clip_x0", lambda x, e, u: ge.ops.ddim_step(x, e, 0.3, 0.5, clip_x0=(1.0, -1.0))),
    ("variance_type", lambda x, e, u: ge.ops.ddpm_step(x, e, 0.3, 0.5, variance_type="learned")),
    ("generator", lambda x, e, u: ge.ops.ddpm_step(x, e, 0.3, 0.5, generator=3)),
    ("out", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, out=torch.empty(2, 3, 4, 5))),
    ("out", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, out=torch.empty(2, 3, 4, 4).transpose(2, 3))),
    ("out", lambda x, e, u: ge.ops.euler_step(x[:1], e[:1], 2.0, 1.0, out=x[1:])),
    ("backend", lambda x, e, u: ge.ops.euler_step(x, e, 2.0, 1.0, backend="numpy")),
]


@pytest.mark.parametrize("name,call", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_naming_the_argument(name, call):
    x, e, u = _good()
    with pytest.raises((ValueError, TypeError)) as info:
        call(x, e, u)
    assert name in str(info.value), str(info.value)


def test_unavailable_backend_is_a_clear_error():
    x, e, _ = _good()
    with pytest.raises(ge.BackendUnavailableError, match="cuda"):
        ge.ops.euler_step(x, e, 2.0, 1.0, backend="cuda")


def test_nan_model_output_propagates_through_clipping():
    x, e, _ = _good()
    e[0, 0, 0, 0] = float("nan")
    for backend in CPU_BACKENDS:
        out = ge.ops.ddim_step(x, e, 0.3, 0.5, clip_x0=1.0, backend=backend)
        assert torch.isnan(out[0, 0, 0, 0]) and not torch.isnan(out.flatten()[1:]).any(), backend


# clipped steps whose output reads the prediction only through the clipped x0: an inf in the model's
# output is clamped there, so the reference's output is finite everywhere
CLIPPED_X0_ONLY = [c for c in CASES if "clip_x0" in c[1]] + [
    ("ddpm_step", dict(alpha_bar_t=0.31, alpha_bar_prev=0.52, clip_x0=1.0), {}),
    ("ddpm_step", dict(alpha_bar_t=0.31, alpha_bar_prev=0.52, prediction="v", clip_x0=(-0.5, 2.0)), {}),
]


def _check_inf_prediction(op, kw, extra, backend, gen, device="cpu"):
    shape = (3, 2, 5, 7)
    tensors = _inputs(shape, torch.float32, gen, device=device, guided=True, prev=extra.get("prev", False))
    tensors["model_out"][0, 0, 0, 0] = float("inf")
    tensors["model_out"][2, 1, 4, 6] = -float("inf")
    outs = _run_op(op, tensors, kw, backend, generator=torch.Generator().manual_seed(5))
    noise = _noise_for(5, shape) if _is_stochastic(op, kw) else None
    want = _reference(op, tensors, kw, noise=noise)[0]
    assert torch.isfinite(want).all()  # the case is one the formula clamps
    _assert_close(outs[0], want, torch.float32, f"{op} {kw} with an inf prediction [{backend}]")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op,kw,extra", CLIPPED_X0_ONLY, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLIPPED_X0_ONLY)])
def test_inf_model_output_is_clamped_where_the_step_reads_only_x0(op, kw, extra, backend, gen):
    # the fused form's coefficient of the prediction is 0 here; 0 * inf must not make the output NaN
    _check_inf_prediction(op, kw, extra, backend, gen)


# ----------------------------------------------------------------------------------------------
# GPU (pytest -m gpu on a CUDA machine)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("op,kw,extra", CLIPPED_X0_ONLY, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLIPPED_X0_ONLY)])
def test_gpu_inf_model_output_is_clamped_where_the_step_reads_only_x0(op, kw, extra, backend, gen):
    _check_inf_prediction(op, kw, extra, backend, gen, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("op,kw,extra", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_gpu_matches_float64_reference(op, kw, extra, backend, gen):
    for dtype in DTYPES:
        for shape in SHAPES + [(16, 4, 128, 128)]:
            _check_case(op, kw, extra, backend, dtype, shape, gen, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_noise_equals_cpu(backend):
    shape = (2, 4, 65, 33)
    a = _noise_of((0.5, 0.6), shape, "cpp", torch.Generator().manual_seed(77))
    x = torch.zeros(shape, device="cuda")
    b = ge.ops.ddpm_step(x, x.clone(), 0.5, 0.6, generator=torch.Generator().manual_seed(77), backend=backend)
    assert (a - b.cpu()).abs().max().item() <= 1e-6


# ----------------------------------------------------------------------------------------------
# autograd (for users who differentiate through sampling, e.g. guidance or inversion training)


@pytest.mark.parametrize("clip", [None, 0.8])
def test_gradcheck_float64(clip):
    shape = (2, 3, 4)
    g = torch.Generator().manual_seed(0)
    mk = lambda: torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, c, u, p = mk(), mk(), mk(), mk()
    w = torch.tensor([2.0, 7.5], dtype=torch.float64, requires_grad=True)

    def f(x, c, u, p, w):
        out, x0 = ge.ops.dpmpp_2m_step(x, c, 3.0, 2.0, prev_x0=p, sigma_prev=4.5, uncond=u, guidance_scale=w,
                                       clip_x0=clip, backend="torch")
        return out, x0

    assert torch.autograd.gradcheck(f, (x, c, u, p, w))
    fn = lambda x, c, u: ge.ops.ddim_step(x, c, 0.3, 0.6, uncond=u, guidance_scale=3.0, clip_x0=clip,  # noqa: E731
                                          prediction="v", backend="torch")
    assert torch.autograd.gradcheck(fn, (x, c, u))


def test_cpp_gradients_match_torch(gen):
    t = _inputs((2, 3, 5, 7), torch.float32, gen)
    grads = []
    for backend in ("cpp", "torch"):
        leaves = {k: v.clone().requires_grad_() for k, v in t.items()}
        out = ge.ops.ddpm_step(leaves["x"], leaves["model_out"], 0.3, 0.5, uncond=leaves["uncond"], guidance_scale=4.0,
                               clip_x0=1.0, generator=torch.Generator().manual_seed(3), backend=backend)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append([leaves[k].grad for k in ("x", "model_out", "uncond")])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_conversions_round_like_torch(dtype):
    """Every 16-bit input value, scaled by factors that reach overflow and the subnormals: the cpp
    kernel's float32 -> half rounding (nearest even, inf, NaN) equals torch's."""
    from genengine import _C

    x = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16).view(dtype).clone()
    zero = torch.zeros_like(x)
    code = {torch.float16: 2, torch.bfloat16: 1}[dtype]
    for scale in (1.0, 1.37, 3.1e4, 7.7e-6, 2.0**-20, -0.3):
        out = torch.empty_like(x)
        # out = scale * x + 0 * cond: the raw kernel with only the x coefficient set
        _C.sampler_step(code, x.numel(), x.numel(), out.data_ptr(), 0, x.data_ptr(), zero.data_ptr(), 0, 0, 0, 1.0,
                        0.0, 0.0, scale, 0.0, 0.0, 0.0, 0.0, False, 0.0, 0.0, 0, 0)
        want = (x.float() * torch.tensor(scale, dtype=torch.float32) + 0.0).to(dtype)
        same = (out.view(torch.int16) == want.view(torch.int16)) | (torch.isnan(out) & torch.isnan(want))
        assert bool(same.all()), (scale, x[~same][:5], out[~same][:5], want[~same][:5])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dpmpp_2m_zero_size_step_returns_x_unchanged(backend, dtype, gen):
    """sigma_next == sigma (h = 0, as Karras sigmas ending at sigma_min give): the second-order update is
    the identity, so x comes back bit-exact and x0 is still this step's prediction."""
    t = _inputs((2, 3, 5, 7), dtype, gen, prev=True)
    x_next, x0 = ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 0.7, 0.7, prev_x0=t["prev_x0"], sigma_prev=1.3,
                                      uncond=t["uncond"], guidance_scale=2.5, prediction="v", backend=backend)
    assert torch.equal(x_next, t["x"])
    _, want_x0 = R.dpmpp_2m_step(t["x"], t["model_out"], 0.7, 0.0, uncond=t["uncond"], guidance_scale=2.5,
                                 prediction="v")
    _assert_close(x0, want_x0, dtype, f"x0 of a zero-size step [{backend}]")
    with pytest.raises(ValueError, match="sigma_next"):  # a step up in noise is still refused
        ge.ops.dpmpp_2m_step(t["x"], t["model_out"], 0.7, 0.8, prev_x0=t["prev_x0"], sigma_prev=1.3, backend=backend)
