"""Generative adversarial network: a generator G(z) and a discriminator (critic) D(x) trained in
alternation, with the non-saturating, hinge or Wasserstein loss, the WGAN-GP gradient penalty and R1
regularisation.

    gan = ge.models.GAN(G, D, latent_dim=8, loss="wasserstein", gradient_penalty=10.0, n_critic=5)
    gan.fit(x, epochs=100)
    samples = gan.sample(1000)                      # (1000, *event)
    gan.log_prob(x)                                 # NotImplementedError: the density is implicit

Shapes: G maps z (N, latent_dim) to samples (N, *event); D maps samples (N, *event) to one score
(logit) per sample, (N,) or (N, 1). z ~ N(0, I) is drawn from Philox streams keyed by `generator`.
Losses, with r = D(x) on data and f = D(G(z)) on samples:
  non_saturating  D: softplus(-r) + softplus(f)        G: softplus(-f)   (Goodfellow et al. 2014)
  hinge           D: relu(1 - r) + relu(1 + f)         G: -f             (Lim & Ye 2017)
  wasserstein     D: f - r                             G: -f             (Arjovsky et al. 2017)
  gradient_penalty = lam: + lam (|grad D(xh)| - 1)^2, xh = e x + (1 - e) G(z), e ~ U(0, 1) (Gulrajani et al. 2017)
  r1 = gamma: + gamma / 2 |grad D(x)|^2 on data (Mescheder et al. 2018)
Networks are constructor arguments: save() stores the other arguments and the weights, and
GAN.load(path, generator=G, discriminator=D) takes the networks again.
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

__all__ = ["GAN"]

_LOSSES = ("non_saturating", "hinge", "wasserstein")


def _nonneg(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return float(v)


class GAN(FitRecord, GenerativeModel):
    """A GAN over generator/discriminator networks (see the module docstring)."""

    _fit_record = {"history_": []}  # plain-Python fit results (FitRecord)

    likelihood = None

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, loss: str = "non_saturating", *,
                 gradient_penalty: float = 0.0, r1: float = 0.0, n_critic: int = 1):
        super().__init__()
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"{name}: expected a torch.nn.Module, got {type(net).__name__}")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = positive_int("latent_dim", latent_dim)
        if loss not in _LOSSES:
            raise ValueError(f"loss: expected one of {_LOSSES}, got {loss!r}")
        self.loss = loss
        self.gradient_penalty = _nonneg("gradient_penalty", gradient_penalty)
        self.r1 = _nonneg("r1", r1)
        self.n_critic = positive_int("n_critic", n_critic)
        self.history_: list[dict] = []

    def log_prob(self, x):
        raise NotImplementedError("GAN.log_prob: a GAN's density is implicit (the generator maps noise to samples "
                                  "through a network, with no tractable likelihood); compare samples with a distance "
                                  "to the data instead (e.g. an energy distance or MMD)")

    def _noise(self, n, generator):
        dev = self.device
        return ops.philox_normal(n * self.latent_dim, *ops.draw_key(generator, dev), device=dev).view(n, self.latent_dim)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples G(z), z ~ N(0, I) from Philox streams keyed by `generator` (same seed, same samples)."""
        n = positive_int("n", n)
        with torch.no_grad():
            return self.generator(self._noise(n, generator))

    def _score(self, x):
        s = self.discriminator(x)
        if s.dim() == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.dim() != 1 or s.shape[0] != x.shape[0]:
            raise ValueError(f"discriminator: expected one score per sample, shape ({x.shape[0]},) or ({x.shape[0]}, 1), "
                             f"got {tuple(s.shape)}")
        return s

    def discriminator_loss(self, real, fake, generator=None):
        """The discriminator's (critic's) loss on a batch of data and of generated samples (a scalar)."""
        fake = fake.detach()
        need_r1 = self.r1 > 0
        if need_r1:
            real = real.detach().requires_grad_(True)
        r, f = self._score(real), self._score(fake)
        if self.loss == "non_saturating":
            loss = F.softplus(-r).mean() + F.softplus(f).mean()
        elif self.loss == "hinge":
            loss = F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            loss = f.mean() - r.mean()
        if need_r1:
            (g,) = torch.autograd.grad(r.sum(), real, create_graph=True)
            loss = loss + 0.5 * self.r1 * g.reshape(g.shape[0], -1).pow(2).sum(1).mean()
        if self.gradient_penalty > 0:
            n = real.shape[0]
            dev = real.device
            e = ops.philox_uniform(n, *ops.draw_key(generator, dev), device=dev).to(real.dtype)
            e = e.view(n, *([1] * (real.dim() - 1)))
            xh = (e * real.detach() + (1 - e) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(self._score(xh).sum(), xh, create_graph=True)
            norm = g.reshape(n, -1).norm(dim=1)
            loss = loss + self.gradient_penalty * ((norm - 1) ** 2).mean()
        return loss

    def generator_loss(self, fake):
        """The generator's loss on a batch of generated samples (a scalar)."""
        f = self._score(fake)
        return F.softplus(-f).mean() if self.loss == "non_saturating" else -f.mean()

    def fit(self, data, *, epochs: int = 10, batch_size: int = 128, lr: float = 2e-4, betas=(0.5, 0.999),
            ema: float | None = None, generator: torch.Generator | None = None, progress: bool = True,
            callback=None):
        """Alternating Adam updates: per batch of data, n_critic discriminator steps, then one
        generator step; returns self. data: a tensor (N, *event) (shuffled into batches each epoch)
        or an iterable of batches. history_ gets the mean losses of each epoch;
        callback(model, {"epoch", "d_loss", "g_loss"}) after each epoch (True stops).
        ema: a decay in [0, 1) (e.g. 0.99): keep an exponential moving average of the generator's
        parameters over the generator steps, and leave the generator holding that average when fit
        returns (Karras et al. 2018): the late oscillations of adversarial training average out.
        The callback sees the raw weights."""
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 <= ema < 1):
            raise ValueError(f"ema: expected None or a decay in [0, 1), got {ema!r}")
        epochs = positive_int("epochs", epochs)
        batch_size = positive_int("batch_size", batch_size)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if isinstance(data, torch.Tensor):
            data = self._check(data, "data")
            if data.shape[0] == 0:  # nothing to train on: an error, not an epoch with losses of 0
                raise ValueError(f"data: expected at least 1 sample, got shape {tuple(data.shape)}")
            total = epochs * math.ceil(data.shape[0] / batch_size)
        else:
            if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
                raise TypeError(f"data: expected a tensor (N, *event) or an iterable of batches, got {type(data).__name__}")
            total = None
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=tuple(betas))
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        averaged = [p.detach().clone() for p in g_params] if ema is not None else None
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=tuple(betas))
        was_training = self.training
        self.train()
        bar = Progress(total, "GAN fit", progress)
        try:
            for epoch in range(epochs):
                if isinstance(data, torch.Tensor):
                    perm = torch.randperm(data.shape[0], generator=generator).to(data.device)
                    batches = (data[perm[i:i + batch_size]] for i in range(0, data.shape[0], batch_size))
                else:
                    batches = (self._check_batch(b) for b in data)
                ds, gs, c = 0.0, 0.0, 0
                for real in batches:
                    n = real.shape[0]
                    for _ in range(self.n_critic):
                        fake = self.generator(self._noise(n, generator))
                        d_loss = self.discriminator_loss(real, fake, generator)
                        opt_d.zero_grad(set_to_none=True)
                        d_loss.backward()
                        opt_d.step()
                    fake = self.generator(self._noise(n, generator))
                    g_loss = self.generator_loss(fake)
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    if averaged is not None:
                        with torch.no_grad():
                            torch._foreach_lerp_(averaged, [p.detach() for p in g_params], 1.0 - ema)
                    ds, gs, c = ds + float(d_loss.detach()), gs + float(g_loss.detach()), c + 1
                    bar.update(1, d=f"{ds / c:.3f}", g=f"{gs / c:.3f}")
                if c == 0:
                    raise ValueError(f"data: epoch {epoch} yielded no batches (an iterator is used up after one pass; "
                                     "pass a DataLoader, a list or a tensor)")
                self.history_.append({"epoch": epoch, "d_loss": ds / c, "g_loss": gs / c})
                if callback is not None and callback(self, dict(self.history_[-1])):
                    break
        finally:
            bar.close()
            self.train(was_training)
            if averaged is not None:
                with torch.no_grad():
                    for p, a in zip(g_params, averaged):
                        p.copy_(a)
        return self

    def _check_batch(self, b):
        xb = self._check(b[0] if isinstance(b, (tuple, list)) else b, "data batch")
        if xb.shape[0] == 0:  # its losses' means would be NaN
            raise ValueError(f"data batch: expected at least 1 sample, got shape {tuple(xb.shape)}")
        return xb

    def _check(self, x, name):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor (N, *event), got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"{name}: expected a batch (N, *event) with at least 2 dims, got shape {tuple(x.shape)}")
        x = x.float() if not x.is_floating_point() else x
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        return x.to(self.device)
