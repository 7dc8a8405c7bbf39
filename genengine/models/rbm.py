"""Restricted Boltzmann machines, deep belief networks and sparse pairwise Boltzmann machines, on the
fused Gibbs kernels of genengine.ops.gibbs.

    rbm = ge.models.RBM(784, 500).fit(x, epochs=10, k=1)           # x (N, 784) in [0, 1]; CD-k or persistent=True
    v = rbm.sample(64, steps=1000)                                 # (64, 784) of 0/1
    rbm.free_energy(x); rbm.log_partition()                        # exact (<= 20 units in a layer) or AIS
    rbm.log_prob(x)                                                # (N,) nats: exact, or AIS (rbm.log_partition_info)
    dbn = ge.models.DBN([784, 500, 200]).fit(x)                    # greedy layer-wise RBMs
    bm = ge.models.BoltzmannMachine(16, edges=[(0, 1), ...]).fit(x)  # sparse pairwise, colour-class Gibbs

Shapes: data (N, n_visible); W (n_visible, n_hidden); vbias (n_visible,); hbias (n_hidden,). Energies:
E(v, h) = -v W h - vbias.v - hbias.h (Bernoulli visible) or |v - vbias|^2 / 2 - v W h - hbias.h
(Gaussian visible, unit variance); free energy F(v) = -log sum_h exp(-E(v, h)); p(v) = exp(-F(v)) / Z.
"""

from __future__ import annotations

import math
from collections import namedtuple

import torch
from torch import nn

from .. import ops
from .._progress import Progress
from ..reference import gibbs as ref
from .base import GenerativeModel, check_data

__all__ = ["RBM", "DBN", "BoltzmannMachine", "LogPartition"]

LogPartition = namedtuple("LogPartition", ["value", "stderr", "method"])
_ENUM_MAX = 20


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v!r}")
    return v


def _check_callback(callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")


def _check_binary(x, name):
    """Bernoulli units' states: a probability mass is only defined on {0, 1} (a value in between is not a state)."""
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name}: expected every value to be 0 or 1 (binary units)")


def _states(n, dtype, device, start=0, stop=None):
    """Rows start..stop-1 of all 2^n binary vectors (row r is r's bits, most significant first)."""
    stop = 2**n if stop is None else stop
    r = torch.arange(start, stop, device=device).unsqueeze(1)
    return ((r >> torch.arange(n - 1, -1, -1, device=device)) & 1).to(dtype)


def _logsumexp_chunks(fn, n, device, chunk=1 << 16):
    """log sum over all 2^n binary states s of exp(fn(s)), in chunks (fn: [m, n] -> [m], float64)."""
    parts = []
    for s0 in range(0, 2**n, chunk):
        parts.append(torch.logsumexp(fn(_states(n, torch.float64, device, s0, min(2**n, s0 + chunk))), 0))
    return torch.logsumexp(torch.stack(parts), 0)


