"""Variational autoencoder: a Gaussian encoder q(z | x), a standard-normal prior and a Bernoulli or
Gaussian decoder p(x | z), trained on the ELBO with the fused reparameterisation + KL op.

    vae = ge.models.VAE(encoder, decoder, latent_dim=8, likelihood="bernoulli").fit(x, epochs=50)
    vae.log_prob(x)                  # (N,) ELBO: a lower bound on log p(x), nats
    vae.log_prob_iwae(x, k=64)       # (N,) the importance-weighted bound (tighter, -> log p(x) as k grows)
    vae.sample(16); vae.reconstruct(x); mu, logvar = vae.encode(x)

Shapes: x (N, *event). encoder(x) -> (N, 2 * latent_dim) ([mu, logvar] concatenated on the last
dim) or a (mu, logvar) pair of (N, latent_dim). decoder(z) for z (N, latent_dim) -> for
likelihood="bernoulli", logits (N, *event); for "gaussian", the mean (N, *event) (with one learned
observation log-variance, `obs_logvar`) or a (mean, logvar) pair.

The constructor's `likelihood` is the decoder's distribution, kept as `decoder_likelihood`; the
class attribute `likelihood` of the model protocol stays "lower_bound" (log_prob is the ELBO).
ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || N(0, I)): one Monte Carlo sample of z per call (k
with k=), the KL analytic (genengine.ops.reparameterize_kl draws z and the KL in one pass).
IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x) (Burda et al. 2016): >= the
ELBO in expectation, increasing in k.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .._checks import positive_int
from .._progress import Progress
from .base import FitRecord, GenerativeModel

__all__ = ["VAE"]

_LOG_2PI = math.log(2 * math.pi)


def _sum_event(t):
    return t.reshape(t.shape[0], -1).sum(1)


class VAE(FitRecord, GenerativeModel):
    """A VAE over encoder/decoder networks (see the module docstring for shapes and bounds)."""

    _fit_record = {"history_": []}  # plain-Python fit results (FitRecord)

    likelihood = "lower_bound"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, likelihood: str = "bernoulli"):
        super().__init__()
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if not callable(net):
                raise TypeError(f"{name}: expected a torch.nn.Module (or callable), got {type(net).__name__}")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = positive_int("latent_dim", latent_dim)
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood: expected 'bernoulli' or 'gaussian' (the decoder's distribution), got {likelihood!r}")
        self.decoder_likelihood = likelihood
        if likelihood == "gaussian":
            self.obs_logvar = nn.Parameter(torch.zeros(()))
        self.history_: list[float] = []

    # ---- the networks ------------------------------------------------------------------------
    def encode(self, x):
        """(mu, logvar), each (N, latent_dim): the parameters of q(z | x)."""
        out = self.encoder(x)
        if isinstance(out, (tuple, list)):
            mu, logvar = out
        else:
            if out.dim() != 2 or out.shape[-1] != 2 * self.latent_dim:
                raise ValueError(f"encoder: expected an output of shape (N, {2 * self.latent_dim}) ([mu, logvar] for "
                                 f"latent_dim={self.latent_dim}) or a (mu, logvar) pair, got {tuple(out.shape)}")
            mu, logvar = out.chunk(2, dim=-1)
        if mu.shape != logvar.shape or mu.shape[-1] != self.latent_dim:
            raise ValueError(f"encoder: expected mu and logvar of shape (N, {self.latent_dim}), got {tuple(mu.shape)} "
                             f"and {tuple(logvar.shape)}")
        return mu.contiguous(), logvar.contiguous()

    def _decode(self, z):
        """The decoder's distribution parameters: logits, or (mean, logvar)."""
        out = self.decoder(z)
        if self.decoder_likelihood == "bernoulli":
            if isinstance(out, (tuple, list)):
                raise ValueError("decoder: expected logits (one tensor) for likelihood='bernoulli', got a tuple")
            return out
        if isinstance(out, (tuple, list)):
            return out[0], out[1]
        return out, self.obs_logvar.expand_as(out)

    def _log_lik(self, x, params):
        """log p(x | z) per sample (N,)."""
        got = params[0].shape if isinstance(params, tuple) else params.shape
        if got != x.shape:
            raise ValueError(f"decoder: expected an output of x's shape {tuple(x.shape)}, got {tuple(got)}")
        if self.decoder_likelihood == "bernoulli":
            return -_sum_event(F.binary_cross_entropy_with_logits(params, x, reduction="none"))
        mean, logvar = params
        return -0.5 * _sum_event(_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))

    def _check_x(self, x, name="x"):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor (N, *event), got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"{name}: expected a batch (N, *event) with at least 2 dims, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        if self.decoder_likelihood == "bernoulli" and (bool((x < 0).any()) or bool((x > 1).any())):
            raise ValueError(f"{name}: expected values in [0, 1] for a Bernoulli decoder")
        return x.to(self.device)

    # ---- bounds ------------------------------------------------------------------------------
    def elbo(self, x, *, k: int = 1, generator: torch.Generator | None = None):
        """The ELBO per sample (N,), averaged over k draws of z (differentiable: the training loss is -elbo)."""
        mu, logvar = self.encode(x)
        k = positive_int("k", k)
        total = 0.0
        for _ in range(k):
            z, kl = ops.reparameterize_kl(mu, logvar, generator=generator)
            total = total + self._log_lik(x, self._decode(z)) - kl.to(mu.dtype)
        return total / k

    def log_prob(self, x, *, k: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ELBO (a lower bound on log p(x)) per sample (N,), in nats; k samples of z."""
        x = self._check_x(x)
        with torch.no_grad():
            return self.elbo(x, k=k, generator=generator)

    def log_prob_iwae(self, x, k: int = 64, *, generator: torch.Generator | None = None):
        """The importance-weighted bound IWAE_k (N,): log (1/k) sum_i p(x, z_i) / q(z_i | x)."""
        x = self._check_x(x)
        k = positive_int("k", k)
        with torch.no_grad():
            mu, logvar = self.encode(x)
            ws = []
            for _ in range(k):
                z = ops.reparameterize(mu, logvar, generator=generator)
                eps2 = (z - mu) ** 2 * torch.exp(-logvar)
                log_q = -0.5 * (_LOG_2PI + logvar + eps2).sum(1)
                log_p = -0.5 * (_LOG_2PI + z * z).sum(1)
                ws.append(self._log_lik(x, self._decode(z)) + log_p - log_q)
            w = torch.stack(ws)  # (k, N)
            return torch.logsumexp(w, 0) - math.log(k)

    # ---- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None, mean: bool = False) -> torch.Tensor:
        """n draws x ~ p(x | z), z ~ N(0, I) (Philox streams keyed by `generator`); with mean=True
        the decoder's mean instead (probabilities for Bernoulli)."""
        n = positive_int("n", n)
        dev = self.device
        with torch.no_grad():
            z = ops.philox_normal(n * self.latent_dim, *ops.draw_key(generator, dev), device=dev).view(n, self.latent_dim)
            return self._draw(self._decode(z), generator, mean)

    def _draw(self, params, generator, mean):
        dev = self.device
        if self.decoder_likelihood == "bernoulli":
            p = torch.sigmoid(params)
            if mean:
                return p
            u = ops.philox_uniform(p.numel(), *ops.draw_key(generator, dev), device=dev).view(p.shape)
            return (u < p).to(p.dtype)
        m, logvar = params
        if mean:
            return m
        eps = ops.philox_normal(m.numel(), *ops.draw_key(generator, dev), device=dev).view(m.shape).to(m.dtype)
        return m + torch.exp(0.5 * logvar) * eps

    def reconstruct(self, x, *, sample_z: bool = False, generator: torch.Generator | None = None):
        """The decoder's mean at z = E[z | x] (or a draw of z with sample_z=True)."""
        x = self._check_x(x)
        with torch.no_grad():
            mu, logvar = self.encode(x)
            z = ops.reparameterize(mu, logvar, generator=generator) if sample_z else mu
            return self._draw(self._decode(z), generator, True)

    # ---- training ----------------------------------------------------------------------------
    def fit(self, data, *, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, generator: torch.Generator | None = None,
            progress: bool = True, callback=None):
        """Adam on -ELBO over `data` (a tensor (N, *event), shuffled into batches each epoch, or an
        iterable of batches); returns self. history_ gets the mean ELBO of each epoch;
        callback(model, {"epoch", "elbo"}) after each epoch (True stops)."""
        epochs = positive_int("epochs", epochs)
        batch_size = positive_int("batch_size", batch_size)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if isinstance(data, torch.Tensor):
            data = self._check_x(data, "data")
            if data.shape[0] == 0:  # nothing to train on: an error, not an epoch with an ELBO of 0
                raise ValueError(f"data: expected at least 1 sample, got shape {tuple(data.shape)}")
            total = epochs * math.ceil(data.shape[0] / batch_size)
        else:
            if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
                raise TypeError(f"data: expected a tensor (N, *event) or an iterable of batches, got {type(data).__name__}")
            total = None
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        was_training = self.training
        self.train()
        bar = Progress(total, "VAE fit", progress)
        try:
            for epoch in range(epochs):
                if isinstance(data, torch.Tensor):
                    perm = torch.randperm(data.shape[0], generator=generator).to(data.device)
                    batches = (data[perm[i:i + batch_size]] for i in range(0, data.shape[0], batch_size))
                else:
                    batches = (self._check_batch(b) for b in data)
                s, c = 0.0, 0
                for xb in batches:
                    elbo = self.elbo(xb, generator=generator)
                    loss = -elbo.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    s += float(elbo.detach().sum())
                    c += xb.shape[0]
                    bar.update(1, elbo=f"{s / c:.3f}")
                if c == 0:
                    raise ValueError(f"data: epoch {epoch} yielded no batches (an iterator is used up after one pass; "
                                     "pass a DataLoader, a list or a tensor)")
                self.history_.append(s / c)
                if callback is not None and callback(self, {"epoch": epoch, "elbo": self.history_[-1]}):
                    break
        finally:
            bar.close()
            self.train(was_training)
        return self

    def _check_batch(self, b):
        xb = self._check_x(b[0] if isinstance(b, (tuple, list)) else b, "data batch")
        if xb.shape[0] == 0:  # its ELBO's mean would be NaN
            raise ValueError(f"data batch: expected at least 1 sample, got shape {tuple(xb.shape)}")
        return xb
