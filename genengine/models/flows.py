"""Normalizing-flow families: RealNVP, Glow, NeuralSplineFlow (coupling or autoregressive) and MAF.

    flow = ge.models.NeuralSplineFlow(2).fit(x, epochs=50)      # x (N, 2)
    z, logdet = flow(x)              # data -> noise, log|det dz/dx| per sample (N,)
    x2, logdet_inv = flow.inverse(z)
    flow.log_prob(x)                 # (N,) exact log-density in nats
    flow.sample(1000, generator=torch.Generator().manual_seed(0))

Shapes: RealNVP, NeuralSplineFlow, MAF model vectors (N, D); Glow models images (N, C, H, W) with
H and W divisible by 2**levels. Conditional variants (context_features > 0) take context (N, F) in
forward / inverse / log_prob / fit (`context=`) and sample (`context=`, one row per sample or one
row for all). The base distribution is a standard normal; sampling draws it from genengine's Philox
stream (same generator seed, same samples). Layers: genengine/models/flow_layers.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from .._progress import Progress
from .base import GenerativeModel, check_data
from .flow_layers import (
    ActNorm,
    AffineCoupling,
    AutoregressiveSpline,
    FlowSequence,
    InvConv1x1,
    MAFLayer,
    Reverse,
    SplineCoupling,
    Squeeze,
    standard_normal_logp,
)

__all__ = ["RealNVP", "Glow", "NeuralSplineFlow", "MAF"]


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v!r}")
    return v


class _Flow(GenerativeModel):
    """What every flow family shares: log_prob from forward, sampling through inverse, and fit()."""

    likelihood = "exact"
    conditional = True  # every flow family takes a context when built with context_features > 0
    abstract = True

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "flow":  # ActNorm initialises in fit(), never as a side effect of log_prob()
            for m in value.modules():
                if isinstance(m, ActNorm):
                    m.init_on_forward = False

    # ---- subclasses provide self.flow (forward / inverse), _event_shape() -------------------------
    def _event_shape(self):
        return (self.features,)

    def _dtype(self):
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

    def _as_tensor(self, v, name, **checks):
        """check_data on v, which then goes to the model's dtype and device. A list is built in the model's
        dtype directly (a float32 detour would round float64 data); tensors and arrays keep theirs
        until check_data has seen it (a complex one raises, rather than losing its imaginary part)."""
        dtype = self._dtype()
        v = check_data(v, name, dtype=None if hasattr(v, "dtype") else dtype, finite=False, min_rows=0, **checks)
        return v.to(device=self.device, dtype=dtype)

    def _check_x(self, x, name="x"):
        """x on the model's device in the model's dtype (as PPCA and PixelCNN convert their inputs); NaN
        or inf raise, as in the other families, instead of coming back as a NaN log-density. An empty
        batch is allowed (an empty result)."""
        shape = self._event_shape()
        given = x.dtype if torch.is_tensor(x) else None
        x = self._as_tensor(x, name, ndim=1 + len(shape))
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name}: expected shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        # checked after the conversion: float64 values beyond a float32 model's range become inf there
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or infinite values" + (
                f" (once converted from {given} to the model's {x.dtype})" if given not in (None, x.dtype) else ""))
        return x

    def _check_context(self, context, n):
        if self.context_features == 0:
            if context is not None:
                raise ValueError(f"context: this {type(self).__name__} was built with context_features=0")
            return None
        if context is None:
            raise ValueError(f"context: this {type(self).__name__} is conditional; pass context of shape "
                             f"(N, {self.context_features})")
        context = self._as_tensor(context, "context")  # the model's dtype, like x
        if context.dim() == 1:
            context = context.unsqueeze(0)
        if context.dim() != 2 or context.shape[1] != self.context_features:
            raise ValueError(f"context: expected shape (N, {self.context_features}), got {tuple(context.shape)}")
        if context.shape[0] == 1 and n != 1:
            context = context.expand(n, -1)
        if context.shape[0] != n:
            raise ValueError(f"context: expected {n} rows (one per sample), got {context.shape[0]}")
        if not bool(torch.isfinite(context).all()):
            raise ValueError("context: contains NaN or infinite values")
        return context

    def forward(self, x, context=None):
        """(z, logdet): data -> base noise, log|det dz/dx| per sample."""
        x = self._check_x(x)
        return self.flow(x, self._check_context(context, x.shape[0]))

    def inverse(self, z, context=None):
        """(x, logdet): base noise -> data, log|det dx/dz| per sample."""
        z = self._check_x(z, "z")
        return self.flow.inverse(z, self._check_context(context, z.shape[0]))

    def log_prob(self, x, context=None):
        x = self._check_x(x)
        return self._log_prob(x, self._check_context(context, x.shape[0]))

    def _log_prob(self, x, context):
        """log_prob on checked x and context (fit's batches were checked once, as a whole)."""
        z, logdet = self.flow(x, context)
        return standard_normal_logp(z) + logdet

    @torch.no_grad()
    def sample(self, n, *, context=None, generator=None, temperature=1.0):
        """n samples x = inverse(z), z ~ N(0, temperature^2 I) from Philox streams keyed by `generator`.
        temperature < 1 draws from the typical set's core (Kingma and Dhariwal 2018 sample Glow at 0.7):
        sharper samples, no longer the model's density."""
        n = _positive_int("n", n)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
        shape = self._event_shape()
        dev = self.device
        seed, offset = ops.draw_key(generator, dev)
        z = ops.philox_normal(n * math.prod(shape), seed, offset, device=dev).view(n, *shape)
        z = z.to(self._dtype())  # a float64 model samples in float64 (the same float32 normals, widened)
        if temperature != 1.0:
            z = z * float(temperature)
        was = self.training
        self.eval()
        try:
            x, _ = self.flow.inverse(z, self._check_context(context, n))
        finally:
            self.train(was)
        return x

    def fit(self, data, *, context=None, epochs=50, batch_size=256, lr=1e-3, weight_decay=0.0, grad_clip=5.0,
            progress=True, callback=None, generator=None):
        """Maximum likelihood with Adam; returns self. callback(model, {"epoch", "loss"}) -> True stops."""
        x = self._check_x(data, "data")
        if x.shape[0] == 0:
            raise ValueError("data: expected at least 1 sample, got 0")
        ctx = self._check_context(context, x.shape[0])
        epochs = _positive_int("epochs", epochs)
        batch_size = _positive_int("batch_size", batch_size)
        opt = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        n = x.shape[0]
        self.train()
        # data-dependent initialisation (ActNorm) on a first batch, layer by layer as it flows through
        first = torch.randperm(n, generator=gen)[: min(n, max(batch_size, 512))]
        acts = [m for m in self.modules() if isinstance(m, ActNorm) and not bool(m.initialized)]
        if acts:
            for m in acts:
                m.init_on_forward = True
            try:
                with torch.no_grad():
                    self.flow(x[first], ctx[first] if ctx is not None else None)
            finally:
                for m in acts:
                    m.init_on_forward = False
        steps = -(-n // batch_size)
        bar = Progress(epochs * steps, f"fit {type(self).__name__}", enabled=progress)
        try:
            for epoch in range(epochs):
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for s in range(steps):
                    idx = perm[s * batch_size:(s + 1) * batch_size]
                    c = ctx[idx] if ctx is not None else None
                    loss = -self._log_prob(x[idx], c).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if grad_clip:
                        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
                    opt.step()
                    total += float(loss.detach()) * idx.numel()
                    bar.update(1)
                info = {"epoch": epoch, "loss": total / n}
                if callback is not None and callback(self, info):
                    break
        finally:
            bar.close()
        self.eval()
        return self


class RealNVP(_Flow):
    """RealNVP (Dinh et al. 2017) on vectors (N, D): `layers` affine couplings on alternating halves,
    each preceded by ActNorm (data-dependent init)."""

    def __init__(self, features, layers=8, hidden=128, context_features=0, actnorm=True):
        super().__init__()
        self.features = _positive_int("features", features)
        if features < 2:
            raise ValueError(f"features: a coupling flow needs at least 2 features, got {features}")
        self.context_features = int(context_features)
        mods = []
        for i in range(_positive_int("layers", layers)):
            if actnorm:
                mods.append(ActNorm(features))
            mods.append(AffineCoupling(features, hidden, parity=i % 2, context_features=self.context_features))
        self.flow = FlowSequence(mods)


class NeuralSplineFlow(_Flow):
    """Neural spline flow (Durkan et al. 2019) on vectors (N, D): rational-quadratic splines with K
    bins and identity tails on [-tail_bound, tail_bound]. autoregressive=False: coupling layers on
    alternating halves (RQ-NSF (C)); True: MADE-conditioned autoregressive layers (RQ-NSF (AR)),
    whose sampling runs D sequential passes. A Reverse permutation and an InvConv1x1 (LU) sit between layers."""

    def __init__(self, features, layers=4, hidden=64, bins=8, tail_bound=3.0, autoregressive=False, context_features=0):
        super().__init__()
        self.features = _positive_int("features", features)
        if features < 2 and not autoregressive:
            raise ValueError(f"features: a coupling flow needs at least 2 features, got {features}")
        self.context_features = int(context_features)
        mods = []
        for i in range(_positive_int("layers", layers)):
            if autoregressive:
                mods.append(AutoregressiveSpline(features, hidden, self.context_features, bins, tail_bound))
                mods.append(Reverse())
            else:
                mods.append(SplineCoupling(features, hidden, parity=i % 2, context_features=self.context_features,
                                           bins=bins, tail_bound=tail_bound))
                mods.append(InvConv1x1(features, generator=torch.Generator().manual_seed(i)))
        self.flow = FlowSequence(mods)


class MAF(_Flow):
    """Masked autoregressive flow (Papamakarios et al. 2017) on vectors (N, D): `layers` MADE-conditioned
    affine layers with order reversals in between; density in one pass, sampling D passes per layer."""

    def __init__(self, features, layers=5, hidden=64, context_features=0):
        super().__init__()
        self.features = _positive_int("features", features)
        self.context_features = int(context_features)
        mods = []
        for _ in range(_positive_int("layers", layers)):
            mods.append(MAFLayer(features, hidden, self.context_features))
            mods.append(Reverse())
        self.flow = FlowSequence(mods)


class _GlowBody(nn.Module):
    """Multi-scale Glow: per level squeeze, `steps` x (ActNorm, InvConv1x1, AffineCoupling), then (all but
    the last level) split off half the channels as latent. The latent is returned flattened (N, C*H*W)."""

    def __init__(self, shape, levels, steps, hidden, context_features):
        super().__init__()
        c, h, w = shape
        self.levels = nn.ModuleList()
        self.shapes = []
        for lev in range(levels):
            c, h, w = c * 4, h // 2, w // 2
            mods = [Squeeze()]
            for s in range(steps):
                mods += [ActNorm(c, image=True), InvConv1x1(c, image=True, generator=torch.Generator().manual_seed(lev * 97 + s)),
                         AffineCoupling(c, hidden, parity=s % 2, context_features=context_features, image=True)]
            self.levels.append(FlowSequence(mods))
            out_c = c // 2 if lev < levels - 1 else c
            self.shapes.append((out_c, h, w))  # what this level factors out
            c = c - out_c if lev < levels - 1 else c

    def forward(self, x, context=None):
        total = x.new_zeros(x.shape[0])
        zs = []
        for lev, flow in enumerate(self.levels):
            x, ld = flow(x, context)
            total = total + ld
            if lev < len(self.levels) - 1:
                k = self.shapes[lev][0]
                zs.append(x[:, :k].flatten(1))
                x = x[:, k:]
        zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), total

    def inverse(self, z, context=None):
        n = z.shape[0]
        sizes = [math.prod(s) for s in self.shapes]
        parts = list(torch.split(z.flatten(1), sizes, dim=1))
        x = parts[-1].view(n, *self.shapes[-1])
        total = z.new_zeros(n)
        for lev in reversed(range(len(self.levels))):
            if lev < len(self.levels) - 1:
                x = torch.cat([parts[lev].view(n, *self.shapes[lev]), x], dim=1)
            x, ld = self.levels[lev].inverse(x, context)
            total = total + ld
        return x, total


class Glow(_Flow):
    """Glow (Kingma and Dhariwal 2018) on images (N, C, H, W): `levels` scales of squeeze + `steps`
    flow steps (ActNorm, invertible 1x1 convolution with LU weights, affine coupling with a small
    convolutional network), factoring out half the channels after each level. forward() returns the
    latent flattened to (N, C*H*W); inverse() takes it in that form (or shaped like an image)."""

    def __init__(self, shape, levels=2, steps=4, hidden=64, context_features=0):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError(f"shape: expected (C, H, W), got {shape}")
        levels = _positive_int("levels", levels)
        if shape[1] % (2 ** levels) or shape[2] % (2 ** levels):
            raise ValueError(f"shape: H and W must be divisible by 2**levels = {2 ** levels}, got {shape[1]}x{shape[2]}")
        self.shape = shape
        self.features = math.prod(shape)
        self.context_features = int(context_features)
        self.flow = _GlowBody(shape, levels, _positive_int("steps", steps), hidden, self.context_features)

    def _event_shape(self):
        return self.shape

    def inverse(self, z, context=None):
        z = self._as_tensor(z, "z")
        if z.dim() == 2:
            # the flattened form forward() returns; its size is checked here, before the reshape
            if z.shape[1] != self.features:
                raise ValueError(f"z: expected shape (N, {self.features}) (flattened) or (N, "
                                 f"{', '.join(map(str, self.shape))}), got {tuple(z.shape)}")
            z = z.reshape(z.shape[0], *self.shape)
        return super().inverse(z, context)
