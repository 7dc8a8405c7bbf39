"""Gaussian mixtures fitted by EM, scikit-learn compatible (GaussianMixture's parameters, attribute
names and semantics), on the fused E-step kernel (genengine.ops.gmm_e_step).

    gmm = ge.models.GaussianMixture(16, covariance_type="full", random_state=0).fit(x)   # x (N, D)
    gmm.score_samples(x) -> (N,) log p(x); gmm.predict(x) -> (N,) components; gmm.sample(n) -> (n, D)

Attributes (torch tensors, float64, scikit-learn's shapes): weights_ (K,), means_ (K, D), covariances_
and precisions_cholesky_ ("full" (K, D, D), "tied" (D, D), "diag" (K, D), "spherical" (K,)),
precisions_, converged_, n_iter_, lower_bound_ (the mean log-likelihood computed in the E-step of the
last iteration, as scikit-learn defines it), lower_bounds_ (one per iteration of the best run).

One EM iteration is one pass of the fused kernel over x: the E-step (log-densities through the
Cholesky factors, log-sum-exp, responsibilities) and the M-step's sufficient statistics N_k, sum r x,
sum r x x^T, accumulated about the data mean (so the one-pass covariances do not lose digits to the
data's offset); the M-step itself is a few (K, D, D) operations. x may be float32 or float64 (the
CPU kernel computes in float64 either way); the parameters are float64.

Initialisation (init_params): "kmeans" (k-means++ seeds, then Lloyd iterations to convergence, and
the M-step of the hard assignment), "k-means++" (the seeds' hard assignment), "random" (uniform
random responsibilities); weights_init / means_init / precisions_init override their part, exactly as
in scikit-learn. The random draws come from random_state (an int seed; None draws one) through
torch / Philox, not numpy, so a seed gives other initial clusters than scikit-learn's: to reproduce a
scikit-learn fit, pass both the same weights_init, means_init and precisions_init.

Distributed: with a torch.distributed group initialised, every rank passes its own shard; each
iteration all-reduces the statistics (and the log-likelihood sum) in one collective, so every rank
takes the same M-step and ends with the model a single process would fit on the concatenated data
from the same initialisation. The initialisations are rank-consistent: "kmeans" / "k-means++" draw
their seeds on rank 0's shard and broadcast them, then the Lloyd steps all-reduce their sums (the
result equals a single-process k-means started from those seeds); "random" draws each row's
responsibilities from a Philox stream indexed by its global row (rank order), so it matches a single
process on the concatenated data exactly. Explicit *_init arguments need nothing.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .. import _distributed
from .._checks import positive_int
from .._progress import Progress
from ..ops import mixture as mxops
from ..ops import rng
from ..reference import mixture as ref
from .base import GenerativeModel, check_data

__all__ = ["GaussianMixture", "ConvergenceWarning"]

F64 = torch.float64
_INITS = ("kmeans", "k-means++", "random")


class ConvergenceWarning(UserWarning):
    """EM stopped at max_iter before the lower bound changed by less than tol."""


def _real(name, v, lo, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name}: expected a finite number {'>' if lo_open else '>='} {lo}, got {v!r}")
    return float(v)


def _as_f64(name, v):
    if v is None:
        return None
    try:
        t = torch.as_tensor(v, dtype=F64)
    except Exception:
        raise TypeError(f"{name}: expected a tensor or array of numbers, got {type(v).__name__}") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t.detach().cpu().clone()


def _cov_shape(cov_type, k, d):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov_type]


def _rank_info():
    if not _distributed.is_distributed():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def _broadcast(t):
    if _distributed.is_distributed():
        import torch.distributed as dist

        buf = t.to(F64).cpu().contiguous()
        dist.broadcast(buf, src=0)
        return buf.to(device=t.device, dtype=t.dtype)
    return t


class GaussianMixture(GenerativeModel):
    """A mixture of n_components Gaussians fitted by EM (scikit-learn's GaussianMixture)."""

    likelihood = "exact"

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3, reg_covar: float = 1e-6,
                 max_iter: int = 100, n_init: int = 1, init_params: str = "kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state: int | None = None, warm_start: bool = False):
        super().__init__()
        self.n_components = positive_int("n_components", n_components)
        if covariance_type not in mxops.COVARIANCE_TYPES:
            raise ValueError(f"covariance_type: expected one of {', '.join(map(repr, mxops.COVARIANCE_TYPES))}, "
                             f"got {covariance_type!r}")
        self.covariance_type = covariance_type
        self.tol = _real("tol", tol, 0.0)
        self.reg_covar = _real("reg_covar", reg_covar, 0.0)
        if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
            raise ValueError(f"max_iter: expected an int >= 0, got {max_iter!r}")
        self.max_iter = int(max_iter)
        self.n_init = positive_int("n_init", n_init)
        if init_params not in _INITS:
            raise ValueError(f"init_params: expected one of {', '.join(map(repr, _INITS))}, got {init_params!r}")
        self.init_params = init_params
        if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
            raise TypeError(f"random_state: expected an int seed or None, got {type(random_state).__name__}")
        self.random_state = random_state
        self.warm_start = bool(warm_start)
        k = self.n_components
        self.weights_init = _as_f64("weights_init", weights_init)
        self.means_init = _as_f64("means_init", means_init)
        self.precisions_init = _as_f64("precisions_init", precisions_init)
        if self.weights_init is not None:
            w = self.weights_init
            if w.shape != (k,):
                raise ValueError(f"weights_init: expected shape ({k},), got {tuple(w.shape)}")
            if bool((w < 0).any()) or bool((w > 1).any()):
                raise ValueError("weights_init: expected weights in [0, 1]")
            if not math.isclose(float(w.sum()), 1.0, rel_tol=0, abs_tol=1e-6):
                raise ValueError(f"weights_init: expected weights that sum to 1, got a sum of {float(w.sum())}")
        if self.means_init is not None and (self.means_init.dim() != 2 or self.means_init.shape[0] != k):
            raise ValueError(f"means_init: expected shape ({k}, n_features), got {tuple(self.means_init.shape)}")
        if self.precisions_init is not None:
            p = self.precisions_init
            ok = {"full": p.dim() == 3 and p.shape[0] == k and p.shape[1] == p.shape[2],
                  "tied": p.dim() == 2 and p.shape[0] == p.shape[1],
                  "diag": p.dim() == 2 and p.shape[0] == k, "spherical": p.shape == (k,)}[covariance_type]
            if not ok:
                raise ValueError(f"precisions_init: wrong shape {tuple(p.shape)} for covariance_type={covariance_type!r}")
            if covariance_type in ("diag", "spherical") and bool((p <= 0).any()):
                raise ValueError(f"precisions_init: expected positive precisions for covariance_type={covariance_type!r}")
        self.register_buffer("weights_", torch.zeros(0, dtype=F64))
        self.register_buffer("means_", torch.zeros(0, 0, dtype=F64))
        self.register_buffer("covariances_", torch.zeros(0, dtype=F64))
        self.register_buffer("precisions_cholesky_", torch.zeros(0, dtype=F64))
        self.register_buffer("_converged", torch.zeros((), dtype=torch.bool))
        self.register_buffer("_n_iter", torch.zeros((), dtype=torch.int64))
        self.register_buffer("_lower_bound", torch.tensor(-math.inf, dtype=F64))
        self.register_buffer("lower_bounds_", torch.zeros(0, dtype=F64))
        self._pc_upper = False  # precisions_cholesky_ known upper-triangular (else the op checks)

    # ---- attributes ---------------------------------------------------------------------------
    @property
    def converged_(self) -> bool:
        return bool(self._converged)

    @property
    def n_iter_(self) -> int:
        return int(self._n_iter)

    @property
    def lower_bound_(self) -> float:
        return float(self._lower_bound)

    @property
    def n_features_in_(self) -> int:
        return self.means_.shape[1]

    @property
    def precisions_(self):
        pc = self.precisions_cholesky_
        if self.covariance_type in ("full", "tied"):
            return pc @ pc.transpose(-1, -2)
        return pc * pc

    def _fitted(self):
        return self.weights_.numel() > 0

    def _check_fitted(self, what):
        if not self._fitted():
            raise RuntimeError(f"GaussianMixture.{what}: the model is not fitted; call fit(x) first")

    def _x(self, x, name="X", *, min_rows=0):
        x = check_data(x, name, ndim=2, min_rows=min_rows, finite=False)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        if self._fitted() and x.shape[1] != self.n_features_in_:
            raise ValueError(f"{name}: expected {self.n_features_in_} features (as in fit), got shape {tuple(x.shape)}")
        return x.to(self.weights_.device)

    def _n_parameters(self):
        k, d = self.n_components, self.n_features_in_
        cov = {"full": k * d * (d + 1) / 2, "diag": k * d, "tied": d * (d + 1) / 2, "spherical": k}[self.covariance_type]
        return int(cov + k * d + k - 1)

    # ---- the E-step and M-step ------------------------------------------------------------------
    def _e_step(self, x, *, resp=None, stats=True, shift=None, return_sum=False):
        return mxops.gmm_e_step(x, self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type,
                                resp=resp, stats=stats, shift=shift, return_sum=return_sum, upper=self._pc_upper or None)

    def _params_from_stats(self, nk, sx, sxx, n_total, shift, xtx=None):
        """(weights, means, covariances) from the statistics of x - shift, as scikit-learn's
        _estimate_gaussian_parameters computes them (weights not yet normalised: nk + 10 eps)."""
        d = sx.shape[1]
        nke = nk + 10 * torch.finfo(F64).eps
        mu = sx / nke[:, None]
        eye = torch.eye(d, dtype=F64, device=sx.device)
        ct = self.covariance_type
        if ct == "full":
            # sum r (x - mu)(x - mu)^T = sxx - (2 nk' - nk) mu mu^T  (nk' = nk + 10 eps, sx = nk' mu)
            cov = (sxx - (2 * nke - nk)[:, None, None] * mu[:, :, None] * mu[:, None, :]) / nke[:, None, None]
            cov = cov + self.reg_covar * eye
        elif ct == "tied":
            cov = (xtx - (nke[:, None] * mu).T @ mu) / nke.sum() + self.reg_covar * eye
        else:
            var = sxx / nke[:, None] - mu * mu + self.reg_covar
            cov = var if ct == "diag" else var.mean(1)
        return nke, mu + shift, cov

    def _set_covariances(self, cov):
        try:
            pc = ref.precisions_cholesky(cov, self.covariance_type)
        except RuntimeError:
            pc = None
        if pc is None or not bool(torch.isfinite(pc).all()):
            raise ValueError("Fitting the mixture model failed because some components have ill-defined empirical "
                             "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
                             "number of components, increase reg_covar, or scale the input data.")
        self.covariances_ = cov
        self.precisions_cholesky_ = pc
        self._pc_upper = True  # as computed here; one from precisions_init is lower-triangular

    # ---- initialisation -----------------------------------------------------------------------
    def _generator(self, seed):
        return torch.Generator().manual_seed(int(seed))

    def _kmeanspp(self, xs, k, g):
        """k-means++ seeds on rank 0's rows (broadcast), float64 (k, D)."""
        rank, _ = _rank_info()
        d = xs.shape[1]
        seeds = torch.zeros(k, d, dtype=F64)
        if rank == 0:
            x = xs.to(F64).cpu()
            n = x.shape[0]
            n_trials = 2 + int(math.log(k))
            first = int(torch.randint(0, n, (1,), generator=g))
            seeds[0] = x[first]
            closest = ((x - seeds[0]) ** 2).sum(1)
            for c in range(1, k):
                pot = float(closest.sum())
                u = torch.rand(n_trials, generator=g, dtype=F64) * pot
                cand = torch.searchsorted(torch.cumsum(closest, 0), u).clamp_(max=n - 1)
                dist = torch.cdist(x[cand], x).pow_(2)
                best = torch.minimum(closest[None], dist).sum(1).argmin()
                seeds[c] = x[cand[best]]
                closest = torch.minimum(closest, dist[best])
        return _broadcast(seeds).to(xs.device)

    @staticmethod
    def _assign(x, centres):
        return torch.cdist(x, centres).argmin(1)

    def _lloyd(self, xs, centres, max_iter=300, tol=1e-4):
        """Lloyd iterations with all-reduced sums (every rank takes the same steps)."""
        k = centres.shape[0]
        (n_all,) = _distributed.all_reduce_sum(torch.tensor([float(xs.shape[0])], dtype=F64))
        (var,) = _distributed.all_reduce_sum(xs.var(0, correction=0).mul(xs.shape[0]).sum().reshape(1))
        thresh = tol * float(var) / float(n_all)  # scikit-learn's tol: relative to the mean variance
        for _ in range(max_iter):
            lab = self._assign(xs, centres)
            cnt = torch.zeros(k, dtype=F64, device=xs.device).index_add_(0, lab, torch.ones_like(lab, dtype=F64))
            sums = torch.zeros_like(centres).index_add_(0, lab, xs)
            _distributed.all_reduce_sum(cnt, sums)
            new = torch.where(cnt[:, None] > 0, sums / cnt.clamp(min=1)[:, None], centres)
            shift = float(((new - centres) ** 2).sum())
            centres = new
            if shift <= thresh:
                break
        return self._assign(xs, centres)

    def _hard_stats(self, xs, lab, k):
        d = xs.shape[1]
        nk = torch.zeros(k, dtype=F64, device=xs.device).index_add_(0, lab, torch.ones_like(lab, dtype=F64))
        sx = torch.zeros(k, d, dtype=F64, device=xs.device).index_add_(0, lab, xs)
        ct = self.covariance_type
        if ct == "full":
            sxx = torch.stack([xs[lab == c].T @ xs[lab == c] for c in range(k)])
        elif ct in ("diag", "spherical"):
            sxx = torch.zeros(k, d, dtype=F64, device=xs.device).index_add_(0, lab, xs * xs)
        else:
            sxx = torch.zeros(0, dtype=F64, device=xs.device)
        return nk, sx, sxx

    def _soft_stats(self, xs, r):
        ct = self.covariance_type
        nk, sx = r.sum(0), r.T @ xs
        if ct == "full":
            k, d = r.shape[1], xs.shape[1]
            sxx = torch.zeros(k * d, d, dtype=F64, device=xs.device)
            for i in range(0, xs.shape[0], 4096):  # blocks keep the (rows, k * d) product small
                xb, rb = xs[i:i + 4096], r[i:i + 4096]
                sxx += (rb[:, :, None] * xb[:, None, :]).reshape(xb.shape[0], k * d).T @ xb
            sxx = sxx.reshape(k, d, d)
        elif ct in ("diag", "spherical"):
            sxx = r.T @ (xs * xs)
        else:
            sxx = torch.zeros(0, dtype=F64, device=xs.device)
        return nk, sx, sxx

    def _initialize(self, x, shift, n_total, xtx, seed):
        k = self.n_components
        dev = x.device
        need = self.weights_init is None or self.means_init is None or self.precisions_init is None
        weights = means = cov = None
        if need:
            xs = x.to(F64) - shift
            g = self._generator(seed)
            if self.init_params in ("kmeans", "k-means++"):
                centres = self._kmeanspp(xs, k, g)
                lab = self._lloyd(xs, centres) if self.init_params == "kmeans" else self._assign(xs, centres)
                stats = self._hard_stats(xs, lab, k)
            else:
                rank, world = _rank_info()
                counts = torch.zeros(world, dtype=F64)
                counts[rank] = x.shape[0]
                _distributed.all_reduce_sum(counts)
                start = int(counts[:rank].sum())
                s, off = int(torch.randint(0, 2**62, (1,), generator=g)), int(torch.randint(0, 2**62, (1,), generator=g))
                u = rng.philox_uniform((start + x.shape[0]) * k, s, off)[start * k:].to(device=dev, dtype=F64)
                r = u.reshape(x.shape[0], k)
                stats = self._soft_stats(xs, r / r.sum(1, keepdim=True))
            nk, sx, sxx = stats
            _distributed.all_reduce_sum(nk, sx, sxx)
            weights, means, cov = self._params_from_stats(nk, sx, sxx, n_total, shift, xtx)
            weights = weights / n_total  # scikit-learn: nk / n_samples here, not renormalised
        self.weights_ = self.weights_init.to(dev) if self.weights_init is not None else weights
        self.means_ = self.means_init.to(dev) if self.means_init is not None else means
        if self.precisions_init is None:
            self._set_covariances(cov)
        else:
            p = self.precisions_init.to(dev)
            if self.covariance_type in ("full", "tied"):
                self.precisions_cholesky_ = torch.linalg.cholesky(p)
                self._pc_upper = False
            else:
                self.precisions_cholesky_ = p.sqrt()
            self.covariances_ = torch.zeros(0, dtype=F64, device=dev)

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, x, y=None, *, max_iter: int | None = None, progress: bool = True, callback=None):
        """Fits by EM (n_init runs from the initialisation, the one with the best lower bound kept);
        returns self. callback(model, {"iter", "init", "lower_bound"}) after each iteration; True stops."""
        k = self.n_components
        x = check_data(x, "X", ndim=2, finite=False)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(F64)
        dev = self.weights_.device
        x = x.to(dev)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        if max_iter is None:
            max_iter = self.max_iter
        elif isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
            raise ValueError(f"max_iter: expected an int >= 0, got {max_iter!r}")
        # totals over all ranks: row count (and the NaN / inf check), the data mean used as shift
        xd = x.to(F64)
        tot = torch.cat([torch.tensor([float(x.shape[0])], dtype=F64, device=dev), xd.sum(0)])
        _distributed.all_reduce_sum(tot)
        n_total = float(tot[0])
        if not bool(torch.isfinite(tot).all()):
            check_data(x, "X")
            raise ValueError("X: the column sums overflow float64")
        if n_total < k:
            raise ValueError(f"X: expected n_samples >= n_components, got n_samples={int(n_total)} < n_components={k}")
        d = x.shape[1]
        if self.means_init is not None and self.means_init.shape[1] != d:
            raise ValueError(f"means_init: has {self.means_init.shape[1]} features, X has {d}")
        if self.precisions_init is not None:
            p = self.precisions_init
            want = _cov_shape(self.covariance_type, k, d)
            if tuple(p.shape) != want:
                raise ValueError(f"precisions_init: expected shape {want}, got {tuple(p.shape)}")
        shift = tot[1:] / n_total
        xtx = None
        if self.covariance_type == "tied":
            xc = xd - shift
            (xtx,) = _distributed.all_reduce_sum(xc.T @ xc)
            del xc
        del xd
        seed = self.random_state
        if seed is None:  # a fresh seed, the same on every rank
            t = torch.randint(0, 2**62, (1,))
            if _distributed.is_distributed():
                import torch.distributed as dist

                dist.broadcast(t, src=0)
            seed = int(t)
        seeds = torch.randint(0, 2**62, (self.n_init,), generator=self._generator(seed)).tolist()
        do_init = not (self.warm_start and self._fitted())
        n_init = self.n_init if do_init else 1
        best = None
        bar = Progress(n_init * max_iter if max_iter else None, "fit", progress)
        stop = False
        try:
            for init in range(n_init):
                if do_init:
                    self._initialize(x, shift, n_total, xtx, seeds[init])
                lower_bound = -math.inf if do_init else self.lower_bound_
                bounds = []
                converged, n_iter = False, 0
                for n_iter in range(1, max_iter + 1):
                    prev = lower_bound
                    lower_bound = self._iterate(x, shift, n_total, xtx)
                    bounds.append(lower_bound)
                    bar.update(1, init=init + 1, lower_bound=f"{lower_bound:.6f}")
                    if callback is not None and callback(self, {"iter": n_iter, "init": init, "lower_bound": lower_bound}):
                        stop = True
                    if abs(lower_bound - prev) < self.tol:
                        converged = True
                        break
                    if stop:
                        break
                if best is None or lower_bound > best[0]:
                    best = (lower_bound, self._get_parameters(), n_iter, converged, bounds)
                if stop:
                    break
        finally:
            bar.close()
        lb, params, n_iter, converged, bounds = best
        self._set_parameters(params)
        self._n_iter = torch.tensor(n_iter, dtype=torch.int64, device=dev)
        self._converged = torch.tensor(converged, device=dev)
        self._lower_bound = torch.tensor(lb, dtype=F64, device=dev)
        self.lower_bounds_ = torch.tensor(bounds, dtype=F64, device=dev)
        if not converged and max_iter > 0 and not stop:
            warnings.warn(f"GaussianMixture: the best of {n_init} initialisation(s) did not converge in {max_iter} "
                          "iterations; try a larger max_iter or tol, or check the data", ConvergenceWarning, stacklevel=2)
        return self

    def _iterate(self, x, shift, n_total, xtx=None):
        """One EM iteration (scikit-learn's loop body): the fused E-step with the statistics, one
        all-reduce, the M-step. Returns the lower bound of the E-step (the mean log-likelihood under the
        parameters before this M-step)."""
        ll, _, (nk, sx, sxx) = self._e_step(x, shift=shift, return_sum=True)
        if sxx is None:
            sxx = torch.zeros(0, dtype=F64, device=x.device)
        _distributed.all_reduce_sum(nk, sx, sxx, ll)
        lower_bound = float(ll) / n_total
        if not math.isfinite(lower_bound):
            check_data(x, "X")
        w, mu, cov = self._params_from_stats(nk, sx, sxx, n_total, shift, xtx)
        self.weights_ = w / w.sum()
        self.means_ = mu
        self._set_covariances(cov)
        return lower_bound

    def _get_parameters(self):
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_, self._pc_upper)

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_, self._pc_upper = params

    def fit_predict(self, x, y=None, **kwargs):
        return self.fit(x, **kwargs).predict(x)

    # ---- scoring and prediction ---------------------------------------------------------------
    def _checked(self, x, **kw):
        log_norm, r, _ = self._e_step(x, stats=False, **kw)
        if x.shape[0] and not bool(torch.isfinite(log_norm).all()):
            check_data(x, "X")
        return log_norm, r

    def score_samples(self, x):
        """(N,) log p(x) under the mixture, in nats."""
        self._check_fitted("score_samples")
        return self._checked(self._x(x))[0]

    def log_prob(self, x):
        """(N,) exact log-density (the generative protocol's name for score_samples)."""
        return self.score_samples(x)

    def score(self, x, y=None):
        """Mean log-likelihood per sample."""
        return float(self.score_samples(x).to(F64).mean())

    def predict_proba(self, x):
        self._check_fitted("predict_proba")
        return self._checked(self._x(x), resp="prob")[1]

    def predict(self, x):
        self._check_fitted("predict")
        return self._checked(self._x(x), resp="log")[1].argmax(1)

    def bic(self, x):
        x = self._x(x)
        return -2 * self.score(x) * x.shape[0] + self._n_parameters() * math.log(x.shape[0])

    def aic(self, x):
        x = self._x(x)
        return -2 * self.score(x) * x.shape[0] + 2 * self._n_parameters()

    def sample(self, n: int, *, generator=None, return_labels: bool = False):
        """(n, D) float64 draws (components from weights_, then x = mean + L z with L L^T = covariance);
        with return_labels, (x, components)."""
        self._check_fitted("sample")
        n = positive_int("n", n)
        dev = self.weights_.device
        s, off = rng.draw_key(generator)
        u = rng.philox_uniform(n, s, off).to(device=dev, dtype=F64)
        cdf = torch.cumsum(self.weights_, 0)
        comp = torch.searchsorted(cdf / cdf[-1], u).clamp_(max=self.n_components - 1)
        s, off = rng.draw_key(generator)
        d = self.n_features_in_
        z = rng.philox_normal(n * d, s, off).to(device=dev, dtype=F64).reshape(n, d)
        cov = self.covariances_
        if cov.numel() == 0:  # fitted with max_iter=0 from precisions_init: derive the covariances
            pc = self.precisions_cholesky_
            cov = torch.cholesky_inverse(torch.linalg.cholesky(self.precisions_)) if self.covariance_type in ("full", "tied") \
                else 1.0 / (pc * pc)
        ct = self.covariance_type
        if ct == "full":
            x = self.means_[comp] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(cov)[comp], z)
        elif ct == "tied":
            x = self.means_[comp] + z @ torch.linalg.cholesky(cov).T
        elif ct == "diag":
            x = self.means_[comp] + z * cov[comp].sqrt()
        else:
            x = self.means_[comp] + z * cov[comp].sqrt()[:, None]
        return (x, comp) if return_labels else x
