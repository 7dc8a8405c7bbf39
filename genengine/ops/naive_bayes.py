"""Naive-Bayes joint log-likelihoods over all classes in one fused pass, and per-class fit statistics.

Shapes: x (N, F) float32 or float64 (any strides: made contiguous); C classes; theta, var and
feature_log_prob (C, F); log_prior (C,). Each likelihood op returns (out, lse): out (N, C) and
lse (N,) = log sum_c exp(jll[n, c]) (the log of the marginal p(x)), both in x's dtype, where out is
chosen by `output`:
    "joint"          jll[n, c] = log p(x_n, c)
    "log_posterior"  jll - lse  (predict_log_proba)
    "posterior"      exp(jll - lse)  (predict_proba)
The per-class formulas are in genengine.reference.naive_bayes (the specification).

    gaussian_nb_log_likelihood(x, theta, var, log_prior)      fused kernel (cpp, triton)
    bernoulli_nb_log_likelihood(x, feature_log_prob, log_prior, binarize=0.0)
                                                              fused kernel, binarisation in it
    multinomial_nb_log_likelihood(x, feature_log_prob, log_prior)
                                                              a matmul, then the fused normalisation
    nb_class_stats(x, y, n_classes, weight=None, center=None) -> (count (C,), out (C, F)) float64

Kernel contract (cpp: genengine._C.nb_joint_log_likelihood; triton: genengine.kernels.naive_bayes):
    kind 0 Gaussian (p0 = theta, p1 = 1 / var, cst = log_prior - 1/2 sum_f log(2 pi var)),
    kind 1 Bernoulli (p0 = log p - log(1 - p), cst = log_prior + sum_f log(1 - p)), kind 2 only
    normalises the jll already in `out`; mode 0/1/2 = output joint / log_posterior / posterior.
The C++ kernel computes in float64 (float32 inputs widened); the Triton kernel in x's dtype.
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _backends
from .._checks import to_float
from ..reference import naive_bayes as ref

__all__ = ["gaussian_nb_log_likelihood", "bernoulli_nb_log_likelihood", "multinomial_nb_log_likelihood", "nb_class_stats"]

_SUPPORTED = ("torch", "cpp", "triton")
_OUTPUTS = {"joint": 0, "log_posterior": 1, "posterior": 2}
_DTYPES = {torch.float32: 0, torch.float64: 3}


def _check_x(x, name="x"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name}: expected shape (N, F), got {tuple(x.shape)}")
    return x if x.is_contiguous() else x.contiguous()


def _check_param(name, p, shape, x):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(p).__name__}")
    if not p.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {p.dtype}")
    if tuple(p.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(p.shape)}")
    if p.device != x.device:
        raise ValueError(f"{name}: on device {p.device}, but x is on {x.device}")


def _output(output):
    if output not in _OUTPUTS:
        raise ValueError(f"output: expected one of {', '.join(map(repr, _OUTPUTS))}, got {output!r}")
    return _OUTPUTS[output]


def _classes(p, name):
    if not isinstance(p, torch.Tensor) or p.dim() != 2:
        got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"{name}: expected a (C, F) tensor, got {got}")
    if p.shape[0] < 1:
        # with no class there is no likelihood to normalise (the kernels would leave lse unwritten)
        raise ValueError(f"{name}: expected at least 1 class (C >= 1), got shape {tuple(p.shape)}")
    return p.shape[0]


def _run(name, kind, x, p0, p1, cst, mode, use_threshold, threshold, out=None):
    n, c = x.shape[0], cst.shape[0]
    if out is None:
        out = torch.empty((n, c), dtype=x.dtype, device=x.device)
    lse = torch.empty(n, dtype=x.dtype, device=x.device)
    if n == 0:
        return out, lse
    if name == "cpp":
        f64 = torch.float64
        p0 = p0.to(f64).contiguous() if p0 is not None else None
        p1 = p1.to(f64).contiguous() if p1 is not None else None
        cst = cst.to(f64).contiguous()
        _backends.load_cpp().nb_joint_log_likelihood(
            kind, mode, _DTYPES[x.dtype], n, x.shape[1], c, x.data_ptr(), p0.data_ptr() if p0 is not None else 0,
            p1.data_ptr() if p1 is not None else 0, cst.data_ptr(), use_threshold, float(threshold), out.data_ptr(),
            lse.data_ptr())
    else:
        conv = [t.to(x.dtype).contiguous() if t is not None else None for t in (p0, p1, cst)]
        _backends.load_kernels("naive_bayes").nb_joint_log_likelihood(x, kind, *conv, mode, use_threshold, threshold,
                                                                       out, lse)
    return out, lse


@torch.library.custom_op("genengine::nb_joint_log_likelihood", mutates_args=())
def _nb_op(x: torch.Tensor, kind: int, p0: torch.Tensor | None, p1: torch.Tensor | None, cst: torch.Tensor, mode: int,
           use_threshold: bool, threshold: float, jll: torch.Tensor | None, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): what torch.compile traces; the eager path calls _run directly."""
    return _run(backend, kind, x, p0, p1, cst, mode, use_threshold, threshold, out=jll.clone() if jll is not None else None)


@_nb_op.register_fake
def _(x, kind, p0, p1, cst, mode, use_threshold, threshold, jll, backend):
    return x.new_empty((x.shape[0], cst.shape[0])), x.new_empty(x.shape[0])


def _dispatch(name, kind, x, p0, p1, cst, mode, use_threshold, threshold, out=None):
    if torch.compiler.is_compiling():
        return _nb_op(x, kind, p0, p1, cst, mode, use_threshold, threshold, out, name)
    return _run(name, kind, x, p0, p1, cst, mode, use_threshold, threshold, out=out)


