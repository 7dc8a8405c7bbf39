"""Invertible layers of the flow families (genengine/models/flows.py), each with

    y, logdet = layer(x, context=None)          # the density direction (data -> noise)
    x, logdet = layer.inverse(y, context=None)  # the sampling direction

logdet is log|det dy/dx| per sample, shape (N,); the inverse returns log|det dx/dy| (its negative).

Shapes: vector layers take (N, D); image layers (ActNorm(image=True), InvConv1x1(image=True),
AffineCoupling(image=True), Squeeze) take (N, C, H, W). context, where a layer takes one, is
(N, context_features) and is concatenated to the conditioner network's input (images: broadcast
over the spatial positions as extra channels).

Hot paths run in genengine.ops: the affine couplings call ge.ops.affine_coupling (shift, scale and
the log-determinant row sum in one fused pass, fused backward), the spline layers
ge.ops.rq_spline. MADE is the masked autoencoder of Germain et al. 2015; its sequential inverse
(MAF / autoregressive spline sampling) runs D passes over weights masked once per call into
preallocated buffers, and each pass computes only the output block of the dimension it fills.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..reference import flows as ref_flows

__all__ = ["ActNorm", "InvConv1x1", "AffineCoupling", "SplineCoupling", "MADE", "MAFLayer", "AutoregressiveSpline",
           "Reverse", "Squeeze", "FlowSequence"]


def _zeros_logdet(x):
    return x.new_zeros(x.shape[0])


class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per feature (channel); the first forward in training mode sets
    bias and log_scale so that the batch comes out with zero mean and unit variance (Kingma and
    Dhariwal 2018). The `initialized` buffer keeps that state through state_dict round trips.
    `init_on_forward = False` leaves the initialisation to whoever calls `initialize(x)` (the flow
    families do it in fit(), so that log_prob never changes a model)."""

    def __init__(self, features, image=False):
        super().__init__()
        self.image = bool(image)
        self.init_on_forward = True
        self.bias = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    def _shape(self, x):
        return (1, -1, 1, 1) if self.image else (1, -1)

    def _spatial(self, x):
        return x.shape[2] * x.shape[3] if self.image else 1

    @torch.no_grad()
    def initialize(self, x):
        dims = (0, 2, 3) if self.image else (0,)
        mean = x.mean(dims)
        std = x.std(dims, correction=0) if x.shape[0] * self._spatial(x) > 1 else torch.ones_like(mean)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def forward(self, x, context=None):
        if self.init_on_forward and self.training and not bool(self.initialized):
            self.initialize(x)
        s = self.log_scale.view(self._shape(x))
        y = (x + self.bias.view(self._shape(x))) * torch.exp(s)
        return y, (self.log_scale.sum() * self._spatial(x)).expand(x.shape[0])

    def inverse(self, y, context=None):
        s = self.log_scale.view(self._shape(y))
        x = y * torch.exp(-s) - self.bias.view(self._shape(y))
        return x, (-self.log_scale.sum() * self._spatial(y)).expand(y.shape[0])


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution (images) or linear map (vectors) W = P L (U + diag(sign * exp(log_s)))
    with P a fixed permutation, L unit lower triangular and U strictly upper triangular: log|det W| =
    sum(log_s) (times H W for images). W and W^{-1} are cached per parameter version (tensor._version
    counts in-place updates, e.g. optimiser steps) and reused whenever no gradient is needed."""

    def __init__(self, features, image=False, generator=None):
        super().__init__()
        self.image = bool(image)
        q, _ = torch.linalg.qr(torch.randn(features, features, generator=generator, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(features, features), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(s.abs()).float())
        self._cache = None

    def _key(self):
        return (self.lower._version, self.upper._version, self.log_s._version, self.lower.data_ptr(), self.lower.device)

    def _weights(self, need_inverse):
        cacheable = not (torch.is_grad_enabled() and any(p.requires_grad for p in (self.lower, self.upper, self.log_s)))
        if cacheable and self._cache is not None and self._cache[0] == self._key():
            _, w, w_inv = self._cache
            if w_inv is not None or not need_inverse:
                return w, w_inv
        eye = torch.eye(self.lower.shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_s))
        w = self.perm @ lower @ upper
        w_inv = None
        if need_inverse:
            # triangular solves: W^{-1} = U^{-1} L^{-1} P^T
            linv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
            uinv = torch.linalg.solve_triangular(upper, eye, upper=True)
            w_inv = uinv @ linv @ self.perm.T
        if cacheable:
            self._cache = (self._key(), w, w_inv)
        return w, w_inv

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _mul(self, x, w):
        if self.image:
            return F.conv2d(x, w.view(*w.shape, 1, 1))
        return x @ w.T

    def _logdet(self, x):
        spatial = x.shape[2] * x.shape[3] if self.image else 1
        return (self.log_s.sum() * spatial).expand(x.shape[0])

    def forward(self, x, context=None):
        w, _ = self._weights(False)
        return self._mul(x, w), self._logdet(x)

    def inverse(self, y, context=None):
        _, w_inv = self._weights(True)
        return self._mul(y, w_inv), -self._logdet(y)


def _mlp(n_in, n_out, hidden, layers=2):
    mods, d = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    last = nn.Linear(d, n_out)
    nn.init.zeros_(last.weight)  # each coupling starts as the identity
    nn.init.zeros_(last.bias)
    return nn.Sequential(*mods, last)


class _ConvNet(nn.Module):
    def __init__(self, c_in, c_out, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1),
                                 nn.ReLU(), nn.Conv2d(hidden, c_out, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        return self.net(x)


def _split(features, parity):
    a = features // 2 if parity == 0 else features - features // 2
    return a, features - a


class _Coupling(nn.Module):
    """x = [x_a, x_b] (features, or channels for images); x_a passes through and conditions x_b.
    parity 1 swaps the roles of the two halves."""

    def __init__(self, features, parity, image):
        super().__init__()
        self.features, self.parity, self.image = features, int(parity) % 2, bool(image)
        self.n_a, self.n_b = _split(features, self.parity)

    def _halves(self, x):
        first, second = x[:, : self.features // 2], x[:, self.features // 2:]
        return (first, second) if self.parity == 0 else (second, first)

    def _join(self, xa, yb):
        return torch.cat([xa, yb] if self.parity == 0 else [yb, xa], dim=1)

    def _cond(self, xa, context):
        if context is None:
            return xa
        if self.image:
            context = context[:, :, None, None].expand(-1, -1, xa.shape[2], xa.shape[3])
        return torch.cat([xa, context], dim=1)


class AffineCoupling(_Coupling):
    """RealNVP / Glow affine coupling: y_b = x_b * exp(s) + t with (t, s) = net(x_a [, context]) and
    s = scale_bound * tanh(raw / scale_bound) (bounded, so training never overflows exp); the shift,
    the scale and the log-determinant row sum run in ge.ops.affine_coupling."""

    def __init__(self, features, hidden=64, parity=0, context_features=0, image=False, scale_bound=3.0):
        super().__init__(features, parity, image)
        self.scale_bound = float(scale_bound)
        n_in = self.n_a + int(context_features)
        self.net = _ConvNet(n_in, 2 * self.n_b, hidden) if self.image else _mlp(n_in, 2 * self.n_b, hidden)

    def _params(self, xa, context):
        out = self.net(self._cond(xa, context))
        t, raw = out[:, : self.n_b], out[:, self.n_b:]
        s = self.scale_bound * torch.tanh(raw / self.scale_bound)
        if self.image:
            return t.flatten(1), s.flatten(1)
        return t, s

    def _run(self, x, context, inverse):
        xa, xb = self._halves(x)
        t, s = self._params(xa, context)
        yb, logdet = ops.affine_coupling(xb.flatten(1) if self.image else xb, t, s, inverse=inverse)
        return self._join(xa, yb.view(xb.shape)), logdet

    def forward(self, x, context=None):
        return self._run(x, context, False)

    def inverse(self, y, context=None):
        return self._run(y, context, True)


class SplineCoupling(_Coupling):
    """Neural-spline coupling (Durkan et al. 2019): x_b goes through a rational-quadratic spline with
    identity tails whose K widths, K heights and K - 1 derivatives per feature come from net(x_a)."""

    def __init__(self, features, hidden=64, parity=0, context_features=0, bins=8, tail_bound=3.0):
        super().__init__(features, parity, False)
        self.bins, self.tail_bound = int(bins), float(tail_bound)
        self.net = _mlp(self.n_a + int(context_features), self.n_b * (3 * self.bins - 1), hidden)

    def _run(self, x, context, inverse):
        xa, xb = self._halves(x)
        p = self.net(self._cond(xa, context)).view(x.shape[0], self.n_b, 3 * self.bins - 1)
        k = self.bins
        yb, lad = ops.rq_spline(xb, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], inverse=inverse, tail_bound=self.tail_bound)
        return self._join(xa, yb), lad.sum(-1)

    def forward(self, x, context=None):
        return self._run(x, context, False)

    def inverse(self, y, context=None):
        return self._run(y, context, True)


class Reverse(nn.Module):
    """Reverses the feature (channel) order: a permutation, log-determinant 0."""

    def forward(self, x, context=None):
        return x.flip(1), _zeros_logdet(x)

    def inverse(self, y, context=None):
        return y.flip(1), _zeros_logdet(y)


class Squeeze(nn.Module):
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 patch becomes 4 channels (volume preserving)."""

    def forward(self, x, context=None):
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"x: Squeeze needs even height and width, got {h}x{w}")
        y = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return y, _zeros_logdet(x)

    def inverse(self, y, context=None):
        n, c4, h, w = y.shape
        c = c4 // 4
        x = y.view(n, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)
        return x, _zeros_logdet(y)


