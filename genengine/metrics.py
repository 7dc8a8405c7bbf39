"""Evaluation metrics for generative models, on features the caller provides (nothing is downloaded).

    mu, sigma = stats.mean, stats.cov                      # FeatureStats: streaming mean / covariance
    ge.metrics.frechet_distance(mu1, sigma1, mu2, sigma2)  # -> float (FID from statistics)
    ge.metrics.fid(real, fake, feature_extractor=net)      # images through any nn.Module / callable
    ge.metrics.kid(real_feats, fake_feats)                 # -> (mean, std) over subsets
    ge.metrics.inception_score(class_probs)                # -> (mean, std) over splits
    ge.metrics.precision_recall(real_feats, fake_feats)    # -> (precision, recall), k-NN manifolds
    ge.metrics.perplexity(logits, targets)                 # -> float
    ge.metrics.clip_score(image_emb, text_emb)             # -> float (mean of 100 * max(cos, 0))

Shapes: features are (N, D) (any float dtype; the metrics compute in float64). Inputs to a feature
extractor are (N, ...) batches of whatever it eats (images (N, C, H, W), audio (N, C, L), ...); its
output is flattened to (N, D). `real`/`fake` may be a tensor or array, an iterable of batches
(tensors or (x, y) pairs, e.g. a DataLoader), or (fid only) a FeatureStats. Class probabilities are
(N, C); logits/log-probabilities (..., V) with integer targets (...); embeddings (N, D) paired by row.

The Frechet distance is d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2). The
last trace is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
S1^1/2 S2 S1^1/2; for any factor S1 = L L^T, L^T S2 L is orthogonally similar to it (S1^1/2 = L Q with
Q orthogonal), so its eigenvalues, found by the symmetric eigensolver (eigvalsh) and clamped at 0,
give the same trace. L is the Cholesky factor when S1 (or S2, the formula is symmetric) is positive
definite, else S1's eigendecomposition V diag(sqrt(max(w, 0))). This never goes complex, unlike
sqrtm(S1 S2) on the non-symmetric product, and costs one Cholesky, two matmuls and one eigvalsh
(see benchmarks/bench_metrics.py for the comparison with scipy's sqrtm and torchmetrics).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._checks import positive_int
from ._distributed import all_reduce_sum

__all__ = ["frechet_distance", "FeatureStats", "fid", "kid", "inception_score", "precision_recall", "perplexity",
           "clip_score", "RandomFeatureExtractor"]

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# argument checks


def _tensor(name, x, dtype=_F64):
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x)
        except Exception:
            raise TypeError(f"{name}: expected a tensor or array, got {type(x).__name__}") from None
    if t.is_complex():
        raise TypeError(f"{name}: expected real values, got {t.dtype}")
    if dtype is not None:
        if t.dtype == torch.bool:
            raise TypeError(f"{name}: expected numbers, got a bool tensor")
        t = t.to(dtype)
    return t


def _finite(name, t):
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def _features2d(name, x):
    t = _finite(name, _tensor(name, x))
    if t.dim() != 2:
        raise ValueError(f"{name}: expected features of shape (N, D), got shape {tuple(t.shape)}"
                         " (pass feature_extractor= to turn raw samples into features)")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one feature (D >= 1), got shape {tuple(t.shape)}")
    return t


def _batch_size(v):
    return positive_int("batch_size", v)


# ----------------------------------------------------------------------------------------------
# Frechet distance


def _check_stats(mu_name, mu, sigma_name, sigma):
    mu = _finite(mu_name, _tensor(mu_name, mu))
    sigma = _tensor(sigma_name, sigma)
    if mu.dim() != 1:
        raise ValueError(f"{mu_name}: expected a mean vector of shape (D,), got shape {tuple(mu.shape)}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"{sigma_name}: expected a ({d}, {d}) covariance to match {mu_name} ({d},), "
                         f"got shape {tuple(sigma.shape)}")
    if d == 0:
        raise ValueError(f"{mu_name}: expected at least one dimension, got shape (0,)")
    if not math.isfinite(float(sigma.sum())):  # one pass; NaN and inf propagate into the sum
        _finite(sigma_name, sigma)
        raise ValueError(f"{sigma_name}: its entries are too large (their sum overflows float64)")
    diag = torch.diagonal(sigma)
    scale = float(diag.abs().max())  # for a PSD matrix the largest entry lies on the diagonal
    if float(diag.min()) < -1e-9 * max(scale, 1e-300):
        raise ValueError(f"{sigma_name}: a covariance has a non-negative diagonal; this one has {float(diag.min()):.3g}")
    sigma, asym = _symmetrised(sigma)
    if asym > 1e-6 * max(scale, 1e-300):
        raise ValueError(f"{sigma_name}: a covariance must be symmetric; this one differs from its transpose by "
                         f"{asym:.3g} (largest diagonal entry {scale:.3g})")
    return mu, sigma


def _symmetrised(a, block=256):
    """((a + a^T) / 2, max |a - a^T|), block pair by block pair: a matmul-built covariance is
    rarely bit-symmetric, and reading a^T whole strides through memory (this takes 2.4x less time)."""
    n = a.shape[0]
    out = torch.empty_like(a)
    asym = 0.0
    for i in range(0, n, block):
        for j in range(i, n, block):
            x, y = a[i:i + block, j:j + block], a[j:j + block, i:i + block].mT
            asym = max(asym, float(torch.dist(x, y, p=math.inf)))
            m = torch.add(x, y).mul_(0.5)
            out[i:i + block, j:j + block] = m
            out[j:j + block, i:i + block] = m.mT
    return out, asym


def _drop_dead(a, b):
    """(a, b) restricted to the indices where a's diagonal is positive. Features that never vary in
    `a` (dead units) have zero rows and columns there, so a^1/2 is zero on them and the trace of
    (a^1/2 b a^1/2)^1/2 only sees the other indices: dropping them is exact."""
    live = torch.diagonal(a) > 0
    if bool(live.all()):
        return a, b
    idx = live.nonzero().squeeze(1)
    return a[idx][:, idx], b[idx][:, idx]


def _trace_sqrt_product(s1, s2):
    """Tr((S1^1/2 S2 S1^1/2)^1/2) in float64 (see the module docstring)."""
    for a, b in ((s1, s2), (s2, s1)):  # the trace is symmetric in S1, S2: either factor serves
        a, b = _drop_dead(a, b)
        if a.shape[0] == 0:
            return s1.new_zeros(())
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            m = _lower_of_congruence(chol, b)
            break
    else:  # both singular (fewer samples than dimensions): the eigendecomposition's factor
        a, b = _drop_dead(s1, s2)
        w, v = torch.linalg.eigh(a)
        factor = v * w.clamp_min(0).sqrt()
        m = factor.mT @ (b @ factor)
    lam = torch.linalg.eigvalsh(m, UPLO="L")  # reads the lower triangle only
    return lam.clamp_min(0).sqrt().sum()


def _lower_of_congruence(lo, s, block=256):
    """The lower triangle of L^T S L for lower-triangular L (the upper triangle is left unset), in
    about 5/3 n^3 FLOPs instead of the 4 n^3 of two dense matmuls: column block j of S L only needs
    rows j.. of L, and the lower part of column block j of L^T (S L) only rows j.. of both."""
    n = lo.shape[0]
    if n <= 2 * block:
        return lo.mT @ (s @ lo)
    w = torch.empty_like(s)
    out = torch.empty_like(s)
    for j in range(0, n, block):
        e = min(n, j + block)
        torch.mm(s[:, j:], lo[j:, j:e], out=w[:, j:e])
        torch.mm(lo[j:, j:].mT, w[j:, j:e], out=out[j:, j:e])
    return out


def _times_pow2(t, e):
    """t * 2**e, exact away from subnormals; in steps, because 2**e alone over/underflows for |e| > 1023
    (the range a scale between the smallest subnormal and the largest double needs)."""
    while e:
        step = max(-1000, min(1000, e))
        t = t * math.ldexp(1.0, step)
        e -= step
    return t


def _check_psd(name, sigma):
    """ValueError unless sigma (symmetric, already scaled to order 1) is positive semi-definite up to
    rounding. Cholesky of sigma + 1e-6 Tr(sigma) I succeeds exactly when no eigenvalue lies below
    -1e-6 Tr(sigma) (Tr >= the largest eigenvalue, and it grows with D like the rounding in a
    computed covariance does, so float32-built singular covariances still pass); one Cholesky is far
    cheaper than the eigenvalues, which are only computed for the message."""
    tr = float(torch.trace(sigma))
    if tr == 0:  # a PSD matrix with a zero diagonal is zero
        if bool((sigma != 0).any()):
            raise ValueError(f"{name}: a covariance must be positive semi-definite; this one has a zero diagonal "
                             "but nonzero off-diagonal entries")
        return
    shifted = sigma.clone()
    shifted.diagonal().add_(1e-6 * tr)
    if int(torch.linalg.cholesky_ex(shifted)[1]) != 0:
        w = torch.linalg.eigvalsh(sigma)
        raise ValueError(f"{name}: a covariance must be positive semi-definite; its smallest eigenvalue is "
                         f"{float(w[0] / w[-1].clamp_min(1e-300)):.3g} times its largest")


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), a Python float >= 0.

    mu (D,), sigma (D, D) symmetric positive semi-definite (tensors or arrays, any float dtype; the
    computation is float64 on their device). Finite for every valid covariance, including singular
    (rank-deficient) and ill-conditioned ones, at any scale (a distance past the float64 range raises
    ValueError).
    """
    mu1, sigma1 = _check_stats("mu1", mu1, "sigma1", sigma1)
    mu2, sigma2 = _check_stats("mu2", mu2, "sigma2", sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu2: expected {mu1.shape[0]} dimensions to match mu1, got {mu2.shape[0]}")
    mu2, sigma2 = mu2.to(mu1.device), sigma2.to(mu1.device)
    # The covariance part is homogeneous of degree 1 in (sigma1, sigma2) jointly, but L^T S2 L is of
    # order scale^2 and over/underflows long before the answer does (1e300 I gave NaN, 1e-200 lost
    # digits silently). So both covariances are divided by one power of 4 that brings the larger
    # diagonal to order 1 (a power of two: exact, so ordinary inputs give bit-identical matrices),
    # and the result is scaled back. The mean term gets its own power of two for the same reason.
    scale = max(float(torch.diagonal(sigma1).max()), float(torch.diagonal(sigma2).max()))
    k = math.frexp(scale)[1] // 2 if scale > 0 else 0
    sigma1, sigma2 = _times_pow2(sigma1, -2 * k), _times_pow2(sigma2, -2 * k)
    _check_psd("sigma1", sigma1)
    _check_psd("sigma2", sigma2)
    cov_part = float(torch.trace(sigma1) + torch.trace(sigma2) - 2 * _trace_sqrt_product(sigma1, sigma2))
    diff, j = mu1 - mu2, 0
    if not bool(torch.isfinite(diff).all()):  # finite means whose difference overflows: halve first
        diff, j = mu1 * 0.5 - mu2 * 0.5, 1
    dmax = float(diff.abs().max())
    if dmax > 0:
        e = math.frexp(dmax)[1]
        diff, j = _times_pow2(diff, -e), j + e
    try:
        d = math.ldexp(float(diff @ diff), 2 * j) + math.ldexp(cov_part, 2 * k)
    except OverflowError:
        d = math.inf
    if not math.isfinite(d):
        raise ValueError("mu1/sigma1/mu2/sigma2: the Frechet distance of these statistics exceeds the float64 range")
    return max(d, 0.0)


# ----------------------------------------------------------------------------------------------
# streaming statistics


class FeatureStats:
    """Running mean and covariance of feature vectors, fed batch by batch, in float64.

        stats = FeatureStats()             # or FeatureStats(dim=2048) (needed on ranks that see no data)
        for batch in loader: stats.update(extractor(batch))       # (B, D)
        stats.all_reduce()                 # every torch.distributed rank now holds the global statistics
        stats.mean, stats.cov, stats.n     # (D,), (D, D) with ddof=1 (numpy.cov's default), count

    Each batch is centred on its own mean and merged with the running statistics by Chan et al.'s
    pairwise update (n = na + nb; mean += delta nb / n; M2 = M2a + M2b + delta delta^T na nb / n), so
    no large raw moment is ever subtracted from another. `merge(other)` and `all_reduce()` use the
    same update (across ranks: the global mean first, then each rank's M2 re-centred on it, summed).
    """

    def __init__(self, dim: int | None = None, device=None):
        self.dim = None if dim is None else positive_int("dim", dim)
        self.device = torch.device(device) if device is not None else None
        self.n = 0
        self._mean = None
        self._m2 = None
        if self.dim is not None:
            self._alloc(self.dim, self.device or torch.device("cpu"))

    def _alloc(self, dim, device):
        self.dim, self.device = dim, device
        self._mean = torch.zeros(dim, dtype=_F64, device=device)
        self._m2 = torch.zeros(dim, dim, dtype=_F64, device=device)

    def _merge(self, nb, mean_b, m2_b):
        if nb == 0:
            return self
        if self.n == 0:
            self._mean.copy_(mean_b)
            self._m2.copy_(m2_b)
            self.n = nb
            return self
        n = self.n + nb
        delta = mean_b - self._mean
        self._mean += delta * (nb / n)
        self._m2 += m2_b
        self._m2.addr_(delta, delta, alpha=self.n * nb / n)
        self.n = n
        return self

    def update(self, features) -> FeatureStats:
        """Adds a batch of features (B, D) (B >= 1); returns self."""
        x = _features2d("features", features)
        if self.dim is None:
            self._alloc(x.shape[1], x.device)
        elif x.shape[1] != self.dim:
            raise ValueError(f"features: expected {self.dim} features per row (as before), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self
        x = x.to(self.device)
        mean_b = x.mean(0)
        xc = x - mean_b
        return self._merge(x.shape[0], mean_b, xc.mT @ xc)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Adds another FeatureStats' samples to this one (in place); returns self."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"other: expected a FeatureStats, got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.dim is None:
            self._alloc(other.dim, other.device)
        elif other.dim != self.dim:
            raise ValueError(f"other: expected statistics of {self.dim} features, got {other.dim}")
        return self._merge(other.n, other._mean.to(self.device), other._m2.to(self.device))

    def all_reduce(self) -> FeatureStats:
        """Merges the statistics of every torch.distributed rank (in place, on every rank); the
        identity without a process group. Every rank must call it, and every rank must know dim."""
        if self.dim is None:
            raise ValueError("dim: this rank has seen no features, so it cannot take part in all_reduce; "
                             "build it as FeatureStats(dim=D)")
        count = torch.tensor([float(self.n)], dtype=_F64, device=self.device)
        weighted = self._mean * self.n
        all_reduce_sum(count, weighted)
        total = int(round(float(count)))
        if total == 0:
            return self
        mean = weighted / total
        delta = self._mean - mean
        m2 = self._m2.clone()
        m2.addr_(delta, delta, alpha=float(self.n))
        all_reduce_sum(m2)
        self.n, self._mean, self._m2 = total, mean, m2
        return self

    @property
    def mean(self) -> torch.Tensor:
        """(D,) float64 mean of the features seen."""
        if self.n == 0:
            raise ValueError("FeatureStats: no features yet (call update() first)")
        return self._mean.clone()

    @property
    def cov(self) -> torch.Tensor:
        """(D, D) float64 sample covariance (divided by n - 1)."""
        if self.n < 2:
            raise ValueError(f"FeatureStats: a covariance needs at least 2 samples, got {self.n}")
        c = self._m2 / (self.n - 1)
        return 0.5 * (c + c.mT)

    @classmethod
    def from_features(cls, features) -> FeatureStats:
        return cls().update(features)

    def __repr__(self):
        return f"FeatureStats(n={self.n}, dim={self.dim})"


# ----------------------------------------------------------------------------------------------
# features from samples


class RandomFeatureExtractor(nn.Module):
    """A fixed random network for tests and smoke runs (its features carry no perceptual meaning;
    pass a real network, e.g. an Inception or CLIP model, for published numbers).

    Inputs of rank 4 (N, C, H, W) go through two random 3x3 stride-2 convolutions with ReLU, then
    global mean and max pooling; every other input (N, ...) is flattened. A random projection with
    tanh gives (N, dim). Weights are drawn from `seed` the first time an input shape is seen.
    """

    def __init__(self, dim: int = 64, seed: int = 0, width: int = 32):
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.width = positive_int("width", width)
        self.seed = int(seed)
        self._weights = {}

    def _w(self, key, shape, fan_in, device):
        full = (key, shape, str(device))
        if full not in self._weights:
            salt = {"conv1": 1, "conv2": 2, "proj": 3}[key]  # not hash(): str hashes change per process
            g = torch.Generator().manual_seed((self.seed * 7919 + salt * 104729 + sum(shape)) % 2**63)
            self._weights[full] = (torch.randn(shape, generator=g, dtype=torch.float32) / math.sqrt(fan_in)).to(device)
        return self._weights[full]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"x: expected a batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
        x = x.float()
        if x.dim() == 4:
            c = x.shape[1]
            w1 = self._w("conv1", (self.width, c, 3, 3), 9 * c, x.device)
            w2 = self._w("conv2", (self.width, self.width, 3, 3), 9 * self.width, x.device)
            h = torch.relu(torch.nn.functional.conv2d(x, w1, stride=2, padding=1))
            h = torch.relu(torch.nn.functional.conv2d(h, w2, stride=2, padding=1))
            h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        else:
            h = x.reshape(x.shape[0], -1)
        p = self._w("proj", (h.shape[1], self.dim), h.shape[1], x.device)
        return torch.tanh(h @ p)


def _batches(name, x, batch_size):
    """Yields tensors of samples from a tensor/array (split into batch_size rows) or an iterable of
    batches (tensors, or (x, y) pairs whose x is used)."""
    if isinstance(x, torch.Tensor) or hasattr(x, "__array__"):
        t = _tensor(name, x, dtype=None)
        if t.dim() == 0:
            raise ValueError(f"{name}: expected a batch (N, ...), got a scalar")
        for i in range(0, t.shape[0], batch_size):
            yield t[i:i + batch_size]
        return
    if isinstance(x, (str, bytes, dict)) or not hasattr(x, "__iter__"):
        raise TypeError(f"{name}: expected a tensor, an array or an iterable of batches, got {type(x).__name__}")
    for i, item in enumerate(x):
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{name}: batch {i} is a {type(item).__name__}, expected a tensor or an (x, y) pair")
        yield item


def _extract(name, x, feature_extractor, batch_size):
    """Yields (B, D) float64 feature batches of x (through the extractor when given)."""
    if feature_extractor is not None and not callable(feature_extractor):
        raise TypeError(f"feature_extractor: expected an nn.Module or a callable, got {type(feature_extractor).__name__}")
    device = None
    if isinstance(feature_extractor, nn.Module):
        p = next(iter(feature_extractor.parameters()), None)
        device = p.device if p is not None else None
    for i, b in enumerate(_batches(name, x, batch_size)):
        if b.shape[0] == 0:
            continue
        if feature_extractor is None:
            f = b
        else:
            if device is not None:
                b = b.to(device)
            with torch.no_grad():
                f = feature_extractor(b)
            if not isinstance(f, torch.Tensor):
                raise TypeError(f"feature_extractor: expected it to return a tensor, got {type(f).__name__}")
            if f.dim() < 1 or f.shape[0] != b.shape[0]:
                raise ValueError(f"feature_extractor: returned shape {tuple(f.shape)} for a batch of {b.shape[0]}")
            f = f.reshape(f.shape[0], -1)
        yield _features2d(f"{name} (batch {i})" if feature_extractor is None else f"{name} features (batch {i})", f)


def _gather(name, x, feature_extractor, batch_size, min_rows):
    parts = list(_extract(name, x, feature_extractor, _batch_size(batch_size)))
    if not parts:
        raise ValueError(f"{name}: no samples")
    dims = {p.shape[1] for p in parts}
    if len(dims) > 1:
        raise ValueError(f"{name}: batches have different feature counts {sorted(dims)}")
    f = torch.cat(parts) if len(parts) > 1 else parts[0]
    if f.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} samples, got {f.shape[0]}")
    return f


def _stats(name, x, feature_extractor, batch_size):
    if isinstance(x, FeatureStats):
        st = x
    else:
        st = FeatureStats()
        for f in _extract(name, x, feature_extractor, _batch_size(batch_size)):
            st.update(f)
    if st.n < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 samples, got {st.n}")
    return st


def _same_dim(a, b, what="features"):
    if a != b:
        raise ValueError(f"fake: expected {a} {what} to match real, got {b}")


def fid(real, fake, *, feature_extractor=None, batch_size: int = 256) -> float:
    """Frechet distance between the feature statistics of `real` and `fake`.

    real, fake: features (N, D), samples for `feature_extractor`, iterables of batches, or
    FeatureStats (already accumulated). feature_extractor: an nn.Module (batches are moved to its
    device) or any callable (B, ...) -> (B, ...), run under torch.no_grad in batches of batch_size.
    """
    a = _stats("real", real, feature_extractor, batch_size)
    b = _stats("fake", fake, feature_extractor, batch_size)
    _same_dim(a.dim, b.dim)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov.to(a.device))


