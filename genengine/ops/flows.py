"""Flow transforms with their log-determinants in one pass, and fused backward kernels:

    y, logabsdet = rq_spline(x, widths, heights, derivatives, inverse=False, tail_bound=3.0, ...)
    y, logdet = affine_coupling(x, shift, log_scale, inverse=False)

rq_spline: the rational-quadratic spline of Durkan et al. 2019 with identity tails, elementwise.
x (*batch); widths, heights (*batch, K); derivatives (*batch, K - 1) (the interior knots; the
boundary derivatives are 1, matching the tails) or (*batch, K + 1) (every knot through the same
min + softplus; the spline then meets the tails with a kink in slope). Returns y and logabsdet =
log|dy/dx|, both (*batch). The formulas are genengine.reference.flows.rq_spline's.

affine_coupling: x, shift, log_scale (*batch, D) -> y = x * exp(log_scale) + shift (*batch, D) and
logdet = log_scale.sum(-1) (*batch); inverse: y = (x - shift) * exp(-log_scale), logdet negated.

dtypes: float32 on every backend; float64 on torch and cpp (cpp's float64 path runs the same
formulas with libm per lane: for gradcheck, not speed) and triton. Parameter rows may be strided
views (e.g. slices of one network output): only the last dim must have unit stride.

The torch backend is the reference itself (genengine.reference.flows), differentiated by autograd.
Kernel contract of the others (cpp: this file; triton: genengine.kernels.flows; cuda: ops/_flows_cuda.py):
    rq_spline_fwd(x, w, h, d, inverse, bound, min_w, min_h, min_d, y, lad) -> None
    rq_spline_bwd(inp, out, w, h, d, inverse, bound, min_w, min_h, min_d, gy, gl, gx, gw, gh, gd) -> None
x, y, lad, inp, out, gy, gl, gx: contiguous (n,); w, h (n, K), d (n, Kd) with unit stride along the
last dim; gw, gh, gd contiguous like them; gy / gl may be None (zero). The backward kernels take the
point in the spline's domain: inp for the forward, out (the inverse's result) for the inverse.
    affine_coupling_fwd(x, t, s, inverse, y, logdet) / affine_coupling_bwd(x, t, s, inverse, gy, gld, gx, gt, gs)
x, t, s (rows, D) with unit inner stride; y, gx, gt, gs contiguous (rows, D); logdet, gld (rows,).
"""

from __future__ import annotations

import importlib
import math

import torch

from .. import _backends
from .._checks import to_float
from ..reference import flows as ref

_SUPPORTED = ("torch", "cpp", "triton", "cuda")
_KERNEL_DTYPES = (torch.float32,)
_F64_OK = ("torch", "cpp", "triton")  # backends that also run float64
MAX_BINS_CPP = 64  # the cpp kernel holds the knots of 16 elements on its stack
_modules = {}


def _kernel_module(name):
    mod = _modules.get(name)
    if mod is None:
        if name == "triton":
            mod = _backends.load_kernels("flows")
        else:
            mod = importlib.import_module("genengine.ops._flows_cuda")
        _modules[name] = mod
    return mod


# ----------------------------------------------------------------------------------------------
# argument checks


def _tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    return t


def _real(name, v, *, positive=False, lo=None):
    if isinstance(v, (bool, str, bytes)) or v is None:
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    f = to_float(name, v)
    if not math.isfinite(f) or (positive and f <= 0) or (lo is not None and f < lo):
        raise ValueError(f"{name}: expected a finite number {'> 0' if positive else f'>= {lo}'}, got {f}")
    return f


def _dtype_of(x, name):
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: expected float32 (or float64), got {x.dtype}")
    backend = _backends.resolve(name, _backends.device_type(x), _SUPPORTED, True)
    if x.dtype == torch.float64 and backend not in _F64_OK:
        if name in (None, "auto") and _backends.forced_backend() in (None, "auto"):
            backend = "torch"
        else:
            raise TypeError(f"backend {backend!r} runs float32 only; float64 runs on {', '.join(_F64_OK)}")
    return backend


