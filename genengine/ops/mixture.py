"""The Gaussian-mixture E-step fused with the M-step's sufficient statistics.

    log_norm, resp, (nk, sx, sxx) = ge.ops.gmm_e_step(x, weights, means, precisions_cholesky,
                                                      covariance_type="full", resp=None, stats=True)

Shapes (scikit-learn's conventions, see genengine.reference.mixture): x (N, D) float32 or float64;
weights (K,); means (K, D); precisions_cholesky "full" (K, D, D) upper-triangular, "tied" (D, D),
"diag" (K, D), "spherical" (K,). Returns log_norm (N,) = log sum_k w_k N(x | k) in x's dtype; resp
(N, K) in x's dtype when resp="prob" (responsibilities) or "log" (their logs), else None; and the
float64 statistics when stats=True (else None): nk (K,) = sum_n r, sx (K, D) = sum_n r x, sxx =
sum_n r x x^T (K, D, D) for "full", sum_n r x^2 (K, D) for "diag"/"spherical", None for "tied".

Backends: torch (the reference, float64), cpp (genengine._C.gmm_e_step: one pass over x, math in
float64 for either dtype, deterministic), triton (genengine.kernels.mixture: math in x's dtype,
statistics accumulated with atomics, so their summation order varies between runs).
"""

from __future__ import annotations

import math

import torch

from .. import _backends
from ..reference import mixture as ref

__all__ = ["gmm_e_step", "COVARIANCE_TYPES"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_COV = {t: i for i, t in enumerate(COVARIANCE_TYPES)}
_RESP = {None: 0, "prob": 1, "log": 2}
_DTYPES = {torch.float32: 0, torch.float64: 3}
_SUPPORTED = ("torch", "cpp", "triton")
F64 = torch.float64


def _prec_shape(cov_type, k, d):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov_type]


