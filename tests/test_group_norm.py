"""Fused GroupNorm + SiLU: every backend forward and backward against float64 autograd of the
plain-PyTorch definition, memory layouts, large-mean inputs, empty inputs, torch.library / compile
integration, the nn module, and bad input."""

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_BACKENDS

import genengine as ge
from genengine.ops import group_norm as gn
from genengine.reference import group_norm as R

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# |out - ref| <= TOL * (1 + |ref|) forward (reference from the same rounded inputs, in float64); the
# half types are dominated by rounding the output itself. Gradients: <= GTOL * max(1, max |ref|).
TOL = {torch.float32: 3e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float64: 1e-12}
GTOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float64: 1e-10}

# (shape, num_groups, channels_last, has weight, has bias): odd sizes, N = 1 and N > 1, 0 to 3 spatial
# dims, 1 group, C groups and between; (1, 6, 65, 67) and (1, 8, 33, 40) split groups across threads
CASES = [
    ((1, 6, 65, 67), 2, False, True, True),
    ((1, 8, 33, 40), 1, True, True, True),
    ((3, 12, 5, 7), 6, False, True, False),
    ((3, 12, 5, 7), 4, True, False, True),
    ((2, 5, 37), 5, False, True, True),
    ((2, 6, 37), 3, True, True, True),
    ((4, 9), 3, False, False, False),
    ((2, 7, 3, 4, 5), 1, True, True, True),
    ((2, 6, 3, 4, 5), 6, False, True, True),
]
# the Triton interpreter is slow: tiny shapes only
TRITON_CASES = [
    ((1, 6, 5, 7), 2, False, True, True),
    ((2, 8, 3, 5), 4, True, True, False),
    ((2, 5, 11), 5, False, False, True),
    ((3, 6), 3, False, True, True),
    ((1, 4, 2, 3, 3), 1, True, True, True),
]


def _available(backend, device="cpu"):
    reason = ge._backends.unavailable_reason(backend, device)
    if reason:
        pytest.skip(reason)


def _channels_last(t):
    d = t.dim()
    return t.permute(0, *range(2, d), 1).contiguous().permute(0, d - 1, *range(1, d - 1))


def _inputs(shape, cl, has_w, has_b, dtype, gen, device="cpu", offset=0.0, wdtype=torch.float32):
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.7 + offset).to(dtype).to(device)
    if cl:
        x = _channels_last(x)
    c = shape[1]
    w = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5 + 1).to(wdtype).to(device) if has_w else None
    b = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5).to(wdtype).to(device) if has_b else None
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(device)
    return x, w, b, dy


def _check(backend, shape, groups, cl, has_w, has_b, dtype, gen, device="cpu", offset=0.0):
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    x, w, b, dy = _inputs(shape, cl, has_w, has_b, dtype, gen, device, offset, wdtype)
    eps = 1e-5
    # eager no-grad path
    with torch.no_grad():
        y0 = ge.ops.group_norm_silu(x, groups, w, b, eps, backend=backend)
    # autograd path (the registered op and its fused backward)
    xs, ws, bs = (t.clone().requires_grad_() if t is not None else None for t in (x, w, b))
    y = ge.ops.group_norm_silu(xs, groups, ws, bs, eps, backend=backend)
    grads = torch.autograd.grad(y, [t for t in (xs, ws, bs) if t is not None], dy)

    x64, w64, b64 = (t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b))
    ref = R.group_norm_silu(x64, groups, w64, b64, eps)
    ref_grads = torch.autograd.grad(ref, [t for t in (x64, w64, b64) if t is not None], dy.double())

    tol, gtol = TOL[dtype], GTOL[dtype]
    for out in (y0, y):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert out.stride() == x.stride(), "the output keeps x's memory layout"
        err = ((out.double() - ref.detach()).abs() / (1 + ref.detach().abs())).max().item()
        assert err <= tol, f"forward error {err:.3g} > {tol}"
    assert torch.equal(y0, y.detach()), "the eager path and the registered op agree exactly"
    # dx of a group scales as 1 / its standard deviation, and so does its rounding error: a group of
    # two nearly equal values (no spatial dims, 2 channels per group) is ill-conditioned in any
    # float32 code, torch's included (sigma 0.017 put all three backends at 2.1e-4; over 1500 seeds
    # of (3, 6) / 3 groups the error reached 2.9x GTOL, and at most 0.7x GTOL * max(1, 0.1 / sigma_min);
    # 0.2 for margin)
    groups_x = x.double().reshape(x.shape[0], groups, -1)
    sigma_min = (groups_x.var(-1, unbiased=False) + eps).sqrt().min().item() if x.numel() else 1.0
    conditioning = {"dx": max(1.0, 0.2 / sigma_min), "dweight": 1.0, "dbias": 1.0}
    for name, g, r in zip(("dx", "dweight", "dbias"), grads, ref_grads):
        assert g.shape == r.shape
        scale = max(1.0, r.abs().max().item())
        err = (g.double() - r).abs().max().item() / scale
        # parameter gradients sum over N * spatial terms: a float32 sum of that many
        assert err <= gtol * conditioning[name], f"{name} error {err:.3g} > {gtol} * {conditioning[name]:.3g}"
    assert grads[0].stride() == x.stride()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-g{c[1]}-{'cl' if c[2] else 'nc'}-w{int(c[3])}b{int(c[4])}")