class FlowSequence(nn.Module):
    """Layers applied in order (forward) and in reverse order (inverse), log-determinants summed."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, context=None):
        total = _zeros_logdet(x)
        for layer in self.layers:
            x, ld = layer(x, context)
            total = total + ld
        return x, total

    def inverse(self, y, context=None):
        total = _zeros_logdet(y)
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y, context)
            total = total + ld
        return y, total


# ----------------------------------------------------------------------------------------------
# masked autoregressive networks


class MADE(nn.Module):
    """Masked autoencoder: out[:, i, :] (n_out numbers per input dimension) depends only on x[:, <i]
    (and the context). Hidden unit degrees cycle through 1..D-1; input i has degree i + 1."""

    def __init__(self, features, n_out, hidden=64, layers=2, context_features=0):
        super().__init__()
        self.features, self.n_out, self.context_features = int(features), int(n_out), int(context_features)
        d = self.features
        deg_in = torch.arange(1, d + 1)
        degs = [deg_in]
        sizes = [d]
        for _ in range(layers):
            degs.append(torch.arange(hidden) % max(1, d - 1) + 1)
            sizes.append(hidden)
        self.hidden_degrees = degs[1:]
        self._order = None
        self._ordered_key, self._ordered_cache = None, None
        self.linears = nn.ModuleList()
        for i in range(layers):
            lin = nn.Linear(sizes[i], sizes[i + 1])
            self.register_buffer(f"mask{i}", (degs[i + 1][:, None] >= degs[i][None, :]).float())
            self.linears.append(lin)
        self.out = nn.Linear(sizes[-1], d * self.n_out)
        deg_out = deg_in.repeat_interleave(self.n_out)
        self.register_buffer("mask_out", (deg_out[:, None] > degs[-1][None, :]).float())
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.ctx = nn.ModuleList(nn.Linear(self.context_features, s, bias=False) for s in sizes[1:]) \
            if self.context_features else None

    def degree_order(self):
        """Per hidden layer (perm, bounds): perm sorts its units by degree (stable), and units of degree k
        are perm[bounds[k]:bounds[k + 1]]. A relabelling of the units (the function is unchanged) under
        which each degree is one contiguous slice."""
        if self._order is None:
            self._order = []
            for deg in self.hidden_degrees:
                perm = torch.argsort(deg, stable=True)
                # degrees 0 .. D-1 (a unit of degree >= D, as with D = 1, feeds no output: never computed)
                counts = torch.bincount(deg, minlength=self.features)[: self.features]
                bounds = [0] + torch.cumsum(counts, 0).tolist()
                self._order.append((perm, bounds))
        return self._order

    def ordered(self, context=None):
        """(hidden, out_weight, out_bias, bounds): the masked weights with every hidden layer's units
        relabelled by degree (degree_order), as ops.made_affine_inverse and reference.flows.made_inverse
        take them; hidden = [(W, b, context terms or None)]. The weights are cached (outside autograd)
        until a parameter changes."""
        # storage, version, dtype and device of every tensor: .to() / .double() swap a parameter's data in
        # place without bumping its version
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*self.parameters(), *self.buffers()))
        if self._ordered_key != key:
            ws = self.masked_weights()
            layers, prev = [], None
            for layer, (w, b) in enumerate(ws[:-1]):
                perm, _ = self.degree_order()[layer]
                w = w[perm] if prev is None else w[perm][:, prev]
                layers.append((w.contiguous(), b[perm].contiguous()))
                prev = perm
            w_out, b_out = ws[-1]
            bounds = torch.tensor([bd for _, bd in self.degree_order()], dtype=torch.int64)
            self._ordered_cache = (layers, w_out[:, prev].contiguous(), b_out.contiguous(), bounds)
            self._ordered_key = key if not torch.is_grad_enabled() else None  # graphs are not cached
        layers, w_out, b_out, bounds = self._ordered_cache
        ctx_terms = self.context_terms(context)
        hidden = [(w, b, ctx_terms[i][:, self.degree_order()[i][0]] if ctx_terms is not None else None)
                  for i, (w, b) in enumerate(layers)]
        return hidden, w_out, b_out, bounds

    def masked_weights(self):
        """[(W * mask, b)] for every layer, output layer last (computed once per sampling call)."""
        ws = [(lin.weight * getattr(self, f"mask{i}"), lin.bias) for i, lin in enumerate(self.linears)]
        return ws + [(self.out.weight * self.mask_out, self.out.bias)]

    def hidden(self, x, context, ws, ctx_terms=None):
        h = x
        for i, (w, b) in enumerate(ws[:-1]):
            h = F.linear(h, w, b)
            if ctx_terms is not None:
                h = h + ctx_terms[i]
            h = F.relu(h)
        return h

    def context_terms(self, context):
        if self.ctx is None or context is None:
            return None
        return [c(context) for c in self.ctx]

    def forward(self, x, context=None):
        ws = self.masked_weights()
        h = self.hidden(x, context, ws, self.context_terms(context))
        w, b = ws[-1]
        return F.linear(h, w, b).view(x.shape[0], self.features, self.n_out)


class _Autoregressive(nn.Module):
    """A MADE-conditioned elementwise transform: forward (density) in one pass; inverse by D passes,
    dimension i filled by pass i from the dimensions before it."""

    n_params = 2

    def __init__(self, features, hidden=64, context_features=0):
        super().__init__()
        self.features = int(features)
        self.made = MADE(features, self.n_params, hidden, context_features=context_features)

    def _transform(self, x, p, inverse):  # -> (y, per-element or per-row logdet)
        raise NotImplementedError(f"{type(self).__name__}: abstract base method, implemented by each concrete subclass")

    def forward(self, x, context=None):
        return self._transform(x, self.made(x, context), False)

    def inverse(self, y, context=None):
        """D sequential steps, each hidden unit computed once, when its inputs are final
        (reference.flows.made_inverse): one MADE forward pass of work, not D of them."""
        hidden, w_out, b_out, bounds = self.made.ordered(context)

        def step(i, yi, p):
            return self._transform(yi, p, True)[0][:, 0]

        x, params = ref_flows.made_inverse(y, hidden, w_out, b_out, bounds, self.n_params, step)
        return x, self._transform(y, params, True)[1]


class MAFLayer(_Autoregressive):
    """Masked autoregressive flow layer (Papamakarios et al. 2017): z = (x - mu(x_<i)) * exp(-alpha(x_<i))
    (density direction, one MADE pass), x = z * exp(alpha) + mu (sampling, D passes); alpha is bounded
    by scale_bound * tanh. The elementwise map and its log-determinant row sum run in ge.ops.affine_coupling."""

    n_params = 2

    def __init__(self, features, hidden=64, context_features=0, scale_bound=3.0):
        super().__init__(features, hidden, context_features)
        self.scale_bound = float(scale_bound)

    def inverse(self, y, context=None):
        """Sampling: ops.made_affine_inverse (one C++ pass over the rows on the CPU; the degree-ordered
        reference elsewhere and when gradients are needed)."""
        hidden, w_out, b_out, bounds = self.made.ordered(context)
        return ops.made_affine_inverse(y, hidden, w_out, b_out, bounds, scale_bound=self.scale_bound)

    def _transform(self, x, p, inverse):
        mu = p[..., 0]
        alpha = self.scale_bound * torch.tanh(p[..., 1] / self.scale_bound)
        # density direction: (x - mu) * exp(-alpha) is affine_coupling's inverse
        return ops.affine_coupling(x, mu, alpha, inverse=not inverse)


class AutoregressiveSpline(_Autoregressive):
    """Autoregressive neural spline layer: x_i through a rational-quadratic spline whose parameters
    come from a MADE over x_<i (forward one pass, inverse D passes)."""

    def __init__(self, features, hidden=64, context_features=0, bins=8, tail_bound=3.0):
        self.bins, self.tail_bound = int(bins), float(tail_bound)
        self.n_params = 3 * self.bins - 1
        super().__init__(features, hidden, context_features)

    def _transform(self, x, p, inverse):
        k = self.bins
        y, lad = ops.rq_spline(x, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], inverse=inverse, tail_bound=self.tail_bound)
        return y, lad.sum(-1)


def standard_normal_logp(z):
    """Sum over all but the first dim of the standard normal log-density."""
    # the event size from the shape, not from z[0]: an empty batch has no first row
    return -0.5 * (z * z).flatten(1).sum(-1) - 0.5 * math.log(2 * math.pi) * math.prod(z.shape[1:])