def _check(x, weights, means, prec, cov_type, resp):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x: expected a float32 or float64 tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x: expected shape (N, D), got {tuple(x.shape)}")
    if cov_type not in _COV:
        raise ValueError(f"covariance_type: expected one of {', '.join(map(repr, COVARIANCE_TYPES))}, got {cov_type!r}")
    if resp not in _RESP:
        raise ValueError(f"resp: expected None, 'prob' or 'log', got {resp!r}")
    for name, t in (("weights", weights), ("means", means), ("precisions_cholesky", prec)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point torch.Tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.device != x.device:
            raise ValueError(f"{name}: on device {t.device}, but x is on {x.device}")
    if means.dim() != 2 or means.shape[1] != x.shape[1]:
        raise ValueError(f"means: expected shape (K, {x.shape[1]}), got {tuple(means.shape)}")
    k, d = means.shape
    if k < 1:
        # a mixture needs a component; with none the kernels would leave log_norm unwritten
        raise ValueError(f"means: expected at least 1 component (K >= 1), got shape {tuple(means.shape)}")
    if weights.shape != (k,):
        raise ValueError(f"weights: expected shape ({k},), got {tuple(weights.shape)}")
    if tuple(prec.shape) != _prec_shape(cov_type, k, d):
        raise ValueError(f"precisions_cholesky: expected shape {_prec_shape(cov_type, k, d)} for covariance_type="
                         f"{cov_type!r}, got {tuple(prec.shape)}")


def _upper_factor(pc):
    """An upper-triangular U with U U^T = pc pc^T (the kernels read U's upper half). scikit-learn's
    precisions_cholesky_ is upper-triangular after an M-step but lower-triangular right after an
    initialisation from precisions_init (the Cholesky factor of the precision itself)."""
    if bool((torch.tril(pc, -1) == 0).all()):
        return pc
    cov = torch.cholesky_inverse(torch.linalg.cholesky(pc @ pc.transpose(-1, -2)))
    c = torch.linalg.cholesky(cov)
    eye = torch.eye(pc.shape[-1], dtype=pc.dtype, device=pc.device).expand_as(pc)
    return torch.linalg.solve_triangular(c, eye, upper=False).transpose(-1, -2)


def kernel_params(weights, means, prec, cov_type, upper=None):
    """(prec, b, cst) as the kernels take them (float64): see csrc/cpu/mixture.h. upper=True: the caller
    knows prec is upper-triangular (skips the check)."""
    w, mu, pc = weights.to(F64), means.to(F64), prec.to(F64)
    d = mu.shape[1]
    if cov_type in ("full", "tied") and not upper:
        pc = _upper_factor(pc)
    if cov_type == "full":
        logdet = torch.log(torch.diagonal(pc, dim1=-2, dim2=-1)).sum(-1)
        p, b = pc, torch.einsum("kd,kde->ke", mu, pc)
    elif cov_type == "tied":
        logdet = torch.log(torch.diagonal(pc)).sum()
        p, b = pc, mu @ pc
    elif cov_type == "diag":
        logdet = torch.log(pc).sum(1)
        p, b = pc * pc, mu
    else:
        logdet = d * torch.log(pc)
        p, b = pc * pc, mu
    cst = torch.log(w) + logdet - 0.5 * d * math.log(2 * math.pi)
    return p.contiguous(), b.contiguous(), cst.contiguous()


# ----------------------------------------------------------------------------------------------
# torch.library registration: what torch.compile traces (the eager path calls the kernel directly)


@torch.library.custom_op("genengine::gmm_e_step", mutates_args=())
def _gmm_e_step_op(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, prec: torch.Tensor, covariance_type: str,
                   resp: str, stats: bool, shift: torch.Tensor | None, backend: str
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log_norm, resp or an empty tensor, nk, sx, sxx) with empty tensors for what was not asked."""
    ln, r, st = _e_step(backend, x, weights, means, prec, covariance_type, None if resp == "none" else resp, stats, shift)
    e = x.new_empty(0)
    nk, sx, sxx = st if st is not None else (e.to(F64), e.to(F64), e.to(F64))
    return ln, (r if r is not None else e), nk, sx, (sxx if sxx is not None else e.to(F64))


@_gmm_e_step_op.register_fake
def _(x, weights, means, prec, covariance_type, resp, stats, shift, backend):
    n, d = x.shape
    k = means.shape[0]
    r = x.new_empty((n, k)) if resp != "none" else x.new_empty(0)
    if not stats:
        e = x.new_empty(0, dtype=F64)
        return x.new_empty(n), r, e, e, e
    sxx = {"full": (k, d, d), "tied": (0,), "diag": (k, d), "spherical": (k, d)}[covariance_type]
    return x.new_empty(n), r, x.new_empty(k, dtype=F64), x.new_empty((k, d), dtype=F64), x.new_empty(sxx, dtype=F64)


def gmm_e_step(x, weights, means, precisions_cholesky, covariance_type="full", *, resp=None, stats=True, shift=None,
               return_sum=False, upper=None, backend="auto"):
    """(log_norm (N,), resp (N, K) or None, (nk, sx, sxx) or None): see the module docstring.
    shift (D,) float64 or None: the statistics are those of x - shift (means stay in x's frame).
    return_sum: return sum_n log_norm (a float64 (1,) tensor, summed in a fixed order) in place of
    log_norm, which is then not written (EM needs only the sum). upper=True: precisions_cholesky is
    known to be upper-triangular (it is after an M-step), which skips a check."""
    _check(x, weights, means, precisions_cholesky, covariance_type, resp)
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED)
    if torch.compiler.is_compiling():
        ln, r, nk, sx, sxx = _gmm_e_step_op(x, weights, means, precisions_cholesky, covariance_type, resp or "none", stats,
                                            shift, name)
        st = (nk, sx, sxx if covariance_type != "tied" else None) if stats else None
        return (ln.to(F64).sum().reshape(1) if return_sum else ln), (r if resp is not None else None), st
    return _e_step(name, x, weights, means, precisions_cholesky, covariance_type, resp, stats, shift, return_sum, upper)


def _e_step(name, x, weights, means, precisions_cholesky, covariance_type, resp, stats, shift, return_sum=False, upper=None):
    if not x.is_contiguous():
        x = x.contiguous()
    n, d = x.shape
    k = means.shape[0]
    if shift is not None:
        if not isinstance(shift, torch.Tensor) or shift.shape != (d,):
            raise ValueError(f"shift: expected a ({d},) tensor or None, got {getattr(shift, 'shape', type(shift).__name__)}")
        shift = shift.to(device=x.device, dtype=F64).contiguous()
    if name == "torch":
        log_norm, log_resp = ref.e_step(x, weights, means, precisions_cholesky, covariance_type)
        r = None if resp is None else (log_resp if resp == "log" else log_resp.exp()).to(x.dtype)
        xs = x if shift is None else x.to(F64) - shift
        st = ref.sufficient_stats(xs, log_resp.exp(), covariance_type) if stats else None
        return (log_norm.sum().reshape(1) if return_sum else log_norm.to(x.dtype)), r, st
    mu = means if shift is None else means.to(F64) - shift
    p, b, cst = kernel_params(weights, mu, precisions_cholesky, covariance_type, upper)
    ll = torch.zeros(1, dtype=F64) if return_sum and name == "cpp" else None
    log_norm = torch.empty(n, dtype=x.dtype, device=x.device) if ll is None else None
    r = torch.empty((n, k), dtype=x.dtype, device=x.device) if resp is not None else None
    st = None
    if stats:
        sxx_shape = {"full": (k, d, d), "tied": (0,), "diag": (k, d), "spherical": (k, d)}[covariance_type]
        st = (torch.zeros(k, dtype=F64, device=x.device), torch.zeros(k, d, dtype=F64, device=x.device),
              torch.zeros(sxx_shape, dtype=F64, device=x.device))
    if n:
        if name == "cpp":
            _backends.load_cpp().gmm_e_step(
                _COV[covariance_type], _DTYPES[x.dtype], _RESP[resp], n, d, k, x.data_ptr(),
                shift.data_ptr() if shift is not None else 0, p.data_ptr(), b.data_ptr(),
                cst.data_ptr(), log_norm.data_ptr() if log_norm is not None else 0, ll.data_ptr() if ll is not None else 0,
                r.data_ptr() if r is not None else 0,
                st[0].data_ptr() if st else 0, st[1].data_ptr() if st else 0, st[2].data_ptr() if st else 0)
        else:
            sh = shift.to(x.dtype) if shift is not None else None
            _backends.load_kernels("mixture").gmm_e_step(x, sh, _COV[covariance_type], p.to(x.dtype), b.to(x.dtype),
                                                         cst.to(x.dtype), log_norm, r, _RESP[resp], st)
    if st is not None and covariance_type == "tied":
        st = (st[0], st[1], None)
    if return_sum:
        return (ll if ll is not None else log_norm.to(F64).sum().reshape(1)), r, st
    return log_norm, r, st


reference = ref
