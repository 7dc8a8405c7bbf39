"""Fused GroupNorm + SiLU: y = silu(group_norm(x, num_groups, weight, bias, eps)), forward and backward.

Shapes: x is (N, C, *spatial) with any number (>= 0) of spatial dims (images (N, C, H, W), audio
(N, C, L), video (N, C, T, H, W)); weight and bias are (C,) or None; C % num_groups == 0. Each
(sample, group) of C / G channels is normalised over its channels and spatial positions (biased
variance); mean and rstd = 1 / sqrt(var + eps), each (N, G), are saved for backward, which recomputes
the normalised value from them instead of keeping y or the pre-activation.

Layouts: x is read either contiguous (N, C, *spatial) or channels-last (the memory order of
x.permute(0, 2, ..., 1), i.e. torch.channels_last / channels_last_3d and its analogue for other
ranks); any other strides are made contiguous first. y has x's layout.

dtypes: float32, bfloat16, float16 on every backend, float64 on the torch backend; the math runs in
float32 (float64 for float64 x). weight and bias may have any floating dtype; their gradients come
back in it.

Kernel contract (torch, cpp, triton: genengine.kernels.group_norm, cuda: ops/_group_norm_cuda.py):
    group_norm_silu_fwd(x, weight, bias, num_groups, eps, channels_last, y, mean, rstd) -> None
    group_norm_silu_bwd(dy, x, weight, bias, mean, rstd, num_groups, channels_last, dx, dweight, dbias) -> None
x, y, dy, dx share x's dtype, shape and layout; weight, bias are float32 contiguous (C,) or None;
mean, rstd float32 (N, G); dweight, dbias float32 (C,), None exactly when weight / bias is None.
"""

from __future__ import annotations

import importlib
import math
import operator

import torch

from .. import _backends
from .._checks import to_float
from ..reference import group_norm as ref

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


# every backend implements this op; whether one runs here is _backends.resolve's to say
_SUPPORTED = ("torch", "cpp", "triton", "cuda")
_modules = {}


def _kernel_module(name):
    mod = _modules.get(name)
    if mod is None:
        if name == "triton":
            mod = _backends.load_kernels("group_norm")
        else:
            mod = importlib.import_module("genengine.ops._group_norm_cuda")
        _modules[name] = mod
    return mod


# ----------------------------------------------------------------------------------------------
# argument checks and layouts


def _num_groups(num_groups, channels):
    if isinstance(num_groups, bool):
        raise TypeError(f"num_groups: expected an int, got {num_groups!r}")
    try:
        g = operator.index(num_groups)
    except TypeError:
        raise TypeError(f"num_groups: expected an int, got {type(num_groups).__name__}") from None
    if g <= 0:
        raise ValueError(f"num_groups: expected a positive number of groups, got {g}")
    if channels % g:
        raise ValueError(f"num_groups: the {channels} channels (x.shape[1]) do not split into {g} equal groups")
    return g


def _eps(eps):
    if isinstance(eps, (bool, str, bytes)) or eps is None:
        raise TypeError(f"eps: expected a real number, got {eps!r}")
    e = to_float("eps", eps)
    if not (e >= 0.0 and e != math.inf):
        raise ValueError(f"eps: expected a finite number >= 0, got {e}")
    return e


def _check_param(name, p, x):
    if p is None:
        return
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(p).__name__}")
    if not p.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {p.dtype}")
    if p.device != x.device:
        raise ValueError(f"{name}: on device {p.device}, but x is on {x.device}")
    if p.shape != (x.shape[1],):
        raise ValueError(f"{name}: expected shape ({x.shape[1]},) (one value per channel of x), got {tuple(p.shape)}")


def _perm(dim):
    """The permutation taking (N, C, *spatial) to its channels-last memory order, and its inverse."""
    return (0, *range(2, dim), 1), (0, dim - 1, *range(1, dim - 1))


def _is_channels_last(x):
    # a tensor that is also contiguous (C == 1, or no spatial extent) is read as contiguous
    return x.dim() >= 3 and not x.is_contiguous() and x.permute(_perm(x.dim())[0]).is_contiguous()


def _as_layout(t, channels_last):
    """t with the memory layout the kernels read (a copy only when t has another layout)."""
    if not channels_last:
        return t.contiguous()
    perm, inv = _perm(t.dim())
    tp = t.permute(perm)
    return t if tp.is_contiguous() else tp.contiguous().permute(inv)


def _empty(x, channels_last):
    if not channels_last:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    perm, inv = _perm(x.dim())
    return torch.empty([x.shape[i] for i in perm], dtype=x.dtype, device=x.device).permute(inv)