class RBM(GenerativeModel):
    """A restricted Boltzmann machine with Bernoulli hidden units and Bernoulli or unit-variance
    Gaussian visible units, trained by CD-k or persistent CD on the fused Gibbs kernels."""

    likelihood = "estimate"  # exact when a layer has <= 20 units, else annealed importance sampling

    def __init__(self, n_visible, n_hidden, *, visible="bernoulli", init_scale=0.01, compute_dtype=None,
                 backend="auto", seed=0):
        super().__init__()
        _positive_int("n_visible", n_visible)
        _positive_int("n_hidden", n_hidden)
        if visible not in ("bernoulli", "gaussian"):
            raise ValueError(f"visible: expected 'bernoulli' or 'gaussian', got {visible!r}")
        if compute_dtype not in (None, "bfloat16", "float32"):
            raise ValueError(f"compute_dtype: expected None, 'float32' or 'bfloat16' (a string, so it can be saved), "
                             f"got {compute_dtype!r}")
        self.n_visible, self.n_hidden, self.visible = n_visible, n_hidden, visible
        self.compute_dtype = getattr(torch, compute_dtype) if compute_dtype else None
        self.backend = backend
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden, generator=g) * init_scale, requires_grad=False)
        self.vbias = nn.Parameter(torch.zeros(n_visible), requires_grad=False)
        self.hbias = nn.Parameter(torch.zeros(n_hidden), requires_grad=False)
        self._chain = None
        self._logz = None
        self.log_partition_info = None

    @property
    def gaussian(self):
        return self.visible == "gaussian"

    # ---- conditionals and energies -------------------------------------------------------------
    def hidden_prob(self, v):
        """p(h = 1 | v), (N, n_hidden)."""
        return torch.sigmoid(torch.addmm(self.hbias, v.to(self.W.dtype), self.W))

    def visible_mean(self, h):
        """E[v | h]: sigmoid(W h + vbias) (Bernoulli) or W h + vbias (Gaussian), (N, n_visible)."""
        pre = torch.addmm(self.vbias, h.to(self.W.dtype), self.W.t())
        return pre if self.gaussian else torch.sigmoid(pre)

    def free_energy(self, v):
        """F(v) per row, float64 (p(v) = exp(-F(v)) / Z)."""
        v = check_data(v, "v", ndim=2, features=self.n_visible)
        return ref.rbm_free_energy(v.to(torch.float64), self.W.double(), self.vbias.double(), self.hbias.double(),
                                   gaussian=self.gaussian)

    # ---- the partition function -------------------------------------------------------------------
    def log_partition(self, method="auto", *, n_chains=200, n_betas=2000, generator=None):
        """LogPartition(value, stderr, method): log Z exactly by enumerating the smaller layer when it has
        <= 20 units (hidden always; visible only for Bernoulli units), else by annealed importance sampling
        (Salakhutdinov & Murray 2008) from the W = 0 model, with stderr the delta-method standard error of
        log mean(w) over the n_chains independent runs (the estimate is biased low by about stderr^2 / 2
        on average; more chains or temperatures shrink both)."""
        if method not in ("auto", "exact", "ais"):
            raise ValueError(f"method: expected 'auto', 'exact' or 'ais', got {method!r}")
        small = min(self.n_hidden, self.n_visible if not self.gaussian else self.n_hidden)
        if method == "exact" or (method == "auto" and small <= _ENUM_MAX):
            if small > _ENUM_MAX:
                raise ValueError(f"method='exact' needs a layer of <= {_ENUM_MAX} units to enumerate "
                                 f"(n_visible={self.n_visible}, n_hidden={self.n_hidden})")
            return LogPartition(float(self._exact_log_partition()), 0.0, "exact")
        return self._ais(n_chains, n_betas, generator)

    def _exact_log_partition(self):
        W, b, c = self.W.double(), self.vbias.double(), self.hbias.double()
        dev = W.device
        if self.gaussian:
            # sum over h of exp(c.h) * integral of exp(-|v - b|^2 / 2 + v.W h) dv
            def fh(h):
                m = b + h @ W.t()
                return h @ c + 0.5 * (m * m).sum(1) - 0.5 * (b * b).sum()
            return _logsumexp_chunks(fh, self.n_hidden, dev) + 0.5 * self.n_visible * math.log(2 * math.pi)
        if self.n_hidden <= self.n_visible or self.n_visible > _ENUM_MAX:
            return _logsumexp_chunks(lambda h: h @ c + torch.nn.functional.softplus(b + h @ W.t()).sum(1), self.n_hidden, dev)
        return _logsumexp_chunks(lambda v: -ref.rbm_free_energy(v, W, b, c), self.n_visible, dev)

    def _ais(self, n_chains, n_betas, generator):
        _positive_int("n_chains", n_chains)
        if isinstance(n_betas, bool) or not isinstance(n_betas, int) or n_betas < 2:
            raise ValueError(f"n_betas: expected an int >= 2, got {n_betas!r}")
        W, b, c = self.W.detach(), self.vbias.detach(), self.hbias.detach()
        dev = W.device
        betas = torch.linspace(0.0, 1.0, n_betas).tolist()
        g = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
        # the base model (W = 0, no hidden bias) is sampled exactly; its log Z is known in closed form
        if self.gaussian:
            v = b + torch.randn(n_chains, self.n_visible, generator=g).to(dev)
            logz_a = 0.5 * self.n_visible * math.log(2 * math.pi) + self.n_hidden * math.log(2.0)
        else:
            v = (torch.rand(n_chains, self.n_visible, generator=g).to(dev) < torch.sigmoid(b)).to(W.dtype)
            logz_a = float(torch.nn.functional.softplus(b.double()).sum()) + self.n_hidden * math.log(2.0)
        logw = torch.zeros(n_chains, dtype=torch.float64, device=dev)
        sp = torch.nn.functional.softplus
        for k in range(1, n_betas):
            a = torch.addmm(c, v, W).double()
            logw += (sp(betas[k] * a) - sp(betas[k - 1] * a)).sum(1)
            bk = betas[k]
            # one Gibbs sweep of p_k(v, h) ~ exp(-E_v(v) + beta_k (v W h + c.h))
            if self.gaussian:
                h = (torch.rand(n_chains, self.n_hidden, generator=g).to(dev) < torch.sigmoid(bk * a.to(W.dtype))).to(W.dtype)
                v = b + bk * (h @ W.t()) + torch.randn(n_chains, self.n_visible, generator=g).to(dev)
            else:
                # rbm_gibbs scales (pre-activation + bias) by beta; the visible bias is not tempered, so pass b / beta
                v, _ = ops.rbm_gibbs(v, W, b / bk, c, generator=g, beta=bk, backend=self.backend)
        m = torch.logsumexp(logw, 0) - math.log(n_chains)
        w = torch.exp(logw - logw.max())
        rel = float(w.std() / w.mean()) / math.sqrt(n_chains) if n_chains > 1 else float("inf")
        return LogPartition(float(m) + logz_a, rel, "ais")

    # ---- the protocol -----------------------------------------------------------------------------
    def log_prob(self, x, *, n_chains=200, n_betas=2000, generator=None):
        """log p(x) = -F(x) - log Z per row, in nats. log Z is exact when a layer has <= 20 units, else an
        AIS estimate with the given n_chains / n_betas (cached until the next fit; its LogPartition, with
        the estimate's standard error, is in self.log_partition_info)."""
        x = check_data(x, "x", ndim=2, features=self.n_visible)
        if not self.gaussian:
            _check_binary(x, "x")
        if self._logz is None:
            self.log_partition_info = self.log_partition(n_chains=n_chains, n_betas=n_betas, generator=generator)
            self._logz = self.log_partition_info.value
        return -self.free_energy(x) - self._logz

    def sample(self, n, *, generator=None, steps=1000, init=None, clamp_mask=None, clamp_values=None, beta=1.0,
               return_mean=False):
        """n samples after `steps` block-Gibbs sweeps from `init` (n, n_visible) or from noise; clamped
        visible units (clamp_mask / clamp_values) keep their values: conditional sampling / inpainting.
        return_mean: the mean of p(v | h) of the last sweep instead of the sample."""
        _positive_int("n", n)
        dev = self.W.device
        if init is None:
            g = generator if generator is not None else None
            if self.gaussian:
                init = self.vbias.detach() + torch.randn(n, self.n_visible, generator=g).to(dev)
            else:
                init = (torch.rand(n, self.n_visible, generator=g) < 0.5).to(self.W.dtype).to(dev)
        else:
            init = check_data(init, "init", ndim=2, features=self.n_visible).to(dev, self.W.dtype)
            if init.shape[0] != n:
                raise ValueError(f"init: expected {n} rows (n), got {init.shape[0]}")
        out = ops.rbm_gibbs(init, self.W, self.vbias, self.hbias, steps=steps, generator=generator, beta=beta,
                            visible=self.visible, clamp_mask=clamp_mask, clamp_values=clamp_values,
                            compute_dtype=self.compute_dtype, backend=self.backend, return_probs=return_mean)
        return out[2] if return_mean else out[0]

    def fit(self, data, *, epochs=10, batch_size=100, lr=0.05, k=1, persistent=False, n_chains=None, momentum=0.5,
            weight_decay=0.0, init_visible_bias=True, progress=True, callback=None, generator=None):
        """Trains by CD-k (persistent=False) or persistent CD (the negative chains, n_chains of them, carry
        over between batches and epochs) with SGD + momentum on the CD statistics of genengine.ops.rbm_cd_stats.
        callback(model, {"epoch", "recon_error", "free_energy_gap"}) after each epoch; returning True stops."""
        x = check_data(data, "data", ndim=2, features=self.n_visible, dtype=torch.float32)
        if not self.gaussian and bool(((x < 0) | (x > 1)).any()):
            raise ValueError("data: Bernoulli visible units expect values in [0, 1]")
        for name, v in (("epochs", epochs), ("batch_size", batch_size), ("k", k)):
            _positive_int(name, v)
        _check_callback(callback)
        dev = self.W.device
        x = x.to(dev)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if init_visible_bias and not self.gaussian:
            p = x.mean(0).clamp(1e-3, 1 - 1e-3)
            self.vbias.data.copy_(torch.log(p / (1 - p)))
        elif init_visible_bias:
            self.vbias.data.copy_(x.mean(0))
        n = x.shape[0]
        bs = min(batch_size, n)
        if persistent:
            nc = n_chains or bs
            if self._chain is None or self._chain.shape[0] != nc:
                self._chain = x[torch.randint(0, n, (nc,), generator=g).to(dev)].clone()
        mw, mv, mh = torch.zeros_like(self.W), torch.zeros_like(self.vbias), torch.zeros_like(self.hbias)
        bar = Progress(epochs, "rbm fit", enabled=progress)
        self._logz = None
        try:
            for epoch in range(epochs):
                perm = torch.randperm(n, generator=g).to(dev)
                err, gap, batches = 0.0, 0.0, 0
                for s0 in range(0, n, bs):
                    vb = x[perm[s0:s0 + bs]]
                    st = ops.rbm_cd_stats(vb, self.W, self.vbias, self.hbias, k=k,
                                          chain=self._chain if persistent else None, generator=g, visible=self.visible,
                                          compute_dtype=self.compute_dtype, backend=self.backend)
                    if persistent:
                        self._chain = st.chain
                    mw.mul_(momentum).add_(st.grad_W.to(mw.dtype) - weight_decay * self.W)
                    mv.mul_(momentum).add_(st.grad_vbias.to(mv.dtype))
                    mh.mul_(momentum).add_(st.grad_hbias.to(mh.dtype))
                    self.W.data.add_(mw, alpha=lr)
                    self.vbias.data.add_(mv, alpha=lr)
                    self.hbias.data.add_(mh, alpha=lr)
                    recon = self.visible_mean(st.h_prob_data)
                    err += float(((recon - vb) ** 2).mean())
                    batches += 1
                err /= batches
                self._logz = None  # the parameters moved
                chain = self._chain if persistent else st.chain
                gap = float(self.free_energy(chain).mean() - self.free_energy(vb).mean())
                bar.update(1, recon=f"{err:.4f}")
                if callback is not None and callback(self, {"epoch": epoch, "recon_error": err, "free_energy_gap": gap}):
                    break
        finally:
            bar.close()
        self._logz = None
        return self

    def get_extra_state(self):
        return {"chain": self._chain.detach().cpu() if self._chain is not None else None}

    def set_extra_state(self, state):
        c = state.get("chain") if isinstance(state, dict) else None
        self._chain = c.to(self.W.device) if c is not None else None
        self._logz = None


