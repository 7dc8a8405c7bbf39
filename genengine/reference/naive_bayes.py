"""Plain-PyTorch specification of the naive-Bayes log-likelihoods and fit statistics (float64).

Shapes: x (N, F); C classes; theta, var, feature_log_prob (C, F); log_prior (C,). Every function
returns float64 and is written from the textbook formula, independently of the fused kernels:
    Gaussian:    log p(x, c) = log pi_c - 1/2 sum_f [log(2 pi var_cf) + (x_f - theta_cf)^2 / var_cf]
    Bernoulli:   log p(x, c) = log pi_c + sum_f [b_f log p_cf + (1 - b_f) log(1 - p_cf)], b = x > binarize
    Multinomial: log p(x, c) = log pi_c + sum_f x_f log p_cf   (scikit-learn's joint log-likelihood: the
                 multinomial coefficient, the same for every class, is left out; log_coefficient adds it)
"""

from __future__ import annotations

import math

import torch

D = torch.float64


def gaussian_jll(x, theta, var, log_prior):
    x, theta, var = x.to(D), theta.to(D), var.to(D)
    quad = ((x[:, None, :] - theta[None]) ** 2 / var[None]).sum(-1)
    return log_prior.to(D) - 0.5 * torch.log(2 * math.pi * var).sum(1) - 0.5 * quad


def bernoulli_jll(x, feature_log_prob, log_prior, binarize=0.0):
    x = x.to(D)
    b = (x > binarize).to(D) if binarize is not None else x
    lp = feature_log_prob.to(D)
    l1p = torch.log(-torch.expm1(lp))  # log(1 - p)
    return log_prior.to(D) + b @ lp.T + (1 - b) @ l1p.T


def multinomial_jll(x, feature_log_prob, log_prior):
    return log_prior.to(D) + x.to(D) @ feature_log_prob.to(D).T


def log_coefficient(x):
    """log of the multinomial coefficient (sum x)! / prod x_f! per row."""
    x = x.to(D)
    return torch.lgamma(x.sum(1) + 1) - torch.lgamma(x + 1).sum(1)


def normalize(jll, output="joint"):
    """(out, lse): lse = log sum_c exp(jll); out = jll, jll - lse (log posterior) or its exp."""
    lse = torch.logsumexp(jll, 1)
    if output == "joint":
        return jll, lse
    lp = jll - lse[:, None]
    return (lp if output == "log_posterior" else lp.exp()), lse


def class_stats(x, y, n_classes, weight=None, center=None):
    """(count (C,), out (C, F)): sums of w and w x per class, or of w (x - center[y])^2 when center is given."""
    x = x.to(D)
    w = torch.ones(x.shape[0], dtype=D) if weight is None else weight.to(D)
    count = torch.zeros(n_classes, dtype=D).index_add_(0, y, w)
    v = x if center is None else (x - center.to(D)[y]) ** 2
    return count, torch.zeros(n_classes, x.shape[1], dtype=D).index_add_(0, y, w[:, None] * v)