@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "triton"])
def test_matches_float64_reference(backend, case, dtype, gen):
    _available(backend)
    _check(backend, *case, dtype, gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: f"{c[0]}-g{c[1]}-{'cl' if c[2] else 'nc'}")
def test_triton_matches_float64_reference(case, dtype, gen):
    _available("triton")
    _check("triton", *case, dtype, gen)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("cl", [False, True])
def test_large_mean_keeps_variance_accurate(backend, cl, gen):
    """x = 100 + randn: E[x^2] - E[x]^2 in float32 would lose ~3 digits of the variance."""
    _available(backend)
    shape, groups = (2, 8, 45, 51), 2
    x, w, b, _ = _inputs(shape, cl, True, True, torch.float32, gen, offset=100.0)
    y, mean, rstd = gn._group_norm_silu_op(x, w, b, groups, 1e-6, backend)
    m64, r64 = R.group_norm_stats(x.double(), groups, 1e-6)
    assert ((rstd.double() - r64).abs() / r64).max().item() < 2e-6
    assert ((mean.double() - m64).abs() / m64.abs()).max().item() < 1e-7
    ref = R.group_norm_silu(x.double(), groups, w.double(), b.double(), 1e-6)
    # (x - mean) loses |mean| * 2^-24 / std ~ 3e-6 to mean's float32 rounding (as any float32 kernel)
    assert ((y.double() - ref).abs() / (1 + ref.abs())).max().item() < 3e-5
    _check(backend, shape, groups, cl, True, True, torch.float32, gen, offset=100.0)


