"""Naive Bayes (genengine.ops.naive_bayes, genengine.models.naive_bayes): every backend of the fused
joint log-likelihood against the float64 transcription of the formulas, the models against
scikit-learn and against exact distributions, sampling statistics, save/load, bad inputs."""

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS
from sklearn import datasets as skdata
from sklearn import naive_bayes as sknb

import genengine as ge
from genengine.ops import naive_bayes as nbops
from genengine.reference import naive_bayes as ref

OUTPUTS = ("joint", "log_posterior", "posterior")
TOL = {torch.float64: 1e-10, torch.float32: 2e-4}


def _sizes(gen):
    n, f, c = (int(v) for v in (torch.randint(1, 70, (1,), generator=gen), torch.randint(1, 40, (1,), generator=gen),
                                torch.randint(1, 13, (1,), generator=gen)))
    return n, f, c


def _close(a, b, dtype, what):
    b = b.to(torch.float64)
    err = (a.to(torch.float64) - b).abs().max().item() if a.numel() else 0.0
    scale = max(1.0, b.abs().max().item() if b.numel() else 0.0)
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_likelihoods_match_reference(backend, dtype, gen):
    n, f, c = _sizes(gen)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    x = (r(n, f) * 2 + 1).to(dtype)
    theta, var = r(c, f), torch.rand(c, f, generator=gen, dtype=torch.float64) * 3 + 0.1
    log_prior = torch.log_softmax(r(c), 0)
    flp = torch.log(torch.rand(c, f, generator=gen, dtype=torch.float64) * 0.98 + 0.01)
    counts = torch.poisson(torch.rand(n, f, generator=gen, dtype=torch.float64) * 4, generator=gen).to(dtype)
    thr = float(torch.randn(1, generator=gen))
    for output in OUTPUTS:
        out, lse = nbops.gaussian_nb_log_likelihood(x, theta, var, log_prior, output=output, backend=backend)
        want, wl = ref.normalize(ref.gaussian_jll(x, theta, var, log_prior), output)
        assert out.dtype == dtype and out.shape == (n, c) and lse.shape == (n,)
        _close(out, want, dtype, f"gaussian {output}")
        _close(lse, wl, dtype, "gaussian lse")
        for binarize in (thr, None):
            xb = x if binarize is not None else (x > 0).to(dtype)
            out, lse = nbops.bernoulli_nb_log_likelihood(xb, flp, log_prior, binarize=binarize, output=output, backend=backend)
            want, wl = ref.normalize(ref.bernoulli_jll(xb, flp, log_prior, binarize), output)
            _close(out, want, dtype, f"bernoulli {output} binarize={binarize}")
            _close(lse, wl, dtype, "bernoulli lse")
        out, lse = nbops.multinomial_nb_log_likelihood(counts, flp, log_prior, output=output, backend=backend)
        want, wl = ref.normalize(ref.multinomial_jll(counts, flp, log_prior), output)
        _close(out, want, dtype, f"multinomial {output}")
        _close(lse, wl, dtype, "multinomial lse")


