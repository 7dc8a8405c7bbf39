"""Plain-PyTorch specification of the latent-variable ops: the reparameterisation trick and the
analytic KL divergence of a diagonal Gaussian from the standard normal prior.

Shapes: mu and logvar (B, *event) of one shape; eps the same shape (standard normals).
  reparameterize(mu, logvar, eps) = mu + exp(logvar / 2) * eps                        (B, *event)
  gaussian_kl(mu, logvar) = KL(N(mu, diag exp(logvar)) || N(0, I))
                          = 1/2 sum_event (mu^2 + exp(logvar) - 1 - logvar)           (B,)
  noise(shape, seed, offset): the eps the kernels draw, element i (row-major) = normal i of the
      Philox stream (seed, offset) (genengine.reference.rng).
Computed in float64 unless `dtype` says otherwise (autograd through these is the reference gradient).
"""

from __future__ import annotations

import math

import torch

from . import rng


def noise(shape, seed, offset, device="cpu", dtype=torch.float32):
    shape = torch.Size(shape)
    return rng.philox_stream("normal", shape.numel(), seed, offset, device=device, dtype=dtype).view(shape)


def reparameterize(mu, logvar, eps, dtype=torch.float64):
    return mu.to(dtype) + torch.exp(0.5 * logvar.to(dtype)) * eps.to(dtype)


def gaussian_kl(mu, logvar, dtype=torch.float64):
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    terms = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar)
    # the event size is spelled out: reshape(B, -1) is ambiguous when B = 0
    return terms.reshape(terms.shape[0], math.prod(terms.shape[1:])).sum(1)
