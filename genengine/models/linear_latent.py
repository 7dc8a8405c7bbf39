"""Linear-Gaussian latent models: probabilistic PCA and factor analysis, fitted by EM, with exact
log-likelihood, sampling and the posterior mean of the latents.

    ppca = ge.models.PPCA(n_components=2).fit(x)        # x (N, d)
    ppca.log_prob(x)                                    # (N,) exact log N(x; mean, W W^T + s2 I)
    z = ppca.transform(x)                               # (N, q): E[z | x]
    fa = ge.models.FactorAnalysis(3).fit(x); fa.sample(100)

Both models: x = W z + mean + noise, z ~ N(0, I_q), so x ~ N(mean, C) with C = W W^T + Psi, where
Psi = s2 I (PPCA, one noise variance) or diag(psi) (factor analysis, one per feature).
Attributes (scikit-learn's names): mean_ (d,), components_ (q, d) = W^T, noise_variance_ (a scalar
tensor for PPCA, (d,) for FactorAnalysis), n_iter_, converged_, history_ (log-likelihood per EM step,
mean per sample).

EM works on the sample covariance S (d x d), so an iteration costs O(d^2 q) whatever N:
  PPCA (Tipping & Bishop 1999, eqs. 29-30): M = W^T W + s2 I,
      W' = S W (s2 I + M^-1 W^T S W)^-1,  s2' = tr(S - S W M^-1 W'^T) / d
  FA (Rubin & Thayer 1982): beta = W^T C^-1,
      W' = S beta^T (I - beta W + beta S beta^T)^-1,  psi' = diag(S - W' beta S)
PPCA also has the closed form (method="closed_form"): W = U_q (L_q - s2 I)^1/2 with the top q
eigenpairs (U_q, L_q) of S and s2 the mean of the other d - q eigenvalues; EM converges to it (up
to a rotation of the latents).
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import ops
from .._checks import positive_int
from .._progress import Progress
from .base import FitRecord, GenerativeModel, check_data

__all__ = ["PPCA", "FactorAnalysis"]


class _LinearGaussian(FitRecord, GenerativeModel):
    _fit_record = {"n_iter_": 0, "converged_": False, "history_": []}  # plain-Python fit results (FitRecord)

    abstract = True
    likelihood = "exact"

    def __init__(self, n_components: int, *, max_iter: int = 1000, tol: float = 1e-8, min_noise: float = 1e-6,
                 random_state: int | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.n_components = positive_int("n_components", n_components)
        self.max_iter = positive_int("max_iter", max_iter)
        for name, v in (("tol", tol), ("min_noise", min_noise)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        self.tol, self.min_noise = float(tol), float(min_noise)
        if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
            raise TypeError(f"random_state: expected an int or None, got {type(random_state).__name__}")
        self.random_state = random_state
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.register_buffer("mean_", torch.zeros(0, dtype=dtype))
        self.register_buffer("components_", torch.zeros(0, dtype=dtype))
        self.register_buffer("noise_variance_", torch.zeros(0, dtype=dtype))
        self.history_: list[float] = []
        self.n_iter_, self.converged_ = 0, False

    # ---- helpers -----------------------------------------------------------------------------
    def _fitted(self):
        if self.mean_.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}: not fitted; call fit() first")

    def _psi(self):
        """The noise covariance's diagonal (d,)."""
        d = self.mean_.shape[0]
        nv = self.noise_variance_
        return nv.expand(d) if nv.dim() == 0 else nv

    def covariance(self) -> torch.Tensor:
        """The model covariance C = W W^T + Psi (d, d)."""
        self._fitted()
        w = self.components_.T
        return w @ w.T + torch.diag(self._psi())

    def _data(self, x, name="x"):
        d = self.mean_.shape[0] if self.mean_.numel() else None
        x = check_data(x, name, ndim=2, features=d)
        return x.to(device=self.mean_.device, dtype=self.dtype)

    # ---- the protocol ------------------------------------------------------------------------
    def log_prob(self, x) -> torch.Tensor:
        """Exact log N(x; mean_, W W^T + Psi) per row (N,), in nats."""
        self._fitted()
        x = self._data(x)
        chol = torch.linalg.cholesky(self.covariance())
        r = torch.linalg.solve_triangular(chol, (x - self.mean_).T, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (x.shape[1] * math.log(2 * math.pi) + logdet + (r * r).sum(0))

    def score(self, x) -> float:
        """Mean log-likelihood per sample (scikit-learn's score)."""
        return float(self.log_prob(x).mean())

    def transform(self, x) -> torch.Tensor:
        """Posterior means of the latents E[z | x] (N, q)."""
        self._fitted()
        x = self._data(x)
        w = self.components_.T  # (d, q)
        # E[z | x] = (I + W^T Psi^-1 W)^-1 W^T Psi^-1 (x - mean)
        wp = w / self._psi()[:, None]
        m = torch.eye(w.shape[1], dtype=w.dtype, device=w.device) + w.T @ wp
        return torch.linalg.solve(m, wp.T @ (x - self.mean_).T).T

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, d) of x = W z + mean + noise (Philox normals keyed by `generator`)."""
        self._fitted()
        n = positive_int("n", n)
        d, q = self.mean_.shape[0], self.components_.shape[0]
        dev = self.mean_.device
        z = ops.philox_normal(n * q, *ops.draw_key(generator, dev), device=dev).to(self.dtype).view(n, q)
        e = ops.philox_normal(n * d, *ops.draw_key(generator, dev), device=dev).to(self.dtype).view(n, d)
        return self.mean_ + z @ self.components_ + e * self._psi().sqrt()

    def fit(self, data, *, max_iter: int | None = None, tol: float | None = None, progress: bool = True, callback=None):
        """EM on the rows of data (N, d); returns self. Stops after max_iter iterations or when the
        mean log-likelihood per sample improves by less than tol; callback(model, {"iter",
        "log_likelihood"}) after each iteration (True stops)."""
        max_iter = self.max_iter if max_iter is None else positive_int("max_iter", max_iter)
        tol = self.tol if tol is None else float(tol)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        x = check_data(data, "data", ndim=2, min_rows=2).to(self.dtype)
        n, d = x.shape
        if self.n_components >= d:
            raise ValueError(f"n_components: expected fewer than the {d} features of data, got {self.n_components}")
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        s = (xc.T @ xc) / n  # the ML sample covariance
        self._init(s)
        self.history_, self.converged_, self.n_iter_ = [], False, 0
        bar = Progress(max_iter, f"{type(self).__name__} fit", progress)
        try:
            for it in range(max_iter):
                self._em_step(s)
                ll = self._mean_loglik(s)
                self.history_.append(ll)
                self.n_iter_ = it + 1
                bar.update(1, loglik=f"{ll:.6g}")
                stop = callback is not None and bool(callback(self, {"iter": it, "log_likelihood": ll}))
                if len(self.history_) >= 2 and abs(self.history_[-1] - self.history_[-2]) < tol:
                    self.converged_ = True
                    break
                if stop:
                    break
        finally:
            bar.close()
        return self

    def _mean_loglik(self, s):
        """Mean log-likelihood per sample from the sample covariance: -1/2 (d log 2 pi + log|C| + tr(C^-1 S))."""
        c = self.covariance()
        chol = torch.linalg.cholesky(c)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        tr = torch.cholesky_solve(s, chol).diagonal().sum()
        return float(-0.5 * (s.shape[0] * math.log(2 * math.pi) + logdet + tr))

    def _random_w(self, d):
        g = torch.Generator().manual_seed(self.random_state if self.random_state is not None else 0)
        return torch.randn(d, self.n_components, generator=g, dtype=torch.float64).to(self.mean_.device, self.dtype)


class PPCA(_LinearGaussian):
    """Probabilistic PCA (Tipping & Bishop): see the module docstring. noise_variance_ is a scalar tensor.

    method: "em" (default) or "closed_form" (the eigendecomposition of the sample covariance)."""

    def __init__(self, n_components: int, *, method: str = "em", max_iter: int = 1000, tol: float = 1e-10,
                 min_noise: float = 1e-6, random_state: int | None = None, dtype: torch.dtype = torch.float64):
        super().__init__(n_components, max_iter=max_iter, tol=tol, min_noise=min_noise, random_state=random_state, dtype=dtype)
        if method not in ("em", "closed_form"):
            raise ValueError(f"method: expected 'em' or 'closed_form', got {method!r}")
        self.method = method

    def _init(self, s):
        d = s.shape[0]
        if self.method == "closed_form":
            self.components_, self.noise_variance_ = _ppca_closed_form(s, self.n_components, self.min_noise)
            return
        self.components_ = (self._random_w(d) * s.diagonal().mean().sqrt()).T.contiguous()
        # floored as every EM step floors it: zero-variance data would make M = W^T W + s2 I singular
        self.noise_variance_ = s.diagonal().mean().clamp(min=self.min_noise)

    def _em_step(self, s):
        if self.method == "closed_form":
            return
        w, s2 = self.components_.T, self.noise_variance_
        q, d = w.shape[1], w.shape[0]
        eye = torch.eye(q, dtype=w.dtype, device=w.device)
        m = w.T @ w + s2 * eye
        sw = s @ w
        minv_wtsw = torch.linalg.solve(m, w.T @ sw)
        w_new = torch.linalg.solve((s2 * eye + minv_wtsw).T, sw.T).T  # S W (s2 I + M^-1 W^T S W)^-1
        s2_new = (torch.trace(s) - torch.trace(sw @ torch.linalg.solve(m, w_new.T))) / d
        self.components_ = w_new.T.contiguous()
        self.noise_variance_ = s2_new.clamp(min=self.min_noise)


def _ppca_closed_form(s, q, min_noise):
    """(components_ (q, d), noise_variance_) of the PPCA maximum-likelihood solution."""
    evals, evecs = torch.linalg.eigh(s)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    s2 = evals[q:].mean().clamp(min=min_noise)
    w = evecs[:, :q] * (evals[:q] - s2).clamp(min=0).sqrt()
    return w.T.contiguous(), s2


class FactorAnalysis(_LinearGaussian):
    """Factor analysis: see the module docstring. noise_variance_ is (d,), one variance per feature."""

    def _init(self, s):
        d = s.shape[0]
        # start from the PPCA closed form (a good, deterministic start; EM then frees the noise per feature)
        w, s2 = _ppca_closed_form(s, self.n_components, self.min_noise)
        self.components_ = w
        self.noise_variance_ = torch.full((d,), float(s2), dtype=self.dtype, device=s.device).maximum(
            (s.diagonal() - (w * w).sum(0)).clamp(min=self.min_noise))

    def _em_step(self, s):
        w, psi = self.components_.T, self.noise_variance_  # (d, q), (d,)
        q = w.shape[1]
        eye = torch.eye(q, dtype=w.dtype, device=w.device)
        c = w @ w.T + torch.diag(psi)
        beta = torch.linalg.solve(c, w).T  # W^T C^-1 (q, d), C symmetric
        bs = beta @ s  # (q, d)
        ezz = eye - beta @ w + bs @ beta.T  # (q, q): the average E[z z^T | x]
        w_new = torch.linalg.solve(ezz, bs).T  # S beta^T Ezz^-1 (Ezz symmetric)
        psi_new = (s.diagonal() - (w_new * bs.T).sum(1)).clamp(min=self.min_noise)
        self.components_ = w_new.T.contiguous()
        self.noise_variance_ = psi_new
