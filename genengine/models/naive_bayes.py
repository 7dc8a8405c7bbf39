"""Naive Bayes: GaussianNB, MultinomialNB, BernoulliNB, scikit-learn compatible where it fits, plus
sampling from the class-conditional distributions and exact log-likelihoods.

    nb = ge.models.GaussianNB().fit(x, y)            # x (N, F) float, y (N,) integer labels
    nb.predict(x) -> (N,) labels; nb.predict_proba(x) / predict_log_proba(x) -> (N, C)
    nb.log_prob(x) -> (N,) log p(x) (marginal over classes); nb.log_prob(x, y) -> log p(x, y)
    nb.sample(n) -> (n, F); nb.sample(n, y=3) or y=(n,) labels samples given the class

Attributes (scikit-learn's names, torch tensors, float64): classes_ (C,) int64, class_count_ (C,),
class_prior_ (GaussianNB) / class_log_prior_ (discrete), theta_, var_, epsilon_ (GaussianNB),
feature_count_, feature_log_prob_ (discrete). Semantics follow scikit-learn 1.x, quirks included
(GaussianNB.partial_fit removes the *new* epsilon_ before merging, as scikit-learn does).

The joint log-likelihood of every class runs in one fused kernel (genengine.ops.naive_bayes): the
Gaussian's and the Bernoulli's (with the binarisation) in C++ / Triton, the multinomial's as a
matmul followed by the fused row normalisation. Fitting is one pass for the per-class sums and one
for the squared deviations about the class means (GaussianNB).

log_prob is exact: GaussianNB a density in nats; BernoulliNB the probability mass of the
(binarised) 0/1 vector; MultinomialNB the multinomial probability of the count vector given its
total (it includes the multinomial coefficient, which scikit-learn's jll leaves out).

Distributed: with a torch.distributed group initialised, fit / partial_fit all-reduce the class
counts and sums (and then the squared deviations), so every rank ends with the model a single
process would fit on the union of the shards (the labels seen anywhere become classes_).
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _distributed
from ..ops import naive_bayes as nbops
from ..ops import rng
from .base import GenerativeModel, check_data

__all__ = ["GaussianNB", "MultinomialNB", "BernoulliNB"]

F64 = torch.float64


def _nonneg_real(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return float(v)


def _labels(y, n, name="y"):
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(y)
        except Exception:
            raise TypeError(f"{name}: expected a tensor or sequence of integer labels, got {type(y).__name__}") from None
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise ValueError(f"{name}: expected integer class labels, got non-integer values")
        y = y.to(torch.int64)
    elif y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name}: expected integer class labels, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) (one label per sample), got {tuple(y.shape)}")
    return y.to(torch.int64)


def _cpp():
    from .. import _backends

    m = _backends.load_cpp()
    return None if isinstance(m, Exception) else m


def _range(y):
    c = _cpp()
    if c is not None and y.is_cpu:
        y = y.contiguous()
        return c.nb_label_range(y.numel(), y.data_ptr())
    return int(y.min()), int(y.max())


def _unique(y):
    """torch.unique(y), by marking the labels seen when they span a small range (torch.unique sorts:
    600 ms for 200,000 labels on a busy 2-core machine, the single-threaded C++ pass ~0.2 ms)."""
    if y.numel() == 0:
        return y.new_zeros(0)
    lo, hi = _range(y)
    span = hi - lo + 1
    if span > 4 * y.numel() + 1024:
        return torch.unique(y)
    c = _cpp()
    if c is not None and y.is_cpu:
        y = y.contiguous()
        present = torch.zeros(span, dtype=torch.uint8)
        c.nb_label_present(y.numel(), y.data_ptr(), lo, span, present.data_ptr())
        return torch.nonzero(present).reshape(-1) + lo
    return torch.nonzero(torch.bincount(y - lo, minlength=span)).reshape(-1) + lo


def _encode(classes, y):
    """Indices of the labels y in the sorted classes (a ValueError naming the first unknown label)."""
    if y.numel() == 0:
        return y.new_zeros(0)
    c0, c1 = int(classes[0]), int(classes[-1])
    span = c1 - c0 + 1
    c = _cpp()
    if span <= 4 * y.numel() + 1024:
        lut = torch.full((span,), -1, dtype=torch.int64, device=y.device)
        lut[classes - c0] = torch.arange(classes.numel(), device=y.device)
        if c is not None and y.is_cpu:
            y = y.contiguous()
            idx = torch.empty_like(y)
            bad = c.nb_label_encode(y.numel(), y.data_ptr(), c0, span, lut.data_ptr(), idx.data_ptr())
            if bad >= 0:
                raise ValueError(f"y: label {int(y[bad])} is not one of the classes {classes.tolist()}")
            return idx
        inside = (y >= c0) & (y <= c1)
        idx = torch.where(inside, lut[(y - c0).clamp(0, span - 1)], -1)
        ok = bool((idx >= 0).all())
    else:
        idx = torch.searchsorted(classes, y).clamp_(max=classes.numel() - 1)
        ok = bool((classes[idx] == y).all())
    if not ok:
        bad = y[~torch.isin(y, classes)][0].item()
        raise ValueError(f"y: label {bad} is not one of the classes {classes.tolist()}")
    return idx


def _global_unique(y):
    """The sorted labels present on any rank."""
    u = _unique(y.cpu())
    if not _distributed.is_distributed():
        return u
    import torch.distributed as dist

    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, u.tolist())
    return torch.unique(torch.tensor(sorted(set().union(*map(set, parts))), dtype=torch.int64))


class _BaseNB(GenerativeModel):
    likelihood = "exact"
    conditional = True
    abstract = True

    def _init_buffers(self):
        self.register_buffer("classes_", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("class_count_", torch.zeros(0, dtype=F64))

    @property
    def n_features_in_(self):
        raise NotImplementedError(f"{type(self).__name__}: abstract base method, implemented by each concrete subclass")

    def _fitted(self):
        return self.classes_.numel() > 0

    def _check_fitted(self, what):
        if not self._fitted():
            raise RuntimeError(f"{type(self).__name__}.{what}: the model is not fitted; call fit(x, y) first")

    def _x(self, x, name="x"):
        # NaN / inf are not scanned for here (that pass costs as much as the fused kernel): they
        # propagate into the row's lse, which _checked_jll looks at
        x = check_data(x, name, ndim=2, min_rows=0, finite=False)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        if self._fitted() and x.shape[1] != self.n_features_in_:
            raise ValueError(f"{name}: expected {self.n_features_in_} features (as in fit), got shape {tuple(x.shape)}")
        return x.to(self.classes_.device)

    def _class_index(self, y, n):
        """Labels -> indices into classes_, checked."""
        return _encode(self.classes_, _labels(y, n).to(self.classes_.device))

    # ---- scikit-learn's prediction API --------------------------------------------------------
    def _jll(self, x, output):
        raise NotImplementedError(f"{type(self).__name__}: abstract base method, implemented by each concrete subclass")

    def _checked_jll(self, x, output):
        out, lse = self._jll(x, output)
        if not bool(torch.isfinite(lse).all()):
            check_data(x, "x")  # raises "x: contains NaN or infinite values" when that is the cause
        return out, lse

    def predict_joint_log_proba(self, x):
        self._check_fitted("predict_joint_log_proba")
        return self._checked_jll(self._x(x), "joint")[0]

    def predict_log_proba(self, x):
        self._check_fitted("predict_log_proba")
        return self._checked_jll(self._x(x), "log_posterior")[0]

    def predict_proba(self, x):
        self._check_fitted("predict_proba")
        return self._checked_jll(self._x(x), "posterior")[0]

    def predict(self, x):
        self._check_fitted("predict")
        return self.classes_[self._checked_jll(self._x(x), "joint")[0].argmax(1)]

    def score(self, x, y):
        """Mean accuracy (scikit-learn's ClassifierMixin.score)."""
        pred = self.predict(x)
        return float((pred == _labels(y, pred.shape[0]).to(pred.device)).to(F64).mean())

    # ---- the generative protocol ---------------------------------------------------------------
    def log_prob(self, x, y=None):
        """(N,) exact log p(x) (y None: marginal over classes) or log p(x, y) (y: (N,) labels)."""
        self._check_fitted("log_prob")
        x = self._x(x)
        jll, lse = self._checked_jll(x, "joint")
        out = lse if y is None else jll.gather(1, self._class_index(y, x.shape[0])[:, None])[:, 0]
        return out + self._log_base_measure(x)

    def _log_base_measure(self, x):
        return 0.0

    def _sample_classes(self, n, y, generator):
        dev = self.classes_.device
        if y is None:
            seed, off = rng.draw_key(generator)
            u = rng.philox_uniform(n, seed, off).to(device=dev, dtype=F64)
            cdf = torch.cumsum(self._log_prior().exp(), 0)
            return torch.searchsorted(cdf / cdf[-1], u).clamp_(max=self.classes_.numel() - 1)
        if isinstance(y, numbers.Integral) and not isinstance(y, bool):
            y = torch.full((n,), int(y), dtype=torch.int64)
        return self._class_index(y, n)

    def _log_prior(self):
        raise NotImplementedError(f"{type(self).__name__}: abstract base method, implemented by each concrete subclass")

    def _finish_sample(self, x, idx, return_labels):
        return (x, self.classes_[idx]) if return_labels else x


class GaussianNB(_BaseNB):
    """Gaussian naive Bayes (scikit-learn's GaussianNB(priors=None, var_smoothing=1e-9))."""

    def __init__(self, *, priors=None, var_smoothing: float = 1e-9):
        super().__init__()
        self.var_smoothing = _nonneg_real("var_smoothing", var_smoothing)
        if priors is not None:
            p = torch.as_tensor(priors, dtype=F64)
            if p.dim() != 1:
                raise ValueError(f"priors: expected a 1-D sequence (one per class), got shape {tuple(p.shape)}")
            if bool((p < 0).any()):
                raise ValueError("priors: expected non-negative class priors")
            if not math.isclose(float(p.sum()), 1.0, rel_tol=1e-9, abs_tol=1e-8):
                raise ValueError(f"priors: expected priors that sum to 1, got a sum of {float(p.sum())}")
            priors = p.tolist()
        self.priors = priors
        self._init_buffers()
        self.register_buffer("theta_", torch.zeros(0, 0, dtype=F64))
        self.register_buffer("var_", torch.zeros(0, 0, dtype=F64))
        self.register_buffer("class_prior_", torch.zeros(0, dtype=F64))
        self.register_buffer("epsilon_", torch.zeros((), dtype=F64))

    @property
    def n_features_in_(self):
        return self.theta_.shape[1]

    def _log_prior(self):
        return torch.log(self.class_prior_)

    def _jll(self, x, output):
        return nbops.gaussian_nb_log_likelihood(x, self.theta_, self.var_, self._log_prior(), output=output)

    def fit(self, x, y, sample_weight=None, *, progress: bool = True, callback=None):
        """Fits on x (N, F) and labels y (N,) (integers); returns self."""
        x = check_data(x, "x", ndim=2, finite=False)  # NaN / inf: found in the statistics (one pass fewer)
        y = _labels(y, x.shape[0])
        self.classes_ = torch.zeros(0, dtype=torch.int64, device=self.classes_.device)
        return self._partial_fit(x, y, _global_unique(y), sample_weight, callback)

    def partial_fit(self, x, y, classes=None, sample_weight=None):
        """Incremental fit on a batch (scikit-learn's partial_fit; `classes` needed on the first call)."""
        x = check_data(x, "x", ndim=2, finite=False)
        y = _labels(y, x.shape[0])
        if not self._fitted():
            if classes is None:
                raise ValueError("classes: the first call to partial_fit must be given the list of all classes")
            classes = _unique(_labels(classes, len(classes), "classes"))
        elif classes is not None:
            c = _unique(_labels(classes, len(classes), "classes")).to(self.classes_.device)
            if not torch.equal(c, self.classes_):
                raise ValueError(f"classes: {c.tolist()} differs from the classes of the first call {self.classes_.tolist()}")
        return self._partial_fit(x, y, classes, sample_weight, None)

    def _partial_fit(self, x, y, classes, sample_weight, callback):
        dev = self.classes_.device
        first = not self._fitted()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        x, y = x.to(dev), y.to(dev)
        if not first and x.shape[1] != self.n_features_in_:
            raise ValueError(f"x: expected {self.n_features_in_} features (as in earlier fits), got shape {tuple(x.shape)}")
        if first:
            classes = classes.to(dev)
            c, f = classes.numel(), x.shape[1]
            if self.priors is not None and len(self.priors) != c:
                raise ValueError(f"priors: {len(self.priors)} priors given for {c} classes")
        else:
            classes = self.classes_
            c, f = classes.numel(), self.n_features_in_
        idx = _encode(classes, y)
        w = None
        if sample_weight is not None:
            w = check_data(sample_weight, "sample_weight", ndim=1, dtype=F64).to(dev)
            if w.shape[0] != x.shape[0]:
                raise ValueError(f"sample_weight: expected shape ({x.shape[0]},), got {tuple(w.shape)}")
        # batch statistics: per-class (weighted) counts and sums, all-reduced, then the squared
        # deviations about the batch's class means, all-reduced
        cnt, s1 = nbops.nb_class_stats(x, idx, c, weight=w, checked=True)
        _distributed.all_reduce_sum(cnt, s1)
        mu = s1 / cnt.clamp(min=1e-300)[:, None]
        _, m2 = nbops.nb_class_stats(x, idx, c, weight=w, center=mu, checked=True)
        _distributed.all_reduce_sum(m2)
        if not (bool(torch.isfinite(s1).all()) and bool(torch.isfinite(m2).all())):
            check_data(x, "x")  # NaN / inf in x (raises); else the sums overflowed
            raise ValueError("x: the per-class sums overflow float64")
        # epsilon from the unweighted variance of every feature over the whole batch (all ranks)
        if w is None:
            n_all = cnt.sum()
            gmean = s1.sum(0) / n_all
            gm2 = m2.sum(0) + (cnt[:, None] * (mu - gmean) ** 2).sum(0)
        else:
            (n_all,) = _distributed.all_reduce_sum(torch.tensor([float(x.shape[0])], dtype=F64))
            xs = x.to(F64)
            (gsum,) = _distributed.all_reduce_sum(xs.sum(0))
            gmean = gsum / n_all
            (gm2,) = _distributed.all_reduce_sum(((xs - gmean) ** 2).sum(0))
        eps = self.var_smoothing * float((gm2 / n_all).max())
        if first:
            self.classes_ = classes
            self.theta_ = torch.zeros(c, f, dtype=F64, device=dev)
            self.var_ = torch.zeros(c, f, dtype=F64, device=dev)
            self.class_count_ = torch.zeros(c, dtype=F64, device=dev)
            self.class_prior_ = (torch.tensor(self.priors, dtype=F64, device=dev) if self.priors is not None
                                 else torch.zeros(c, dtype=F64, device=dev))
            var = self.var_
        else:
            var = self.var_ - eps  # scikit-learn removes the new epsilon_ here
        self.epsilon_ = torch.tensor(eps, dtype=F64, device=dev)
        has = cnt > 0
        new_var = m2 / cnt.clamp(min=1e-300)[:, None]
        n_past = self.class_count_
        tot = n_past + cnt
        total_mu = torch.where(has[:, None], (cnt[:, None] * mu + n_past[:, None] * self.theta_) / tot.clamp(min=1e-300)[:, None],
                               self.theta_)
        cross = (cnt * n_past / tot.clamp(min=1e-300))[:, None] * (self.theta_ - mu) ** 2
        ssd = n_past[:, None] * var + cnt[:, None] * new_var + cross
        total_var = torch.where(has[:, None], ssd / tot.clamp(min=1e-300)[:, None], var)
        first_seen = has & (n_past == 0)
        total_mu = torch.where(first_seen[:, None], mu, total_mu)
        total_var = torch.where(first_seen[:, None], new_var, total_var)
        self.theta_ = total_mu
        self.var_ = total_var + eps
        self.class_count_ = tot
        if self.priors is None:
            self.class_prior_ = self.class_count_ / self.class_count_.sum()
        if callback is not None:
            callback(self, {"iter": 0})
        return self

    def sample(self, n: int, *, y=None, generator=None, return_labels: bool = False):
        """(n, F) float64 draws from the class-conditional Gaussians; classes from class_prior_ (y None)
        or given (a label or (n,) labels). With return_labels, (x, labels)."""
        self._check_fitted("sample")
        idx = self._sample_classes(n, y, generator)
        seed, off = rng.draw_key(generator)
        z = rng.philox_normal(n * self.n_features_in_, seed, off).to(device=self.theta_.device, dtype=F64)
        x = self.theta_[idx] + self.var_[idx].sqrt() * z.reshape(n, self.n_features_in_)  # not -1: n may be 0
        return self._finish_sample(x, idx, return_labels)


class _DiscreteNB(_BaseNB):
    abstract = True

    def __init__(self, *, alpha=1.0, force_alpha: bool = True, fit_prior: bool = True, class_prior=None):
        super().__init__()
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.tolist()
        if isinstance(alpha, (list, tuple)):
            alpha = [_nonneg_real("alpha", a) for a in alpha]
        else:
            alpha = _nonneg_real("alpha", alpha)
        self.alpha = alpha
        self.force_alpha = bool(force_alpha)
        self.fit_prior = bool(fit_prior)
        if class_prior is not None:
            class_prior = [float(v) for v in torch.as_tensor(class_prior, dtype=F64).reshape(-1).tolist()]
        self.class_prior = class_prior
        self._init_buffers()
        self.register_buffer("feature_count_", torch.zeros(0, 0, dtype=F64))
        self.register_buffer("feature_log_prob_", torch.zeros(0, 0, dtype=F64))
        self.register_buffer("class_log_prior_", torch.zeros(0, dtype=F64))

    @property
    def n_features_in_(self):
        return self.feature_count_.shape[1]

    def _log_prior(self):
        return self.class_log_prior_

    def _prepare(self, x):
        """The counts this family adds up (checked)."""
        raise NotImplementedError(f"{type(self).__name__}: abstract base method, implemented by each concrete subclass")

    def _alpha(self, f):
        a = torch.as_tensor(self.alpha, dtype=F64, device=self.classes_.device)
        if a.dim() == 1 and a.shape[0] != f:
            raise ValueError(f"alpha: expected {f} values (one per feature), got {a.shape[0]}")
        if not self.force_alpha:
            a = a.clamp(min=1e-10)
        return a

    def fit(self, x, y, sample_weight=None, *, progress: bool = True, callback=None):
        """Fits on x (N, F) and labels y (N,); returns self."""
        x = check_data(x, "x", ndim=2, finite=False)
        y = _labels(y, x.shape[0])
        self.classes_ = torch.zeros(0, dtype=torch.int64, device=self.classes_.device)
        self._partial_fit(x, y, _global_unique(y), sample_weight)
        if callback is not None:
            callback(self, {"iter": 0})
        return self

    def partial_fit(self, x, y, classes=None, sample_weight=None):
        x = check_data(x, "x", ndim=2, finite=False)
        y = _labels(y, x.shape[0])
        if not self._fitted():
            if classes is None:
                raise ValueError("classes: the first call to partial_fit must be given the list of all classes")
            classes = _unique(_labels(classes, len(classes), "classes"))
        return self._partial_fit(x, y, classes, sample_weight)

    def _partial_fit(self, x, y, classes, sample_weight):
        dev = self.classes_.device
        first = not self._fitted()
        if not first and x.shape[1] != self.n_features_in_:
            raise ValueError(f"x: expected {self.n_features_in_} features (as in earlier fits), got shape {tuple(x.shape)}")
        x = self._prepare(x.to(dev))
        y = y.to(dev)
        if first:
            classes = classes.to(dev)
            c, f = classes.numel(), x.shape[1]
            if self.class_prior is not None and len(self.class_prior) != c:
                raise ValueError(f"class_prior: {len(self.class_prior)} priors given for {c} classes")
            self.classes_ = classes
            self.feature_count_ = torch.zeros(c, f, dtype=F64, device=dev)
            self.class_count_ = torch.zeros(c, dtype=F64, device=dev)
        c = self.classes_.numel()
        idx = _encode(self.classes_, y)
        w = None
        if sample_weight is not None:
            w = check_data(sample_weight, "sample_weight", ndim=1, dtype=F64).to(dev)
            if w.shape[0] != x.shape[0]:
                raise ValueError(f"sample_weight: expected shape ({x.shape[0]},), got {tuple(w.shape)}")
        cnt, fc = nbops.nb_class_stats(x, idx, c, weight=w, checked=True)
        _distributed.all_reduce_sum(cnt, fc)
        if not bool(torch.isfinite(fc).all()):
            check_data(x, "x")
            raise ValueError("x: the per-class sums overflow float64")
        self.class_count_ = self.class_count_ + cnt
        self.feature_count_ = self.feature_count_ + fc
        self._after_count(x, w)
        self._update(self._alpha(self.n_features_in_))
        self._update_prior()
        return self

    def _after_count(self, x, w):
        pass

    def _update_prior(self):
        c = self.classes_.numel()
        dev = self.classes_.device
        if self.class_prior is not None:
            self.class_log_prior_ = torch.log(torch.tensor(self.class_prior, dtype=F64, device=dev))
        elif self.fit_prior:
            self.class_log_prior_ = torch.log(self.class_count_) - math.log(float(self.class_count_.sum()))
        else:
            self.class_log_prior_ = torch.full((c,), -math.log(c), dtype=F64, device=dev)


class MultinomialNB(_DiscreteNB):
    """Multinomial naive Bayes on count features (scikit-learn's MultinomialNB(alpha=1.0,
    force_alpha=True, fit_prior=True, class_prior=None)); integer or float count tensors."""

    def __init__(self, *, alpha=1.0, force_alpha: bool = True, fit_prior: bool = True, class_prior=None):
        super().__init__(alpha=alpha, force_alpha=force_alpha, fit_prior=fit_prior, class_prior=class_prior)
        self.register_buffer("mean_total_count_", torch.zeros((), dtype=F64))

    def _prepare(self, x):
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        if x.numel() and bool((x < 0).any()):
            raise ValueError("x: MultinomialNB needs non-negative counts; got negative values")
        return x

    def _after_count(self, x, w):
        tot = self.feature_count_.sum()
        self.mean_total_count_ = (tot / self.class_count_.sum()).to(F64)

    def _update(self, alpha):
        sfc = self.feature_count_ + alpha
        self.feature_log_prob_ = torch.log(sfc) - torch.log(sfc.sum(1, keepdim=True))

    def _x(self, x, name="x"):
        return self._prepare(super()._x(x, name))

    def _jll(self, x, output):
        return nbops.multinomial_nb_log_likelihood(x, self.feature_log_prob_, self.class_log_prior_, output=output)

    def _log_base_measure(self, x):
        xd = x.to(F64)
        return torch.lgamma(xd.sum(1) + 1) - torch.lgamma(xd + 1).sum(1)

    def sample(self, n: int, *, y=None, n_trials=None, generator=None, return_labels: bool = False):
        """(n, F) float64 count vectors, each of n_trials draws (default: the mean total count seen in fit,
        rounded) from its class's feature distribution."""
        self._check_fitted("sample")
        if n_trials is None:
            n_trials = max(1, int(round(float(self.mean_total_count_))))
        if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 0:
            raise ValueError(f"n_trials: expected an int >= 0, got {n_trials!r}")
        idx = self._sample_classes(n, y, generator)
        dev = self.classes_.device
        f = self.n_features_in_
        out = torch.zeros(n, f, dtype=F64, device=dev)
        if n_trials == 0 or n == 0:
            return self._finish_sample(out, idx, return_labels)
        seed, off = rng.draw_key(generator)
        u = rng.philox_uniform(n * n_trials, seed, off).to(device=dev, dtype=F64).reshape(n, n_trials)
        cdf = torch.cumsum(self.feature_log_prob_.exp(), 1)
        cdf = cdf / cdf[:, -1:]
        feat = torch.searchsorted(cdf[idx].contiguous(), u).clamp_(max=f - 1)
        out.scatter_add_(1, feat, torch.ones_like(u))
        return self._finish_sample(out, idx, return_labels)


class BernoulliNB(_DiscreteNB):
    """Bernoulli naive Bayes on binary features (scikit-learn's BernoulliNB(alpha=1.0, force_alpha=True,
    binarize=0.0, fit_prior=True, class_prior=None)). binarize=None: x must already be 0/1 (checked)."""

    def __init__(self, *, alpha=1.0, force_alpha: bool = True, binarize=0.0, fit_prior: bool = True, class_prior=None):
        super().__init__(alpha=alpha, force_alpha=force_alpha, fit_prior=fit_prior, class_prior=class_prior)
        if binarize is not None:
            if isinstance(binarize, bool) or not isinstance(binarize, numbers.Real) or not math.isfinite(binarize):
                raise ValueError(f"binarize: expected a finite threshold or None, got {binarize!r}")
            binarize = float(binarize)
        self.binarize = binarize

    def _check_binary(self, x):
        if self.binarize is not None:
            check_data(x, "x")  # NaN would binarise silently to 0
        if self.binarize is None and x.numel() and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("x: BernoulliNB(binarize=None) expects 0/1 features; got other values (pass binarize=threshold)")

    def _prepare(self, x):
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        self._check_binary(x)
        if self.binarize is not None:
            x = (x > self.binarize).to(x.dtype)
        return x

    def _update(self, alpha):
        sfc = self.feature_count_ + alpha
        scc = self.class_count_ + 2 * alpha if alpha.dim() == 0 else self.class_count_[:, None] + 2 * alpha
        self.feature_log_prob_ = torch.log(sfc) - torch.log(scc if scc.dim() == 2 else scc[:, None])

    def _x(self, x, name="x"):
        x = super()._x(x, name)
        self._check_binary(x)
        return x

    def _jll(self, x, output):
        return nbops.bernoulli_nb_log_likelihood(x, self.feature_log_prob_, self.class_log_prior_, binarize=self.binarize,
                                                 output=output)

    def sample(self, n: int, *, y=None, generator=None, return_labels: bool = False):
        """(n, F) float64 0/1 vectors from the class-conditional Bernoullis."""
        self._check_fitted("sample")
        idx = self._sample_classes(n, y, generator)
        seed, off = rng.draw_key(generator)
        u = rng.philox_uniform(n * self.n_features_in_, seed, off).to(device=self.classes_.device, dtype=F64)
        x = (u.reshape(n, self.n_features_in_) < self.feature_log_prob_.exp()[idx]).to(F64)  # not -1: n may be 0
        return self._finish_sample(x, idx, return_labels)
