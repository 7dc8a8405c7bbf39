"""Gaussian mixtures (genengine.ops.gmm_e_step, genengine.models.GaussianMixture): every backend of the
fused E-step against the float64 transcription of the formulas, the model against scikit-learn from
the same initialisation, EM monotone in the lower bound, sampling statistics, save/load, bad inputs."""

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS
from sklearn import mixture as skm

import genengine as ge
from genengine.ops import mixture as mxops
from genengine.reference import mixture as ref

TYPES = mxops.COVARIANCE_TYPES
F64 = torch.float64


def _params(gen, k, d, ct):
    w = torch.softmax(torch.randn(k, generator=gen, dtype=F64), 0)
    mu = torch.randn(k, d, generator=gen, dtype=F64) * 2
    a = torch.randn(k, d, d, generator=gen, dtype=F64)
    full = a @ a.transpose(1, 2) / d + 0.4 * torch.eye(d, dtype=F64)
    cov = {"full": full, "tied": full[0], "diag": torch.rand(k, d, generator=gen, dtype=F64) + 0.3,
           "spherical": torch.rand(k, generator=gen, dtype=F64) + 0.3}[ct]
    return w, mu, cov, ref.precisions_cholesky(cov, ct)


def _rel(a, b):
    b = torch.as_tensor(b).to(F64)
    return float((torch.as_tensor(a).to(F64) - b).abs().max() / b.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_e_step_matches_reference(backend, ct, dtype, gen):
    big = backend != "triton"  # the interpreter is slow: small shapes there
    n = int(torch.randint(1, 300 if big else 70, (1,), generator=gen))
    d = int(torch.randint(1, 18 if big else 6, (1,), generator=gen))
    k = int(torch.randint(1, 21 if big else 4, (1,), generator=gen))
    w, mu, _, pc = _params(gen, k, d, ct)
    x = (torch.randn(n, d, generator=gen, dtype=F64) * 2 + 1).to(dtype)
    shift = torch.randn(d, generator=gen, dtype=F64)
    ln, lr = ref.e_step(x, w, mu, pc, ct)
    st = ref.sufficient_stats(x.to(F64) - shift, lr.exp(), ct)
    tol = 1e-10 if dtype == F64 and backend != "triton" else (1e-9 if dtype == F64 else 2e-4)
    for resp in (None, "prob", "log"):
        a, r, s = mxops.gmm_e_step(x, w, mu, pc, ct, resp=resp, stats=resp != "log", shift=shift, backend=backend)
        assert a.dtype == dtype and a.shape == (n,)
        assert _rel(a, ln) < tol, "log_norm"
        if resp is not None:
            assert r.shape == (n, k) and r.dtype == dtype
            want = lr if resp == "log" else lr.exp()
            assert float((r.to(F64) - want).abs().max()) < tol * max(1.0, float(want.abs().max()))
        else:
            assert r is None
        if resp != "log":
            for got, exp, name in zip(s, st, ("nk", "sx", "sxx")):
                if exp is None:
                    assert got is None
                    continue
                assert got.dtype == F64 and got.shape == exp.shape, name
                assert _rel(got, exp) < (1e-10 if dtype == F64 and backend != "triton" else tol * 10), name
        else:
            assert s is None


@pytest.mark.parametrize("ct", ["diag", "spherical"])
def test_e_step_far_from_the_origin_without_a_shift(ct, gen):
    """The diagonal kernels expand (x - mu)^2 p; without a shift they centre on the component means, so
    data at 1e6 (x^2 ~ 1e12 against (x - mu)^2 ~ 1) keeps float64 accuracy, statistics included."""
    n, k, d = 257, 5, 7
    w, mu, _, pc = _params(gen, k, d, ct)
    mu = mu + 1e6
    x = mu[torch.randint(0, k, (n,), generator=gen)] + torch.randn(n, d, generator=gen, dtype=F64)
    ln, lr = ref.e_step(x, w, mu, pc, ct)
    st = ref.sufficient_stats(x, lr.exp(), ct)
    a, r, s = mxops.gmm_e_step(x, w, mu, pc, ct, resp="prob", stats=True, backend="cpp")
    assert _rel(a, ln) < 1e-10
    assert float((r - lr.exp()).abs().max()) < 1e-9
    for got, exp, name in zip(s, st, ("nk", "sx", "sxx")):
        assert _rel(got, exp) < 1e-10, name


# ---- the diagonal / spherical kernel's instruction-set paths (GENENGINE_CPU_ISA) ---------------------
# (n, d, k): component counts of one, two and more 8-lane vectors (the AVX-512 kernel fuses nothing
# past k = 16 and takes the log-sum-exp row by row there), feature counts in each of its padded row
# strides (d + 1 <= 8, 16, 24, 32 and above) and at every tail of its moment tiles (d + 1 mod 6 for
# pairs of component vectors, mod 8 for a single one), n across its 32-row blocks and 1024-row chunks
DIAG_SHAPES = [(1, 1, 1), (7, 5, 3), (40, 8, 5), (33, 2, 8), (50, 3, 2), (60, 4, 7), (70, 6, 6), (33, 8, 9),
               (1100, 16, 16), (90, 6, 12), (45, 3, 10), (300, 23, 17), (77, 31, 24), (65, 40, 25), (20, 12, 20)]

_DIAG_PROBE = r"""
import sys, torch
from genengine import _backends
from genengine.ops import mixture as mxops
cases = torch.load(sys.argv[1])
res = [[mxops.gmm_e_step(c["x"], c["w"], c["mu"], c["pc"], c["ct"], resp=resp, stats=resp != "log", shift=c["shift"],
                         backend="cpp") for resp in (None, "prob", "log")] for c in cases]
torch.save({"isa": _backends.load_cpp().isa(), "res": res}, sys.argv[2])
"""


def _cpu_has_avx512():
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "avx512f" in flags and "avx512vl" in flags


def test_diag_kernel_isa_paths_match_reference(tmp_path, gen):
    """The AVX-512 diag / spherical E-step (chosen when the CPU has it) and the multiversioned one
    (GENENGINE_CPU_ISA=avx2) each against the float64 formulas, on shapes that reach every tile and
    tail of the AVX-512 kernel, with and without a shift, float64 and float32."""
    import os
    import subprocess
    import sys

    cases = []
    for n, d, k in DIAG_SHAPES:
        for ct in ("diag", "spherical"):
            for dtype in (F64, torch.float32):
                for shifted in (False, True):
                    w, mu, _, pc = _params(gen, k, d, ct)
                    x = (torch.randn(n, d, generator=gen, dtype=F64) * 2 + 1).to(dtype)
                    shift = x.to(F64).mean(0) if shifted else None
                    cases.append(dict(x=x, w=w, mu=mu, pc=pc, ct=ct, shift=shift))
    torch.save(cases, tmp_path / "cases.pt")
    runs = {}
    for isa in ("auto", "avx2"):
        out = tmp_path / f"{isa}.pt"
        subprocess.run([sys.executable, "-c", _DIAG_PROBE, str(tmp_path / "cases.pt"), str(out)],
                       env=dict(os.environ, GENENGINE_CPU_ISA=isa), check=True)
        runs[isa] = torch.load(out)
    assert "gmm diag/spherical: the loops' clone" in runs["avx2"]["isa"], runs["avx2"]["isa"]
    if _cpu_has_avx512():  # the fast path must be the one taken, not silently skipped
        assert "gmm diag/spherical: avx512" in runs["auto"]["isa"], runs["auto"]["isa"]
    for isa, run in runs.items():
        for c, res in zip(cases, run["res"]):
            ln, lr = ref.e_step(c["x"], c["w"], c["mu"], c["pc"], c["ct"])
            xs = c["x"].to(F64) - (c["shift"] if c["shift"] is not None else 0.0)
            st = ref.sufficient_stats(xs, lr.exp(), c["ct"])
            f64 = c["x"].dtype == F64
            tol = 1e-10 if f64 else 2e-4
            where = f"{isa} {c['ct']} {tuple(c['x'].shape)} k={c['w'].numel()} {c['x'].dtype} shift={c['shift'] is not None}"
            for resp, (a, r, s) in zip((None, "prob", "log"), res):
                assert _rel(a, ln) < tol, f"log_norm, {where}"
                if resp is not None:
                    want = lr if resp == "log" else lr.exp()
                    assert float((r.to(F64) - want).abs().max()) < tol * max(1.0, float(want.abs().max())), f"{resp}, {where}"
                if resp != "log":
                    # sum r (x - mean) cancels to rounding when shifted by the data mean: scale by |x| sums
                    scale = [st[0].abs().max(), (lr.exp().T @ xs.abs()).max(), st[2].abs().max()]
                    for got, exp, sc, name in zip(s, st, scale, ("nk", "sx", "sxx")):
                        err = float((got - exp).abs().max() / sc.clamp(min=1e-300))
                        assert err < (1e-10 if f64 else 2e-3), f"{name}, {where}"


def test_e_step_takes_a_lower_triangular_factor(gen):
    # precisions_cholesky_ right after precisions_init is the (lower) Cholesky factor of the precision
    w, mu, cov, pc = _params(gen, 3, 4, "full")
    low = torch.linalg.cholesky(torch.linalg.inv(cov))
    x = torch.randn(50, 4, generator=gen, dtype=F64)
    want = ref.e_step(x, w, mu, low, "full")[0]
    for backend in ("cpp", "torch"):
        got = mxops.gmm_e_step(x, w, mu, low, "full", stats=False, backend=backend)[0]
        assert _rel(got, want) < 1e-11


def _full_cov(m):
    """(K, D, D) covariances of a fitted model, whatever its covariance_type."""
    c, k, d = m.covariances_, m.n_components, m.n_features_in_
    if m.covariance_type == "full":
        return c
    if m.covariance_type == "tied":
        return c.expand(k, d, d)
    if m.covariance_type == "diag":
        return torch.diag_embed(c)
    return c[:, None, None] * torch.eye(d, dtype=F64)


def _blobs(gen, n=2000, d=4, k=4, offset=5.0):
    mu = torch.randn(k, d, generator=gen, dtype=F64) * 4
    a = torch.randn(k, d, d, generator=gen, dtype=F64) / math.sqrt(d)
    chol = torch.linalg.cholesky(a @ a.transpose(1, 2) + 0.3 * torch.eye(d, dtype=F64))
    lab = torch.randint(0, k, (n,), generator=gen)
    return mu[lab] + torch.einsum("nij,nj->ni", chol[lab], torch.randn(n, d, generator=gen, dtype=F64)) + offset


def _sk_start(x, k, ct, seed):
    """weights, means, precisions after one scikit-learn iteration from its own init (a shared start)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = skm.GaussianMixture(k, covariance_type=ct, max_iter=1, random_state=seed, init_params="random_from_data").fit(x.numpy())
    return dict(weights_init=s.weights_, means_init=s.means_, precisions_init=s.precisions_)


@pytest.mark.parametrize("ct", TYPES)
def test_fit_matches_sklearn_from_the_same_initialisation(ct, gen):
    x = _blobs(gen)
    k = 4
    inits = _sk_start(x, k, ct, int(torch.randint(0, 1000, (1,), generator=gen)))
    for dtype in (F64, torch.float32):
        xs = x.to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = skm.GaussianMixture(k, covariance_type=ct, max_iter=25, tol=0.0, init_params="random_from_data",
                                    random_state=0, **inits).fit(xs.double().numpy())
            m = ge.models.GaussianMixture(k, covariance_type=ct, max_iter=25, tol=0.0, **inits).fit(xs, progress=False)
        # float32 x is read exactly and the math is float64 either way; 25 EM iterations from a
        # random start amplify rounding differences to ~1e-8 relative on some seeds (the bar is 1e-6)
        tol = 1e-7
        assert m.n_iter_ == s.n_iter_ and m.converged_ == s.converged_
        assert abs(m.lower_bound_ - s.lower_bound_) <= tol * abs(s.lower_bound_)
        for a in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
            assert _rel(getattr(m, a), getattr(s, a)) < 1e-7, a
        xn = xs.double().numpy()
        out_tol = tol if dtype == F64 else 1e-6  # score_samples / predict_proba come back in x's dtype
        assert _rel(m.score_samples(xs), s.score_samples(xn)) < out_tol
        assert _rel(m.predict_proba(xs), s.predict_proba(xn)) < max(1e-7, out_tol)
        # labels agree except where two components are tied to rounding (both fits' probabilities agree to
        # ~1e-7, so a row whose top two are closer than that may go either way)
        ps = np.sort(s.predict_proba(xn), axis=1)
        clear = (ps[:, -1] - ps[:, -2]) > 1e-5
        assert np.array_equal(m.predict(xs).numpy()[clear], s.predict(xn)[clear])
        assert math.isclose(m.bic(xs), s.bic(xn), rel_tol=tol) and math.isclose(m.aic(xs), s.aic(xn), rel_tol=tol)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_em_is_monotone_and_finds_the_clusters(init, gen):
    x = _blobs(gen, n=1500, d=3, k=3)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a random-responsibility start ends in a worse local optimum ~8% of the time (scikit-learn's
        # "random" as often, 100 datasets), more on some datasets: CI drew one where 3 of them all did
        n_init = 10 if init == "random" else 3
        m = ge.models.GaussianMixture(3, init_params=init, random_state=seed, n_init=n_init, max_iter=300, tol=1e-6)
        m.fit(x, progress=False)
        s = skm.GaussianMixture(3, n_init=3, random_state=0, max_iter=300, tol=1e-6).fit(x.numpy())
    lb = m.lower_bounds_
    assert lb.numel() == m.n_iter_ and math.isclose(float(lb[-1]), m.lower_bound_)
    assert bool((lb[1:] - lb[:-1] >= -1e-10).all()), "EM lower bound decreased"
    assert m.converged_
    assert m.lower_bound_ > s.lower_bound_ - 0.05  # the same optimum (or very close) as scikit-learn's best of 3


def test_score_samples_is_the_exact_mixture_density(gen):
    x = _blobs(gen, n=400, d=3, k=2)
    for ct in TYPES:
        m = ge.models.GaussianMixture(2, covariance_type=ct, random_state=1).fit(x, progress=False)
        cov = _full_cov(m)
        comp = torch.distributions.MultivariateNormal(m.means_, covariance_matrix=cov).log_prob(x[:, None, :])
        want = torch.logsumexp(comp + m.weights_.log(), 1)
        assert _rel(m.log_prob(x), want) < 1e-11
        assert math.isclose(m.score(x), float(want.mean()), rel_tol=1e-11)


def test_sampling_statistics_match_the_parameters(gen):
    x = _blobs(gen, n=1000, d=3, k=3)
    for ct in TYPES:
        m = ge.models.GaussianMixture(3, covariance_type=ct, random_state=2).fit(x, progress=False)
        n = 40000
        s, comp = m.sample(n, generator=gen, return_labels=True)
        freq = torch.bincount(comp, minlength=3).to(F64) / n
        assert bool(((freq - m.weights_).abs() < 5 * (m.weights_ * (1 - m.weights_) / n).sqrt()).all()), ct
        cov = _full_cov(m)
        for c in range(3):
            xs = s[comp == c]
            se = (torch.diagonal(cov[c]) / len(xs)).sqrt()
            assert bool(((xs.mean(0) - m.means_[c]).abs() < 5 * se).all()), ct
            emp = torch.cov(xs.T)
            scale = torch.sqrt(torch.diagonal(cov[c])[:, None] * torch.diagonal(cov[c])[None, :])
            assert float(((emp - cov[c]) / scale).abs().max()) < 6 * math.sqrt(2 / len(xs)), ct
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        assert torch.equal(m.sample(5, generator=g1), m.sample(5, generator=g2))


def test_proof_it_generates_on_built_in_data(gen):
    x, _ = ge.data.ring_of_gaussians(3000, generator=gen)
    x = x.double()
    xtr, xte = x[:2000], x[2000:]
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    m = ge.models.GaussianMixture(8, covariance_type="full", random_state=seed, n_init=2).fit(xtr, progress=False)
    one = torch.distributions.MultivariateNormal(xtr.mean(0), torch.cov(xtr.T)).log_prob(xte).mean()
    assert m.score(xte) > float(one) + 2.0
    unfitted = ge.models.GaussianMixture(8, random_state=seed, init_params="random", max_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unfitted.fit(xtr, progress=False)
    assert m.score(xte) > unfitted.score(xte) + 2.0
    s = m.sample(2000, generator=gen)
    d = torch.cdist(s.float(), ge.data.ring_centres()).min(1).values
    assert float(d.mean()) < 0.2


def test_save_load_bit_identical(tmp_path, gen):
    x = _blobs(gen, n=500, d=3, k=2)
    for ct in TYPES:
        m = ge.models.GaussianMixture(2, covariance_type=ct, random_state=3, reg_covar=1e-5).fit(x, progress=False)
        m.save(tmp_path / f"{ct}.pt")
        back = ge.models.load(tmp_path / f"{ct}.pt")
        assert isinstance(back, ge.models.GaussianMixture) and back.covariance_type == ct
        for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
        assert back.n_iter_ == m.n_iter_ and back.lower_bound_ == m.lower_bound_ and back.converged_ == m.converged_
        assert torch.equal(m.score_samples(x), back.score_samples(x))
        assert torch.equal(m.sample(9, generator=torch.Generator().manual_seed(4)),
                           back.sample(9, generator=torch.Generator().manual_seed(4)))
    assert ge.models.available()["GaussianMixture"]["likelihood"] == "exact"


def test_callback_and_progress_off(gen):
    x = _blobs(gen, n=300, d=2, k=2)
    seen = []
    m = ge.models.GaussianMixture(2, random_state=0, max_iter=50, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(x, progress=False, callback=lambda model, info: seen.append(info["iter"]) or info["iter"] == 4)
    assert seen == [1, 2, 3, 4] and m.n_iter_ == 4


def test_bad_inputs_raise_clear_errors(gen):
    x = _blobs(gen, n=100, d=3, k=2)
    bad = x.clone()
    bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ge.models.GaussianMixture(2).fit(bad, progress=False)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        ge.models.GaussianMixture(5).fit(x[:4], progress=False)
    m = ge.models.GaussianMixture(2, random_state=0).fit(x, progress=False)
    with pytest.raises(ValueError, match="3 features"):
        m.predict(x[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        m.score_samples(bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        ge.models.GaussianMixture(2).predict(x)
    with pytest.raises(ValueError, match="covariance_type"):
        ge.models.GaussianMixture(2, covariance_type="banded")
    with pytest.raises(ValueError, match="init_params"):
        ge.models.GaussianMixture(2, init_params="spectral")
    with pytest.raises(ValueError, match="sum to 1"):
        ge.models.GaussianMixture(2, weights_init=[0.5, 0.7])
    with pytest.raises(ValueError, match="precisions_init"):
        ge.models.GaussianMixture(2, covariance_type="diag", precisions_init=torch.ones(3, 3))
    with pytest.raises(ValueError, match="means_init"):
        ge.models.GaussianMixture(2, means_init=torch.zeros(2, 5)).fit(x, progress=False)
    with pytest.raises(ValueError, match="n_components"):
        ge.models.GaussianMixture(0)
    with pytest.raises(ValueError, match="reg_covar"):
        ge.models.GaussianMixture(2, reg_covar=-1.0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        ge.models.GaussianMixture(2, reg_covar=0.0, means_init=[[0, 0, 0], [1e6, 1e6, 1e6]], max_iter=2).fit(
            torch.zeros(10, 3, dtype=F64).index_fill_(0, torch.tensor([0]), 1.0), progress=False)
    w, mu, _, pc = _params(gen, 2, 3, "full")
    with pytest.raises(ValueError, match="precisions_cholesky"):
        mxops.gmm_e_step(x, w, mu, pc[0], "full")
    with pytest.raises(TypeError, match="x"):
        mxops.gmm_e_step(x.to(torch.int64), w, mu, pc, "full")
    with pytest.raises(ValueError, match="resp"):
        mxops.gmm_e_step(x, w, mu, pc, "full", resp="soft")


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_triton_dot_path_matches_reference(ct, gen):
    # float32 with D >= 16 takes the tl.dot path (tf32x3); the interpreter runs it in full float32
    n, d, k = 70, 17, 3
    w, mu, _, pc = _params(gen, k, d, ct)
    x = torch.randn(n, d, generator=gen, dtype=F64).to(torch.float32)
    from genengine.kernels import mixture as kmx

    assert kmx.plan(n, d, torch.float32, TYPES.index(ct))[2]
    ln, lr = ref.e_step(x, w, mu, pc, ct)
    st = ref.sufficient_stats(x, lr.exp(), ct)
    a, r, s = mxops.gmm_e_step(x, w, mu, pc, ct, resp="prob", backend="triton")
    assert _rel(a, ln) < 1e-4 and float((r.to(F64) - lr.exp()).abs().max()) < 1e-4
    for got, exp in zip(s, st):
        if exp is not None:
            assert _rel(got, exp) < 1e-4


def test_registered_op_passes_opcheck(gen):
    w, mu, _, pc = _params(gen, 3, 4, "full")
    x = torch.randn(20, 4, generator=gen, dtype=F64)
    for backend in ("cpp", "torch"):
        torch.library.opcheck(mxops._gmm_e_step_op, (x, w, mu, pc, "full", "prob", True, None, backend),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_e_step_rejects_zero_components(backend, ct):
    # K = 0 once passed the checks and the cpp kernel returned log_norm unwritten (uninitialised memory)
    x = torch.randn(6, 3, dtype=F64)
    prec = {"full": torch.ones(0, 3, 3), "tied": torch.eye(3), "diag": torch.ones(0, 3), "spherical": torch.ones(0)}[ct]
    with pytest.raises(ValueError, match=r"means: expected at least 1 component"):
        mxops.gmm_e_step(x, torch.zeros(0, dtype=F64), torch.zeros(0, 3, dtype=F64), prec.to(F64), ct, resp="prob",
                         backend=backend)
