"""Gibbs-sampling ops (genengine.ops.gibbs): every backend against the float64 reference given the
same Philox stream, the samplers' stationary laws against exact enumeration (RBM, parallel
tempering, sparse Boltzmann machine), the Ising sweep against Onsager's exact results, Langevin on
a Gaussian energy, CD statistics, and bad input.

Bernoulli draws compare a uniform with a probability, so a draw whose uniform lies within float32
rounding of its probability may differ between backends: those comparisons allow a vanishing
fraction of flips, and only at the threshold. The Ising draw is integer (exact on every backend)."""

import itertools
import math

import pytest
import torch

import genengine as ge
from genengine.reference import gibbs as R

KERNELS = ["cpp", "triton"]


def _available(backend, device="cpu"):
    reason = ge._backends.unavailable_reason(backend, device)
    if reason:
        pytest.skip(reason)


def _rbm(gen, nv, nh, batch, scale=1.0, dtype=torch.float32):
    v = (torch.rand(batch, nv, generator=gen) < 0.5).to(dtype)
    W = (torch.randn(nv, nh, generator=gen) * scale).to(dtype)
    vb = (torch.randn(nv, generator=gen) * 0.5).to(dtype)
    hb = (torch.randn(nh, generator=gen) * 0.5).to(dtype)
    return v, W, vb, hb


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _flips_only_at_threshold(a, b, u, p, tol=1e-4):
    """a, b binary samples drawn with uniforms u against probabilities p: where they differ, u is
    within tol of p."""
    diff = a != b
    return bool((~diff | ((u - p).abs() < tol)).all())


# ---- RBM against the reference --------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_rbm_half_step_matches_reference(backend, visible, gen):
    _available(backend)
    nv, nh, batch = (29, 13, 37) if backend == "cpp" else (19, 11, 9)
    v, W, vb, hb = _rbm(gen, nv, nh, batch)
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    out = ge.ops.rbm_gibbs(v, W, vb, hb, generator=_g(seed), return_probs=True, visible=visible, backend=backend)
    key = ge.ops.draw_key(_g(seed))
    v64, W64, vb64, hb64 = (t.double() for t in (v, W, vb, hb))
    # hidden half-step from the same v: same uniforms, float64 probabilities
    bh, bv = R.rbm_stream_bases(0, batch, nv, nh)
    h_ref, ph_ref = R.rbm_half(v64, W64, hb64, beta=1.0, gaussian=False, seed=key[0], offset=key[1], base=bh)
    u_h = R.uniform_at(R._grid(bh, batch, nh, "cpu"), *key)
    assert torch.allclose(out[3].double(), ph_ref, atol=2e-6)
    assert _flips_only_at_threshold(out[1].double(), h_ref, u_h, ph_ref)
    # visible half-step from the kernel's own h (so a flip above cannot cascade)
    v_ref, pv_ref = R.rbm_half(out[1].double(), W64.t(), vb64, beta=1.0, gaussian=visible == "gaussian", seed=key[0],
                               offset=key[1], base=bv)
    if visible == "gaussian":
        assert torch.allclose(out[2].double(), pv_ref, atol=1e-5)
        assert torch.allclose(out[0].double(), v_ref, atol=1e-4)
    else:
        assert torch.allclose(out[2].double(), pv_ref, atol=2e-6)
        assert _flips_only_at_threshold(out[0].double(), v_ref, R.uniform_at(R._grid(bv, batch, nv, "cpu"), *key), pv_ref)


@pytest.mark.parametrize("backend", KERNELS)
def test_rbm_multi_step_clamp_beta_matches_reference(backend, gen):
    _available(backend)
    nv, nh, batch = (23, 17, 31) if backend == "cpp" else (13, 7, 5)
    v, W, vb, hb = _rbm(gen, nv, nh, batch)
    mask = torch.rand(nv, generator=gen) < 0.3
    vals = (torch.rand(batch, nv, generator=gen) < 0.5).float()
    beta = torch.rand(batch, generator=gen) + 0.5
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    kw = dict(steps=3, beta=beta, clamp_mask=mask, clamp_values=vals)
    vk, hk = ge.ops.rbm_gibbs(v, W, vb, hb, generator=_g(seed), backend=backend, **kw)
    vr, hr = ge.ops.rbm_gibbs(v.double(), W.double(), vb.double(), hb.double(), generator=_g(seed), backend="torch", **kw)
    assert vk.dtype == torch.float32 and vk.shape == (batch, nv) and hk.shape == (batch, nh)
    assert torch.equal(vk[:, mask], vals[:, mask])
    # chains are rows: a flip at a threshold changes at most its own row afterwards
    bad_rows = ((vk.double() != vr).any(1) | (hk.double() != hr).any(1)).sum().item()
    assert bad_rows <= 1