# Backends whose kernels read bfloat16 parameters directly (math in float32, parameter gradients
# written in bfloat16); the others convert them to x's dtype first.
_BF16_PARAMS_OK = ("triton",)


def _rows(t, k):
    """t as (n, k) with unit stride along k (a view when the strides allow, else a copy). n is
    spelled out: reshape(-1, 0) is ambiguous (k = 0: a one-bin spline's K - 1 derivatives)."""
    n = math.prod(t.shape[:-1])
    if k == 0:  # no columns: a fresh (n, 0) tensor, whose strides every kernel shim accepts
        return t.new_empty((n, 0))
    r = t.reshape(n, k)
    if r.stride(1) != 1 and r.shape[0] * k:
        r = r.contiguous()
    return r


def _prepare_spline(x, widths, heights, derivatives, tail_bound, min_bin_width, min_bin_height, min_derivative,
                    backend):
    x = _tensor("x", x)
    widths = _tensor("widths", widths)
    heights = _tensor("heights", heights)
    derivatives = _tensor("derivatives", derivatives)
    for name, p in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        if p.device != x.device:
            raise ValueError(f"{name}: on device {p.device}, but x is on {x.device}")
        if p.dim() != x.dim() + 1 or p.shape[:-1] != x.shape:
            raise ValueError(f"{name}: expected shape {tuple(x.shape)} + (bins,) (x's shape and one more dim), "
                             f"got {tuple(p.shape)}")
    k = widths.shape[-1]
    if k < 1:
        raise ValueError("widths: expected at least 1 bin (last dim >= 1), got 0")
    if heights.shape[-1] != k:
        raise ValueError(f"heights: expected last dim K = {k} (as widths), got {heights.shape[-1]}")
    kd = derivatives.shape[-1]
    if kd not in (k - 1, k + 1):
        raise ValueError(f"derivatives: expected last dim K - 1 = {k - 1} (interior knots) or K + 1 = {k + 1} "
                         f"(every knot), got {kd}")
    b = _real("tail_bound", tail_bound, positive=True)
    mw = _real("min_bin_width", min_bin_width, positive=True)
    mh = _real("min_bin_height", min_bin_height, positive=True)
    md = _real("min_derivative", min_derivative, positive=True)
    if mw * k > 1 + 1e-12:
        raise ValueError(f"min_bin_width: {mw} times {k} bins exceeds 1 (the bins could not fit)")
    if mh * k > 1 + 1e-12:
        raise ValueError(f"min_bin_height: {mh} times {k} bins exceeds 1 (the bins could not fit)")
    name = _dtype_of(x, backend)
    if name == "cpp" and k > MAX_BINS_CPP:
        raise ValueError(f"widths: the cpp backend takes at most {MAX_BINS_CPP} bins, got {k}; use backend='torch'")
    dt = x.dtype
    if not (name in _BF16_PARAMS_OK and dt == torch.float32
            and all(p.dtype == torch.bfloat16 for p in (widths, heights, derivatives))):
        widths, heights, derivatives = (p if p.dtype == dt else p.to(dt) for p in (widths, heights, derivatives))
    return name, x, widths, heights, derivatives, (b, mw, mh, md)


# ----------------------------------------------------------------------------------------------
# kernels: the torch path and the cpp entry points, with the common contract


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _cpp_fwd(x, w, h, d, inverse, bound, min_w, min_h, min_d, y, lad, isa=-1):
    _backends.load_cpp().rq_spline_fwd(
        x.dtype == torch.float64, x.shape[0], w.shape[1], d.shape[1], inverse, bound, min_w, min_h, min_d,
        x.data_ptr(), w.data_ptr(), h.data_ptr(), d.data_ptr(), w.stride(0), h.stride(0), d.stride(0),
        y.data_ptr(), lad.data_ptr(), isa)


