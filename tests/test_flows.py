"""genengine.ops.rq_spline and affine_coupling: every backend against the float64 reference, the
fused backward kernels against autograd through the reference and with gradcheck in float64,
invertibility over the whole range (tails and knots included), log-determinants against brute-force
Jacobians, numerical edges and argument errors. Triton runs under TRITON_INTERPRET=1 on CPU tensors
(small shapes: the interpreter is slow)."""

import pytest
import torch
from conftest import CPU_BACKENDS

import genengine as ge
from genengine.ops import flows as F
from genengine.reference import flows as ref


def _params(gen, shape, k, kd, scale=1.0, dtype=torch.float32):
    w = (torch.randn(*shape, k, generator=gen) * scale).to(dtype)
    h = (torch.randn(*shape, k, generator=gen) * scale).to(dtype)
    d = (torch.randn(*shape, kd, generator=gen) * scale).to(dtype)
    return w, h, d


def _shape(gen, backend):
    hi = 9 if backend == "triton" else 40
    return (int(torch.randint(1, hi, (1,), generator=gen)), int(torch.randint(1, 7, (1,), generator=gen)))


def _points(gen, shape, bound, dtype=torch.float32, edges=True):
    # the whole line: both tails, (for values) the boundaries themselves, and the interior
    x = (torch.rand(shape, generator=gen) * 2 - 1) * (bound * 1.4)
    if edges:
        x.view(-1)[:2] = torch.tensor([-bound, bound])[: x.numel()]
    return x.to(dtype)


def _sensitivity(x, w, h, d, bound):
    """(g'(x), |d logabsdet / dx|) of the forward in float64: how much one rounding of the point (or
    of a knot, which float32 holds to the same absolute precision) moves y and logabsdet."""
    # (nudged off +-B, where the reference's clamps would report a zero slope)
    xe = x.double().clamp(-bound * (1 - 1e-6), bound * (1 - 1e-6)).requires_grad_()
    y, lad = ref.rq_spline(xe, w, h, d, tail_bound=bound)
    (dl,) = torch.autograd.grad(lad.sum(), xe)
    return torch.exp(lad.detach()), dl.abs()


def _close_spline(y, lad, x, w, h, d, inverse, bound=3.0):
    """Values against the float64 reference, to float32's conditioning: float32 holds the point and
    the knots to ~1e-7 absolute, which moves y by g'(x) and logabsdet by its slope times that. The
    inverse's log-determinant is checked at the computed point (-logabsdet of the forward there),
    its point against the reference to the conditioning of the inverse (an error dy moves x by dy / g')."""
    ulp = 1e-6 * (1 + bound)  # a few float32 ulps of the knots (a K-term cumulative sum) and of the point
    ye, le = ref.rq_spline(x, w, h, d, inverse=inverse, tail_bound=bound)
    if not inverse:
        gp, dl = _sensitivity(x, w, h, d, bound)
        assert torch.all((y.double() - ye).abs() <= 2e-5 + ulp * gp), float((y.double() - ye).abs().max())
        assert torch.all((lad.double() - le).abs() <= 5e-5 + ulp * dl), float((lad.double() - le).abs().max())
        return
    _, lf = ref.rq_spline(y, w, h, d, tail_bound=bound)  # the forward's log-det at the computed point
    _, dl = _sensitivity(y, w, h, d, bound)
    assert torch.all((lad.double() + lf).abs() <= 5e-5 + ulp * dl), float((lad.double() + lf).abs().max())
    tol = 1e-6 * (1 + ye.abs()) + 2 * ulp * torch.exp(le)
    assert torch.all((y.double() - ye).abs() <= tol)


def _off_knots(point, w, bound=3.0, min_w=1e-3):
    """Points of the spline's domain further than 1e-5 (1 + B) from every interior width knot. At a
    knot the gradients are one-sided (the spline's curvature jumps there: -93 against -8.5 for a
    log-det's d / dx, seen once in 266k points), and float32's knots stand ~1e-7 off float64's, so
    the side a point within that of a knot falls on is rounding's choice."""
    knots, _ = ref._knots(w.double(), w.shape[-1], min_w, bound)
    gap = (point.double().unsqueeze(-1) - knots[..., 1:-1]).abs().amin(-1)
    return gap > 1e-5 * (1 + bound)