# ----------------------------------------------------------------------------------------------
# KID


def _poly_kernel(x, y, degree, gamma, coef0):
    return (gamma * (x @ y.mT) + coef0) ** degree


def kid(real, fake, *, feature_extractor=None, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, batch_size: int = 256, generator=None) -> tuple[float, float]:
    """Kernel Inception Distance: the unbiased MMD^2 between real and fake features under the
    polynomial kernel k(x, y) = (gamma x.y + coef0) ** degree (gamma = 1 / D: the cubic kernel of
    Binkowski et al. 2018), averaged over `subsets` random subsets of subset_size samples from each
    (drawn without replacement within a subset; subset_size is cut to the smaller set). Returns
    (mean, std) over the subsets. The estimate is unbiased: its expectation is 0 when both come from
    one distribution (so single estimates can be slightly negative).
    """
    subsets = positive_int("subsets", subsets)
    subset_size = positive_int("subset_size", subset_size)
    if subset_size < 2:  # the unbiased within-set terms average over m (m - 1) pairs
        raise ValueError(f"subset_size: expected at least 2 (the unbiased estimate needs pairs), got {subset_size}")
    degree = positive_int("degree", degree)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    x = _gather("real", real, feature_extractor, batch_size, 2)
    y = _gather("fake", fake, feature_extractor, batch_size, 2)
    _same_dim(x.shape[1], y.shape[1])
    y = y.to(x.device)
    d = x.shape[1]
    if gamma is None:
        gamma = 1.0 / d
    for nm, v in (("gamma", gamma), ("coef0", coef0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise TypeError(f"{nm}: expected a finite real number, got {v!r}")
    m = min(subset_size, x.shape[0], y.shape[0])
    gdev = generator.device if generator is not None else torch.device("cpu")
    vals = []
    for _ in range(subsets):
        xs = x[torch.randperm(x.shape[0], generator=generator, device=gdev)[:m].to(x.device)]
        ys = y[torch.randperm(y.shape[0], generator=generator, device=gdev)[:m].to(x.device)]
        kxx = _poly_kernel(xs, xs, degree, gamma, coef0)
        kyy = _poly_kernel(ys, ys, degree, gamma, coef0)
        kxy = _poly_kernel(xs, ys, degree, gamma, coef0)
        off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(off - 2 * kxy.mean())
    v = torch.stack(vals)
    # Whether (gamma x.y + coef0) ** degree overflows depends on all three and on the features'
    # scale together, so no bound on one argument is right (degree 300 is harmless when the base
    # stays near 1): the result is checked instead, once, after every subset.
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"degree/gamma/coef0: the kernel (gamma x.y + coef0) ** degree overflows float64 on these "
                         f"features (degree={degree}, gamma={gamma!r}, coef0={coef0!r}); lower degree or "
                         "bring gamma x.y + coef0 nearer 1")
    return float(v.mean()), (float(v.std()) if subsets > 1 else 0.0)


# ----------------------------------------------------------------------------------------------
# Inception score


def inception_score(probs, *, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, C) (rows of a softmax), computed on
    `splits` contiguous chunks (as in Salimans et al. 2016); returns (mean, std) over the chunks.
    Between 1 (every sample has the same class distribution) and C (confident and evenly spread)."""
    splits = positive_int("splits", splits)
    p = _finite("probs", _tensor("probs", probs))
    if p.dim() != 2 or p.shape[1] < 1:
        raise ValueError(f"probs: expected class probabilities of shape (N, C), got shape {tuple(p.shape)}")
    if p.shape[0] < splits:
        raise ValueError(f"probs: expected at least splits={splits} samples, got {p.shape[0]}")
    if float(p.min()) < 0 or float((p.sum(1) - 1).abs().max()) > 1e-3:
        raise ValueError("probs: expected probabilities (non-negative rows summing to 1; apply softmax to logits)")
    scores = []
    for chunk in torch.tensor_split(p, splits):
        py = chunk.mean(0, keepdim=True)
        kl = (torch.xlogy(chunk, chunk) - torch.xlogy(chunk, py.expand_as(chunk))).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), (float(s.std()) if splits > 1 else 0.0)


# ----------------------------------------------------------------------------------------------
# precision and recall (Kynkaanniemi et al. 2019)


def _sqdist(a, b, sq_a, sq_b):
    return (sq_a[:, None] + sq_b[None, :] - 2 * (a @ b.mT)).clamp_min_(0)


def _rows(n_cols, batch_size):
    if batch_size is not None:
        return _batch_size(batch_size)
    return max(1, min(4096, (1 << 23) // max(n_cols, 1)))  # ~64 MiB of float64 distances per block


def _knn_radii(x, k, batch):
    """Squared distance from each row of x to its k-th nearest other row (blocks of `batch` rows)."""
    sq = (x * x).sum(1)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], batch):
        d = _sqdist(x[i:i + batch], x, sq[i:i + batch], sq)
        out[i:i + batch] = d.kthvalue(k + 1, dim=1).values  # the (k+1)-th smallest counts the row itself
    return out


def _coverage(points, ref, radii, batch):
    """Fraction of `points` inside at least one ball (ref_j, radius_j)."""
    sq_p, sq_r = (points * points).sum(1), (ref * ref).sum(1)
    inside = 0
    for i in range(0, points.shape[0], batch):
        d = _sqdist(points[i:i + batch], ref, sq_p[i:i + batch], sq_r)
        inside += int((d <= radii[None, :]).any(1).sum())
    return inside / points.shape[0]


def precision_recall(real, fake, *, k: int = 3, feature_extractor=None, batch_size: int | None = None,
                     extractor_batch_size: int = 256) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019). Each set's manifold is the union of
    balls around its samples with radius the distance to the sample's k-th nearest neighbour in the
    same set; precision = fraction of fake samples inside the real manifold, recall = fraction of
    real samples inside the fake manifold. Distances are computed in blocks of batch_size rows
    (default: about 64 MiB of float64 per block), so memory stays O(batch_size * N)."""
    k = positive_int("k", k)
    x = _gather("real", real, feature_extractor, extractor_batch_size, 1)
    y = _gather("fake", fake, feature_extractor, extractor_batch_size, 1)
    _same_dim(x.shape[1], y.shape[1])
    y = y.to(x.device)
    for nm, t in (("real", x), ("fake", y)):
        if t.shape[0] <= k:
            raise ValueError(f"{nm}: expected more than k={k} samples (the k-th nearest neighbour), got {t.shape[0]}")
    batch = _rows(max(x.shape[0], y.shape[0]), batch_size)
    r_real = _knn_radii(x, k, batch)
    r_fake = _knn_radii(y, k, batch)
    return _coverage(y, x, r_real, batch), _coverage(x, y, r_fake, batch)


# ----------------------------------------------------------------------------------------------
# perplexity and CLIP score


def perplexity(logits, targets, *, ignore_index: int | None = -100) -> float:
    """exp(mean negative log-likelihood) of integer `targets` (...) under `logits` (..., V).

    Log-probabilities may be passed instead of logits: log_softmax leaves normalised log-probabilities
    unchanged, so both give the same value. Positions whose target equals ignore_index (default
    -100, PyTorch's convention; None ignores nothing) are left out of the mean."""
    lg = _tensor("logits", logits)
    if bool(torch.isnan(lg).any()) or bool(torch.isposinf(lg).any()):
        raise ValueError("logits: contains NaN or +inf values")
    t = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(targets)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"targets: expected integer class indices, got {t.dtype}")
    if lg.dim() < 1 or lg.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., V) with V >= 1, got {tuple(lg.shape)}")
    if tuple(t.shape) != tuple(lg.shape[:-1]):
        raise ValueError(f"targets: expected shape {tuple(lg.shape[:-1])} (logits without the last dim), got {tuple(t.shape)}")
    t = t.to(device=lg.device, dtype=torch.long)
    keep = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != int(ignore_index)
    if not bool(keep.any()):
        raise ValueError("targets: every position equals ignore_index; there is nothing to score")
    v = lg.shape[-1]
    kept = t[keep]
    if int(kept.min()) < 0 or int(kept.max()) >= v:
        raise ValueError(f"targets: expected indices in [0, {v}) (or ignore_index={ignore_index}), "
                         f"got values in [{int(kept.min())}, {int(kept.max())}]")
    lp = torch.log_softmax(lg[keep], dim=-1)
    nll = -lp.gather(1, kept[:, None]).squeeze(1)
    # NaN and +inf logits were refused, so a NaN here means a scored row with every logit -inf: its
    # softmax is 0/0, no distribution at all (typically a mask that hid the whole vocabulary), so
    # there is no likelihood to report. A -inf target logit in an otherwise valid row is different:
    # probability 0, NLL +inf, and perplexity +inf is the right answer, returned as such.
    if bool(torch.isnan(nll).any()):
        pos = tuple(int(i) for i in keep.nonzero()[int(torch.isnan(nll).nonzero()[0])])
        raise ValueError(f"logits: every logit is -inf at scored position {pos} (no probability distribution)")
    return float(torch.exp(nll.mean()))


