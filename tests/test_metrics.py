"""genengine.metrics against float64 transcriptions of the formulas, constructed cases with known
answers, the statistical properties the estimators promise (KID unbiasedness), and bad inputs."""

import math
import os
import random

import numpy as np
import pytest
import scipy.linalg as scipy_linalg  # the test extra has scipy
import torch
from torch.nn import functional as F

import genengine as ge
from genengine import metrics as M


def _rand_cov(d, n, gen, scale=None):
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if scale is not None:
        x = x * scale
    x = x - x.mean(0)
    return x.T @ x / (n - 1)


def _psd_sqrt(s):
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _fd_literal(mu1, s1, mu2, s2):
    """The formula as written: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)."""
    r = _psd_sqrt(s1)
    covmean = _psd_sqrt(r @ s2 @ r)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * torch.trace(covmean))


# ----------------------------------------------------------------------------------------------
# frechet_distance


@pytest.mark.parametrize("trial", range(3))
def test_frechet_matches_transcription_and_sqrtm(gen, trial):
    d = random.Random(gen.initial_seed() + trial).randrange(3, 70)
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    s1, s2 = _rand_cov(d, 4 * d, gen), _rand_cov(d, 5 * d, gen, scale=torch.rand(d, generator=gen, dtype=torch.float64) + 0.5)
    got = M.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float)
    assert got == pytest.approx(_fd_literal(mu1, s1, mu2, s2), rel=1e-9)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = float(((mu1 - mu2) ** 2).sum()) + float(np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(covmean))
    assert got == pytest.approx(ref, rel=1e-7)
    # float32 and numpy inputs give the float64 answer of the same values
    assert M.frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(got, rel=1e-12)
    assert M.frechet_distance(mu1.float(), s1.float(), mu2.float(), s2.float()) == pytest.approx(
        _fd_literal(mu1.float().double(), s1.float().double(), mu2.float().double(), s2.float().double()), rel=1e-6)


def test_frechet_diagonal_closed_form(gen):
    d = 17
    a, b = torch.rand(d, generator=gen, dtype=torch.float64) + 0.1, torch.rand(d, generator=gen, dtype=torch.float64) + 0.1
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    want = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert M.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(want, rel=1e-12)


def test_frechet_identical_zero_symmetric_positive(gen):
    d = 33
    mu, s = torch.randn(d, generator=gen, dtype=torch.float64), _rand_cov(d, 100, gen)
    assert M.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9 * float(torch.trace(s)))
    mu2, s2 = mu + 0.1, _rand_cov(d, 90, gen)
    ab, ba = M.frechet_distance(mu, s, mu2, s2), M.frechet_distance(mu2, s2, mu, s)
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-9)


@pytest.mark.parametrize("case", ["one_singular", "both_singular", "ill_conditioned", "zero", "dead", "dead_and_singular"])
def test_frechet_rank_deficient_and_ill_conditioned(gen, case):
    d = 48
    if case == "one_singular":  # Cholesky of sigma1 fails, of sigma2 succeeds (the swapped route)
        s1, s2 = _rand_cov(d, 20, gen), _rand_cov(d, 200, gen)
    elif case == "both_singular":  # fewer samples than dimensions in both: the eigendecomposition route
        s1, s2 = _rand_cov(d, 12, gen), _rand_cov(d, 30, gen)
    elif case == "ill_conditioned":
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        s1 = (q * torch.logspace(-14, 0, d, dtype=torch.float64)) @ q.T
        s1 = 0.5 * (s1 + s1.T)
        s2 = _rand_cov(d, 3 * d, gen)
    elif case == "dead":  # features that never vary (zero rows/columns), in different places in each
        s1, s2 = _rand_cov(d, 200, gen), _rand_cov(d, 200, gen)
        s1[:7], s1[:, :7], s2[5:9], s2[:, 5:9] = 0, 0, 0, 0
    elif case == "dead_and_singular":
        s1, s2 = _rand_cov(d, 20, gen), _rand_cov(d, 25, gen)
        s1[-3:], s1[:, -3:] = 0, 0
    else:
        s1, s2 = torch.zeros(d, d, dtype=torch.float64), _rand_cov(d, 10, gen)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.01, dtype=torch.float64)
    got = M.frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(got) and got >= 0
    scale = float(torch.trace(s1) + torch.trace(s2))
    # singular matrices put sqrt(rounding) into each zero eigenvalue: agreement to ~1e-6 of the scale
    assert got == pytest.approx(_fd_literal(mu1, s1, mu2, s2), abs=1e-6 * scale)
    assert M.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-5 * scale)