def test_torch_backend_float64_and_gradcheck(gen):
    _check("torch", (2, 6, 5, 3), 3, False, True, True, torch.float64, gen)
    _check("torch", (2, 6, 5, 3), 2, True, True, False, torch.float64, gen)
    x, w, b, _ = _inputs((2, 4, 3, 5), True, True, True, torch.float64, gen, wdtype=torch.float64)
    args = [t.clone().requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(lambda x, w, b: ge.ops.group_norm_silu(x, 2, w, b, backend="torch"), args)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_backends_agree_with_torch_functional(backend, gen):
    """Against the expression users would otherwise write, at a UNet-like shape."""
    _available(backend)
    x, w, b, _ = _inputs((2, 64, 17, 19), False, True, True, torch.float32, gen)
    y = ge.ops.group_norm_silu(x, 32, w, b, backend=backend)
    torch.testing.assert_close(y, F.silu(F.group_norm(x, 32, w, b)), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("cl", [False, True])
def test_out_is_filled_in_place(backend, cl, gen):
    _available(backend)
    x, w, b, _ = _inputs((2, 12, 5, 7), cl, True, True, torch.float32, gen)
    out = torch.full_like(x, float("nan"))
    want = ge.ops.group_norm_silu(x, 4, w, b, backend=backend)
    got = ge.ops.group_norm_silu(x, 4, w, b, out=out, backend=backend)
    assert got is out and torch.equal(out, want)
    xg = x.detach().clone().requires_grad_()  # the autograd path copies its result into out
    ge.ops.group_norm_silu(xg, 4, w, b, out=out, backend=backend)
    assert torch.equal(out, want)
    with pytest.raises(ValueError, match="out"):
        ge.ops.group_norm_silu(x, 4, w, b, out=torch.empty(2, 12, 5, 6), backend=backend)
    with pytest.raises(ValueError, match="out"):
        ge.ops.group_norm_silu(x, 4, w, b, out=x, backend=backend)
    other = torch.empty_like(x, memory_format=torch.contiguous_format if cl else torch.channels_last)
    with pytest.raises(ValueError, match="out"):
        ge.ops.group_norm_silu(x, 4, w, b, out=other, backend=backend)


def test_strided_input_is_made_contiguous(gen):
    x = torch.randn(2, 6, 9, 7, generator=gen).transpose(2, 3)  # neither contiguous nor channels-last
    w = torch.randn(6, generator=gen)
    for backend in ("torch", "cpp"):
        y = ge.ops.group_norm_silu(x, 3, w, None, backend=backend)
        assert y.is_contiguous()
        torch.testing.assert_close(y, F.silu(F.group_norm(x, 3, w, None)), atol=2e-5, rtol=2e-5)


def test_half_weight_gradients_come_back_in_its_dtype(gen):
    x, w, b, dy = _inputs((2, 6, 5, 4), False, True, True, torch.bfloat16, gen, wdtype=torch.bfloat16)
    w.requires_grad_()
    b.requires_grad_()
    y = ge.ops.group_norm_silu(x, 3, w, b, backend="cpp")
    gw, gb = torch.autograd.grad(y, (w, b), dy)
    assert gw.dtype == torch.bfloat16 and gb.dtype == torch.bfloat16
    w64, b64 = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    rw, rb = torch.autograd.grad(R.group_norm_silu(x.double(), 3, w64, b64), (w64, b64), dy.double())
    torch.testing.assert_close(gw.double(), rw, atol=0.05, rtol=0.02)
    torch.testing.assert_close(gb.double(), rb, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("shape", [(0, 6, 5, 5), (3, 6, 0, 4), (2, 6)])
def test_empty_and_flat_inputs(backend, shape, gen):
    _available(backend)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    w = torch.randn(6, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True)
    y = ge.ops.group_norm_silu(x, 3, w, b, backend=backend)
    assert y.shape == x.shape
    dy = torch.randn(shape, generator=gen)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), dy)
    if x.numel() == 0:
        assert gx.shape == x.shape and torch.equal(gw, torch.zeros(6)) and torch.equal(gb, torch.zeros(6))
    else:
        x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
        ref = R.group_norm_silu(x64, 3, w64, b64)
        torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)
        for g, r in zip((gx, gw, gb), torch.autograd.grad(ref, (x64, w64, b64), dy.double())):
            torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_opcheck(backend, gen):
    _available(backend)
    for cl, (w_on, b_on) in ((False, (True, True)), (True, (False, True)), (False, (False, False))):
        x, w, b, _ = _inputs((2, 6, 4, 5), cl, w_on, b_on, torch.float32, gen)
        x.requires_grad_()
        if w is not None:
            w.requires_grad_()
        torch.library.opcheck(gn._group_norm_silu_op, (x, w, b, 3, 1e-5, backend))