def clip_score(image_embeddings, text_embeddings, *, reduction: str = "mean"):
    """CLIP score from embeddings the caller computed (paired by row, (N, D) each):
    100 * max(cos(image_i, text_i), 0), the usual definition (Hessel et al. 2021, w = 100 as in
    torchmetrics; negative similarities count as 0). reduction "mean" returns a float, "none" the
    (N,) float64 tensor of per-pair scores."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    a = _features2d("image_embeddings", image_embeddings)
    b = _features2d("text_embeddings", text_embeddings)
    if a.shape != b.shape:
        raise ValueError(f"text_embeddings: expected shape {tuple(a.shape)} (one per image, same D), got {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"image_embeddings: expected at least one embedding (N >= 1), got shape {tuple(a.shape)}")
    b = b.to(a.device)
    # Each row is divided by its largest |entry| before the norm: the cosine is scale-invariant,
    # but squares of entries near 1e160 overflow (NaN) and near 1e-170 underflow (a "zero" vector).
    ma, mb = a.abs().amax(1, keepdim=True), b.abs().amax(1, keepdim=True)
    if bool((ma == 0).any()) or bool((mb == 0).any()):
        raise ValueError("image_embeddings/text_embeddings: a zero embedding has no direction (cosine undefined)")
    a, b = a / ma, b / mb
    s = 100 * ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp_min(0)
    return float(s.mean()) if reduction == "mean" else s