def _cpp_bwd(inp, out, w, h, d, inverse, bound, min_w, min_h, min_d, gy, gl, gx, gw, gh, gd, isa=-1):
    pt = out if inverse else inp
    _backends.load_cpp().rq_spline_bwd(
        pt.dtype == torch.float64, pt.shape[0], w.shape[1], d.shape[1], inverse, bound, min_w, min_h, min_d,
        pt.data_ptr(), w.data_ptr(), h.data_ptr(), d.data_ptr(), w.stride(0), h.stride(0), d.stride(0),
        _ptr(gy), _ptr(gl), gx.data_ptr(), gw.data_ptr(), gh.data_ptr(), gd.data_ptr(), gw.stride(0), gh.stride(0),
        gd.stride(0), isa)


def _cpp_affine_fwd(x, t, s, inverse, y, logdet, isa=-1):
    _backends.load_cpp().affine_coupling_fwd(
        x.dtype == torch.float64, x.shape[0], x.shape[1], inverse, x.data_ptr(), t.data_ptr(), s.data_ptr(),
        x.stride(0), t.stride(0), s.stride(0), y.data_ptr(), logdet.data_ptr(), isa)


def _cpp_affine_bwd(x, t, s, inverse, gy, gld, gx, gt, gs, isa=-1):
    _backends.load_cpp().affine_coupling_bwd(
        x.dtype == torch.float64, x.shape[0], x.shape[1], inverse, x.data_ptr(), t.data_ptr(), s.data_ptr(),
        x.stride(0), t.stride(0), s.stride(0), _ptr(gy), _ptr(gld), gx.data_ptr(), _ptr(gt), gs.data_ptr(), isa)


_LOCAL = {"cpp": (_cpp_fwd, _cpp_bwd, _cpp_affine_fwd, _cpp_affine_bwd)}
_NAMES = ("rq_spline_fwd", "rq_spline_bwd", "affine_coupling_fwd", "affine_coupling_bwd")


def _kernel(name, which):
    local = _LOCAL.get(name)
    if local is not None:
        return local[which]
    return getattr(_kernel_module(name), _NAMES[which])


def _launch(name, which, *args):
    if name == "cuda":
        with torch.cuda.device(args[0].device):
            _kernel(name, which)(*args)
    else:
        _kernel(name, which)(*args)


# ----------------------------------------------------------------------------------------------
# forward / backward on checked tensors


def _spline_forward(name, x, w, h, d, inverse, cfg):
    k, kd = w.shape[-1], d.shape[-1]
    xf = x.reshape(-1)
    if not xf.is_contiguous():
        xf = xf.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    lad = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel():
        _launch(name, 0, xf, _rows(w, k), _rows(h, k), _rows(d, kd), inverse, *cfg, y.view(-1), lad.view(-1))
    return y, lad


def _spline_backward(name, gy, gl, x, y, w, h, d, inverse, cfg, packed=False):
    """(gx, gw, gh, gd); with packed, (gx, gp): one (..., 2K + Kd) gradient for the packed parameters."""
    k, kd = w.shape[-1], d.shape[-1]
    n = x.numel()
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    pd = w.dtype  # x's dtype, or bfloat16 parameters on a backend that reads them (gradients alike)
    if packed:
        gp = torch.empty((*x.shape, 2 * k + kd), dtype=pd, device=x.device)
        gw, gh, gd = gp[..., :k], gp[..., k:2 * k], gp[..., 2 * k:]
    else:
        gw = torch.empty(w.shape, dtype=pd, device=x.device)
        gh = torch.empty(h.shape, dtype=pd, device=x.device)
        gd = torch.empty(d.shape, dtype=pd, device=x.device)
    if n:
        flat = [t.reshape(-1).contiguous() if t is not None else None for t in (x, y, gy, gl)]
        flat[2:] = [g.to(x.dtype) if g is not None and g.dtype != x.dtype else g for g in flat[2:]]
        _launch(name, 1, flat[0], flat[1], _rows(w, k), _rows(h, k), _rows(d, kd), inverse, *cfg, flat[2], flat[3],
                gx.view(-1), gw.reshape(n, k), gh.reshape(n, k), gd.reshape(n, kd))
    return (gx, gp) if packed else (gx, gw, gh, gd)