def test_fused_likelihood_takes_strided_input(gen):
    x = torch.randn(40, 9, generator=gen, dtype=torch.float64).T  # (9, 40), not contiguous
    theta, var = torch.randn(3, 40, generator=gen, dtype=torch.float64), torch.rand(3, 40, generator=gen, dtype=torch.float64) + 0.5
    lp = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    out, _ = nbops.gaussian_nb_log_likelihood(x, theta, var, lp, backend="cpp")
    _close(out, ref.gaussian_jll(x, theta, var, lp), torch.float64, "strided")


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_class_stats_match_reference(backend, gen):
    n, f, c = _sizes(gen)
    n += 5000  # several chunks
    x = torch.randn(n, f, generator=gen, dtype=torch.float64) + 3
    y = torch.randint(0, c, (n,), generator=gen)
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    for weight in (None, w):
        cnt, s = nbops.nb_class_stats(x, y, c, weight=weight, backend=backend)
        rc, rs = ref.class_stats(x, y, c, weight)
        torch.testing.assert_close(cnt, rc, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(s, rs, rtol=1e-12, atol=1e-9)
        mu = s / cnt.clamp(min=1)[:, None]
        _, m2 = nbops.nb_class_stats(x, y, c, weight=weight, center=mu, backend=backend)
        torch.testing.assert_close(m2, ref.class_stats(x, y, c, weight, mu)[1], rtol=1e-12, atol=1e-9)


# ---- the models against scikit-learn --------------------------------------------------------------


def _blobs(gen, n=600, f=5, c=4, dtype=torch.float64):
    y = torch.randint(0, c, (n,), generator=gen) * 3 - 2  # labels -2, 1, 4, ...: not 0..C-1
    centres = torch.randn(c, f, generator=gen, dtype=torch.float64) * 2
    x = centres[(y + 2) // 3] + torch.randn(n, f, generator=gen, dtype=torch.float64) * (0.5 + torch.rand(f, generator=gen))
    return x.to(dtype), y


def _np(t):
    return t.detach().cpu().numpy()


def test_gaussian_nb_matches_sklearn(gen):
    x, y = _blobs(gen)
    w = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
    for kwargs, fit_kw in (({}, {}), ({"var_smoothing": 1e-3}, {}), ({"priors": [0.1, 0.2, 0.3, 0.4]}, {}),
                           ({}, {"sample_weight": w})):
        m = ge.models.GaussianNB(**kwargs).fit(x, y, **fit_kw)
        s = sknb.GaussianNB(**kwargs).fit(_np(x), _np(y), **{k: _np(v) for k, v in fit_kw.items()})
        np.testing.assert_array_equal(_np(m.classes_), s.classes_)
        for a in ("theta_", "var_", "class_count_", "class_prior_"):
            np.testing.assert_allclose(_np(getattr(m, a)), getattr(s, a), rtol=1e-10, atol=1e-12, err_msg=a)
        assert math.isclose(float(m.epsilon_), s.epsilon_, rel_tol=1e-10)
        np.testing.assert_allclose(_np(m.predict_proba(x)), s.predict_proba(_np(x)), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(_np(m.predict_log_proba(x)), s.predict_log_proba(_np(x)), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(_np(m.predict_joint_log_proba(x)), s.predict_joint_log_proba(_np(x)), rtol=1e-10)
        np.testing.assert_array_equal(_np(m.predict(x)), s.predict(_np(x)))
    # partial_fit in three batches, the second with a different scale (scikit-learn's epsilon quirk)
    m, s = ge.models.GaussianNB(), sknb.GaussianNB()
    classes = torch.unique(y)
    for i, sl in enumerate((slice(0, 200), slice(200, 250), slice(250, None))):
        xb = x[sl] * (1 + i)
        m.partial_fit(xb, y[sl], classes=classes if i == 0 else None)
        s.partial_fit(_np(xb), _np(y[sl]), classes=_np(classes) if i == 0 else None)
    for a in ("theta_", "var_", "class_count_", "class_prior_"):
        np.testing.assert_allclose(_np(getattr(m, a)), getattr(s, a), rtol=1e-10, atol=1e-12, err_msg=a)


def test_gaussian_nb_float32_input(gen):
    x, y = _blobs(gen, dtype=torch.float32)
    m = ge.models.GaussianNB().fit(x, y)
    m64 = ge.models.GaussianNB().fit(x.double(), y)
    torch.testing.assert_close(m.theta_, m64.theta_, rtol=1e-12, atol=1e-12)
    p = m.predict_proba(x)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.double(), m64.predict_proba(x.double()), rtol=1e-4, atol=1e-5)


def test_multinomial_nb_matches_sklearn_integer_and_float_counts(gen):
    digits = skdata.load_digits()
    x = torch.as_tensor(digits.data).to(torch.int64)  # counts 0..16
    y = torch.as_tensor(digits.target)
    for xs, kwargs in ((x, {}), (x.to(torch.float32), {"alpha": 0.3}), (x.double(), {"fit_prior": False}),
                       (x, {"class_prior": [0.1] * 10})):
        m = ge.models.MultinomialNB(**kwargs).fit(xs, y)
        s = sknb.MultinomialNB(**kwargs).fit(_np(xs), _np(y))
        for a in ("feature_count_", "class_count_", "feature_log_prob_", "class_log_prior_"):
            np.testing.assert_allclose(_np(getattr(m, a)), getattr(s, a), rtol=1e-10, atol=1e-12, err_msg=a)
        f32 = xs.dtype == torch.float32
        np.testing.assert_allclose(_np(m.predict_log_proba(xs)).astype(np.float64), s.predict_log_proba(_np(xs)),
                                   rtol=2e-5 if f32 else 1e-9, atol=1e-4 if f32 else 1e-9)
        np.testing.assert_array_equal(_np(m.predict(xs)), s.predict(_np(xs)))
    m, s = ge.models.MultinomialNB(), sknb.MultinomialNB()
    m.partial_fit(x[:500], y[:500], classes=torch.arange(10))
    m.partial_fit(x[500:], y[500:])
    s.partial_fit(_np(x[:500]), _np(y[:500]), classes=np.arange(10))
    s.partial_fit(_np(x[500:]), _np(y[500:]))
    np.testing.assert_allclose(_np(m.feature_log_prob_), s.feature_log_prob_, rtol=1e-12)


def test_bernoulli_nb_matches_sklearn(gen):
    x, y = _blobs(gen)
    for kwargs in ({}, {"binarize": 0.7, "alpha": 0.5}, {"fit_prior": False}):
        m = ge.models.BernoulliNB(**kwargs).fit(x, y)
        s = sknb.BernoulliNB(**kwargs).fit(_np(x), _np(y))
        for a in ("feature_count_", "class_count_", "feature_log_prob_", "class_log_prior_"):
            np.testing.assert_allclose(_np(getattr(m, a)), getattr(s, a), rtol=1e-10, atol=1e-12, err_msg=a)
        np.testing.assert_allclose(_np(m.predict_proba(x)), s.predict_proba(_np(x)), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(_np(m.predict(x)), s.predict(_np(x)))
    xb = (x > 0).double()
    m = ge.models.BernoulliNB(binarize=None).fit(xb, y)
    s = sknb.BernoulliNB(binarize=None).fit(_np(xb), _np(y))
    np.testing.assert_allclose(_np(m.predict_log_proba(xb)), s.predict_log_proba(_np(xb)), rtol=1e-9, atol=1e-9)


# ---- exact likelihoods, sampling statistics, proof it generates -----------------------------------


def test_gaussian_log_prob_is_the_exact_mixture_density(gen):
    x, y = _blobs(gen, n=300, f=3, c=3)
    m = ge.models.GaussianNB().fit(x, y)
    comp = torch.distributions.Normal(m.theta_[None], m.var_.sqrt()[None]).log_prob(x[:, None, :]).sum(-1)
    joint = comp + m.class_prior_.log()
    torch.testing.assert_close(m.log_prob(x), torch.logsumexp(joint, 1), rtol=1e-11, atol=1e-11)
    idx = torch.searchsorted(m.classes_, y)
    torch.testing.assert_close(m.log_prob(x, y), joint.gather(1, idx[:, None])[:, 0], rtol=1e-11, atol=1e-11)


def test_bernoulli_and_multinomial_log_prob_sum_to_one(gen):
    f = 5
    x = (torch.rand(200, f, generator=gen, dtype=torch.float64) < torch.rand(f, generator=gen, dtype=torch.float64)).double()
    y = torch.randint(0, 3, (200,), generator=gen)
    b = ge.models.BernoulliNB(binarize=None).fit(x, y)
    every = torch.tensor(list(itertools.product((0.0, 1.0), repeat=f)), dtype=torch.float64)
    assert math.isclose(float(b.log_prob(every).exp().sum()), 1.0, rel_tol=1e-12)
    counts = torch.poisson(torch.full((200, 3), 2.0, dtype=torch.float64), generator=gen)
    mn = ge.models.MultinomialNB().fit(counts, y)
    total = 4  # every count vector with 4 trials over 3 features
    vecs = torch.tensor([v for v in itertools.product(range(total + 1), repeat=3) if sum(v) == total], dtype=torch.float64)
    assert math.isclose(float(mn.log_prob(vecs).exp().sum()), 1.0, rel_tol=1e-12)
    # and against torch.distributions.Multinomial for one class
    k = int(mn.classes_[1])
    want = torch.distributions.Multinomial(total, probs=mn.feature_log_prob_[1].exp()).log_prob(vecs) + mn.class_log_prior_[1]
    torch.testing.assert_close(mn.log_prob(vecs, torch.full((len(vecs),), k)), want, rtol=1e-11, atol=1e-11)


def test_sampling_statistics_match_the_parameters(gen):
    x, y = _blobs(gen, n=400, f=3, c=3)
    m = ge.models.GaussianNB().fit(x, y)
    n = 60000
    s, lab = m.sample(n, generator=gen, return_labels=True)
    freq = torch.stack([(lab == c).double().mean() for c in m.classes_])
    se = (m.class_prior_ * (1 - m.class_prior_) / n).sqrt()
    assert bool(((freq - m.class_prior_).abs() < 5 * se).all()), (freq, m.class_prior_)
    for i, c in enumerate(m.classes_):
        xs = s[lab == c]
        assert bool(((xs.mean(0) - m.theta_[i]).abs() < 5 * (m.var_[i] / len(xs)).sqrt()).all())
        assert bool(((xs.var(0) / m.var_[i] - 1).abs() < 5 * math.sqrt(2 / len(xs))).all())
    s1 = m.sample(5, y=int(m.classes_[2]), generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, m.sample(5, y=int(m.classes_[2]), generator=torch.Generator().manual_seed(3)))
    b = ge.models.BernoulliNB().fit(x, y)
    bs = b.sample(n, y=int(b.classes_[0]), generator=gen)
    p = b.feature_log_prob_[0].exp()
    assert bool(((bs.mean(0) - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 1e-12).all())
    counts = torch.poisson(torch.rand(400, 4, generator=gen, dtype=torch.float64) * 5, generator=gen)
    mn = ge.models.MultinomialNB().fit(counts, y)
    ms = mn.sample(20000, y=int(mn.classes_[1]), n_trials=7, generator=gen)
    assert bool((ms.sum(1) == 7).all())
    q = mn.feature_log_prob_[1].exp()
    assert bool(((ms.mean(0) - 7 * q).abs() < 5 * (7 * q * (1 - q) / 20000).sqrt()).all())


def test_proof_it_generates_on_built_in_data(gen):
    x, y = ge.data.ring_of_gaussians(4000, generator=gen)
    x = x.double()
    xtr, ytr, xte = x[:3000], y[:3000], x[3000:]
    m = ge.models.GaussianNB().fit(xtr, ytr)
    unfitted_like = torch.distributions.MultivariateNormal(xtr.mean(0), torch.cov(xtr.T)).log_prob(xte).mean()
    assert float(m.log_prob(xte).mean()) > float(unfitted_like) + 1.0
    assert m.score(xte, y[3000:]) > 0.95
    s = m.sample(2000, generator=gen)
    # every sample lies near a ring mode, as the data do (random points in the box do not)
    d = torch.cdist(s.float(), ge.data.ring_centres()).min(1).values
    assert float(d.mean()) < 0.2
    digits = skdata.load_digits()
    xd, yd = torch.as_tensor(digits.data), torch.as_tensor(digits.target)
    mn = ge.models.MultinomialNB().fit(xd[:1400], yd[:1400])
    assert mn.score(xd[1400:], yd[1400:]) > 0.8


def test_save_load_bit_identical(tmp_path, gen):
    x, y = _blobs(gen)
    for m in (ge.models.GaussianNB(var_smoothing=1e-6).fit(x, y), ge.models.MultinomialNB(alpha=0.5).fit(x.abs().round(), y),
              ge.models.BernoulliNB(binarize=0.2).fit(x, y)):
        path = tmp_path / f"{type(m).__name__}.pt"
        m.save(path)
        back = ge.models.load(path)
        assert type(back) is type(m)
        for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
        xx = x.abs().round() if isinstance(m, ge.models.MultinomialNB) else x
        assert torch.equal(m.predict_proba(xx), back.predict_proba(xx))
        assert torch.equal(m.sample(9, generator=torch.Generator().manual_seed(5)),
                           back.sample(9, generator=torch.Generator().manual_seed(5)))
    assert ge.models.available()["GaussianNB"]["likelihood"] == "exact"
    assert ge.models.available()["BernoulliNB"]["conditional"]



def test_sample_zero_gives_an_empty_batch(gen):
    x, y = _blobs(gen)
    f = x.shape[1]
    for m in (ge.models.GaussianNB().fit(x, y), ge.models.MultinomialNB().fit(x.abs().round(), y),
              ge.models.BernoulliNB().fit(x, y)):
        name = type(m).__name__
        assert m.sample(0).shape == (0, f), name
        assert m.sample(0, y=int(m.classes_[0])).shape == (0, f), name
        samples, labels = m.sample(0, return_labels=True)
        assert samples.shape == (0, f) and samples.dtype == torch.float64, name
        assert labels.shape == (0,) and labels.dtype == m.classes_.dtype, name

# ---- bad inputs ------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(gen):
    x, y = _blobs(gen, n=50)
    bad = x.clone()
    bad[3, 1] = float("nan")
    for cls in (ge.models.GaussianNB, ge.models.BernoulliNB):
        with pytest.raises(ValueError, match="NaN"):
            cls().fit(bad, y)
    m = ge.models.GaussianNB().fit(x, y)
    with pytest.raises(ValueError, match="NaN"):
        m.predict(bad)
    with pytest.raises(ValueError, match="5 features"):
        m.predict(x[:, :4])
    with pytest.raises(ValueError, match="5 features"):
        m.partial_fit(x[:, :3], y)
    with pytest.raises(ValueError, match="shape"):
        m.fit(x, y[:10])
    with pytest.raises(ValueError, match="not one of the classes"):
        m.log_prob(x[:2], torch.tensor([100, 100]))
    with pytest.raises(RuntimeError, match="not fitted"):
        ge.models.GaussianNB().predict(x)
    with pytest.raises(ValueError, match="classes"):
        ge.models.GaussianNB().partial_fit(x, y)
    with pytest.raises(ValueError, match="sum to 1"):
        ge.models.GaussianNB(priors=[0.5, 0.6])
    with pytest.raises(ValueError, match="priors"):
        ge.models.GaussianNB(priors=[0.5, 0.5]).fit(x, y)
    counts = torch.randint(0, 5, (50, 5), generator=gen)
    for neg in (counts - 2, (counts - 2).double()):  # integer and float count tensors
        with pytest.raises(ValueError, match="non-negative"):
            ge.models.MultinomialNB().fit(neg, y)
    mn = ge.models.MultinomialNB().fit(counts, y)
    with pytest.raises(ValueError, match="non-negative"):
        mn.predict(-counts)
    with pytest.raises(ValueError, match="0/1"):
        ge.models.BernoulliNB(binarize=None).fit(x, y)
    bn = ge.models.BernoulliNB(binarize=None).fit((x > 0).double(), y)
    with pytest.raises(ValueError, match="0/1"):
        bn.predict_proba(x)
    with pytest.raises(ValueError, match="var_smoothing"):
        ge.models.GaussianNB(var_smoothing=-1)
    with pytest.raises(ValueError, match="alpha"):
        ge.models.MultinomialNB(alpha=-0.1)
    with pytest.raises(TypeError, match="x"):
        nbops.gaussian_nb_log_likelihood(x.to(torch.int32), m.theta_, m.var_, m.class_prior_.log())
    with pytest.raises(ValueError, match="theta"):
        nbops.gaussian_nb_log_likelihood(x, m.theta_[:, :2], m.var_, m.class_prior_.log())
    with pytest.raises(ValueError, match="output"):
        nbops.gaussian_nb_log_likelihood(x, m.theta_, m.var_, m.class_prior_.log(), output="proba")


def test_registered_op_passes_opcheck(gen):
    x = torch.randn(15, 6, generator=gen, dtype=torch.float64)
    theta, ivar = torch.randn(3, 6, generator=gen, dtype=torch.float64), torch.rand(3, 6, generator=gen, dtype=torch.float64) + 1
    cst = torch.randn(3, generator=gen, dtype=torch.float64)
    torch.library.opcheck(nbops._nb_op, (x, 0, theta, ivar, cst, 2, False, 0.0, None, "cpp"),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_class_stats_with_a_center_still_count_the_weights(backend, gen):
    # the cpp kernel once left count at 0 whenever a center was given
    n, f, c = 5003, 3, 4  # more than one 4096-row chunk: the per-chunk counts are reduced too
    x = torch.randn(n, f, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    center = torch.randn(c, f, generator=gen, dtype=torch.float64)
    for weight in (None, w):
        cnt, _ = nbops.nb_class_stats(x, y, c, weight=weight, center=center, backend=backend)
        torch.testing.assert_close(cnt, ref.class_stats(x, y, c, weight, center)[0], rtol=1e-12, atol=1e-9)
        assert float(cnt.sum()) > 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_likelihoods_reject_zero_classes(backend):
    # C = 0 once gave an unwritten lse on cpp, -inf on torch and NaN on triton
    x = torch.randn(4, 3)
    empty, prior = torch.zeros(0, 3), torch.zeros(0)
    with pytest.raises(ValueError, match=r"theta: expected at least 1 class"):
        nbops.gaussian_nb_log_likelihood(x, empty, empty + 1, prior, backend=backend)
    with pytest.raises(ValueError, match=r"feature_log_prob: expected at least 1 class"):
        nbops.bernoulli_nb_log_likelihood(x, empty - 1, prior, backend=backend)
    with pytest.raises(ValueError, match=r"feature_log_prob: expected at least 1 class"):
        nbops.multinomial_nb_log_likelihood(x, empty - 1, prior, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_class_stats_check_n_classes(backend):
    x, y = torch.randn(5, 2), torch.zeros(5, dtype=torch.int64)
    with pytest.raises(TypeError, match="n_classes: expected an int"):
        nbops.nb_class_stats(x, y, 3.0, backend=backend)
    with pytest.raises(TypeError, match="n_classes: expected an int"):
        nbops.nb_class_stats(x, y, True, backend=backend)
    with pytest.raises(ValueError, match="n_classes: expected an int >= 0"):
        nbops.nb_class_stats(x[:0], y[:0], -2, backend=backend)
    # no classes and no rows: an empty result, not an error
    cnt, out = nbops.nb_class_stats(x[:0], y[:0], 0, backend=backend)
    assert cnt.shape == (0,) and out.shape == (0, 2)


def test_binarize_past_float_range_raises_value_error():
    # float(10**400) raises OverflowError: it must come out as a ValueError naming the argument
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="binarize"):
        nbops.bernoulli_nb_log_likelihood(x, torch.full((2, 3), -1.0), torch.zeros(2), binarize=10**400)