def test_frechet_bad_inputs():
    mu, s = torch.zeros(4), torch.eye(4)
    with pytest.raises(ValueError, match="mu2"):
        M.frechet_distance(mu, s, torch.zeros(5), torch.eye(5))
    with pytest.raises(ValueError, match="sigma1"):
        M.frechet_distance(mu, torch.eye(3), mu, s)
    with pytest.raises(ValueError, match="mu1"):
        M.frechet_distance(torch.zeros(2, 2), s, mu, s)
    with pytest.raises(ValueError, match="NaN"):
        M.frechet_distance(mu, torch.full((4, 4), float("nan")), mu, s)
    with pytest.raises(ValueError, match="symmetric"):
        M.frechet_distance(mu, torch.triu(torch.ones(4, 4)), mu, s)
    with pytest.raises(TypeError, match="mu1"):
        M.frechet_distance("x", s, mu, s)


# ----------------------------------------------------------------------------------------------
# FeatureStats and fid


def test_feature_stats_streaming_matches_batch(gen):
    n, d = 257, 13
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * 3 + 1e7  # a large offset: raw moments would cancel
    st = M.FeatureStats()
    for chunk in torch.split(x, 19):
        st.update(chunk)
    xc = x - x.mean(0)
    assert st.n == n
    torch.testing.assert_close(st.mean, x.mean(0), rtol=1e-15, atol=1e-8)
    # at an offset of 1e7 the inputs themselves are rounded to 1.9e-9, so the references carry ~1e-9
    # absolute error in a covariance of ~9 (raw moments would be off by ~1e-2)
    torch.testing.assert_close(st.cov, xc.T @ xc / (n - 1), rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(st.cov, torch.from_numpy(np.cov(x.numpy(), rowvar=False)), rtol=1e-9, atol=1e-8)
    a, b = M.FeatureStats().update(x[:100]), M.FeatureStats().update(x[100:])
    a.merge(b)
    torch.testing.assert_close(a.cov, st.cov, rtol=1e-8, atol=1e-8)  # ulp(1e7) ~ 2e-9 limits any method
    assert M.FeatureStats(dim=d).merge(M.FeatureStats()).n == 0


def test_feature_stats_bad_inputs():
    st = M.FeatureStats().update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="expected 3 features"):
        st.update(torch.randn(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        st.update(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = M.FeatureStats().update(torch.randn(1, 3)).cov
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        st.update(torch.randn(5))
    with pytest.raises(ValueError, match="other"):
        st.merge(M.FeatureStats().update(torch.randn(2, 7)))


def _dist_worker(rank, world, init_file, chunks, out_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        st = M.FeatureStats(dim=chunks[0].shape[1])
        if chunks[rank].shape[0]:
            st.update(chunks[rank])
        st.all_reduce()
        if rank == 0:
            torch.save({"n": st.n, "mean": st.mean, "cov": st.cov}, out_file)
    finally:
        dist.destroy_process_group()


def test_feature_stats_all_reduce_across_ranks(tmp_path, gen):
    import torch.multiprocessing as mp

    x = torch.randn(203, 6, generator=gen, dtype=torch.float64) + 50
    chunks = [x[:150], x[150:]]
    out = tmp_path / "stats.pt"
    mp.start_processes(_dist_worker, args=(2, str(tmp_path / "init"), chunks, str(out)), nprocs=2, start_method="spawn")
    got = torch.load(out)
    assert got["n"] == 203
    torch.testing.assert_close(got["mean"], x.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["cov"], torch.cov(x.T), rtol=1e-10, atol=1e-10)
    # without a process group all_reduce is the identity
    st = M.FeatureStats().update(x)
    torch.testing.assert_close(st.all_reduce().cov, torch.cov(x.T), rtol=1e-10, atol=1e-10)


def test_fid_features_batches_stats_and_extractor(gen):
    real = torch.randn(300, 8, generator=gen)
    fake = torch.randn(250, 8, generator=gen) * 1.5 + 0.5
    want = M.frechet_distance(real.double().mean(0), torch.cov(real.double().T), fake.double().mean(0), torch.cov(fake.double().T))
    assert M.fid(real, fake) == pytest.approx(want, rel=1e-9)
    assert M.fid(list(torch.split(real, 64)), [(b, None) for b in torch.split(fake, 50)]) == pytest.approx(want, rel=1e-9)
    assert M.fid(M.FeatureStats.from_features(real), fake.numpy()) == pytest.approx(want, rel=1e-9)
    # through a callable and through the built-in random extractor (images)
    assert M.fid(real, fake, feature_extractor=lambda b: b * 2, batch_size=7) == pytest.approx(4 * want, rel=1e-9)
    ext = M.RandomFeatureExtractor(dim=16)
    imgs_a = torch.rand(64, 3, 16, 16, generator=gen)
    imgs_b = torch.rand(64, 3, 16, 16, generator=gen) ** 3
    same = M.fid(imgs_a, imgs_a.clone(), feature_extractor=ext, batch_size=10)
    diff = M.fid(imgs_a, imgs_b, feature_extractor=ext, batch_size=10)
    assert same == pytest.approx(0.0, abs=1e-9) and diff > 100 * max(same, 1e-12)
    torch.testing.assert_close(M.RandomFeatureExtractor(dim=16)(imgs_a), ext(imgs_a))  # fixed weights per seed


def test_fid_bad_inputs():
    with pytest.raises(ValueError, match="fake: expected 8 features"):
        M.fid(torch.randn(10, 8), torch.randn(10, 9))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.fid(torch.randn(1, 8), torch.randn(10, 8))
    bad = torch.randn(10, 8)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.fid(torch.randn(10, 8), bad)
    with pytest.raises(ValueError, match="feature_extractor"):
        M.fid(torch.randn(10, 3, 4, 4), torch.randn(10, 3, 4, 4))
    with pytest.raises(TypeError, match="feature_extractor"):
        M.fid(torch.randn(10, 8), torch.randn(10, 8), feature_extractor=3)
    with pytest.raises(TypeError, match="real"):
        M.fid(5, torch.randn(10, 8))


# ----------------------------------------------------------------------------------------------
# KID


def _kid_literal(x, y):
    m, d = x.shape[0], x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return float(sxx + syy - 2 * sxy)


def test_kid_matches_transcription(gen):
    x, y = torch.randn(9, 4, generator=gen, dtype=torch.float64), torch.randn(9, 4, generator=gen, dtype=torch.float64) + 0.3
    mean, std = M.kid(x, y, subsets=3, subset_size=50, generator=gen)  # subset = the whole set: every subset equal
    assert mean == pytest.approx(_kid_literal(x, y), rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)


def test_kid_unbiased_near_zero_and_positive_for_different(gen):
    d, n, trials = 8, 60, 40
    est = [M.kid(torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), subsets=1, subset_size=n)[0]
           for _ in range(trials)]
    est = torch.tensor(est, dtype=torch.float64)
    se = float(est.std()) / math.sqrt(trials)
    assert abs(float(est.mean())) < 4.5 * se  # the expectation is exactly 0 for one distribution
    assert float((est < 0).sum()) > 0  # unbiased: some single estimates fall below 0 (a biased one never would)
    far, far_std = M.kid(torch.randn(200, d, generator=gen), torch.randn(200, d, generator=gen) * 1.5 + 0.5,
                         subsets=10, subset_size=100, generator=gen)
    assert far > 10 * se and far > 3 * far_std / math.sqrt(10)


def test_kid_bad_inputs():
    with pytest.raises(ValueError, match="fake: expected 4 features"):
        M.kid(torch.randn(10, 4), torch.randn(10, 5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.kid(torch.randn(1, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="NaN"):
        M.kid(torch.full((10, 4), float("nan")), torch.randn(10, 4))
    with pytest.raises(ValueError, match="subsets"):
        M.kid(torch.randn(10, 4), torch.randn(10, 4), subsets=0)


# ----------------------------------------------------------------------------------------------
# Inception score


def test_inception_score_known_values(gen):
    c = 7
    onehot = F.one_hot(torch.arange(70) % c, c).double()
    mean, std = M.inception_score(onehot, splits=5)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    same = torch.softmax(torch.randn(1, c, generator=gen), 1).expand(40, c)
    assert M.inception_score(same, splits=4)[0] == pytest.approx(1.0, rel=1e-6)
    p = torch.softmax(torch.randn(30, c, generator=gen, dtype=torch.float64) * 2, 1)
    py = p.mean(0)
    want = math.exp(float((p * (p.log() - py.log())).sum(1).mean()))
    assert M.inception_score(p, splits=1)[0] == pytest.approx(want, rel=1e-12)


def test_inception_score_bad_inputs():
    with pytest.raises(ValueError, match="probabilities"):
        M.inception_score(torch.randn(20, 5), splits=2)
    with pytest.raises(ValueError, match="splits"):
        M.inception_score(torch.full((3, 5), 0.2), splits=4)


# ----------------------------------------------------------------------------------------------
# precision / recall


def test_precision_recall_constructed_cases():
    line = torch.stack([torch.arange(20.0), torch.zeros(20)], 1)  # spacing 1: k=1 radii are 1
    far = torch.stack([1000 + 10 * torch.arange(10.0), torch.full((10,), 1000.0)], 1)
    fake = torch.cat([line[::2], far])  # 10 copies of real points (spacing 2) + 10 far away
    # precision: the 10 copies lie in the real manifold, the far ones do not; recall: every real
    # point is within 2 (the copies' k=1 radius) of a copy
    for bs in (None, 3):
        assert M.precision_recall(line, fake, k=1, batch_size=bs) == pytest.approx((0.5, 1.0))
    assert M.precision_recall(line, line.clone(), k=2) == (1.0, 1.0)
    assert M.precision_recall(line, far, k=1) == (0.0, 0.0)


def test_precision_recall_matches_brute_force(gen):
    real = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    fake = torch.randn(35, 3, generator=gen, dtype=torch.float64) * 1.3 + 0.4
    k = 3

    def manifold_fraction(points, ref):
        dref = torch.cdist(ref, ref)
        radii = dref.sort(1).values[:, k]  # column 0 is the point itself
        return float((torch.cdist(points, ref) <= radii[None]).any(1).double().mean())

    p, r = M.precision_recall(real, fake, k=k, batch_size=7)
    assert p == pytest.approx(manifold_fraction(fake, real), abs=1e-12)
    assert r == pytest.approx(manifold_fraction(real, fake), abs=1e-12)


def test_precision_recall_bad_inputs():
    with pytest.raises(ValueError, match="more than k=3"):
        M.precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)
    with pytest.raises(ValueError, match="fake: expected 2 features"):
        M.precision_recall(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        M.precision_recall(torch.randn(10, 2), torch.full((10, 2), float("nan")))


# ----------------------------------------------------------------------------------------------
# perplexity and CLIP score


def test_perplexity_is_exp_mean_nll(gen):
    b, t, v = 3, 11, 17
    logits = torch.randn(b, t, v, generator=gen) * 3
    targets = torch.randint(0, v, (b, t), generator=gen)
    want = math.exp(float(F.cross_entropy(logits.double().reshape(-1, v), targets.reshape(-1))))
    assert M.perplexity(logits, targets) == pytest.approx(want, rel=1e-12)
    assert M.perplexity(torch.log_softmax(logits, -1), targets) == pytest.approx(want, rel=1e-6)
    targets[0, :5] = -100
    keep = targets != -100
    want = math.exp(float(F.cross_entropy(logits.double()[keep], targets[keep])))
    assert M.perplexity(logits, targets) == pytest.approx(want, rel=1e-12)
    assert M.perplexity(torch.zeros(4, v), torch.arange(4)) == pytest.approx(v, rel=1e-12)  # uniform: V


def test_perplexity_bad_inputs():
    with pytest.raises(ValueError, match="targets: expected shape"):
        M.perplexity(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets: expected indices in \[0, 5\)"):
        M.perplexity(torch.randn(4, 5), torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="targets"):
        M.perplexity(torch.randn(4, 5), torch.zeros(4))
    with pytest.raises(ValueError, match="ignore_index"):
        M.perplexity(torch.randn(2, 5), torch.tensor([-100, -100]))
    with pytest.raises(ValueError, match="NaN"):
        M.perplexity(torch.full((2, 5), float("nan")), torch.tensor([0, 1]))


def test_clip_score(gen):
    a = torch.randn(6, 12, generator=gen)
    b = torch.randn(6, 12, generator=gen)
    assert M.clip_score(a, 3 * a) == pytest.approx(100.0, rel=1e-12)
    assert M.clip_score(a, -a) == 0.0  # negative similarity clamps to 0
    per = M.clip_score(a, b, reduction="none")
    want = (100 * F.cosine_similarity(a.double(), b.double(), dim=1)).clamp_min(0)
    torch.testing.assert_close(per, want, rtol=1e-12, atol=1e-12)
    assert M.clip_score(a, b) == pytest.approx(float(want.mean()), rel=1e-12)
    with pytest.raises(ValueError, match="text_embeddings"):
        M.clip_score(a, b[:5])
    with pytest.raises(ValueError, match="zero embedding"):
        M.clip_score(torch.zeros(2, 3), torch.ones(2, 3))


def test_public_names():
    for name in ("frechet_distance", "fid", "kid", "inception_score", "perplexity", "precision_recall", "clip_score"):
        assert callable(getattr(ge.metrics, name))
    assert os.path.basename(M.__file__) == "metrics.py"


# ----------------------------------------------------------------------------------------------
# extreme but finite inputs (found by fuzzing)


def test_frechet_is_exact_at_extreme_scales(gen):
    z, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    assert M.frechet_distance(z, 1e300 * eye, z, 1e300 * eye) == 0.0  # gave NaN: L^T S2 L overflowed
    a = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(40, 3, generator=gen, dtype=torch.float64) * 2 + 1
    base = M.fid(a, b)
    # FD is homogeneous of degree 2 in a common scale c of the features
    for c in (1e-150, 1e-100, 1e100, 1e150):
        assert M.fid(a * c, b * c) / c**2 == pytest.approx(base, rel=1e-9)
    # covariances at very different scales: the small one is negligible, the answer is Tr(big)
    assert M.frechet_distance(z, 1e300 * eye, z, 1e-300 * eye) == pytest.approx(2e300, rel=1e-12)
    # equal huge means cancel exactly; the covariance term survives
    mu = torch.full((2,), 1e300, dtype=torch.float64)
    assert M.frechet_distance(mu, eye, mu, 4 * eye) == pytest.approx(2.0, rel=1e-12)


def test_frechet_distance_past_float64_range_raises():
    eye = torch.eye(2, dtype=torch.float64)
    big = torch.full((2,), 1e200, dtype=torch.float64)
    with pytest.raises(ValueError, match="exceeds the float64 range"):
        M.frechet_distance(big, eye, -big, eye)  # |mu1 - mu2|^2 = 8e400
    top = torch.full((2,), 1.7e308, dtype=torch.float64)
    with pytest.raises(ValueError, match="exceeds the float64 range"):
        M.frechet_distance(top, eye, -top, eye)  # mu1 - mu2 itself overflows


def test_frechet_rejects_covariance_that_is_not_psd():
    z, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3 and -1
    with pytest.raises(ValueError, match="sigma1: .*positive semi-definite"):
        M.frechet_distance(z, indefinite, z, eye)
    with pytest.raises(ValueError, match="sigma2: .*positive semi-definite"):
        M.frechet_distance(z, eye, z, indefinite * 1e-200)  # at any scale
    # a zero diagonal entry with a nonzero off-diagonal one (the dead-feature route would hide it)
    with pytest.raises(ValueError, match="sigma1: .*positive semi-definite"):
        M.frechet_distance(z, torch.tensor([[0.0, 1.0], [1.0, 1.0]]), z, eye)
    # rounding-level negative eigenvalues of a singular covariance are accepted
    x = torch.randn(3, 40, dtype=torch.float64)
    singular = (x.T @ x).float()  # rank 3 of 40, built in float32
    assert math.isfinite(M.frechet_distance(torch.zeros(40), singular, torch.zeros(40), singular))


def test_kid_rejects_subset_size_one_and_kernel_overflow(gen):
    x, y = torch.randn(30, 4, generator=gen), torch.randn(20, 4, generator=gen)
    with pytest.raises(ValueError, match="subset_size"):
        M.kid(x, y, subset_size=1)  # returned (nan, nan): m (m - 1) = 0
    with pytest.raises(ValueError, match="degree/gamma/coef0: .*overflows"):
        M.kid(x * 10, y * 10, subsets=2, subset_size=10, degree=300, generator=gen)
    with pytest.raises(ValueError, match="degree/gamma/coef0: .*overflows"):
        M.kid(x, y, subsets=2, subset_size=10, coef0=1e200, generator=gen)
    mean, std = M.kid(x * 1e-3, y * 1e-3, subsets=2, subset_size=10, degree=300, generator=gen)
    assert math.isfinite(mean) and math.isfinite(std)  # a high degree alone is fine when the base stays near 1


def test_perplexity_all_neg_inf_row_raises_and_zero_probability_target_is_inf():
    logits = torch.zeros(2, 3, 4)
    logits[1, 2] = -math.inf
    with pytest.raises(ValueError, match=r"logits: every logit is -inf at scored position \(1, 2\)"):
        M.perplexity(logits, torch.zeros(2, 3, dtype=torch.long))  # returned NaN
    targets = torch.zeros(2, 3, dtype=torch.long)
    targets[1, 2] = -100  # an ignored all -inf row is never scored
    assert M.perplexity(logits, targets) == pytest.approx(4.0, rel=1e-12)
    one_dead_class = torch.tensor([[0.0, -math.inf, 0.0]])
    assert M.perplexity(one_dead_class, torch.tensor([1])) == math.inf  # probability 0: perplexity +inf


def test_clip_score_empty_and_extreme_magnitudes(gen):
    with pytest.raises(ValueError, match="image_embeddings: expected at least one embedding"):
        M.clip_score(torch.zeros(0, 4), torch.zeros(0, 4))  # returned NaN
    a = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    want = M.clip_score(a, b, reduction="none")
    for c in (1e160, 1e-170):  # squares overflow to inf (NaN) / underflow to 0 ("zero embedding")
        torch.testing.assert_close(M.clip_score(a * c, b * c, reduction="none"), want, rtol=1e-12, atol=1e-12)
