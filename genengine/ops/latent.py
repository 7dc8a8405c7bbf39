"""Latent-variable ops: the reparameterisation trick with in-kernel Philox noise and the analytic KL
divergence of a diagonal Gaussian from N(0, I), fused in one pass (the VAE's sampling step).

    z = ge.ops.reparameterize(mu, logvar, generator=g)              # mu + exp(logvar / 2) * eps
    kl = ge.ops.gaussian_kl(mu, logvar)                             # (B,)
    z, kl = ge.ops.reparameterize_kl(mu, logvar, generator=g)       # both, one pass over mu, logvar

Shapes: mu, logvar (B, *event), one shape, dtype and device; z has that shape and dtype; kl is (B,),
float32 (float64 for float64 inputs): KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the event
dims. eps is element i (row-major) = normal i of the Philox stream keyed by draw_key(generator), the
same numbers on every backend (genengine.ops.rng), so one seed gives the same z everywhere.

Autograd (checked with gradcheck): dz/dmu = 1, dz/dlogvar = (z - mu) / 2 (no noise is stored: it is
recovered from z), dkl/dmu = mu, dkl/dlogvar = (exp(logvar) - 1) / 2. The backward is plain torch
elementwise code (one fused expression per input); the forward is the kernel.

Backends: torch (genengine.reference.latent with the reference Philox stream; float64 too), cpp
(float32, CPU: csrc/cpu/latent.cpp, the AVX-512/AVX2 Philox generator and a polynomial exp), triton
(float32, bfloat16, float16; CUDA, or CPU under TRITON_INTERPRET=1: kernels/latent.py).
"""

from __future__ import annotations

import torch

from .. import _backends
from ..reference import latent as ref
from .rng import draw_key, key_ints, op_key

_SUPPORTED = ("torch", "cpp", "triton")


def _prepare(mu, logvar, backend):
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if mu.dim() < 1:
        raise ValueError(f"mu: expected shape (B, *event) with at least 1 dimension, got {tuple(mu.shape)}")
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar: expected mu's shape {tuple(mu.shape)}, got {tuple(logvar.shape)}")
    if logvar.dtype != mu.dtype:
        raise TypeError(f"logvar: expected mu's dtype {mu.dtype}, got {logvar.dtype}")
    if logvar.device != mu.device:
        raise ValueError(f"logvar: on device {logvar.device}, but mu is on {mu.device}")
    name = _backends.resolve(backend, _backends.device_type(mu), _SUPPORTED,
                             mu.dtype in (torch.float32, torch.bfloat16, torch.float16))
    if name == "cpp" and mu.dtype != torch.float32:
        if backend in (None, "auto") and _backends.forced_backend() in (None, "auto"):
            return "torch"  # the C++ kernel is float32 only; half types on the CPU take the reference
        raise TypeError(f"backend 'cpp' supports float32 only, got {mu.dtype}; use backend='torch'")
    return name


def _kl_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _forward(name, mu, logvar, seed, offset, want_z, want_kl):
    """(z or None, kl or None); seed/offset as unsigned 64-bit ints."""
    mu, logvar = mu.detach().contiguous(), logvar.detach().contiguous()
    b = mu.shape[0]
    d = mu.numel() // b if b else 0
    if name == "torch":
        z = kl = None
        if want_z:
            eps = ref.noise(mu.shape, seed, offset, device=mu.device, dtype=torch.float64)
            z = ref.reparameterize(mu, logvar, eps).to(mu.dtype)
        if want_kl:
            kl = ref.gaussian_kl(mu, logvar).to(_kl_dtype(mu))
        return z, kl
    z = torch.empty_like(mu) if want_z else None
    kl = torch.empty(b, dtype=torch.float32, device=mu.device) if want_kl else None
    if mu.numel() == 0:
        return z, (kl.zero_() if kl is not None else None)
    if name == "cpp":
        _backends.load_cpp().reparameterize_kl(b, d, mu.data_ptr(), logvar.data_ptr(), z.data_ptr() if want_z else 0,
                                               kl.data_ptr() if want_kl else 0, seed, offset)
    else:
        _backends.load_kernels("latent").reparameterize_kl(mu, logvar, z, kl, seed, offset)
    return z, kl