class DBN(GenerativeModel):
    """A deep belief network: a stack of RBMs trained greedily layer by layer (each on the hidden
    probabilities of the one below); sampling runs Gibbs in the top RBM, then one downward pass
    through the directed layers, v_{l-1} ~ p(v_{l-1} | h_l)."""

    likelihood = None

    def __init__(self, layer_sizes, *, visible="bernoulli", init_scale=0.01, compute_dtype=None, backend="auto", seed=0):
        super().__init__()
        sizes = list(layer_sizes)
        if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError(f"layer_sizes: expected at least two positive ints, got {layer_sizes!r}")
        self.layer_sizes = sizes
        self.rbms = nn.ModuleList([
            RBM(sizes[i], sizes[i + 1], visible=visible if i == 0 else "bernoulli", init_scale=init_scale,
                compute_dtype=compute_dtype, backend=backend, seed=seed + i)
            for i in range(len(sizes) - 1)])

    def log_prob(self, x):
        raise NotImplementedError("DBN has no tractable likelihood: the directed layers' marginal sums over every "
                                  "hidden configuration; use each RBM's log_prob for its own layer")

    def fit(self, data, *, epochs=10, batch_size=100, lr=0.05, k=1, persistent=False, progress=True, callback=None,
            generator=None, **kwargs):
        """Greedy layer-wise training; callback(model, {"layer", "epoch", ...}) after each epoch of each layer."""
        x = check_data(data, "data", ndim=2, features=self.layer_sizes[0], dtype=torch.float32)
        _check_callback(callback)
        stop = [False]
        for i, rbm in enumerate(self.rbms):
            def cb(_m, info, i=i):
                if callback is not None and callback(self, {"layer": i, **info}):
                    stop[0] = True
                    return True
                return False
            rbm.fit(x, epochs=epochs, batch_size=batch_size, lr=lr, k=k, persistent=persistent, progress=progress,
                    callback=cb, generator=generator, **kwargs)
            if stop[0]:
                break
            with torch.no_grad():
                x = rbm.hidden_prob(x.to(rbm.W.device))
        return self

    def sample(self, n, *, generator=None, steps=1000, return_mean=False):
        top = self.rbms[-1]
        h = top.sample(n, generator=generator, steps=steps)
        for rbm in reversed(self.rbms[:-1]):
            mean = rbm.visible_mean(h)
            if rbm is self.rbms[0] and return_mean:
                return mean
            if rbm.gaussian:
                h = mean + torch.randn(mean.shape, generator=generator).to(mean.device)
            else:
                h = (torch.rand(mean.shape, generator=generator).to(mean.device) < mean).to(mean.dtype)
        return h