def _torch_finish(jll, mode, dtype):
    out, lse = ref.normalize(jll, ("joint", "log_posterior", "posterior")[mode])
    return out.to(dtype), lse.to(dtype)


def gaussian_nb_log_likelihood(x, theta, var, log_prior, *, output="joint", backend="auto"):
    """(out (N, C), lse (N,)) of a Gaussian naive Bayes with means theta and variances var (C, F)."""
    x = _check_x(x)
    c = _classes(theta, "theta")
    _check_param("theta", theta, (c, x.shape[1]), x)
    _check_param("var", var, (c, x.shape[1]), x)
    _check_param("log_prior", log_prior, (c,), x)
    mode = _output(output)
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED)
    if name == "torch":
        return _torch_finish(ref.gaussian_jll(x, theta, var, log_prior), mode, x.dtype)
    v = var.to(torch.float64)
    cst = log_prior.to(torch.float64) - 0.5 * torch.log(2 * math.pi * v).sum(1)
    return _dispatch(name, 0, x, theta, 1.0 / v, cst, mode, False, 0.0)


def _bernoulli_weights(feature_log_prob, log_prior):
    lp = feature_log_prob.to(torch.float64)
    l1p = torch.log(-torch.expm1(lp))
    return lp - l1p, log_prior.to(torch.float64) + l1p.sum(1)


def bernoulli_nb_log_likelihood(x, feature_log_prob, log_prior, *, binarize=0.0, output="joint", backend="auto"):
    """(out, lse) of a Bernoulli naive Bayes; x is binarised as x > binarize in the kernel (binarize=None:
    x is taken as already 0/1)."""
    x = _check_x(x)
    c = _classes(feature_log_prob, "feature_log_prob")
    _check_param("feature_log_prob", feature_log_prob, (c, x.shape[1]), x)
    _check_param("log_prior", log_prior, (c,), x)
    if binarize is not None and (isinstance(binarize, bool) or not isinstance(binarize, (int, float))):
        raise TypeError(f"binarize: expected a number or None, got {type(binarize).__name__}")
    if binarize is not None:
        binarize = to_float("binarize", binarize)
    mode = _output(output)
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED)
    if name == "torch":
        return _torch_finish(ref.bernoulli_jll(x, feature_log_prob, log_prior, binarize), mode, x.dtype)
    w, cst = _bernoulli_weights(feature_log_prob, log_prior)
    return _dispatch(name, 1, x, w, None, cst, mode, binarize is not None, 0.0 if binarize is None else binarize)


def multinomial_nb_log_likelihood(x, feature_log_prob, log_prior, *, output="joint", backend="auto"):
    """(out, lse) of a multinomial naive Bayes (scikit-learn's jll, without the multinomial coefficient)."""
    x = _check_x(x)
    c = _classes(feature_log_prob, "feature_log_prob")
    _check_param("feature_log_prob", feature_log_prob, (c, x.shape[1]), x)
    _check_param("log_prior", log_prior, (c,), x)
    mode = _output(output)
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED)
    if name == "torch":
        return _torch_finish(ref.multinomial_jll(x, feature_log_prob, log_prior), mode, x.dtype)
    # on the CPU the matmul runs in float64 for float32 counts too (as the fused kernels compute), so
    # a float32 count matrix loses nothing but the output's rounding
    ct = torch.float64 if name == "cpp" else x.dtype
    xc = x.to(ct)
    jll = torch.addmm(log_prior.to(ct)[None], xc, feature_log_prob.to(ct).T)
    out, lse = _dispatch(name, 2, xc, None, None, log_prior, mode, False, 0.0, out=jll)
    return out.to(x.dtype), lse.to(x.dtype)


def nb_class_stats(x, y, n_classes, *, weight=None, center=None, backend="auto", checked=False):
    """(count (C,), out (C, F)), float64: per-class sums of the weights and of w x, or (center given)
    of w (x - center[y])^2. y: int64 class indices in [0, n_classes) (checked, unless the caller says
    it has made them: checked=True)."""
    x = _check_x(x)
    # 0 classes is allowed (y must then be empty: the result is empty too)
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
        raise TypeError(f"n_classes: expected an int, got {type(n_classes).__name__}")
    if n_classes < 0:
        raise ValueError(f"n_classes: expected an int >= 0, got {n_classes}")
    n_classes = int(n_classes)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y: expected an int64 tensor of shape ({x.shape[0]},), got "
                         f"{(y.dtype, tuple(y.shape)) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if not checked and x.shape[0] and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"y: expected class indices in [0, {n_classes}), got values in [{int(y.min())}, {int(y.max())}]")
    if weight is not None:
        _check_param("weight", weight, (x.shape[0],), x)
    if center is not None:
        _check_param("center", center, (n_classes, x.shape[1]), x)
    name = _backends.resolve(backend, _backends.device_type(x), ("torch", "cpp"))
    if name == "torch":
        return ref.class_stats(x, y, n_classes, weight, center)
    f64 = torch.float64
    count = torch.zeros(n_classes, dtype=f64)
    out = torch.zeros(n_classes, x.shape[1], dtype=f64)
    y = y.contiguous()
    w = weight.to(f64).contiguous() if weight is not None else None
    cen = center.to(f64).contiguous() if center is not None else None
    _backends.load_cpp().nb_class_stats(_DTYPES[x.dtype], x.shape[0], x.shape[1], n_classes, x.data_ptr(), y.data_ptr(),
                                        w.data_ptr() if w is not None else 0, cen.data_ptr() if cen is not None else 0,
                                        count.data_ptr(), out.data_ptr())
    return count, out


reference = ref