def _prepare(x, num_groups, weight, bias, eps, backend):
    """(backend name, x in a kernel layout, num_groups, eps) after the checks."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x: expected shape (N, C, *spatial) with at least 2 dimensions, got {tuple(x.shape)}")
    g = _num_groups(num_groups, x.shape[1])
    _check_param("weight", weight, x)
    _check_param("bias", bias, x)
    e = _eps(eps)
    dtype_ok = x.dtype in _DTYPE_CODE
    if not dtype_ok and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, bfloat16, float16 (or float64 on the torch backend), got {x.dtype}")
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED, dtype_ok)
    if not (x.is_contiguous() or _is_channels_last(x)):
        x = x.contiguous()
    return name, x, g, e


def _stat_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _param(p, dtype):
    if p is None:
        return None
    p = p.detach()
    return p if p.dtype == dtype and p.is_contiguous() else p.to(dtype).contiguous()


def _spatial(x):
    return x.numel() // (x.shape[0] * x.shape[1]) if x.numel() else 0


# ----------------------------------------------------------------------------------------------
# kernels: the torch reference path and the C++ entry points, with the common contract


def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _torch_fwd(x, weight, bias, num_groups, eps, channels_last, y, mean, rstd):
    ct = mean.dtype
    xg = x.to(ct).reshape(x.shape[0], num_groups, -1)
    var, m = torch.var_mean(xg, dim=-1, correction=0)
    r = torch.rsqrt(var + eps)
    mean.copy_(m)
    rstd.copy_(r)
    z = ((xg - m.unsqueeze(-1)) * r.unsqueeze(-1)).reshape(x.shape)
    if weight is not None:
        z = z * weight.reshape(_bshape(x))
    if bias is not None:
        z = z + bias.reshape(_bshape(x))
    y.copy_(torch.nn.functional.silu(z))


def _torch_bwd(dy, x, weight, bias, mean, rstd, num_groups, channels_last, dx, dweight, dbias):
    ct = mean.dtype
    n = x.shape[0]
    xhat = ((x.to(ct).reshape(n, num_groups, -1) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)).reshape(x.shape)
    z = xhat
    if weight is not None:
        z = z * weight.reshape(_bshape(x))
    if bias is not None:
        z = z + bias.reshape(_bshape(x))
    s = torch.sigmoid(z)
    gz = dy.to(ct) * (s * (1 + z * (1 - s)))  # silu'(z) = s (1 + z (1 - s))
    reduce_dims = (0, *range(2, x.dim()))
    if dweight is not None:
        dweight.copy_((gz * xhat).sum(reduce_dims))
    if dbias is not None:
        dbias.copy_(gz.sum(reduce_dims))
    g = (gz * weight.reshape(_bshape(x)) if weight is not None else gz).reshape(n, num_groups, -1)
    xh = xhat.reshape(n, num_groups, -1)
    d = rstd.unsqueeze(-1) * (g - g.mean(-1, keepdim=True) - xh * (g * xh).mean(-1, keepdim=True))
    dx.copy_(d.reshape(x.shape))


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _cpp_fwd(x, weight, bias, num_groups, eps, channels_last, y, mean, rstd):
    _backends.load_cpp().group_norm_silu_fwd(
        _DTYPE_CODE[x.dtype], x.shape[0], x.shape[1], _spatial(x), num_groups, channels_last, x.data_ptr(),
        _ptr(weight), _ptr(bias), eps, y.data_ptr(), mean.data_ptr(), rstd.data_ptr())


def _cpp_bwd(dy, x, weight, bias, mean, rstd, num_groups, channels_last, dx, dweight, dbias):
    _backends.load_cpp().group_norm_silu_bwd(
        _DTYPE_CODE[x.dtype], x.shape[0], x.shape[1], _spatial(x), num_groups, channels_last, dy.data_ptr(),
        x.data_ptr(), _ptr(weight), _ptr(bias), mean.data_ptr(), rstd.data_ptr(), dx.data_ptr(), _ptr(dweight),
        _ptr(dbias))


def _fwd_kernel(name):
    if name == "cpp":
        return _cpp_fwd
    if name == "torch":
        return _torch_fwd
    return _kernel_module(name).group_norm_silu_fwd


def _bwd_kernel(name):
    if name == "cpp":
        return _cpp_bwd
    if name == "torch":
        return _torch_bwd
    return _kernel_module(name).group_norm_silu_bwd


def _forward(name, x, weight, bias, num_groups, eps, y=None):
    """(y, mean, rstd): x is contiguous or channels-last (checked), weight/bias any floating dtype;
    y, when given, is a checked preallocated output in x's layout."""
    cl = _is_channels_last(x)
    ct = _stat_dtype(x)
    if y is None:
        y = _empty(x, cl)
    mean = torch.empty((x.shape[0], num_groups), dtype=ct, device=x.device)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        # no elements per group: the statistics of an empty group are those of a zero variance
        mean.zero_()
        rstd.fill_(1.0 / math.sqrt(eps) if eps > 0 else math.inf)
        return y, mean, rstd
    w, b = _param(weight, ct), _param(bias, ct)
    if name == "cuda":
        with torch.cuda.device(x.device):
            _fwd_kernel(name)(x, w, b, num_groups, eps, cl, y, mean, rstd)
    else:
        _fwd_kernel(name)(x, w, b, num_groups, eps, cl, y, mean, rstd)
    return y, mean, rstd