def test_rbm_same_seed_same_chain_and_bf16(gen):
    v, W, vb, hb = _rbm(gen, 40, 24, 50, scale=0.3)
    a = ge.ops.rbm_gibbs(v, W, vb, hb, steps=4, generator=_g(7))
    b = ge.ops.rbm_gibbs(v, W, vb, hb, steps=4, generator=_g(7))
    c = ge.ops.rbm_gibbs(v, W, vb, hb, steps=4, generator=_g(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    vb16, hb16, pv, ph = ge.ops.rbm_gibbs(v, W, vb, hb, generator=_g(7), compute_dtype=torch.bfloat16, return_probs=True)
    assert vb16.dtype == torch.float32 and set(vb16.unique().tolist()) <= {0.0, 1.0}
    ph_ref = torch.sigmoid(v.double() @ W.double() + hb.double())
    assert (ph.double() - ph_ref).abs().max() < 2e-2  # W and x @ W rounded to bfloat16


# ---- stationary laws -------------------------------------------------------------------------------


def _all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _exact_visible(W, vb, hb, beta=1.0):
    states = _all_states(W.shape[0])
    logp = -beta * R.rbm_free_energy(states, W.double(), vb.double(), hb.double(), beta=beta)
    return torch.softmax(logp, 0)


def _counts(samples):
    n = samples.shape[1]
    idx = (samples.round().long() * (2 ** torch.arange(n - 1, -1, -1))).sum(1)
    return torch.bincount(idx, minlength=2**n).double()


def _chi2(counts, p):
    """Pearson's statistic over the states with expected count >= 5 (the rest pooled)."""
    e = p * counts.sum()
    big = e >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([e[big], e[~big].sum().view(1)])
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


def _chi2_ok(counts, p):
    stat, dof = _chi2(counts, p)
    # a 1e-4 false-alarm bound: Wilson-Hilferty for the chi-square quantile (z = 3.72)
    bound = dof * (1 - 2 / (9 * dof) + 3.72 * math.sqrt(2 / (9 * dof))) ** 3
    return stat < bound, stat, bound


def _rbm_6x4(gen):
    W = torch.randn(6, 4, generator=gen) * 1.2
    vb = torch.randn(6, generator=gen) * 0.7
    hb = torch.randn(4, generator=gen) * 0.7
    return W, vb, hb


def _biased_sampler(W, vb, hb, v, steps, seed):
    """A sampler with a small systematic error (the visible probabilities a few % too high)."""
    g = _g(seed)
    for _ in range(steps):
        h = (torch.rand(v.shape[0], W.shape[1], generator=g) < torch.sigmoid(v @ W + hb)).float()
        v = (torch.rand(v.shape[0], W.shape[0], generator=g) < torch.sigmoid(h @ W.t() + vb + 0.15)).float()
    return v


def _off_by_one_sampler(W, vb, hb, v, steps, seed):
    """An off-by-one bug: visible unit i gets the bias of unit i - 1."""
    return _biased_sampler(W, vb.roll(1) - 0.15, hb, v, steps, seed)


def test_rbm_stationary_law_matches_enumeration(gen):
    W, vb, hb = _rbm_6x4(gen)
    p = _exact_visible(W, vb, hb)
    chains = 20000
    v0 = (torch.rand(chains, 6, generator=gen) < 0.5).float()
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    v, _ = ge.ops.rbm_gibbs(v0, W, vb, hb, steps=60, generator=_g(seed))
    ok, stat, bound = _chi2_ok(_counts(v), p)
    assert ok, f"chi2 {stat:.1f} >= {bound:.1f}"
    tv = 0.5 * (_counts(v) / chains - p).abs().sum()
    assert tv < 0.03
    # the test has power: samplers that are slightly wrong fail it
    for wrong in (_biased_sampler, _off_by_one_sampler):
        vw = wrong(W, vb, hb, v0, 60, seed)
        assert not _chi2_ok(_counts(vw), p)[0], wrong.__name__


def test_rbm_stationary_law_bf16(gen):
    """compute_dtype=bfloat16: W and the pre-activations are rounded to bfloat16 (relative 2^-9),
    so the law is tested at a stated tolerance: total variation to the exact law < 0.03."""
    W, vb, hb = _rbm_6x4(gen)
    p = _exact_visible(W, vb, hb)
    chains = 20000
    v0 = (torch.rand(chains, 6, generator=gen) < 0.5).float()
    v, _ = ge.ops.rbm_gibbs(v0, W, vb, hb, steps=60, generator=gen, compute_dtype=torch.bfloat16)
    tv = 0.5 * (_counts(v) / chains - p).abs().sum()
    assert tv < 0.03
    vw = _biased_sampler(W, vb, hb, v0, 60, 1)
    assert 0.5 * (_counts(vw) / chains - p).abs().sum() > 0.03  # the tolerance still separates a biased sampler


def test_rbm_gaussian_visible_conditional(gen):
    """Gaussian-Bernoulli: v | h ~ N(vbias + W h, 1 / beta)."""
    W = torch.randn(5, 3, generator=gen)
    vb = torch.randn(5, generator=gen)
    hb = torch.randn(3, generator=gen)
    v0 = torch.randn(40000, 5, generator=gen)
    v, h = ge.ops.rbm_gibbs(v0, W, vb, hb, generator=gen, visible="gaussian", beta=4.0)
    resid = v - (h @ W.t() + vb)
    assert resid.mean().abs() < 0.01
    assert abs(resid.var().item() - 0.25) < 0.01


def test_parallel_tempering_replicas_have_their_tempered_laws(gen):
    W, vb, hb = _rbm_6x4(gen)
    betas = torch.tensor([0.35, 0.7, 1.0])
    chains = 8000
    v0 = (torch.rand(3, chains, 6, generator=gen) < 0.5).float()
    v, h, acc = ge.ops.rbm_parallel_tempering(v0, W, vb, hb, betas, steps=40, generator=gen)
    assert v.shape == (3, chains, 6) and h.shape == (3, chains, 4) and acc.shape == (2,)
    assert bool(((acc > 0) & (acc < 1)).all())
    for r, b in enumerate(betas.tolist()):
        # joint law at beta: p(v) ~ exp(-beta F_beta(v)) with every energy term scaled
        states = _all_states(6)
        pre = states @ W.double() + hb.double()
        logp = b * (states @ vb.double()) + torch.nn.functional.softplus(b * pre).sum(1)
        ok, stat, bound = _chi2_ok(_counts(v[r]), torch.softmax(logp, 0))
        assert ok, f"replica {r}: chi2 {stat:.1f} >= {bound:.1f}"
    # equal temperatures: every swap is accepted
    _, _, acc1 = ge.ops.rbm_parallel_tempering(v0[:, :50], W, vb, hb, torch.ones(3), steps=2, generator=gen)
    assert torch.equal(acc1, torch.ones(2))


# ---- CD statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_stats_equal_reference(persistent, gen):
    v, W, vb, hb = _rbm(gen, 21, 11, 33)
    chain = (torch.rand(17, 21, generator=gen) < 0.5).float() if persistent else None
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    st = ge.ops.rbm_cd_stats(v, W, vb, hb, k=2, chain=chain, generator=_g(seed))
    gw, gvb, ghb = R.rbm_cd_stats(v.double(), st.chain.double(), W.double(), hb.double())
    assert torch.allclose(st.grad_W.double(), gw, atol=1e-5)
    assert torch.allclose(st.grad_vbias.double(), gvb, atol=1e-6)
    assert torch.allclose(st.grad_hbias.double(), ghb, atol=1e-5)
    # the negative chain is rbm_gibbs from the same start with the same key
    start = v if chain is None else chain
    vk, _ = ge.ops.rbm_gibbs(start, W, vb, hb, steps=2, generator=_g(seed))
    assert torch.equal(vk, st.chain)
    assert st.h_prob_data.shape == (33, 11)


def test_cd_on_the_torch_backend_matches_cpp(gen):
    v, W, vb, hb = _rbm(gen, 12, 6, 20, scale=0.3)
    a = ge.ops.rbm_cd_stats(v, W, vb, hb, k=1, generator=_g(3), backend="cpp")
    b = ge.ops.rbm_cd_stats(v.double(), W.double(), vb.double(), hb.double(), k=1, generator=_g(3), backend="torch")
    if torch.equal(a.chain.double(), b.chain):
        assert torch.allclose(a.grad_W.double(), b.grad_W, atol=1e-5)


# ---- Ising ------------------------------------------------------------------------------------------


def _spins(gen, *shape):
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(torch.int8)


@pytest.mark.parametrize("backend", KERNELS)
def test_ising_bit_exact_with_reference(backend, gen):
    _available(backend)
    shape = (3, 6, 10) if backend == "cpp" else (2, 4, 6)
    s = _spins(gen, *shape)
    beta = torch.rand(shape[0], generator=gen) + 0.2
    for kw in (dict(beta=0.45, h=0.1), dict(beta=beta, J=-0.7, h=-0.3)):
        seed = int(torch.randint(0, 2**62, (), generator=gen))
        b = kw.pop("beta")
        out = ge.ops.ising_sweep(s, b, sweeps=3, generator=_g(seed), backend=backend, **kw)
        key = ge.ops.draw_key(_g(seed))
        ref = R.ising_sweep(s, b, sweeps=3, seed=key[0], offset=key[1], **kw)
        assert torch.equal(out, ref)
        assert not torch.equal(out, s)


def test_ising_2d_input_inplace_and_large_lattice_threads(gen):
    s = _spins(gen, 64, 130)
    out = ge.ops.ising_sweep(s, 0.3, sweeps=2, generator=_g(5))
    key = ge.ops.draw_key(_g(5))
    assert torch.equal(out, R.ising_sweep(s.unsqueeze(0), 0.3, sweeps=2, seed=key[0], offset=key[1])[0])
    t = s.clone()
    ret = ge.ops.ising_sweep(t, 0.3, sweeps=2, generator=_g(5), inplace=True)
    assert ret is t and torch.equal(t, out)


def _onsager(T):
    """Exact energy and spontaneous magnetisation per spin of the infinite 2-D Ising model, J = 1."""
    b = 1.0 / T
    k = 2 * math.sinh(2 * b) / math.cosh(2 * b) ** 2
    a, g = 1.0, math.sqrt(1 - k * k)  # K(k) = pi / (2 AGM(1, sqrt(1 - k^2)))
    for _ in range(40):
        a, g = (a + g) / 2, math.sqrt(a * g)
    K = math.pi / (2 * a)
    u = -1 / math.tanh(2 * b) * (1 + 2 / math.pi * (2 * math.tanh(2 * b) ** 2 - 1) * K)
    tc = 2 / math.log(1 + math.sqrt(2))
    m = (1 - math.sinh(2 * b) ** -4) ** 0.125 if T < tc else 0.0
    return u, m


@pytest.mark.parametrize("T", [2.0, 3.0])
def test_ising_matches_onsager(T, gen):
    L, n = 16, 32
    s = torch.ones(L, n, n, dtype=torch.int8) if T < 2.269 else _spins(gen, L, n, n)
    s = ge.ops.ising_sweep(s, 1 / T, sweeps=400, generator=gen)
    es, ms = [], []
    for _ in range(40):
        s = ge.ops.ising_sweep(s, 1 / T, sweeps=10, generator=gen)
        es.append(R.ising_energy(s))
        ms.append(s.double().mean((-2, -1)).abs())
    e = torch.stack(es).mean(0)  # per lattice: independent estimates
    m = torch.stack(ms).mean(0)
    u, m0 = _onsager(T)
    se_e = e.std().item() / math.sqrt(L)
    assert abs(e.mean().item() - u) < 4 * se_e + 0.01, (e.mean().item(), u, se_e)
    if m0 > 0:
        se_m = m.std().item() / math.sqrt(L)
        assert abs(m.mean().item() - m0) < 4 * se_m + 0.01, (m.mean().item(), m0)
    else:
        assert m.mean().item() < 0.15  # finite-size |m| ~ N^-1/2 chi^1/2 above T_c; ordered would be ~0.9


# ---- sparse Boltzmann machine --------------------------------------------------------------------


def _bm(gen, n, density=0.4):
    A = torch.randn(n, n, generator=gen) * 0.8
    A = torch.triu(A * (torch.rand(n, n, generator=gen) < density), 1)
    A = A + A.t()
    return A, torch.randn(n, generator=gen) * 0.5


@pytest.mark.parametrize("backend", KERNELS)
def test_boltzmann_gibbs_matches_reference(backend, gen):
    _available(backend)
    n, batch = (13, 9) if backend == "cpp" else (9, 3)
    A, b = _bm(gen, n)
    x = (torch.rand(batch, n, generator=gen) < 0.5).float()
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    out = ge.ops.boltzmann_gibbs(x, A, b, sweeps=3, beta=0.8, generator=_g(seed), backend=backend)
    ref = ge.ops.boltzmann_gibbs(x.double(), A.double(), b.double(), sweeps=3, beta=0.8, generator=_g(seed),
                                 backend="torch")
    assert ((out.double() != ref).any(1)).sum() <= 1
    sp = ge.ops.boltzmann_gibbs(x, A.to_sparse(), b, sweeps=3, beta=0.8, generator=_g(seed), backend=backend)
    assert torch.equal(sp, out)


def test_boltzmann_stationary_law(gen):
    n = 8
    A, b = _bm(gen, n, 0.5)
    colors = ge.ops.graph_coloring(A)
    rows, cols = A.nonzero().t()
    assert not bool((colors[rows] == colors[cols]).any())
    states = _all_states(n)
    p = torch.softmax(-R.bm_energy(states, A, b), 0)
    x = (torch.rand(20000, n, generator=gen) < 0.5).float()
    x = ge.ops.boltzmann_gibbs(x, A, b, sweeps=50, generator=gen, colors=colors)
    ok, stat, bound = _chi2_ok(_counts(x), p)
    assert ok, f"chi2 {stat:.1f} >= {bound:.1f}"


# ---- Langevin -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNELS)
def test_langevin_matches_reference(backend, gen):
    _available(backend)
    x = torch.randn(3, 7, 11, generator=gen)
    g = torch.randn(3, 7, 11, generator=gen)
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    for clamp in (None, (-1.0, 0.5)):
        out = ge.ops.langevin_step(x, g, 0.03, noise_scale=0.7, clamp=clamp, generator=_g(seed), backend=backend)
        ref = ge.ops.langevin_step(x.double(), g.double(), 0.03, noise_scale=0.7, clamp=clamp, generator=_g(seed),
                                   backend="torch")
        assert torch.allclose(out.double(), ref, atol=1e-6)
        if clamp is not None:
            assert out.min() >= -1.0 and out.max() <= 0.5


def _langevin_nan_clamp_case(backend, device="cpu"):
    """Clamping keeps a NaN (a diverged chain must not look pinned at a bound) and clamps +-inf."""
    x = torch.tensor([float("nan"), 0.25, 5.0, -5.0, float("inf"), float("-inf"), 0.0], device=device)
    out = ge.ops.langevin_step(x, torch.zeros_like(x), 0.01, noise_scale=0.0, clamp=(-1.0, 1.0), generator=_g(1),
                               backend=backend).cpu()
    assert torch.isnan(out[0]), f"clamp turned NaN into {out[0].item()}"
    assert torch.equal(out[1:], torch.tensor([0.25, 1.0, -1.0, 1.0, -1.0, 0.0]))


@pytest.mark.parametrize("backend", ["torch", *KERNELS])
def test_langevin_clamp_keeps_nan(backend):
    _available(backend)
    _langevin_nan_clamp_case(backend)


def test_langevin_cpp_triton_bit_identical(gen):
    _available("triton")
    x = torch.randn(1001, generator=gen)
    g = torch.randn(1001, generator=gen)
    a = ge.ops.langevin_step(x, g, 0.1, generator=_g(4), backend="cpp")
    b = ge.ops.langevin_step(x, g, 0.1, generator=_g(4), backend="triton")
    assert torch.equal(a, b)


def test_langevin_converges_to_gaussian(gen):
    mu = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
    prec = torch.linalg.inv(cov)
    x = torch.randn(20000, 2, generator=gen)
    h = 0.02
    for _ in range(800):
        x = ge.ops.langevin_step(x, (x - mu) @ prec, h, generator=gen)
    se = (cov.diagonal() / x.shape[0]).sqrt()
    assert bool(((x.mean(0) - mu).abs() < 5 * se).all())
    # unadjusted Langevin x' = (I - h P / 2) x + sqrt(h) z has, in P's eigenbasis, the stationary
    # variances h / (1 - (1 - h lam / 2)^2): within O(h) of the target's 1 / lam
    lam, V = torch.linalg.eigh(prec.double())
    ula = (V * (h / (1 - (1 - h * lam / 2) ** 2))) @ V.t()
    emp = torch.cov(x.t().double())
    assert torch.allclose(emp, ula, atol=0.03)
    assert torch.allclose(emp, cov.double(), atol=0.06)


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(gen):
    v, W, vb, hb = _rbm(gen, 6, 4, 5)
    with pytest.raises(ValueError, match="W"):
        ge.ops.rbm_gibbs(v, W.t(), vb, hb)
    with pytest.raises(ValueError, match="hbias"):
        ge.ops.rbm_gibbs(v, W, vb, vb)
    with pytest.raises(ValueError, match="beta"):
        ge.ops.rbm_gibbs(v, W, vb, hb, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        ge.ops.rbm_gibbs(v, W, vb, hb, beta=-torch.ones(5))
    with pytest.raises(ValueError, match="steps"):
        ge.ops.rbm_gibbs(v, W, vb, hb, steps=0)
    with pytest.raises(ValueError, match="visible"):
        ge.ops.rbm_gibbs(v, W, vb, hb, visible="poisson")
    with pytest.raises(ValueError, match="clamp_mask"):
        ge.ops.rbm_gibbs(v, W, vb, hb, clamp_mask=torch.ones(3, dtype=torch.bool), clamp_values=torch.zeros(6))
    with pytest.raises(TypeError, match="v"):
        ge.ops.rbm_gibbs(v.long(), W, vb, hb)
    with pytest.raises(TypeError, match="compute_dtype"):
        ge.ops.rbm_gibbs(v, W, vb, hb, compute_dtype=torch.int8)
    s = torch.ones(4, 4, dtype=torch.int8)
    with pytest.raises(ValueError, match="spins"):
        ge.ops.ising_sweep(s * 0, 0.5)
    with pytest.raises(TypeError, match="spins"):
        ge.ops.ising_sweep(s.float(), 0.5)
    with pytest.raises(ValueError, match="even"):
        ge.ops.ising_sweep(torch.ones(4, 5, dtype=torch.int8), 0.5)
    with pytest.raises(ValueError, match="beta"):
        ge.ops.ising_sweep(s, 0.0)
    with pytest.raises(ValueError, match="beta"):
        ge.ops.ising_sweep(s, -1.0)
    with pytest.raises(ValueError, match="sweeps"):
        ge.ops.ising_sweep(s, 0.5, sweeps=0)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="step_size"):
        ge.ops.langevin_step(x, x, 0.0)
    with pytest.raises(ValueError, match="step_size"):
        ge.ops.langevin_step(x, x, -0.1)
    with pytest.raises(ValueError, match="grad"):
        ge.ops.langevin_step(x, torch.zeros(2, 3), 0.1)
    with pytest.raises(ValueError, match="clamp"):
        ge.ops.langevin_step(x, x, 0.1, clamp=(1.0, 0.0))
    A = torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    with pytest.raises(ValueError, match="symmetric"):
        ge.ops.boltzmann_gibbs(torch.zeros(2, 2), A, torch.zeros(2))
    A = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="colouring"):
        ge.ops.boltzmann_gibbs(torch.zeros(2, 2), A, torch.zeros(2), colors=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="diagonal"):
        ge.ops.boltzmann_gibbs(torch.zeros(2, 2), torch.eye(2), torch.zeros(2))
    with pytest.raises(ValueError, match="x"):
        ge.ops.boltzmann_gibbs(torch.full((2, 2), 0.5), A, torch.zeros(2))


# ---- GPU (pytest -m gpu): the CUDA and Triton kernels on a GPU against the CPU kernels ----------


def _cuda_or_skip(backend):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _available(backend, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_gpu_rbm_matches_cpu(backend, visible, gen):
    _cuda_or_skip(backend)
    v, W, vb, hb = _rbm(gen, 200, 130, 300, scale=0.1)
    mask = torch.rand(200, generator=gen) < 0.2
    kw = dict(steps=2, return_probs=True, visible=visible, clamp_mask=mask, clamp_values=torch.zeros(200))
    a = ge.ops.rbm_gibbs(v, W, vb, hb, generator=_g(3), backend="cpp", **kw)
    b = ge.ops.rbm_gibbs(*(t.cuda() for t in (v, W, vb, hb)), generator=_g(3), backend=backend,
                         **{**kw, "clamp_mask": mask.cuda(), "clamp_values": torch.zeros(200, device="cuda")})
    assert ((a[0] != b[0].cpu()).any(1)).sum() <= 3  # rows where a threshold flip happened
    assert torch.allclose(a[3], b[3].cpu(), atol=1e-4) or ((a[1] != b[1].cpu()).any(1)).sum() > 0
    for cd in (torch.bfloat16,):
        vv, hh = ge.ops.rbm_gibbs(*(t.cuda() for t in (v, W, vb, hb)), generator=_g(3), backend=backend, compute_dtype=cd)
        assert vv.shape == v.shape and set(vv.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_ising_langevin_boltzmann_match_cpu(backend, gen):
    _cuda_or_skip(backend)
    s = _spins(gen, 3, 16, 34)
    a = ge.ops.ising_sweep(s, 0.4, h=0.1, sweeps=5, generator=_g(2), backend="cpp")
    b = ge.ops.ising_sweep(s.cuda(), 0.4, h=0.1, sweeps=5, generator=_g(2), backend=backend)
    assert torch.equal(a, b.cpu())
    x = torch.randn(10007, generator=gen)
    la = ge.ops.langevin_step(x, x, 0.05, generator=_g(2), backend="cpp")
    lb = ge.ops.langevin_step(x.cuda(), x.cuda(), 0.05, generator=_g(2), backend=backend)
    assert torch.allclose(la, lb.cpu(), atol=1e-5)
    _langevin_nan_clamp_case(backend, "cuda")
    A, bias = _bm(gen, 30)
    xs = (torch.rand(20, 30, generator=gen) < 0.5).float()
    ba = ge.ops.boltzmann_gibbs(xs, A, bias, sweeps=3, generator=_g(2), backend="cpp")
    bb = ge.ops.boltzmann_gibbs(xs.cuda(), A.cuda(), bias.cuda(), sweeps=3, generator=_g(2), backend=backend)
    assert ((ba != bb.cpu()).any(1)).sum() <= 1


# ----------------------------------------------------------------------------------------------
# torch.library registration: compiled graphs (keys passed as data) give the eager chains


def test_registered_ops_pass_opcheck(gen):
    from genengine.ops import gibbs as gops
    from genengine.ops.rng import key_tensor

    key = key_tensor(11, 2**64 - 5)
    v, W, vb, hb = _rbm(gen, 9, 5, 7, scale=0.5)
    mask = (torch.rand(7, 9, generator=gen) < 0.3)
    vals = torch.ones(7, 9)
    for backend in ("torch", "cpp"):
        torch.library.opcheck(gops._rbm_gibbs_op, (v, W, vb, hb, key, 2, 0.8, None, "bernoulli", mask, vals,
                                                   torch.float32, True, backend))
        torch.library.opcheck(gops._ising_sweep_op, (_spins(gen, 2, 6, 8), [0.3, 0.5], 1.0, 0.1, 2, key, backend))
        x = torch.randn(5, 7, generator=gen)
        torch.library.opcheck(gops._langevin_step_op, (x, x * 0.5, 0.1, 1.0, True, -1.0, 1.0, key, backend))
        A, bias = _bm(gen, 10)
        xs = (torch.rand(4, 10, generator=gen) < 0.5).float()
        torch.library.opcheck(gops._boltzmann_gibbs_op, (xs, A, bias, None, 1.0, 2, key, backend))


def test_compiled_gibbs_ops_match_eager(gen):
    from genengine.ops.rng import key_tensor

    v, W, vb, hb = _rbm(gen, 11, 6, 5, scale=0.5)
    s = _spins(gen, 2, 6, 10)
    x = torch.randn(3, 17, generator=gen)
    A, bias = _bm(gen, 12)
    xs = (torch.rand(4, 12, generator=gen) < 0.5).float()

    def chain(v, s, x, xs, key):
        v2, h2, pv, ph = ge.ops.rbm_gibbs(v, W, vb, hb, steps=3, generator=key, beta=0.7, return_probs=True)
        s2 = ge.ops.ising_sweep(s, 0.44, h=0.05, sweeps=2, generator=key)
        x2 = ge.ops.langevin_step(x, 2 * x, 0.05, clamp=(-1.0, 1.0), generator=key)
        b2 = ge.ops.boltzmann_gibbs(xs, A, bias, sweeps=2, generator=key)
        return v2 + 0, h2, pv, ph, s2, x2, b2

    compiled = torch.compile(chain, backend="eager", fullgraph=True)
    for k in ((3, 4), (3, 2**64 - 1)):
        key = key_tensor(*k)
        eager = chain(v, s, x, xs, key)
        got = compiled(v, s, x, xs, key)  # a new key is new data: same graph
        for a, b in zip(eager, got):
            assert torch.equal(a, b)
    # the key form and the generator it came from draw the same chain
    g = _g(9)
    from genengine.ops.rng import draw_key
    k = draw_key(_g(9))
    assert torch.equal(ge.ops.rbm_gibbs(v, W, vb, hb, generator=g)[0],
                       ge.ops.rbm_gibbs(v, W, vb, hb, generator=key_tensor(*k))[0])


def test_bad_key_tensor_names_the_generator(gen):
    v, W, vb, hb = _rbm(gen, 4, 3, 2)
    with pytest.raises(ValueError, match="generator: a key tensor must be int64 of shape"):
        ge.ops.rbm_gibbs(v, W, vb, hb, generator=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="beta: expected every inverse temperature"):
        ge.ops.rbm_gibbs(v, W, vb, hb, beta=torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("backend", ["torch", *KERNELS])
def test_langevin_out_must_not_partially_overlap_an_input(backend, gen):
    # a shifted view of x as out once gave silently wrong values on cpp (the kernel overwrote x[j + 1]
    # before reading it); exact aliasing (out is x, out is grad) and disjoint halves of one buffer are fine
    _available(backend)
    n = 257
    x0, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    want = ge.ops.langevin_step(x0, g, 0.1, generator=_g(3), backend=backend)
    buf = torch.empty(n + 1)
    buf[:-1] = x0
    with pytest.raises(ValueError, match="out: overlaps x without being x itself"):
        ge.ops.langevin_step(buf[:-1], g, 0.1, generator=_g(3), out=buf[1:], backend=backend)
    gbuf = torch.empty(n + 1)
    gbuf[1:] = g
    with pytest.raises(ValueError, match="out: overlaps grad without being grad itself"):
        ge.ops.langevin_step(x0, gbuf[1:], 0.1, generator=_g(3), out=gbuf[:-1], backend=backend)
    x = x0.clone()
    assert ge.ops.langevin_step(x, g, 0.1, generator=_g(3), out=x, backend=backend) is x
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    gc = g.clone()
    ge.ops.langevin_step(x0, gc, 0.1, generator=_g(3), out=gc, backend=backend)
    torch.testing.assert_close(gc, want, rtol=0, atol=0)
    halves = torch.empty(2 * n)
    halves[:n] = x0
    ge.ops.langevin_step(halves[:n], g, 0.1, generator=_g(3), out=halves[n:], backend=backend)
    torch.testing.assert_close(halves[n:], want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", *KERNELS])
def test_gibbs_edge_arguments_give_clear_errors_or_empty_results(backend, gen):
    _available(backend)
    s = torch.ones(2, 4, 4, dtype=torch.int8)
    # a 2-D beta tensor once raised a RuntimeError from .item()
    with pytest.raises(ValueError, match="beta: expected a number, a one-element tensor or a 1-D tensor"):
        ge.ops.ising_sweep(s, torch.ones(2, 1), backend=backend)
    # no lattice: an empty result (the reference once failed on reshape(0, -1))
    empty = torch.ones(0, 4, 4, dtype=torch.int8)
    assert ge.ops.ising_sweep(empty, 1.0, backend=backend).shape == (0, 4, 4)
    assert ge.ops.ising_sweep(empty, torch.ones(0), backend=backend).shape == (0, 4, 4)
    assert R.ising_sweep(empty, 1.0, seed=1, offset=0).shape == (0, 4, 4)
    # colour labels are any integers, visited in increasing order (cpp once failed on negative ones)
    A = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    x = (torch.rand(5, 3, generator=gen) < 0.5).float()
    b = torch.randn(3, generator=gen)
    neg = ge.ops.boltzmann_gibbs(x, A, b, colors=torch.tensor([-1, 0, -1]), sweeps=3, generator=_g(5), backend=backend)
    want = R.bm_gibbs(x, A, b, torch.tensor([0, 1, 0]), sweeps=3, **dict(zip(("seed", "offset"), ge.ops.draw_key(_g(5)))))
    assert torch.equal(neg, want.float())
    W = torch.randn(4, 3, generator=gen)
    vb, hb = torch.zeros(4), torch.zeros(3)
    with pytest.raises(ValueError, match="v: expected at least one row"):
        ge.ops.rbm_cd_stats(torch.zeros(0, 4), W, vb, hb, backend=backend)
    with pytest.raises(ValueError, match="chain: expected at least one chain"):
        ge.ops.rbm_cd_stats(torch.ones(2, 4), W, vb, hb, chain=torch.zeros(0, 4), backend=backend)
    with pytest.raises(ValueError, match="v: expected at least one replica"):
        ge.ops.rbm_parallel_tempering(torch.zeros(0, 2, 4), W, vb, hb, torch.ones(0), backend=backend)
    with pytest.raises(ValueError, match="betas: expected every inverse temperature to be finite"):
        ge.ops.rbm_parallel_tempering(torch.zeros(2, 2, 4), W, vb, hb, torch.tensor([0.5, math.inf]), backend=backend)
    # an empty batch of replicas is a meaningful (empty) result
    v, h, rate = ge.ops.rbm_parallel_tempering(torch.zeros(3, 0, 4), W, vb, hb, torch.ones(3), steps=2, backend=backend)
    assert v.shape == (3, 0, 4) and h.shape == (3, 0, 3) and rate.shape == (2,)


def test_gibbs_scalars_past_float_range_raise_value_error():
    # float(10**400) raises OverflowError: it must come out as a ValueError naming the argument
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="step_size"):
        ge.ops.langevin_step(x, x, 10**400)
    with pytest.raises(ValueError, match="J"):
        ge.ops.ising_sweep(torch.ones(4, 4, dtype=torch.int8), 0.5, J=-(10**400))
    with pytest.raises(ValueError, match="beta"):
        ge.ops.boltzmann_gibbs(torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.zeros(2), beta=10**400)
