"""Hidden Markov models with Gaussian or categorical emissions: Baum-Welch fit, exact log-likelihood,
Viterbi decoding and sampling, on the fused recursions of genengine.ops.hmm.

    hmm = ge.models.HMM(4, emission="gaussian", covariance_type="diag").fit(X, lengths)
    hmm.log_prob(batch, lengths)          # (B,) exact log p(sequence), nats
    hmm.predict(X, lengths)               # Viterbi states
    x = hmm.sample(16, length=200)        # (16, 200, n_features)

Sequences come in three layouts, accepted by fit, log_prob, score, predict, predict_proba, decode:
  * hmmlearn's concatenated layout: X (N, n_features) with lengths summing to N (None: one sequence);
  * a padded batch: X (B, T, n_features) with lengths (B,) (None: all T steps; padding is ignored);
  * a list of sequences, each (T_i, n_features).
Categorical observations are integer symbols in [0, n_features) with a trailing feature dim of 1, as
in hmmlearn ((N, 1), (B, T, 1)); 1-D (N,) and lists of 1-D sequences are accepted too.

Parameters carry hmmlearn's names and shapes, settable (so a fitted hmmlearn model's parameters
load directly): startprob_ (S,), transmat_ (S, S), means_ (S, d), covars_, emissionprob_ (S, K).
covars_ reads back as full matrices (S, d, d), as hmmlearn's does, and is set in the
covariance_type's shape: "spherical" (S,), "diag" (S, d), "full" (S, d, d), "tied" (d, d) (full
matrices are accepted for every type, e.g. `model.covars_ = hmmlearn_model.covars_`).

Differences from hmmlearn: `sample(n, length=...)` draws n sequences (the genengine protocol), not
one sequence of n steps; the M-step regularises covariances by adding min_covar to their diagonal
(scikit-learn's reg_covar) instead of hmmlearn's covars_prior; fit runs n_iter EM iterations and
stops early when the total log-likelihood improves by less than tol (hmmlearn's rule).
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _backends, ops
from .._checks import positive_int
from .._progress import Progress
from .base import FitRecord, GenerativeModel

__all__ = ["HMM"]

_COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
_EMISSIONS = ("gaussian", "categorical")


def _as_tensor(name, v, dtype):
    if isinstance(v, torch.Tensor):
        return v.detach().to(dtype)
    try:
        return torch.as_tensor(v, dtype=dtype)
    except Exception:
        raise TypeError(f"{name}: expected a tensor or array, got {type(v).__name__}") from None


class HMM(FitRecord, GenerativeModel):
    """A hidden Markov model with `n_states` states and Gaussian or categorical emissions (see the
    module docstring for layouts, parameter names and what differs from hmmlearn).

    n_features: the observation dimension (gaussian) or number of symbols (categorical); None: taken
        from the data at the first fit (or from the parameters you set).
    params / init_params: which parameters Baum-Welch updates / fit initialises, as letters: s
        (startprob), t (transmat), m (means), c (covars), e (emissionprob); default all.
    min_covar: added to covariance diagonals (init and every M-step), keeps them positive definite.
    random_state: seed (int) or torch.Generator for the initialisation (k-means++ means, random
        emission probabilities).
    dtype: float64 (default, as hmmlearn) or float32. backend: for the recursions (genengine.ops.hmm).
    """

    _fit_record = {"n_iter_": 0, "converged_": False, "history_": []}  # plain-Python fit results (FitRecord)

    likelihood = "exact"

    def __init__(self, n_states: int, emission: str = "gaussian", covariance_type: str = "diag", *,
                 n_features: int | None = None, n_iter: int = 10, tol: float = 1e-2, min_covar: float = 1e-3,
                 params: str | None = None, init_params: str | None = None, random_state=None,
                 dtype: torch.dtype = torch.float64, backend: str = "auto"):
        super().__init__()
        self.n_states = positive_int("n_states", n_states)
        if emission not in _EMISSIONS:
            raise ValueError(f"emission: expected one of {_EMISSIONS}, got {emission!r}")
        if covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(f"covariance_type: expected one of {_COVARIANCE_TYPES}, got {covariance_type!r}")
        self.emission, self.covariance_type = emission, covariance_type
        self.n_iter = positive_int("n_iter", n_iter)
        self.tol = self._nonneg("tol", tol)
        self.min_covar = self._nonneg("min_covar", min_covar)
        letters = "ste" if emission == "categorical" else "stmc"
        for name, v in (("params", params), ("init_params", init_params)):
            if v is not None and (not isinstance(v, str) or set(v) - set(letters)):
                raise ValueError(f"{name}: expected a string of the letters {letters!r}, got {v!r}")
        self.params = letters if params is None else params
        self.init_params = letters if init_params is None else init_params
        if random_state is not None and not isinstance(random_state, (numbers.Integral, torch.Generator)):
            raise TypeError(f"random_state: expected an int, a torch.Generator or None, got {type(random_state).__name__}")
        self.random_state = random_state
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.backend = backend
        if n_features is not None:
            n_features = positive_int("n_features", n_features)
        s = self.n_states
        self.register_buffer("n_features_", torch.tensor(n_features or 0, dtype=torch.int64))
        self.register_buffer("_startprob", torch.full((s,), 1.0 / s, dtype=dtype))
        self.register_buffer("_transmat", torch.full((s, s), 1.0 / s, dtype=dtype))
        self.register_buffer("_means", torch.zeros(0, dtype=dtype))
        self.register_buffer("_covars", torch.zeros(0, dtype=dtype))
        self.register_buffer("_emissionprob", torch.zeros(0, dtype=dtype))
        self.history_: list[float] = []
        self.converged_ = False
        self.n_iter_ = 0

    @staticmethod
    def _nonneg(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        return float(v)

    # ---- parameters with hmmlearn's names ------------------------------------------------------
    @property
    def n_features(self) -> int | None:
        v = int(self.n_features_)
        return v or None

    def _set_features(self, d, where):
        cur = self.n_features
        if cur is not None and cur != d:
            raise ValueError(f"{where}: expected {cur} features (this model's n_features), got {d}")
        self.n_features_.fill_(d)

    @property
    def startprob_(self) -> torch.Tensor:
        return self._startprob

    @startprob_.setter
    def startprob_(self, v):
        v = _as_tensor("startprob_", v, self.dtype).to(self._startprob.device)
        if tuple(v.shape) != (self.n_states,):
            raise ValueError(f"startprob_: expected shape ({self.n_states},), got {tuple(v.shape)}")
        self._check_stochastic("startprob_", v)
        self._startprob = v.clone()

    @property
    def transmat_(self) -> torch.Tensor:
        return self._transmat

    @transmat_.setter
    def transmat_(self, v):
        v = _as_tensor("transmat_", v, self.dtype).to(self._transmat.device)
        s = self.n_states
        if tuple(v.shape) != (s, s):
            raise ValueError(f"transmat_: expected shape ({s}, {s}), got {tuple(v.shape)}")
        self._check_stochastic("transmat_", v)
        self._transmat = v.clone()

    @staticmethod
    def _check_stochastic(name, v):
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(f"{name}: expected finite non-negative probabilities")
        sums = v.sum(-1)
        if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6 if v.dtype == torch.float64 else 1e-4)):
            raise ValueError(f"{name}: expected {'rows that sum' if v.dim() > 1 else 'values that sum'} to 1, "
                             f"got sums {sums.tolist() if sums.dim() else float(sums)}")

    def _require(self, attr, what):
        t = getattr(self, attr)
        if t.numel() == 0:
            raise RuntimeError(f"HMM: {what} is not set; call fit() first or set it")
        return t

    @property
    def means_(self) -> torch.Tensor:
        self._gaussian_only("means_")
        return self._require("_means", "means_")

    @means_.setter
    def means_(self, v):
        self._gaussian_only("means_")
        v = _as_tensor("means_", v, self.dtype).to(self._startprob.device)
        if v.dim() != 2 or v.shape[0] != self.n_states:
            raise ValueError(f"means_: expected shape ({self.n_states}, n_features), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("means_: contains NaN or infinite values")
        self._set_features(v.shape[1], "means_")
        self._means = v.clone()

    @property
    def covars_(self) -> torch.Tensor:
        """Full covariance matrices (S, d, d), whatever the covariance_type (as hmmlearn's covars_)."""
        self._gaussian_only("covars_")
        c = self._require("_covars", "covars_")
        s = self.n_states
        if self.covariance_type == "full":
            return c
        if self.covariance_type == "tied":
            return c.expand(s, *c.shape).clone()
        d = self.n_features
        diag = c if self.covariance_type == "diag" else c[:, None].expand(s, d)
        return torch.diag_embed(diag)

    @covars_.setter
    def covars_(self, v):
        self._gaussian_only("covars_")
        v = _as_tensor("covars_", v, self.dtype).to(self._startprob.device)
        s, ct = self.n_states, self.covariance_type
        if ct != "full" and v.dim() == 3 and v.shape[0] == s and v.shape[1] == v.shape[2]:
            v = self._from_full(v)  # hmmlearn's covars_ getter returns full matrices for every type
        expected = {"spherical": (s,), "diag": (s, None), "full": (s, None, None), "tied": (None, None)}[ct]
        if v.dim() != len(expected) or any(e is not None and e != g for e, g in zip(expected, v.shape)) or (
                ct in ("full", "tied") and v.shape[-1] != v.shape[-2]):
            names = {"spherical": f"({s},)", "diag": f"({s}, n_features)", "full": f"({s}, n_features, n_features)",
                     "tied": "(n_features, n_features)"}
            raise ValueError(f"covars_: expected shape {names[ct]} for covariance_type={ct!r} (or full matrices "
                             f"({s}, d, d)), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("covars_: contains NaN or infinite values")
        if ct in ("spherical", "diag"):
            if bool((v <= 0).any()):
                raise ValueError("covars_: expected positive variances")
        else:
            if not bool(torch.allclose(v, v.transpose(-1, -2), rtol=1e-6, atol=1e-9)):
                raise ValueError("covars_: expected symmetric matrices")
            if bool((torch.linalg.eigvalsh(v) <= 0).any()):
                raise ValueError("covars_: expected positive-definite matrices")
        if ct != "spherical":
            self._set_features(v.shape[-1], "covars_")
        self._covars = v.clone()

    def _from_full(self, v):
        ct = self.covariance_type
        diag = torch.diagonal(v, dim1=-2, dim2=-1)
        if ct == "tied":
            if not bool(torch.allclose(v, v[:1].expand_as(v))):
                raise ValueError("covars_: full matrices given for covariance_type='tied' must all be equal")
            return v[0]
        off = v - torch.diag_embed(diag)
        if bool((off.abs() > 1e-12 * (1 + diag.abs().max())).any()):
            raise ValueError(f"covars_: full matrices given for covariance_type={ct!r} must be diagonal")
        if ct == "spherical":
            if not bool(torch.allclose(diag, diag[:, :1].expand_as(diag))):
                raise ValueError("covars_: full matrices given for covariance_type='spherical' must be multiples of I")
            return diag[:, 0]
        return diag

    @property
    def emissionprob_(self) -> torch.Tensor:
        self._categorical_only("emissionprob_")
        return self._require("_emissionprob", "emissionprob_")

    @emissionprob_.setter
    def emissionprob_(self, v):
        self._categorical_only("emissionprob_")
        v = _as_tensor("emissionprob_", v, self.dtype).to(self._startprob.device)
        if v.dim() != 2 or v.shape[0] != self.n_states:
            raise ValueError(f"emissionprob_: expected shape ({self.n_states}, n_features), got {tuple(v.shape)}")
        self._check_stochastic("emissionprob_", v)
        self._set_features(v.shape[1], "emissionprob_")
        self._emissionprob = v.clone()

    def _gaussian_only(self, name):
        if self.emission != "gaussian":
            raise TypeError(f"{name}: only Gaussian-emission HMMs have it (this one is {self.emission!r})")

    def _categorical_only(self, name):
        if self.emission != "categorical":
            raise TypeError(f"{name}: only categorical-emission HMMs have it (this one is {self.emission!r})")

    # ---- sequences ---------------------------------------------------------------------------
    def _sequences(self, X, lengths, where="X"):
        """(xp, lens, mask, layout) after the checks: xp the padded batch (B, T, d) float (gaussian) or
        (B, T) int64 (categorical), its padding zero-filled; lens (B,) int64 on the CPU; mask (B, T)
        bool of the real steps, or None when every sequence is T long; layout "concat", "padded" or
        "list". Equal-length concatenated sequences become a view, not a copy."""
        cat = self.emission == "categorical"
        dev = self._startprob.device
        if isinstance(X, (list, tuple)) and not (len(X) and isinstance(X[0], numbers.Number)):
            if lengths is not None:
                raise ValueError("lengths: pass lengths with a tensor, not with a list of sequences")
            if not X:
                raise ValueError(f"{where}: expected at least one sequence, got an empty list")
            seqs = [self._observations(x, f"{where}[{i}]") for i, x in enumerate(X)]
            lens = torch.tensor([q.shape[0] for q in seqs], dtype=torch.int64)
            xp = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
            return xp, lens, self._mask(lens, xp.shape[1], dev), "list"
        if not isinstance(X, torch.Tensor):
            X = _as_tensor(where, X, torch.int64 if cat else self.dtype)
        padded = X.dim() == 3 or (cat and X.dim() == 2 and X.shape[-1] != 1)
        if padded:
            if cat and X.dim() == 3:
                if X.shape[-1] != 1:
                    raise ValueError(f"{where}: expected categorical symbols of shape (B, T, 1) or (B, T), got {tuple(X.shape)}")
                X = X[..., 0]
            b, t = X.shape[:2]
            lens = torch.full((b,), t, dtype=torch.int64) if lengths is None else self._lengths(lengths, b, t, where)
            mask = self._mask(lens, t, dev)
            xp = self._observations(X.reshape(b * t, *X.shape[2:]), where, valid=None if mask is None else mask.reshape(-1))
            return xp.view(b, t, *xp.shape[1:]), lens, mask, "padded"
        flat = self._observations(X, where)
        n = flat.shape[0]
        if lengths is None:
            lens = torch.tensor([n], dtype=torch.int64)
        else:
            lens = self._lengths(lengths, None, None, where)
            if int(lens.sum()) != n:
                raise ValueError(f"lengths: expected lengths summing to {n} (the rows of {where}), got {int(lens.sum())}")
        if bool((lens == lens[0]).all()) and int(lens[0]) > 0:
            return flat.view(lens.shape[0], int(lens[0]), *flat.shape[1:]), lens, None, "concat"
        xp = torch.nn.utils.rnn.pad_sequence(list(torch.split(flat, lens.tolist())), batch_first=True)
        return xp, lens, self._mask(lens, xp.shape[1], dev), "concat"

    @staticmethod
    def _mask(lens, t, device):
        if bool((lens == t).all()):
            return None
        return (torch.arange(t)[None, :] < lens[:, None]).to(device)

    @staticmethod
    def _lengths(lengths, b, t, where):
        try:
            lens = torch.as_tensor(lengths)
        except Exception:
            raise TypeError(f"lengths: expected a 1-D integer tensor or list, got {type(lengths).__name__}") from None
        if lens.is_floating_point() or lens.dtype == torch.bool:
            raise TypeError(f"lengths: expected integers, got {lens.dtype}")
        lens = lens.to(torch.int64).cpu().reshape(-1)
        if b is not None and lens.shape[0] != b:
            raise ValueError(f"lengths: expected {b} lengths (one per sequence of {where}), got {lens.shape[0]}")
        if lens.numel() == 0 or bool((lens < 0).any()) or (t is not None and bool((lens > t).any())):
            raise ValueError(f"lengths: expected non-negative lengths{f' <= {t}' if t is not None else ''}, got {lens.tolist()}")
        return lens

    def _observations(self, x, where, valid=None):
        """Stacked steps checked: (n, d) float for gaussian, (n,) int64 for categorical. `valid` (n,)
        bool marks the real steps of a padded batch: only those are checked, the others zero-filled."""
        cat = self.emission == "categorical"
        if not isinstance(x, torch.Tensor):
            x = _as_tensor(where, x, torch.int64 if cat else self.dtype)
        if cat:
            if x.dim() == 2 and x.shape[-1] == 1:
                x = x[:, 0]
            if x.dim() != 1:
                raise ValueError(f"{where}: expected categorical symbols of shape (n, 1) or (n,), got {tuple(x.shape)}")
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(f"{where}: expected integer symbols, got {x.dtype}")
        else:
            if x.dim() == 1:
                x = x[:, None]
            if x.dim() != 2:
                raise ValueError(f"{where}: expected observations of shape (n, n_features), got {tuple(x.shape)}")
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"{where}: expected real observations, got {x.dtype}")
            d = self.n_features
            if d is not None and x.shape[1] != d:
                raise ValueError(f"{where}: expected {d} features (last dim), got {x.shape[1]}")
        x = x.to(device=self._startprob.device)
        if valid is not None and not self._values_ok(x):
            self._check_values(x[valid.to(x.device)], where)  # raises when a real step is bad
            fill = torch.zeros((), dtype=x.dtype, device=x.device)
            x = torch.where(valid.to(x.device).reshape(-1, *([1] * (x.dim() - 1))), x, fill)
        else:
            self._check_values(x, where)
        return x.to(torch.int64) if cat else x.to(self.dtype).contiguous()

    def _values_ok(self, x):
        if self.emission == "categorical":
            if x.is_floating_point() and not bool((x == x.round()).all()):
                return False
            k = self.n_features
            return not x.numel() or (float(x.min()) >= 0 and (k is None or float(x.max()) < k))
        return bool(torch.isfinite(x).all())

    def _check_values(self, x, where):
        if self.emission == "categorical":
            if x.is_floating_point() and (not bool(torch.isfinite(x).all()) or bool((x != x.round()).any())):
                raise ValueError(f"{where}: expected integer symbols, got non-integer values")
            if x.numel() and float(x.min()) < 0:
                raise ValueError(f"{where}: expected symbols >= 0, got {int(x.min())}")
            k = self.n_features
            if k is not None and x.numel() and float(x.max()) >= k:
                raise ValueError(f"{where}: expected symbols < n_features = {k}, got {int(x.max())}")
        elif not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: contains NaN or infinite values")

    # ---- emissions ---------------------------------------------------------------------------
    def _log_emissions(self, x):
        """log p(x | state s): (..., S) for observations (..., d) (gaussian) or symbols (...) (categorical)."""
        if self.emission == "categorical":
            return torch.log(self._require("_emissionprob", "emissionprob_")).T[x]
        mu = self._require("_means", "means_")
        c = self._require("_covars", "covars_")
        lead, d = x.shape[:-1], x.shape[-1]
        x = x.reshape(-1, d)
        const = d * math.log(2 * math.pi)
        if self.covariance_type in ("diag", "spherical"):
            var = c if self.covariance_type == "diag" else c[:, None].expand(-1, d)
            logconst = -0.5 * (const + torch.log(var).sum(1))
            cpp = _backends.load_cpp()
            if x.is_cpu and self.backend in ("auto", "cpp") and not isinstance(cpp, Exception):
                out = torch.empty(x.shape[0], self.n_states, dtype=x.dtype)
                mt = mu.double().T.contiguous()
                pt = (1.0 / var).double().T.contiguous()
                lc = logconst.double().contiguous()
                x = x.contiguous()
                cpp.gaussian_diag_log_density(1 if x.dtype == torch.float64 else 0, x.shape[0], d, self.n_states,
                                              x.data_ptr(), mt.data_ptr(), pt.data_ptr(), lc.data_ptr(), out.data_ptr())
                return out.view(*lead, self.n_states)
            prec = 1.0 / var
            # the expansion |x - mu|^2 / var = x^2 / var - 2 x mu / var + mu^2 / var, two matmuls
            quad = (x * x) @ prec.T - 2.0 * x @ (mu * prec).T + (mu * mu * prec).sum(1)
            return (logconst - 0.5 * quad).view(*lead, self.n_states)
        chol = torch.linalg.cholesky(c)  # (S, d, d) or (d, d)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        # (S, d, N) residuals through the (shared, for "tied") Cholesky factor
        z = torch.linalg.solve_triangular(chol, (x[None, :, :] - mu[:, None, :]).transpose(1, 2), upper=False)
        quad = (z * z).sum(1).T  # (N, S)
        return (-0.5 * (const + logdet + quad)).view(*lead, self.n_states)

    def _logs(self):
        return torch.log(self._startprob), torch.log(self._transmat)

    # ---- the protocol ------------------------------------------------------------------------
    def _lens(self, lens, le):
        return lens.to(le.device)

    def log_prob(self, x, lengths=None) -> torch.Tensor:
        """Exact log-likelihood of each sequence (B,) in nats: x in any of the layouts of the module
        docstring (a padded batch with lengths, a list, or the concatenated layout with lengths)."""
        xp, lens, _, _ = self._sequences(x, lengths, "x")
        le = self._log_emissions(xp)
        ls, lt = self._logs()
        return ops.hmm_forward(le, ls, lt, lens.to(le.device), backend=self.backend)

    def score(self, X, lengths=None) -> float:
        """Total log-likelihood of the sequences (hmmlearn's score)."""
        return float(self.log_prob(X, lengths).sum())

    def _posteriors(self, xp, lens):
        le = self._log_emissions(xp)
        ls, lt = self._logs()
        return ops.hmm_posteriors(le, ls, lt, lens.to(le.device), backend=self.backend)

    @staticmethod
    def _steps(t, mask):
        """The real steps of a padded (B, T, ...) tensor, concatenated: (N, ...)."""
        return t.reshape(-1, *t.shape[2:]) if mask is None else t[mask]

    def score_samples(self, X, lengths=None):
        """(total log-likelihood, posteriors (N, S) over the concatenated steps) (hmmlearn's score_samples)."""
        xp, lens, mask, _ = self._sequences(X, lengths)
        ll, gamma, _ = self._posteriors(xp, lens)
        return float(ll.sum()), self._steps(gamma, mask)

    def predict_proba(self, X, lengths=None) -> torch.Tensor:
        """State posteriors p(z_t | x) (N, S), over the concatenated steps."""
        return self.score_samples(X, lengths)[1]

    def decode(self, X, lengths=None):
        """(log-probability of the best paths, summed; states) by Viterbi; states are (N,) over the
        concatenated steps for the concatenated layout, (B, T) with -1 padding for a padded batch,
        and a list for a list (hmmlearn's decode(algorithm="viterbi"))."""
        xp, lens, mask, layout = self._sequences(X, lengths)
        le = self._log_emissions(xp)
        ls, lt = self._logs()
        path, score = ops.hmm_viterbi(le, ls, lt, lens.to(le.device), backend=self.backend)
        if layout == "concat":
            states = self._steps(path, mask)
        elif layout == "list":
            states = [path[i, :int(n)] for i, n in enumerate(lens)]
        else:
            states = path
        return float(score.sum()), states

    def predict(self, X, lengths=None):
        """The Viterbi state paths (see decode for the layout)."""
        return self.decode(X, lengths)[1]

    def sample(self, n: int, *, length: int = 100, generator: torch.Generator | None = None, return_states: bool = False):
        """n sequences of `length` steps: (n, length, n_features) float (gaussian) or (n, length) int64
        symbols (categorical); with return_states also the (n, length) int64 hidden states. The
        draws are Philox streams keyed by `generator` (same seed, same sequences)."""
        n = positive_int("n", n)
        length = positive_int("length", length)
        dev, s = self._startprob.device, self.n_states
        k_states, k_obs = ops.draw_key(generator, dev), ops.draw_key(generator, dev)
        u = ops.philox_uniform(n * length, *k_states, device=dev, backend="auto").to(self.dtype).view(n, length)
        cs = torch.cumsum(self._startprob, 0)
        ct = torch.cumsum(self._transmat, 1)
        z = torch.empty(n, length, dtype=torch.int64, device=dev)
        cur = torch.searchsorted(cs, u[:, 0].contiguous()).clamp_(max=s - 1)
        z[:, 0] = cur
        for t in range(1, length):
            cur = torch.searchsorted(ct[cur], u[:, t:t + 1].contiguous()).squeeze(1).clamp_(max=s - 1)
            z[:, t] = cur
        if self.emission == "categorical":
            em = self._require("_emissionprob", "emissionprob_")
            v = ops.philox_uniform(n * length, *k_obs, device=dev).to(self.dtype).view(n * length, 1)
            x = torch.searchsorted(torch.cumsum(em, 1)[z.reshape(-1)], v).squeeze(1).clamp_(max=em.shape[1] - 1)
            x = x.view(n, length)
        else:
            mu = self._require("_means", "means_")
            d = mu.shape[1]
            eps = ops.philox_normal(n * length * d, *k_obs, device=dev).to(self.dtype).view(n * length, d)
            chol = torch.linalg.cholesky(self.covars_)  # (S, d, d)
            zf = z.reshape(-1)
            x = (mu[zf] + torch.einsum("nij,nj->ni", chol[zf], eps)).view(n, length, d)
        return (x, z) if return_states else x

    # ---- Baum-Welch --------------------------------------------------------------------------
    def _generator(self):
        if isinstance(self.random_state, torch.Generator):
            return self.random_state
        g = torch.Generator()
        g.manual_seed(int(self.random_state) if self.random_state is not None else int(torch.randint(0, 2**62, ())))
        return g

    def _init(self, flat):
        s, g, dev = self.n_states, self._generator(), self._startprob.device
        if "s" in self.init_params:
            self._startprob = torch.full((s,), 1.0 / s, dtype=self.dtype, device=dev)
        if "t" in self.init_params:
            self._transmat = torch.full((s, s), 1.0 / s, dtype=self.dtype, device=dev)
        if self.emission == "categorical":
            if "e" in self.init_params:
                k = self.n_features
                e = torch.rand(s, k, generator=g, dtype=torch.float64).to(dev, self.dtype)
                self._emissionprob = e / e.sum(1, keepdim=True)
            return
        if "m" in self.init_params:
            self._means = _kmeans(flat, s, g)
        if "c" in self.init_params:
            d = flat.shape[1]
            xc = flat - flat.mean(0)
            cov = (xc.T @ xc) / max(flat.shape[0] - 1, 1) + self.min_covar * torch.eye(d, dtype=self.dtype, device=dev)
            ct = self.covariance_type
            if ct == "full":
                self._covars = cov.expand(s, d, d).clone()
            elif ct == "tied":
                self._covars = cov
            elif ct == "diag":
                self._covars = torch.diagonal(cov).expand(s, d).clone()
            else:
                self._covars = torch.diagonal(cov).mean().expand(s).clone()

    def fit(self, X, lengths=None, *, n_iter: int | None = None, tol: float | None = None, progress: bool = True,
            callback=None):
        """Baum-Welch (EM) on the sequences (any layout of the module docstring); returns self.

        Runs at most n_iter iterations (default: the constructor's) and stops when the total
        log-likelihood improves by less than tol. history_ gets the total log-likelihood of each
        E-step, n_iter_ the iterations run, converged_ whether the tol test stopped it.
        callback(model, {"iter", "log_likelihood"}) after each iteration; returning True stops.
        """
        n_iter = self.n_iter if n_iter is None else positive_int("n_iter", n_iter)
        tol = self.tol if tol is None else self._nonneg("tol", tol)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        xp, lens, mask, _ = self._sequences(X, lengths)
        flat = self._steps(xp, mask)
        if self.emission == "categorical":
            if self.n_features is None:
                self.n_features_.fill_(int(flat.max()) + 1)
        else:
            self._set_features(flat.shape[1], "X")
        if flat.shape[0] < self.n_states and "m" in self.init_params and self.emission == "gaussian":
            raise ValueError(f"X: expected at least n_states = {self.n_states} observations, got {flat.shape[0]}")
        self._init(flat)
        del flat
        self.history_, self.converged_, self.n_iter_ = [], False, 0
        bar = Progress(n_iter, "HMM fit", progress)
        try:
            for it in range(n_iter):
                ll, gamma, xi = self._posteriors(xp, lens)
                total = float(ll.sum())
                if not math.isfinite(total):
                    raise ValueError("X: the data has zero probability under the current parameters (log-likelihood "
                                     f"{total}); check the observations (categorical symbols, scale) or min_covar")
                self._m_step(xp, lens, gamma, xi)
                self.history_.append(total)
                self.n_iter_ = it + 1
                bar.update(1, loglik=f"{total:.4g}")
                stop = callback is not None and bool(callback(self, {"iter": it, "log_likelihood": total}))
                if len(self.history_) >= 2 and self.history_[-1] - self.history_[-2] < tol:
                    self.converged_ = True
                    break
                if stop:
                    break
        finally:
            bar.close()
        return self

    def _m_step(self, xp, lens, gamma, xi):
        # padded steps have zero posteriors and zero-filled observations: they add nothing
        s, dev = self.n_states, self._startprob.device
        g = gamma.reshape(-1, s)  # (B T, S)
        flat = xp.reshape(g.shape[0], *xp.shape[2:])
        post = g.sum(0)  # (S,)
        if "s" in self.params:
            first = gamma[:, 0][lens.to(dev) > 0].sum(0)
            self._startprob = first / first.sum()
        if "t" in self.params:
            counts = xi.sum(0)
            rows = counts.sum(1, keepdim=True)
            self._transmat = torch.where(rows > 0, counts / rows.clamp(min=1e-300), self._transmat)
        have = post > 1e-10 * max(float(post.sum()), 1e-300)
        if self.emission == "categorical":
            if "e" in self.params:
                k = self._emissionprob.shape[1]
                em = torch.zeros(s, k, dtype=self.dtype, device=dev).index_add_(1, flat, g.T)
                self._emissionprob = torch.where(have[:, None], em / post[:, None].clamp(min=1e-300), self._emissionprob)
            return
        d = flat.shape[1]
        sx = g.T @ flat  # (S, d)
        if "m" in self.params:
            self._means = torch.where(have[:, None], sx / post[:, None].clamp(min=1e-300), self._means)
        if "c" in self.params:
            mu, ct, reg = self._means, self.covariance_type, self.min_covar
            if ct in ("diag", "spherical"):
                sxx = g.T @ (flat * flat)
                var = (sxx - 2 * mu * sx + mu * mu * post[:, None]) / post[:, None].clamp(min=1e-300)
                var = var.clamp(min=0) + reg
                if ct == "spherical":
                    var = var.mean(1)
                    self._covars = torch.where(have, var, self._covars)
                else:
                    self._covars = torch.where(have[:, None], var, self._covars)
            else:
                # per state: sum_n g (x - mu)(x - mu)^T, centred by the new means for accuracy
                covs = []
                for k in range(s):
                    xc = flat - mu[k]
                    covs.append((xc * g[:, k:k + 1]).T @ xc)
                scat = torch.stack(covs)  # (S, d, d)
                eye = torch.eye(d, dtype=self.dtype, device=dev)
                if ct == "tied":
                    self._covars = scat.sum(0) / post.sum() + reg * eye
                else:
                    full = scat / post[:, None, None].clamp(min=1e-300) + reg * eye
                    self._covars = torch.where(have[:, None, None], full, self._covars)


def _kmeans(x, k, g, iters=20):
    """k-means++ seeding and Lloyd iterations: (k, d) centres (the initial means)."""
    n = x.shape[0]
    idx = torch.randint(0, n, (1,), generator=g).item()
    centres = [x[idx]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2.double().cpu()
        p = p / p.sum() if float(p.sum()) > 0 else torch.full_like(p, 1.0 / n)
        idx = torch.multinomial(p, 1, generator=g).item()
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        if torch.equal(new, c):
            break
        c = new
    return c