# ----------------------------------------------------------------------------------------------
# torch.library registration (what torch.compile and autograd see). The key travels as an int64 [2]
# tensor (rng.key_tensor), so that a compiled graph reads it as data: a new key does not recompile.


@torch.library.custom_op("genengine::reparameterize_kl", mutates_args=())
def _reparameterize_kl_op(mu: torch.Tensor, logvar: torch.Tensor, key: torch.Tensor, want_kl: bool,
                          backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    seed, offset = key_ints(key)
    z, kl = _forward(backend, mu, logvar, seed, offset, True, want_kl)
    return z, (kl if kl is not None else mu.new_empty(0, dtype=_kl_dtype(mu)))


@_reparameterize_kl_op.register_fake
def _(mu, logvar, key, want_kl, backend):
    return torch.empty_like(mu), mu.new_empty(mu.shape[0] if want_kl else 0, dtype=_kl_dtype(mu))


def _rk_setup(ctx, inputs, output):
    mu, logvar = inputs[0], inputs[1]
    z, _ = output
    ctx.want_kl = inputs[3]
    ctx.save_for_backward(mu, logvar, z)


def _rk_backward(ctx, gz, gkl):
    mu, logvar, z = ctx.saved_tensors
    dmu = gz
    dlv = 0.5 * gz * (z - mu)
    if ctx.want_kl and gkl is not None and gkl.numel():
        g = gkl.to(mu.dtype).reshape((-1,) + (1,) * (mu.dim() - 1))
        dmu = dmu + g * mu
        dlv = dlv + 0.5 * g * torch.expm1(logvar)
    return dmu, dlv, None, None, None


torch.library.register_autograd("genengine::reparameterize_kl", _rk_backward, setup_context=_rk_setup)


@torch.library.custom_op("genengine::gaussian_kl", mutates_args=())
def _gaussian_kl_op(mu: torch.Tensor, logvar: torch.Tensor, backend: str) -> torch.Tensor:
    return _forward(backend, mu, logvar, 0, 0, False, True)[1]


@_gaussian_kl_op.register_fake
def _(mu, logvar, backend):
    return mu.new_empty(mu.shape[0], dtype=_kl_dtype(mu))


def _kl_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _kl_backward(ctx, gkl):
    mu, logvar = ctx.saved_tensors
    g = gkl.to(mu.dtype).reshape((-1,) + (1,) * (mu.dim() - 1))
    return g * mu, 0.5 * g * torch.expm1(logvar), None


torch.library.register_autograd("genengine::gaussian_kl", _kl_backward, setup_context=_kl_setup)


# ----------------------------------------------------------------------------------------------
# the public ops


def _needs_grad(*ts):
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def reparameterize_kl(mu, logvar, *, generator=None, backend="auto"):
    """(z, kl): z = mu + exp(logvar / 2) * eps (eps: Philox normals keyed by `generator`) and
    kl = KL(N(mu, diag exp(logvar)) || N(0, I)) per sample (B,), in one pass."""
    name = _prepare(mu, logvar, backend)
    if torch.compiler.is_compiling() or _needs_grad(mu, logvar):  # a key tensor as generator stays data
        return _reparameterize_kl_op(mu, logvar, op_key(generator, mu.device), True, name)
    seed, offset = draw_key(generator, mu.device)
    return _forward(name, mu, logvar, seed, offset, True, True)


def reparameterize(mu, logvar, *, generator=None, backend="auto"):
    """z = mu + exp(logvar / 2) * eps, eps standard normals from the Philox stream keyed by `generator`."""
    name = _prepare(mu, logvar, backend)
    if torch.compiler.is_compiling() or _needs_grad(mu, logvar):
        return _reparameterize_kl_op(mu, logvar, op_key(generator, mu.device), False, name)[0]
    seed, offset = draw_key(generator, mu.device)
    return _forward(name, mu, logvar, seed, offset, True, False)[0]


def gaussian_kl(mu, logvar, *, backend="auto"):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the event dims: (B,)."""
    name = _prepare(mu, logvar, backend)
    if torch.compiler.is_compiling() or _needs_grad(mu, logvar):
        return _gaussian_kl_op(mu, logvar, name)
    return _forward(name, mu, logvar, 0, 0, False, True)[1]


__all__ = ["reparameterize", "reparameterize_kl", "gaussian_kl"]
reference = ref