@torch.library.custom_op("genengine::rq_spline", mutates_args=())
def _rq_spline_op(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor,
                  inverse: bool, tail_bound: float, min_bin_width: float, min_bin_height: float, min_derivative: float,
                  backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _spline_forward(backend, x, widths, heights, derivatives, inverse,
                           (tail_bound, min_bin_width, min_bin_height, min_derivative))


@_rq_spline_op.register_fake
def _(x, widths, heights, derivatives, inverse, tail_bound, min_bin_width, min_bin_height, min_derivative, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("genengine::rq_spline_backward", mutates_args=())
def _rq_spline_backward_op(gy: torch.Tensor, gl: torch.Tensor, x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor,
                           heights: torch.Tensor, derivatives: torch.Tensor, inverse: bool, tail_bound: float,
                           min_bin_width: float, min_bin_height: float, min_derivative: float,
                           backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _spline_backward(backend, gy, gl, x, y, widths, heights, derivatives, inverse,
                            (tail_bound, min_bin_width, min_bin_height, min_derivative))


@_rq_spline_backward_op.register_fake
def _(gy, gl, x, y, widths, heights, derivatives, inverse, tail_bound, min_bin_width, min_bin_height, min_derivative,
      backend):
    pd = widths.dtype
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty(widths.shape, dtype=pd, device=x.device),
            torch.empty(heights.shape, dtype=pd, device=x.device),
            torch.empty(derivatives.shape, dtype=pd, device=x.device))


def _spline_setup_context(ctx, inputs, output):
    x, w, h, d, inverse, *cfg, backend = inputs
    y, _ = output
    ctx.save_for_backward(x, y, w, h, d)
    ctx.inverse, ctx.cfg, ctx.backend = inverse, cfg, backend


def _spline_autograd(ctx, gy, gl):
    x, y, w, h, d = ctx.saved_tensors
    if gy is None:
        gy = torch.zeros_like(x)
    if gl is None:
        gl = torch.zeros_like(x)
    gx, gw, gh, gd = _rq_spline_backward_op(gy, gl, x, y, w, h, d, ctx.inverse, *ctx.cfg, ctx.backend)
    return gx, gw, gh, gd, None, None, None, None, None, None


torch.library.register_autograd("genengine::rq_spline", _spline_autograd, setup_context=_spline_setup_context)


# The packed form: widths, heights and derivatives as the consecutive column blocks of one
# (..., 2K + Kd) tensor, as a network's output split three ways. Autograd then hands the op's
# gradient to that tensor directly, written by the kernel in one pass, instead of back-propagating
# three slices (each a zero-filled tensor of the packed size, a copy into it, and two additions:
# more memory traffic than the kernel itself).


@torch.library.custom_op("genengine::rq_spline_packed", mutates_args=())
def _rq_spline_packed_op(x: torch.Tensor, params: torch.Tensor, k: int, inverse: bool, tail_bound: float,
                         min_bin_width: float, min_bin_height: float, min_derivative: float,
                         backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _spline_forward(backend, x, params[..., :k], params[..., k:2 * k], params[..., 2 * k:], inverse,
                           (tail_bound, min_bin_width, min_bin_height, min_derivative))


@_rq_spline_packed_op.register_fake
def _(x, params, k, inverse, tail_bound, min_bin_width, min_bin_height, min_derivative, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("genengine::rq_spline_packed_backward", mutates_args=())
def _rq_spline_packed_backward_op(gy: torch.Tensor, gl: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                                  params: torch.Tensor, k: int, inverse: bool, tail_bound: float, min_bin_width: float,
                                  min_bin_height: float, min_derivative: float,
                                  backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _spline_backward(backend, gy, gl, x, y, params[..., :k], params[..., k:2 * k], params[..., 2 * k:], inverse,
                            (tail_bound, min_bin_width, min_bin_height, min_derivative), packed=True)


@_rq_spline_packed_backward_op.register_fake
def _(gy, gl, x, y, params, k, inverse, tail_bound, min_bin_width, min_bin_height, min_derivative, backend):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty(params.shape, dtype=x.dtype, device=x.device))


def _packed_setup_context(ctx, inputs, output):
    x, p, k, inverse, *cfg, backend = inputs
    ctx.save_for_backward(x, output[0], p)
    ctx.k, ctx.inverse, ctx.cfg, ctx.backend = k, inverse, cfg, backend


def _packed_autograd(ctx, gy, gl):
    x, y, p = ctx.saved_tensors
    gy = torch.zeros_like(x) if gy is None else gy
    gl = torch.zeros_like(x) if gl is None else gl
    gx, gp = _rq_spline_packed_backward_op(gy, gl, x, y, p, ctx.k, ctx.inverse, *ctx.cfg, ctx.backend)
    return gx, gp, None, None, None, None, None, None, None


torch.library.register_autograd("genengine::rq_spline_packed", _packed_autograd, setup_context=_packed_setup_context)


def _packed_base(x, w, h, d):
    """The (..., 2K + Kd) tensor whose consecutive column blocks w, h, d are (a view of their common
    base that covers it whole), or None."""
    base = w._base
    if base is None or h._base is not base or d._base is not base or base.dtype != x.dtype:
        return None
    k, kd = w.shape[-1], d.shape[-1]
    m = 2 * k + kd
    if base.numel() != x.numel() * m or not base.is_contiguous() or w.storage_offset() != base.storage_offset():
        return None
    if h.storage_offset() != w.storage_offset() + k or d.storage_offset() != w.storage_offset() + 2 * k:
        return None
    p = base.view(*x.shape, m)
    if w.stride() != p.stride() or h.stride() != p.stride() or d.stride() != p.stride():
        return None
    return p


def _needs_grad(*ts):
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def rq_spline(x, widths, heights, derivatives, *, inverse=False, tail_bound=3.0, min_bin_width=1e-3, min_bin_height=1e-3,
              min_derivative=1e-3, backend="auto"):
    """(y, logabsdet) of the rational-quadratic spline with identity tails; see the module docstring.

    x (*batch); widths, heights (*batch, K); derivatives (*batch, K - 1) or (*batch, K + 1).
    Differentiable in x and the three parameter tensors (fused backward kernels).
    """
    name, x, w, h, d, cfg = _prepare_spline(x, widths, heights, derivatives, tail_bound, min_bin_width, min_bin_height,
                                            min_derivative, backend)
    inverse = bool(inverse)
    if name == "torch":  # the reference itself, differentiated by autograd
        b, mw, mh, md = cfg
        return ref.rq_spline(x, w, h, d, inverse=inverse, tail_bound=b, min_bin_width=mw, min_bin_height=mh,
                             min_derivative=md, dtype=x.dtype)
    if torch.compiler.is_compiling() or _needs_grad(x, w, h, d):
        p = None if torch.compiler.is_compiling() else _packed_base(x, w, h, d)
        if p is not None and p.requires_grad:
            return _rq_spline_packed_op(x, p, w.shape[-1], inverse, *cfg, name)
        return _rq_spline_op(x, w, h, d, inverse, *cfg, name)
    return _spline_forward(name, x, w, h, d, inverse, cfg)


# ----------------------------------------------------------------------------------------------
# affine coupling


def _prepare_affine(x, shift, log_scale, backend):
    x = _tensor("x", x)
    shift = _tensor("shift", shift)
    log_scale = _tensor("log_scale", log_scale)
    if x.dim() < 1:
        raise ValueError("x: expected shape (*batch, D) with at least one dimension, got a scalar")
    for nm, p in (("shift", shift), ("log_scale", log_scale)):
        if p.device != x.device:
            raise ValueError(f"{nm}: on device {p.device}, but x is on {x.device}")
        if p.shape != x.shape:
            raise ValueError(f"{nm}: expected x's shape {tuple(x.shape)}, got {tuple(p.shape)}")
    name = _dtype_of(x, backend)
    dt = x.dtype
    shift, log_scale = (p if p.dtype == dt else p.to(dt) for p in (shift, log_scale))
    return name, x, shift, log_scale


def _rows2(t):
    return _rows(t, t.shape[-1])


def _affine_forward(name, x, t, s, inverse):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    logdet = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
    if x.shape[-1] == 0:
        logdet.zero_()
    elif x.numel():
        _launch(name, 2, _rows2(x), _rows2(t), _rows2(s), inverse, y.view(-1, x.shape[-1]), logdet.view(-1))
    return y, logdet


def _gt_is_gy(name, inverse):
    """y = x e^s + t has dy/dt = 1: the shift's gradient is gy itself, which the cpp kernel then does
    not write (one array of the backward's six less to move); the GPU kernels still write it."""
    return name == "cpp" and not inverse


def _affine_backward(name, gy, gld, x, t, s, inverse):
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gt = x.new_empty(0) if _gt_is_gy(name, inverse) else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gs = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel():
        dd = x.shape[-1]
        gyf = gy.reshape(-1, dd).contiguous() if gy is not None else None
        gldf = gld.reshape(-1).contiguous() if gld is not None else None
        _launch(name, 3, _rows2(x), _rows2(t), _rows2(s), inverse, gyf, gldf, gx.view(-1, dd),
                gt.view(-1, dd) if gt.numel() else None, gs.view(-1, dd))
    return gx, gt, gs


@torch.library.custom_op("genengine::affine_coupling", mutates_args=())
def _affine_op(x: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor, inverse: bool,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _affine_forward(backend, x, shift, log_scale, inverse)


@_affine_op.register_fake
def _(x, shift, log_scale, inverse, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:-1])


@torch.library.custom_op("genengine::affine_coupling_backward", mutates_args=())
def _affine_backward_op(gy: torch.Tensor, gld: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor,
                        inverse: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _affine_backward(backend, gy, gld, x, shift, log_scale, inverse)


@_affine_backward_op.register_fake
def _(gy, gld, x, shift, log_scale, inverse, backend):
    gx, gs = (torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(2))
    gt = x.new_empty(0) if _gt_is_gy(backend, inverse) else torch.empty_like(x, memory_format=torch.contiguous_format)
    return gx, gt, gs


def _affine_setup_context(ctx, inputs, output):
    x, t, s, inverse, backend = inputs
    ctx.save_for_backward(x, t, s)
    ctx.inverse, ctx.backend = inverse, backend


def _affine_autograd(ctx, gy, gld):
    x, t, s = ctx.saved_tensors
    if gy is None:
        gy = torch.zeros_like(x)
    if gld is None:
        gld = x.new_zeros(x.shape[:-1])
    gx, gt, gs = _affine_backward_op(gy, gld, x, t, s, ctx.inverse, ctx.backend)
    if _gt_is_gy(ctx.backend, ctx.inverse):
        gt = gy
    return gx, gt, gs, None, None


torch.library.register_autograd("genengine::affine_coupling", _affine_autograd, setup_context=_affine_setup_context)


def affine_coupling(x, shift, log_scale, *, inverse=False, backend="auto"):
    """(y, logdet): y = x * exp(log_scale) + shift and logdet = log_scale.sum(-1) in one pass
    (inverse: y = (x - shift) * exp(-log_scale), logdet = -log_scale.sum(-1)), with a fused backward.

    x, shift, log_scale (*batch, D) (shift / log_scale may be strided views, e.g. halves of one
    network output); y (*batch, D), logdet (*batch).
    """
    name, x, t, s = _prepare_affine(x, shift, log_scale, backend)
    inverse = bool(inverse)
    if name == "torch":
        return ref.affine_coupling(x, t, s, inverse=inverse, dtype=x.dtype)
    if torch.compiler.is_compiling() or _needs_grad(x, t, s):
        return _affine_op(x, t, s, inverse, name)
    return _affine_forward(name, x, t, s, inverse)


__all__ = ["rq_spline", "affine_coupling"]
# the plain-PyTorch definitions (genengine.reference.flows) are the specification
reference = ref


# ---- MAF sampling -----------------------------------------------------------------------------------


def made_affine_inverse(y, hidden, out_weight, out_bias, bounds, *, scale_bound=3.0, backend="auto"):
    """The MAF layer's sampling direction in one call: (x, logdet) with x_i = y_i exp(alpha_i) + mu_i,
    (mu_i, raw_i) = the MADE's outputs 2i, 2i+1 given x_<i, alpha = scale_bound tanh(raw / scale_bound),
    logdet = sum_i alpha_i (N,).

    y (N, D). hidden: [(W (H_l, in_l), b (H_l,), ctx (N, H_l) or None)] per hidden layer (in_0 = D,
    in_l = H_{l-1}): masked weights with the units relabelled by degree, so that layer l's units of
    degree k are rows bounds[l, k] .. bounds[l, k + 1] - 1 (bounds int64 (L, D + 1); units past
    bounds[l, D] have degree >= D and feed no output); out_weight
    (2 D, H_last) and out_bias (2 D,) in the same relabelling. Each hidden unit is computed once, when
    its inputs are final (genengine.reference.flows.made_inverse): one MADE forward pass of work.
    Backends: torch (that reference, differentiable) and cpp (one C++ pass over the rows, float32 and
    float64, no autograd: sampling)."""
    _tensor("y", y)
    if y.dim() != 2:
        raise ValueError(f"y: expected (N, D), got {tuple(y.shape)}")
    n, d = y.shape
    if not isinstance(hidden, (list, tuple)) or not 1 <= len(hidden) <= 8:
        raise ValueError("hidden: expected a list of 1 to 8 (weight, bias, context terms or None) triples")
    bounds = torch.as_tensor(bounds, dtype=torch.int64)
    if bounds.shape != (len(hidden), d + 1):
        raise ValueError(f"bounds: expected shape ({len(hidden)}, {d + 1}), got {tuple(bounds.shape)}")
    in_f = d
    for l_, (w, b, c) in enumerate(hidden):
        if w.dim() != 2 or w.shape[1] != in_f or b.shape != (w.shape[0],):
            raise ValueError(f"hidden[{l_}]: expected W (H, {in_f}) and b (H,), got {tuple(w.shape)} and {tuple(b.shape)}")
        if c is not None and c.shape != (n, w.shape[0]):
            raise ValueError(f"hidden[{l_}]: expected context terms of shape ({n}, {w.shape[0]}), got {tuple(c.shape)}")
        in_f = w.shape[0]
    if out_weight.shape != (2 * d, in_f) or out_bias.shape != (2 * d,):
        raise ValueError(f"out_weight / out_bias: expected ({2 * d}, {in_f}) and ({2 * d},), got "
                         f"{tuple(out_weight.shape)} and {tuple(out_bias.shape)}")
    sb = _real("scale_bound", scale_bound, positive=True)
    if not torch.compiler.is_compiling():  # data-dependent: checked by the registered op when traced
        _check_made_bounds(bounds, [w.shape[0] for w, _, _ in hidden])
    tensors = [y, out_weight, out_bias] + [t for trip in hidden for t in trip if t is not None]
    grad = _needs_grad(*tensors)
    name = _backends.resolve(backend, _backends.device_type(y), ("torch", "cpp"), y.dtype in (torch.float32, torch.float64))
    if name == "torch" or grad or any(t.dtype != y.dtype or t.device != y.device for t in tensors):
        return ref.made_affine_inverse(y, [tuple(t) for t in hidden], out_weight, out_bias, bounds, sb)
    if torch.compiler.is_compiling():
        e = y.new_empty(0)
        return _made_affine_inverse_op(y, [w for w, _, _ in hidden], [b for _, b, _ in hidden],
                                       [c if c is not None else e for _, _, c in hidden], out_weight, out_bias, bounds, sb)
    return _made_affine_inverse_cpp(y, hidden, out_weight, out_bias, bounds, sb)


@torch.library.custom_op("genengine::made_affine_inverse", mutates_args=())
def _made_affine_inverse_op(y: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                            ctx: list[torch.Tensor], out_weight: torch.Tensor, out_bias: torch.Tensor,
                            bounds: torch.Tensor, scale_bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The cpp kernel as a torch.library op (what torch.compile traces); empty ctx tensors mean none."""
    hidden = [(w, b, c if c.numel() else None) for w, b, c in zip(weights, biases, ctx)]
    _check_made_bounds(bounds, [w.shape[0] for w in weights])
    return _made_affine_inverse_cpp(y, hidden, out_weight, out_bias, bounds, scale_bound)


@_made_affine_inverse_op.register_fake
def _(y, weights, biases, ctx, out_weight, out_bias, bounds, scale_bound):
    return torch.empty_like(y, memory_format=torch.contiguous_format), y.new_empty(y.shape[0])


def _check_made_bounds(bounds, sizes):
    for l_, h in enumerate(sizes):
        bl = bounds[l_]
        if int(bl[0]) != 0 or bool((bl[1:] < bl[:-1]).any()) or int(bl[-1]) > h:
            raise ValueError(f"bounds[{l_}]: expected non-decreasing unit counts from 0 to at most {h}")


def _made_affine_inverse_cpp(y, hidden, out_weight, out_bias, bounds, sb):
    n, d = y.shape
    parts, w_off, b_off = [], [], []
    at = 0
    for w, b, _ in list(hidden) + [(out_weight, out_bias, None)]:
        w_off.append(at)
        at += w.numel()
        b_off.append(at)
        at += b.numel()
        parts += [w.detach().reshape(-1), b.detach().reshape(-1)]
    packed = torch.cat(parts).contiguous()
    ctx = [c for _, _, c in hidden]
    sizes = torch.tensor([w.shape[0] for w, _, _ in hidden], dtype=torch.int64)
    c_off = torch.tensor([0] + [int(s) for s in torch.cumsum(sizes, 0)[:-1]], dtype=torch.int64)
    ctx_all = None
    if any(c is not None for c in ctx):
        ctx_all = torch.cat([c.detach() if c is not None else y.new_zeros(n, w.shape[0])
                             for c, (w, _, _) in zip(ctx, hidden)], dim=1).contiguous()
    yc = y.detach().contiguous()
    x = torch.empty_like(yc)
    logdet = y.new_empty(n)
    offs = torch.tensor(w_off, dtype=torch.int64), torch.tensor(b_off, dtype=torch.int64)
    bc = bounds.contiguous()
    _backends.load_cpp().made_affine_inverse(
        y.dtype == torch.float64, n, d, len(hidden), sizes.data_ptr(), bc.data_ptr(), packed.data_ptr(),
        offs[0].data_ptr(), offs[1].data_ptr(), _ptr(ctx_all), ctx_all.shape[1] if ctx_all is not None else 0,
        c_off.data_ptr(), sb, yc.data_ptr(), x.data_ptr(), logdet.data_ptr())
    return x, logdet