def _spline_grads_want(x, y, w, h, d, gy, gl, inverse, bound=3.0):
    """float64 gradients of (y * gy + lad * gl).sum() for the op that mapped x to y, as (gx, gw, gh, gd).
    The inverse's are taken at the point it computed, by the implicit function theorem on the forward
    there (d y_in = g'(y) d y, d theta: -(g_theta / g') and -d logabsdet): float32 holds an inverse's
    point only to its conditioning, dy / g'(x) (2.5e-3 in a flat bin, as float32 torch does too), which
    _close_spline bounds, and the gradients at the exact point differ from those at the computed one
    by the same conditioning; what the backward itself adds is what this checks."""
    we, he, de = (t.double().requires_grad_() for t in (w, h, d))
    if not inverse:
        xe = x.double().requires_grad_()
        ye, le = ref.rq_spline(xe, we, he, de, tail_bound=bound)
        return torch.autograd.grad((ye * gy.double() + le * gl.double()).sum(), (xe, we, he, de))
    pe = y.double().requires_grad_()  # the computed point in the spline's domain
    ye, le = ref.rq_spline(pe, we, he, de, tail_bound=bound)
    (lx,) = torch.autograd.grad(le.sum(), pe, retain_graph=True)
    gin = (gy.double() - gl.double() * lx) / torch.exp(le.detach())  # d loss / d y_in
    return (gin, *torch.autograd.grad((ye * -gin + le * -gl.double()).sum(), (we, he, de)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k,interior", [(8, True), (5, False), (8, False), (3, True)])
def test_rq_spline_matches_reference(backend, inverse, k, interior, gen):
    shape = _shape(gen, backend)
    kd = k - 1 if interior else k + 1
    # a float32 number: the kernels compare float32 points with it (the points at +-B must be inside)
    bound = float(torch.empty(()).uniform_(1.0, 4.0, generator=gen).float())
    w, h, d = _params(gen, shape, k, kd, scale=1.5)
    x = _points(gen, shape, bound)
    y, lad = ge.ops.rq_spline(x, w, h, d, inverse=inverse, tail_bound=bound, backend=backend)
    assert y.dtype == torch.float32 and y.shape == x.shape and lad.shape == x.shape
    _close_spline(y, lad, x, w, h, d, inverse, bound)
    tails = x.abs() > bound
    assert torch.equal(y[tails], x[tails]) and torch.all(lad[tails] == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k,interior", [(8, True), (6, False)])
def test_rq_spline_backward_matches_reference(backend, inverse, k, interior, gen):
    shape = _shape(gen, backend)
    kd = k - 1 if interior else k + 1
    w, h, d = _params(gen, shape, k, kd)
    x = _points(gen, shape, 3.0, edges=False)  # (the reference's clamps cut gradients exactly at +-B)
    a = torch.randn(shape, generator=gen)
    b = torch.randn(shape, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (x, w, h, d)]
    y, lad = ge.ops.rq_spline(*leaves, inverse=inverse, backend=backend)
    got = torch.autograd.grad((y * a + lad * b).sum(), leaves)
    want = _spline_grads_want(x, y.detach(), w, h, d, a, b, inverse)
    keep = _off_knots(y.detach() if inverse else x, w)
    # float32 holds knots and points to ~1e-7: slopes and curvatures move by that over a bin width,
    # and the inverse's gradients carry 1 / g'(x) on top
    rtol, atol = (1e-2, 1e-3)
    for name, g, e in zip(("x", "widths", "heights", "derivatives"), got, want):
        assert g.dtype == torch.float32 and g.shape == e.shape, name
        torch.testing.assert_close(g[keep].double(), e[keep], rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"grad {name}: {m}")


def test_rq_spline_only_one_output_used(gen):
    w, h, d = _params(gen, (13,), 8, 7)
    x = _points(gen, (13,), 3.0, edges=False).requires_grad_()
    y, _ = ge.ops.rq_spline(x, w, h, d, backend="cpp")
    (gx,) = torch.autograd.grad(y.sum(), x)
    xe = x.detach().double().requires_grad_()
    (ge_,) = torch.autograd.grad(ref.rq_spline(xe, w, h, d)[0].sum(), xe)
    torch.testing.assert_close(gx.double(), ge_, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("isa", [0, 1, 2])
@pytest.mark.parametrize("inverse", [False, True])
def test_rq_spline_every_cpu_clone(isa, inverse, gen):
    """The baseline, AVX2 and AVX-512 clones (each capped at what this CPU has) agree with the reference."""
    n, k = 333, 8
    w, h, d = _params(gen, (n,), k, k - 1)
    x = _points(gen, (n,), 3.0, edges=False)
    y, lad = torch.empty(n), torch.empty(n)
    F._cpp_fwd(x, w, h, d, inverse, 3.0, 1e-3, 1e-3, 1e-3, y, lad, isa=isa)
    _close_spline(y, lad, x, w, h, d, inverse)
    gy, gl = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    gx, gw, gh, gd = torch.empty(n), torch.empty(n, k), torch.empty(n, k), torch.empty(n, k - 1)
    F._cpp_bwd(x, y, w, h, d, inverse, 3.0, 1e-3, 1e-3, 1e-3, gy, gl, gx, gw, gh, gd, isa=isa)
    want = _spline_grads_want(x, y, w, h, d, gy, gl, inverse)
    keep = _off_knots(y if inverse else x, w)
    assert keep.sum() >= n - 3
    rtol, atol = (1e-2, 1e-3)
    for g, e in zip((gx, gw, gh, gd), want):
        torch.testing.assert_close(g[keep].double(), e[keep], rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend,inverse,interior", [
    *[("cpp", i, j) for i in (False, True) for j in (True, False)],
    ("torch", True, True), ("triton", False, True), ("triton", True, False)])
def test_rq_spline_gradcheck_float64(backend, inverse, interior, gen):
    k = 4
    kd = k - 1 if interior else k + 1
    n = 6
    w, h, d = _params(gen, (n,), k, kd, dtype=torch.float64)
    x = _points(gen, (n,), 2.0, dtype=torch.float64, edges=False)
    x[:2] = torch.tensor([-2.6, 2.7], dtype=torch.float64)  # one in each tail
    leaves = [t.clone().requires_grad_() for t in (x, w, h, d)]

    def fn(*a):
        return ge.ops.rq_spline(*a, inverse=inverse, tail_bound=2.0, backend=backend)

    # the interpreter is slow: triton's check is gradcheck's fast mode (random projections of the Jacobian)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=backend == "triton")


def _inverse_bound(y, lad):
    """What a float32 inverse can reach: y's rounding (8 ulps of max(|y|, 1)) over the local slope
    exp(lad), plus 1e-6. A sound inverse stays within half of it (300 seeds: at most 0.49)."""
    return 8 * torch.finfo(torch.float32).eps * y.abs().clamp(min=1.0) / lad.exp() + 1e-6


def test_rq_spline_inverse_undoes_forward_everywhere(gen):
    """float32, over the whole range: both tails, the boundaries and every knot, to y's rounding
    over the slope (~2e-6 where the slope is ~1; a fixed 1e-5 failed where a slope fell to 0.008)."""
    k, n_el, bound = 8, 64, 3.0
    w, h, d = _params(gen, (n_el,), k, k - 1, scale=0.5)  # parameters of a trained flow's scale
    cw, _ = ref._knots(w.double(), k, 1e-3, bound)  # each element's knots, exactly
    grid = torch.linspace(-4.5, 4.5, 301)
    xs = torch.cat([grid.expand(n_el, -1), cw.float()], dim=1)  # (n_el, 301 + K + 1)
    m = xs.shape[1]
    ww, hh, dd = (t.unsqueeze(1).expand(-1, m, -1) for t in (w, h, d))
    for backend in ("cpp", "torch"):
        y, lad = ge.ops.rq_spline(xs, ww, hh, dd, backend=backend)
        x2, lad2 = ge.ops.rq_spline(y, ww, hh, dd, inverse=True, backend=backend)
        assert ((x2 - xs).abs() <= _inverse_bound(y, lad)).all(), backend
        # (at a knot the two sides' bins agree only to the knots' float32 rounding over a bin width)
        torch.testing.assert_close(lad2, -lad, rtol=1e-3, atol=5e-4)
    small = slice(0, 4)  # the interpreter is slow: a few elements' rows for triton
    y, lad = ge.ops.rq_spline(xs[small], ww[small], hh[small], dd[small], backend="triton")
    x2, _ = ge.ops.rq_spline(y, ww[small], hh[small], dd[small], inverse=True, backend="triton")
    assert ((x2 - xs[small]).abs() <= _inverse_bound(y, lad)).all()


@pytest.mark.parametrize("inverse", [False, True])
def test_rq_spline_logdet_is_slogdet_of_the_jacobian(inverse, gen):
    """The summed log|dy/dx| equals slogdet of the brute-force Jacobian, taken through the fused backward."""
    n, k = 12, 8
    w, h, d = _params(gen, (n,), k, k - 1, dtype=torch.float64)
    x = _points(gen, (n,), 3.0, dtype=torch.float64, edges=False)
    for backend in ("cpp", "torch"):
        def fn(v, b=backend):
            return ge.ops.rq_spline(v, w, h, d, inverse=inverse, backend=b)[0]

        jac = torch.autograd.functional.jacobian(fn, x)
        sign, logabs = torch.linalg.slogdet(jac)
        lad = ge.ops.rq_spline(x, w, h, d, inverse=inverse, backend=backend)[1]
        assert sign > 0
        torch.testing.assert_close(logabs, lad.sum(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rq_spline_numerical_edges_are_finite(backend, gen):
    k, n = 8, 8
    cases = {
        "huge widths": (torch.randn(n, k, generator=gen) * 60, torch.randn(n, k, generator=gen) * 60,
                        torch.randn(n, k - 1, generator=gen)),
        "one dominant bin": (torch.full((n, k), -80.0).index_fill_(1, torch.tensor([3]), 80.0),
                             torch.full((n, k), 80.0).index_fill_(1, torch.tensor([0]), -80.0), torch.zeros(n, k - 1)),
        "derivatives at the minimum": (torch.randn(n, k, generator=gen), torch.randn(n, k, generator=gen),
                                       torch.full((n, k - 1), -90.0)),
        "huge derivatives": (torch.randn(n, k, generator=gen), torch.randn(n, k, generator=gen),
                             torch.full((n, k - 1), 40.0)),
    }
    x = torch.linspace(-3.5, 3.5, n)
    for name, (w, h, d) in cases.items():
        leaves = [t.clone().requires_grad_() for t in (x, w, h, d)]
        for inverse in (False, True):
            y, lad = ge.ops.rq_spline(*leaves, inverse=inverse, backend=backend)
            assert torch.isfinite(y).all() and torch.isfinite(lad).all(), (name, inverse)
            assert (y.abs() <= 3.5 + 1e-5).all(), (name, inverse)
            grads = torch.autograd.grad((y + lad).sum(), leaves)
            assert all(torch.isfinite(g).all() for g in grads), (name, inverse)


def test_rq_spline_strided_parameters(gen):
    """Parameter rows sliced out of one network output give the same result as contiguous copies."""
    n, dim, k = 50, 3, 8
    out = torch.randn(n, dim, 3 * k - 1, generator=gen)
    w, h, d = out[..., :k], out[..., k:2 * k], out[..., 2 * k:]
    assert not w.is_contiguous()
    x = _points(gen, (n, dim), 3.0)
    a = ge.ops.rq_spline(x, w, h, d, backend="cpp")
    b = ge.ops.rq_spline(x, w.contiguous(), h.contiguous(), d.contiguous(), backend="cpp")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("inverse", [False, True])
def test_rq_spline_packed_parameters_backward(backend, inverse, gen):
    """Slices of one network output take the packed path (one gradient for the packed tensor); the
    gradients equal those of separate contiguous parameter tensors."""
    n, dim, k = (5, 3, 6) if backend == "triton" else (41, 3, 8)
    x = _points(gen, (n, dim), 3.0, edges=False).requires_grad_()
    base = torch.randn(n, dim * (3 * k - 1), generator=gen, requires_grad=True)
    p = base.view(n, dim, 3 * k - 1)
    w, h, d = p[..., :k], p[..., k:2 * k], p[..., 2 * k:]
    assert F._packed_base(x, w, h, d) is not None
    y, lad = ge.ops.rq_spline(x, w, h, d, inverse=inverse, backend=backend)
    gx, gb = torch.autograd.grad((y * 1.5 + lad).sum(), (x, base))
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, h, d)]
    y2, lad2 = ge.ops.rq_spline(*leaves, inverse=inverse, backend=backend)
    want = torch.autograd.grad((y2 * 1.5 + lad2).sum(), leaves)
    assert torch.equal(y, y2) and torch.equal(lad, lad2)
    torch.testing.assert_close(gx, want[0])
    torch.testing.assert_close(gb.view(n, dim, -1), torch.cat(want[1:], dim=-1))


def test_rq_spline_matches_nflows(gen):
    """The parameterisation is exactly that of Durkan et al.'s reference implementation."""
    splines = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    n, k = 200, 8
    w, h, d = _params(gen, (n,), k, k - 1, scale=1.5)
    x = _points(gen, (n,), 3.0).double()
    w, h, d = w.double(), h.double(), d.double()
    for inverse in (False, True):
        y, lad = ref.rq_spline(x, w, h, d, inverse=inverse)
        yn, ln = splines.unconstrained_rational_quadratic_spline(x, w, h, d, inverse=inverse, tails="linear",
                                                                  tail_bound=3.0)
        torch.testing.assert_close(y, yn, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(lad, ln, rtol=1e-8, atol=1e-8)


def test_rq_spline_empty_and_float64_auto():
    x = torch.empty(0, 4)
    y, lad = ge.ops.rq_spline(x, torch.empty(0, 4, 8), torch.empty(0, 4, 8), torch.empty(0, 4, 7))
    assert y.shape == (0, 4) and lad.shape == (0, 4)
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    p = torch.zeros(5, 4, dtype=torch.float64)
    d = torch.full((5, 3), ref.boundary_derivative_logit(), dtype=torch.float64)
    y, lad = ge.ops.rq_spline(x, p, p, d)
    # equal bins and unit derivatives make the identity
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(lad, torch.zeros_like(x))


def test_rq_spline_bad_inputs():
    x = torch.zeros(4, 3)
    w = torch.zeros(4, 3, 8)
    d = torch.zeros(4, 3, 7)
    with pytest.raises(ValueError, match="derivatives"):
        ge.ops.rq_spline(x, w, w, torch.zeros(4, 3, 8))
    with pytest.raises(ValueError, match="heights"):
        ge.ops.rq_spline(x, w, torch.zeros(4, 3, 6), d)
    with pytest.raises(ValueError, match="widths"):
        ge.ops.rq_spline(x, torch.zeros(4, 2, 8), w, d)
    with pytest.raises(ValueError, match="widths"):
        ge.ops.rq_spline(x, torch.zeros(3, 8), w, d)
    with pytest.raises(ValueError, match="tail_bound"):
        ge.ops.rq_spline(x, w, w, d, tail_bound=0.0)
    with pytest.raises(ValueError, match="tail_bound"):
        ge.ops.rq_spline(x, w, w, d, tail_bound=-1.0)
    with pytest.raises(ValueError, match="min_bin_width"):
        ge.ops.rq_spline(x, w, w, d, min_bin_width=0.2)
    with pytest.raises(ValueError, match="min_derivative"):
        ge.ops.rq_spline(x, w, w, d, min_derivative=0.0)
    with pytest.raises(TypeError, match="x"):
        ge.ops.rq_spline(x.long(), w, w, d)
    with pytest.raises(TypeError, match="widths"):
        ge.ops.rq_spline(x, w.numpy(), w, d)
    with pytest.raises(TypeError, match="tail_bound"):
        ge.ops.rq_spline(x, w, w, d, tail_bound="3")
    with pytest.raises(TypeError, match="float32"):
        ge.ops.rq_spline(x.half(), w, w, d)
    with pytest.raises(ValueError, match="at most"):
        big = torch.zeros(4, 3, 100)
        ge.ops.rq_spline(x, big, big, torch.zeros(4, 3, 99), backend="cpp")


# ----------------------------------------------------------------------------------------------
# affine coupling


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_coupling_matches_reference(backend, inverse, gen):
    rows = int(torch.randint(1, 9 if backend == "triton" else 70, (1,), generator=gen))
    dim = int(torch.randint(1, 40, (1,), generator=gen))
    x, t, s = (torch.randn(rows, dim, generator=gen) for _ in range(3))
    y, ld = ge.ops.affine_coupling(x, t, s, inverse=inverse, backend=backend)
    ye, le = ref.affine_coupling(x, t, s, inverse=inverse)
    torch.testing.assert_close(y.double(), ye, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld.double(), le, rtol=1e-5, atol=1e-4)
    gy, gl = torch.randn(rows, dim, generator=gen), torch.randn(rows, generator=gen)
    leaves = [v.clone().requires_grad_() for v in (x, t, s)]
    yy, ll = ge.ops.affine_coupling(*leaves, inverse=inverse, backend=backend)
    got = torch.autograd.grad((yy * gy).sum() + (ll * gl).sum(), leaves)
    eleaves = [v.double().requires_grad_() for v in (x, t, s)]
    ye, le = ref.affine_coupling(*eleaves, inverse=inverse)
    want = torch.autograd.grad((ye * gy.double()).sum() + (le * gl.double()).sum(), eleaves)
    for g, e in zip(got, want):
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_coupling_gradcheck_float64(backend, inverse, gen):
    leaves = [torch.randn(3, 5, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *a: ge.ops.affine_coupling(*a, inverse=inverse, backend=backend), leaves,
                                    fast_mode=backend == "triton")


def test_affine_coupling_roundtrip_strided_and_isas(gen):
    out = torch.randn(37, 2 * 29, generator=gen)
    t, s = out.chunk(2, dim=-1)  # strided halves of one network output
    x = torch.randn(37, 29, generator=gen)
    y, ld = ge.ops.affine_coupling(x, t, s)
    x2, ld2 = ge.ops.affine_coupling(y, t, s, inverse=True)
    torch.testing.assert_close(x2, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld2, -ld)
    ye, le = ref.affine_coupling(x, t, s)
    for isa in (0, 1, 2):
        yy, ll = torch.empty(37, 29), torch.empty(37)
        F._cpp_affine_fwd(x, t, s, False, yy, ll, isa=isa)
        torch.testing.assert_close(yy.double(), ye, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ll.double(), le, rtol=1e-5, atol=1e-4)


def test_affine_coupling_bad_inputs():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="shift"):
        ge.ops.affine_coupling(x, torch.zeros(4, 2), x)
    with pytest.raises(ValueError, match="log_scale"):
        ge.ops.affine_coupling(x, x, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="log_scale"):
        ge.ops.affine_coupling(x, x, [0.0])
    with pytest.raises(TypeError, match="x"):
        ge.ops.affine_coupling(x.int(), x, x)
    with pytest.raises(ValueError, match="x"):
        ge.ops.affine_coupling(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))


# ----------------------------------------------------------------------------------------------
# GPU (pytest -m gpu on a CUDA machine): the cuda and triton backends on CUDA tensors


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("interior", [True, False])
def test_rq_spline_gpu_backends(backend, inverse, interior, gen):
    k = 8
    kd = k - 1 if interior else k + 1
    n, dim = 1000, 7
    w, h, d = _params(gen, (n, dim), k, kd)
    x = _points(gen, (n, dim), 3.0, edges=False)
    dev = [t.cuda() for t in (x, w, h, d)]
    y, lad = ge.ops.rq_spline(*dev, inverse=inverse, backend=backend)
    _close_spline(y.cpu(), lad.cpu(), x, w, h, d, inverse)
    leaves = [t.clone().requires_grad_() for t in dev]
    y, lad = ge.ops.rq_spline(*leaves, inverse=inverse, backend=backend)
    got = torch.autograd.grad((y + 0.5 * lad).sum(), leaves)
    eleaves = [t.double().requires_grad_() for t in (x, w, h, d)]
    ye, le = ref.rq_spline(*eleaves, inverse=inverse)
    want = torch.autograd.grad((ye + 0.5 * le).sum(), eleaves)
    for g, e in zip(got, want):
        torch.testing.assert_close(g.cpu().double(), e, rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_coupling_gpu_backends(backend, inverse, gen):
    x, t, s = (torch.randn(300, 37, generator=gen) for _ in range(3))
    leaves = [v.cuda().requires_grad_() for v in (x, t, s)]
    y, ld = ge.ops.affine_coupling(*leaves, inverse=inverse, backend=backend)
    ye, le = ref.affine_coupling(x, t, s, inverse=inverse)
    torch.testing.assert_close(y.detach().cpu().double(), ye, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld.detach().cpu().double(), le, rtol=1e-5, atol=1e-4)
    got = torch.autograd.grad((y * 2).sum() + ld.sum(), leaves)
    eleaves = [v.double().requires_grad_() for v in (x, t, s)]
    ye, le = ref.affine_coupling(*eleaves, inverse=inverse)
    want = torch.autograd.grad((ye * 2).sum() + le.sum(), eleaves)
    for g, e in zip(got, want):
        torch.testing.assert_close(g.cpu().double(), e, rtol=1e-5, atol=1e-5)


# ---- made_affine_inverse (MAF sampling) ----------------------------------------------------------


def _maf_layer(gen, d, hidden, context, dtype):
    from genengine.models import flow_layers as fl

    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
    layer = fl.MAFLayer(d, hidden, context).to(dtype)
    for p in layer.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=dtype) * 0.4
    return layer


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("context", [0, 2])
def test_made_affine_inverse_cpp_matches_reference(dtype, context, gen):
    d = int(torch.randint(1, 12, (), generator=gen))
    hidden = int(torch.randint(1, 40, (), generator=gen))
    n = int(torch.randint(1, 70, (), generator=gen))
    layer = _maf_layer(gen, d, hidden, context, dtype)
    y = torch.randn(n, d, generator=gen, dtype=dtype)
    ctx = torch.randn(n, context, generator=gen, dtype=dtype) if context else None
    with torch.no_grad():
        args = layer.made.ordered(ctx)
        want = ge.reference.flows.made_affine_inverse(y.double(), [tuple(t.double() if t is not None else None for t in h)
                                                                   for h in args[0]], args[1].double(), args[2].double(),
                                                      args[3], 3.0)
        got = ge.ops.made_affine_inverse(y, *args, scale_bound=3.0, backend="cpp")
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        for g, w in zip(got, want):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol)
        # and it inverts the layer's density direction (one MADE pass)
        z, ld = layer(got[0], ctx)
        torch.testing.assert_close(z, y, rtol=tol * 10, atol=tol * 10)
        torch.testing.assert_close(ld, -got[1], rtol=tol * 10, atol=tol * 10)


def test_made_affine_inverse_gradients_take_the_reference(gen):
    """With gradients wanted the op runs the differentiable reference: gradcheck in float64."""
    layer = _maf_layer(gen, 3, 5, 0, torch.float64)
    y = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    hidden, w_out, b_out, bounds = layer.made.ordered()
    w_out = w_out.detach().requires_grad_()
    f = lambda y, w: ge.ops.made_affine_inverse(y, hidden, w, b_out, bounds)  # noqa: E731
    assert torch.autograd.gradcheck(f, (y, w_out))


def test_made_affine_inverse_bad_inputs(gen):
    layer = _maf_layer(gen, 4, 6, 0, torch.float32)
    hidden, w_out, b_out, bounds = layer.made.ordered()
    y = torch.randn(3, 4)
    with pytest.raises(ValueError, match="y: expected"):
        ge.ops.made_affine_inverse(y[0], hidden, w_out, b_out, bounds)
    with pytest.raises(ValueError, match="bounds: expected shape"):
        ge.ops.made_affine_inverse(y, hidden, w_out, b_out, bounds[:, :-1])
    with pytest.raises(ValueError, match="out_weight"):
        ge.ops.made_affine_inverse(y, hidden, w_out[:-1], b_out, bounds)
    with pytest.raises(ValueError, match=r"hidden\[0\]"):
        ge.ops.made_affine_inverse(y, [(hidden[0][0][:, :3], hidden[0][1], None)] + hidden[1:], w_out, b_out, bounds)
    with pytest.raises(ValueError, match="scale_bound"):
        ge.ops.made_affine_inverse(y, hidden, w_out, b_out, bounds, scale_bound=0.0)
    bad = bounds.clone()
    bad[0, 1] = 99
    with pytest.raises(ValueError, match=r"bounds\[0\]: expected non-decreasing unit counts"):
        ge.ops.made_affine_inverse(y, hidden, w_out, b_out, bad)


def test_made_affine_inverse_registered_op(gen):
    from genengine.ops import flows as fops

    layer = _maf_layer(gen, 5, 7, 2, torch.float32)
    y = torch.randn(9, 5, generator=gen)
    ctx = torch.randn(9, 2, generator=gen)
    with torch.no_grad():
        hidden, w_out, b_out, bounds = layer.made.ordered(ctx)
        args = (y, [w for w, _, _ in hidden], [b for _, b, _ in hidden], [c for _, _, c in hidden], w_out, b_out, bounds, 3.0)
        torch.library.opcheck(fops._made_affine_inverse_op, args, test_utils=("test_schema", "test_faketensor"))
        eager = ge.ops.made_affine_inverse(y, hidden, w_out, b_out, bounds)
        compiled = torch.compile(lambda y: ge.ops.made_affine_inverse(y, hidden, w_out, b_out, bounds), backend="eager",
                                 fullgraph=True)(y)
        for a, b in zip(eager, compiled):
            assert torch.equal(a, b)


@pytest.mark.parametrize("inverse", [False, True])
def test_rq_spline_bfloat16_parameters_on_triton(inverse, gen):
    """The Triton kernels read bfloat16 parameters as they are (half the parameter bytes; math in
    float32) and write their gradients in bfloat16: against the float64 reference on the same
    (bfloat16-rounded) parameters. Under TRITON_INTERPRET=1 on the CPU; on CUDA tensors on a GPU."""
    shape = _shape(gen, "triton")
    k = 5
    w, h, d = _params(gen, shape, k, k - 1, dtype=torch.bfloat16)
    x = _points(gen, shape, 3.0, edges=False).requires_grad_()  # (the slope at exactly +-B is one-sided)
    wb, hb, db = (t.clone().requires_grad_() for t in (w, h, d))
    y, lad = ge.ops.rq_spline(x, wb, hb, db, inverse=inverse, backend="triton")
    assert y.dtype == torch.float32 and lad.dtype == torch.float32
    w64, h64, d64 = (t.double().requires_grad_() for t in (w, h, d))
    x64 = x.detach().double().requires_grad_()
    ye, le = ref.rq_spline(x64, w64, h64, d64, inverse=inverse, tail_bound=3.0)
    torch.testing.assert_close(y.double(), ye, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lad.double(), le, rtol=1e-4, atol=1e-4)
    gy, gl = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    got = torch.autograd.grad((y, lad), (x, wb, hb, db), (gy, gl))
    want = torch.autograd.grad((ye, le), (x64, w64, h64, d64), (gy.double(), gl.double()))
    assert [g.dtype for g in got] == [torch.float32] + [torch.bfloat16] * 3
    for g, e in zip(got, want):
        scale = float(e.abs().max()) + 1e-3
        assert float((g.double() - e).abs().max()) <= 1e-2 * scale  # bfloat16 keeps ~3 significant digits


def _one_bin_spline(x, raw_d, bound, min_d=1e-3):
    """The one-bin spline written out in float64 (independent of the reference): the bin is the whole
    [-B, B] in both directions (its width and height are 1 whatever the softmax's input), so the slope
    s is 1; d0, d1 are the end derivatives (1 and 1 without parameters: the identity)."""
    x = x.double()
    if raw_d.shape[-1] == 0:
        d0 = d1 = torch.ones_like(x)
    else:
        d0, d1 = (min_d + torch.nn.functional.softplus(raw_d[..., i].double()) for i in (0, 1))
    inside = x.abs() <= bound
    t = (x.clamp(-bound, bound) + bound) / (2 * bound)
    tt = t * (1 - t)
    den = 1 + (d0 + d1 - 2) * tt
    y = -bound + 2 * bound * (t * t + d0 * tt) / den
    lad = torch.log(d1 * t * t + 2 * tt + d0 * (1 - t) ** 2) - 2 * torch.log(den)
    return torch.where(inside, y, x), torch.where(inside, lad, torch.zeros_like(lad))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kd", [0, 2])
def test_rq_spline_one_bin(backend, kd, gen):
    # K = 1 once passed the checks and then failed inside (the reference lost the knots' edges, the
    # op could not reshape the K - 1 = 0 derivatives)
    bound, n = 2.0, 7
    x = _points(gen, (n,), bound, dtype=torch.float64)
    w, h, d = _params(gen, (n,), 1, kd, scale=1.5, dtype=torch.float64)
    ye, le = _one_bin_spline(x, d, bound)
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
        args = [t.to(dtype) for t in (x, w, h, d)]
        y, lad = ge.ops.rq_spline(*args, tail_bound=bound, backend=backend)
        torch.testing.assert_close(y.double(), ye, rtol=tol, atol=tol)
        torch.testing.assert_close(lad.double(), le, rtol=tol, atol=tol)
        xi, li = ge.ops.rq_spline(y, *args[1:], inverse=True, tail_bound=bound, backend=backend)
        torch.testing.assert_close(xi.double(), x, rtol=10 * tol, atol=10 * tol)
        torch.testing.assert_close(li.double(), -le, rtol=10 * tol, atol=10 * tol)
    # gradients in float64 (gradcheck's fast mode under the slow interpreter), inside the bin and in the tails
    x[:2] = torch.tensor([-2.6, 2.7], dtype=torch.float64)
    x[2:] = x[2:].clamp(-1.9, 1.9)
    leaves = [t.clone().requires_grad_() for t in (x, w, h, d)]
    for inverse in (False, True):
        def fn(*a, inverse=inverse):
            return ge.ops.rq_spline(*a, inverse=inverse, tail_bound=bound, backend=backend)

        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=backend == "triton")
    # and against the written-out formula's autograd: one bin's widths and heights carry no gradient
    y, lad = ge.ops.rq_spline(*leaves, tail_bound=bound, backend=backend)
    got = torch.autograd.grad((y + 0.5 * lad).sum(), leaves, allow_unused=True)
    xe, de = x.clone().requires_grad_(), d.clone().requires_grad_()
    ye, le = _one_bin_spline(xe, de, bound)
    want = torch.autograd.grad((ye + 0.5 * le).sum(), [xe, de], allow_unused=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    assert bool((got[1].abs() < 1e-12).all()) and bool((got[2].abs() < 1e-12).all())
    if kd:
        torch.testing.assert_close(got[3], want[1], rtol=1e-10, atol=1e-10)


def test_flow_scalars_past_float_range_raise_value_error():
    # float(10**400) raises OverflowError: it must come out as a ValueError naming the argument
    x, w, d = torch.zeros(4), torch.zeros(4, 5), torch.zeros(4, 4)
    for name in ("tail_bound", "min_bin_width", "min_derivative"):
        with pytest.raises(ValueError, match=name):
            ge.ops.rq_spline(x, w, w, d, **{name: 10**400})