class BoltzmannMachine(GenerativeModel):
    """A pairwise Boltzmann machine on {0, 1}^n with p(x) ~ exp(x W x / 2 + b.x), W symmetric with a zero
    diagonal and nonzero only on the given edges (all pairs if edges is None). Sampled by block Gibbs over
    a colouring of the graph (genengine.ops.boltzmann_gibbs); trained by persistent contrastive divergence.
    log_prob is exact by enumeration (n <= 20)."""

    likelihood = "exact"

    def __init__(self, n, *, edges=None, backend="auto", seed=0):
        super().__init__()
        _positive_int("n", n)
        mask = torch.zeros(n, n)
        if edges is None:
            mask = 1 - torch.eye(n)
        else:
            e = torch.as_tensor(edges, dtype=torch.int64).reshape(-1, 2)
            if e.numel() and (bool((e < 0).any()) or bool((e >= n).any()) or bool((e[:, 0] == e[:, 1]).any())):
                raise ValueError(f"edges: expected pairs of distinct node indices in [0, {n})")
            mask[e[:, 0], e[:, 1]] = 1
            mask[e[:, 1], e[:, 0]] = 1
        self.n, self.backend = n, backend
        self.register_buffer("mask", mask)
        self.register_buffer("colors", ops.graph_coloring(mask))
        self.W = nn.Parameter(torch.zeros(n, n), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n), requires_grad=False)
        self._chain = None

    def coupling(self):
        """The couplings that define the model: W on the edges, 0 elsewhere (entries of W off the edge set,
        e.g. from load_state_dict, are ignored by every method alike, so energy, log_prob and sample agree)."""
        c = self.W * self.mask
        if not torch.equal(c, c.t()):
            raise ValueError("W: expected a symmetric matrix on the edges")
        return c

    def energy(self, x):
        """E(x) = -x W x / 2 - b.x per row (float64), with W the masked couplings."""
        x = check_data(x, "x", ndim=2, features=self.n)
        return ref.bm_energy(x.to(self.W.device), self.coupling(), self.bias)

    def log_prob(self, x):
        x = check_data(x, "x", ndim=2, features=self.n)
        _check_binary(x, "x")
        if self.n > _ENUM_MAX:
            raise NotImplementedError(f"BoltzmannMachine.log_prob enumerates all 2^n states; n = {self.n} > {_ENUM_MAX}")
        W, b = self.coupling().double(), self.bias.double()
        logz = _logsumexp_chunks(lambda s: -ref.bm_energy(s, W, b), self.n, W.device)
        return -ref.bm_energy(x.to(W.device), W, b) - logz

    def sample(self, n, *, generator=None, sweeps=200, init=None):
        """n samples after `sweeps` colour-class Gibbs sweeps from `init` (n, self.n) of 0/1, or from uniform
        noise; like RBM.sample, an init with other than n rows is an error (n is never silently ignored)."""
        _positive_int("n", n)
        dev = self.W.device
        if init is None:
            x = (torch.rand(n, self.n, generator=generator) < 0.5).float().to(dev)
        else:
            x = check_data(init, "init", ndim=2, features=self.n, dtype=torch.float32).to(dev)
            if x.shape[0] != n:
                raise ValueError(f"init: expected {n} rows (n), got {x.shape[0]}")
            _check_binary(x, "init")
        return ops.boltzmann_gibbs(x, self.coupling(), self.bias, colors=self.colors, sweeps=sweeps,
                                   generator=generator, backend=self.backend)

    def fit(self, data, *, epochs=50, batch_size=100, lr=0.05, sweeps=1, n_chains=200, progress=True, callback=None,
            generator=None):
        """Persistent contrastive divergence: W += lr (<x x^T>_data - <x x^T>_chains) on the edges,
        b += lr (<x>_data - <x>_chains); callback(model, {"epoch"}) after each epoch."""
        x = check_data(data, "data", ndim=2, features=self.n, dtype=torch.float32)
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("data: expected values 0 or 1")
        _check_callback(callback)
        dev = self.W.device
        x = x.to(dev)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self._chain is None or self._chain.shape[0] != n_chains:
            self._chain = (torch.rand(n_chains, self.n, generator=g) < 0.5).float().to(dev)
        self._chain = self._chain.to(dev)  # a reloaded chain sits where the model was when it was loaded
        bar = Progress(epochs, "boltzmann fit", enabled=progress)
        try:
            for epoch in range(epochs):
                perm = torch.randperm(x.shape[0], generator=g).to(dev)
                for s0 in range(0, x.shape[0], batch_size):
                    xb = x[perm[s0:s0 + batch_size]]
                    self._chain = ops.boltzmann_gibbs(self._chain, self.coupling(), self.bias, colors=self.colors,
                                                      sweeps=sweeps, generator=g, backend=self.backend)
                    pos = xb.t() @ xb / xb.shape[0]
                    neg = self._chain.t() @ self._chain / self._chain.shape[0]
                    self.W.data.add_((pos - neg) * self.mask, alpha=lr)
                    self.bias.data.add_(xb.mean(0) - self._chain.mean(0), alpha=lr)
                bar.update(1)
                if callback is not None and callback(self, {"epoch": epoch}):
                    break
        finally:
            bar.close()
        return self

    # the persistent chains are fitted state: a reloaded model resumes fit() where it stopped (as RBM does)
    def get_extra_state(self):
        return {"chain": self._chain.detach().cpu() if self._chain is not None else None}

    def set_extra_state(self, state):
        chain = state.get("chain") if isinstance(state, dict) else None
        self._chain = chain.to(self.W.device) if chain is not None else None