def _backward(name, dy, x, weight, bias, mean, rstd, num_groups):
    """(dx, dweight, dbias); dweight / dbias are None when weight / bias is None."""
    cl = _is_channels_last(x)
    if not (cl or x.is_contiguous()):
        x, cl = x.contiguous(), False
    ct = _stat_dtype(x)
    dy = _as_layout(dy.to(x.dtype), cl)
    dx = _empty(x, cl)
    dw = torch.zeros(x.shape[1], dtype=ct, device=x.device) if weight is not None else None
    db = torch.zeros(x.shape[1], dtype=ct, device=x.device) if bias is not None else None
    if x.numel() == 0:
        return dx, (dw.to(weight.dtype) if dw is not None else None), (db.to(bias.dtype) if db is not None else None)
    w, b = _param(weight, ct), _param(bias, ct)
    mean, rstd = mean.to(ct).contiguous(), rstd.to(ct).contiguous()
    if name == "cuda":
        with torch.cuda.device(x.device):
            _bwd_kernel(name)(dy, x, w, b, mean, rstd, num_groups, cl, dx, dw, db)
    else:
        _bwd_kernel(name)(dy, x, w, b, mean, rstd, num_groups, cl, dx, dw, db)
    if dw is not None and dw.dtype != weight.dtype:
        dw = dw.to(weight.dtype)
    if db is not None and db.dtype != bias.dtype:
        db = db.to(bias.dtype)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# torch.library registration: what torch.compile and autograd see


@torch.library.custom_op("genengine::group_norm_silu", mutates_args=())
def _group_norm_silu_op(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, num_groups: int, eps: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd)."""
    if not (x.is_contiguous() or _is_channels_last(x)):
        x = x.contiguous()
    return _forward(backend, x, weight, bias, num_groups, eps)


@_group_norm_silu_op.register_fake
def _(x, weight, bias, num_groups, eps, backend):
    ct = _stat_dtype(x)
    mean = x.new_empty((x.shape[0], num_groups), dtype=ct)
    return _empty(x, _is_channels_last(x)), mean, torch.empty_like(mean)


@torch.library.custom_op("genengine::group_norm_silu_backward", mutates_args=())
def _group_norm_silu_backward_op(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, mean: torch.Tensor,
    rstd: torch.Tensor, num_groups: int, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias); an absent weight / bias gets an empty gradient."""
    dx, dw, db = _backward(backend, dy, x, weight, bias, mean, rstd, num_groups)
    return dx, (dw if dw is not None else x.new_empty(0)), (db if db is not None else x.new_empty(0))


@_group_norm_silu_backward_op.register_fake
def _(dy, x, weight, bias, mean, rstd, num_groups, backend):
    cl = _is_channels_last(x)
    dw = weight.new_empty(weight.shape) if weight is not None else x.new_empty(0)
    db = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
    return _empty(x, cl), dw, db


def _setup_context(ctx, inputs, output):
    x, weight, bias, num_groups, _eps_, backend = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.num_groups, ctx.backend = num_groups, backend


def _autograd_backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = _group_norm_silu_backward_op(dy, x, weight, bias, mean, rstd, ctx.num_groups, ctx.backend)
    return dx, (dw if weight is not None else None), (db if bias is not None else None), None, None, None


torch.library.register_autograd("genengine::group_norm_silu", _autograd_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# the public op


def _needs_grad(x, weight, bias):
    return torch.is_grad_enabled() and (
        x.requires_grad or (weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad))


def _check_out(out, x):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out: expected x's shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device}, got "
                         f"{tuple(out.shape)}, {out.dtype}, {out.device}")
    if _is_channels_last(x) != _is_channels_last(out) or not (out.is_contiguous() or _is_channels_last(out)):
        raise ValueError("out: expected the memory layout of x (contiguous, or channels-last when x is)")
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        raise ValueError("out: must not share memory with x")


def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None, backend="auto"):
    """silu(group_norm(x, num_groups, weight, bias, eps)) in one fused pass (and one fused backward).

    x: (N, C, *spatial), contiguous or channels-last (y keeps the layout); weight, bias: (C,) or None.
    Equals torch.nn.functional.silu(torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)).
    out: an optional preallocated result in x's shape, dtype and layout (a loop that reuses it skips
    the fresh allocation, whose page faults on the CPU cost more than the kernel at large sizes).
    """
    name, x, g, e = _prepare(x, num_groups, weight, bias, eps, backend)
    if out is not None:
        _check_out(out, x)
    if torch.compiler.is_compiling() or _needs_grad(x, weight, bias):
        y = _group_norm_silu_op(x, weight, bias, g, e, name)[0]
        return y if out is None else out.copy_(y)
    return _forward(name, x, weight, bias, g, e, y=out)[0]


__all__ = ["group_norm_silu"]
# the plain-PyTorch definition (genengine.reference.group_norm) is the specification
reference = ref