def test_torch_compile_fullgraph(gen):
    torch._inductor.config.compile_threads = 1
    x, w, b, dy = _inputs((2, 6, 5, 7), True, True, True, torch.float32, gen)

    def f(x, w, b):
        return ge.ops.group_norm_silu(x, 3, w, b, backend="cpp") * 2.0

    compiled = torch.compile(f, fullgraph=True)
    args = [t.clone().requires_grad_() for t in (x, w, b)]
    y = compiled(*args)
    g = torch.autograd.grad(y, args, dy)
    args_e = [t.clone().requires_grad_() for t in (x, w, b)]
    y_e = f(*args_e)
    g_e = torch.autograd.grad(y_e, args_e, dy)
    torch.testing.assert_close(y, y_e)
    for a, e in zip(g, g_e):
        torch.testing.assert_close(a, e)


def test_module_matches_torch_groupnorm_silu(gen):
    torch.manual_seed(gen.initial_seed())
    ref = torch.nn.Sequential(torch.nn.GroupNorm(4, 12), torch.nn.SiLU())
    with torch.no_grad():
        ref[0].weight.normal_()
        ref[0].bias.normal_()
    m = ge.nn.GroupNormSiLU(4, 12)
    m.load_state_dict(ref[0].state_dict())
    x = torch.randn(2, 12, 7, 5, generator=gen, requires_grad=True)
    y, yr = m(x), ref(x)
    torch.testing.assert_close(y, yr, atol=2e-5, rtol=2e-5)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, m.weight, m.bias), dy)
    gr = torch.autograd.grad(yr, (x, ref[0].weight, ref[0].bias), dy)
    for a, e in zip(g, gr):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)
    plain = ge.nn.GroupNormSiLU(3, 12, affine=False)
    assert plain.weight is None and list(plain.parameters()) == []
    torch.testing.assert_close(plain(x), F.silu(F.group_norm(x, 3)), atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="num_groups"):
        ge.nn.GroupNormSiLU(5, 12)


BAD = [
    (dict(num_groups=5), ValueError, "num_groups"),
    (dict(num_groups=0), ValueError, "num_groups"),
    (dict(num_groups=-2), ValueError, "num_groups"),
    (dict(num_groups=2.0), TypeError, "num_groups"),
    (dict(num_groups=True), TypeError, "num_groups"),
    (dict(weight=torch.ones(5)), ValueError, "weight"),
    (dict(bias=torch.ones(6, 1)), ValueError, "bias"),
    (dict(weight=torch.ones(6, dtype=torch.int64)), TypeError, "weight"),
    (dict(weight=[1.0] * 6), TypeError, "weight"),
    (dict(eps=-1e-5), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-5"), TypeError, "eps"),
    (dict(eps=10**400), ValueError, "eps"),  # past float's range: float() raises OverflowError
    (dict(x=torch.ones(2, 6, 3, dtype=torch.int32)), TypeError, "x"),
    (dict(x=torch.ones(6)), ValueError, "x"),
    (dict(x=[[1.0] * 6]), TypeError, "x"),
    (dict(backend="nope"), ValueError, "backend"),
    (dict(x=torch.ones(2, 6, 3, dtype=torch.float64), backend="cpp"), TypeError, "cpp"),
]


@pytest.mark.parametrize("kw,exc,match", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_bad_input(kw, exc, match):
    args = dict(x=torch.randn(2, 6, 3, 4), num_groups=3, weight=None, bias=None, eps=1e-5, backend="auto")
    args.update(kw)
    backend = args.pop("backend")
    with pytest.raises(exc, match=match):
        ge.ops.group_norm_silu(**args, backend=backend)


def test_wrong_device():
    x = torch.randn(2, 6, 3, 4)
    w = torch.ones(6, device="meta")
    with pytest.raises(ValueError, match="weight"):
        ge.ops.group_norm_silu(x, 3, w)
    with pytest.raises(ge.BackendUnavailableError, match="cuda"):
        ge.ops.group_norm_silu(x, 3, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_gpu_matches_float64_reference(backend, gen):
    _available(backend, "cuda")
    for dtype in DTYPES:
        for case in CASES + [((2, 320, 33, 35), 32, False, True, True), ((2, 320, 33, 35), 32, True, True, True)]:
            _check(backend, *case, dtype, gen, device="cuda")
        _check(backend, (2, 64, 31, 29), 8, False, True, True, dtype, gen, device="cuda", offset=100.0)
