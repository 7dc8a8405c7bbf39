"""Plain-PyTorch specification of the Gaussian-mixture E-step and M-step (float64), transcribed from
the formulas scikit-learn's GaussianMixture uses (its attribute conventions included).

Shapes: x (N, D); K components; weights (K,); means (K, D); precisions_cholesky by covariance type:
"full" (K, D, D) upper-triangular U_k with U_k U_k^T = precision_k, "tied" (D, D), "diag" (K, D),
"spherical" (K,) (the square roots of the precisions). Covariances: "full" (K, D, D), "tied" (D, D),
"diag" (K, D), "spherical" (K,).

    log N(x | mu_k, Sigma_k) = -1/2 (D log 2 pi + |U_k^T (x - mu_k)|^2) + log det U_k
    log_norm(x) = log sum_k w_k N(x | mu_k, Sigma_k);  resp[n, k] = w_k N(x_n | k) / exp(log_norm)
"""

from __future__ import annotations

import math

import torch

D = torch.float64
TYPES = ("full", "tied", "diag", "spherical")


def log_gaussian_prob(x, means, prec_chol, cov_type):
    x, means, pc = x.to(D), means.to(D), prec_chol.to(D)
    n, d = x.shape
    if cov_type == "full":
        log_det = torch.log(torch.diagonal(pc, dim1=-2, dim2=-1)).sum(-1)
        y = torch.einsum("nd,kde->nke", x, pc) - torch.einsum("kd,kde->ke", means, pc)[None]
        m = (y**2).sum(-1)
    elif cov_type == "tied":
        log_det = torch.log(torch.diagonal(pc)).sum()
        y = (x @ pc)[:, None, :] - (means @ pc)[None]
        m = (y**2).sum(-1)
    elif cov_type == "diag":
        log_det = torch.log(pc).sum(1)
        m = ((x[:, None, :] - means[None]) ** 2 * (pc**2)[None]).sum(-1)
    else:
        log_det = d * torch.log(pc)
        m = ((x[:, None, :] - means[None]) ** 2).sum(-1) * (pc**2)[None]
    return -0.5 * (d * math.log(2 * math.pi) + m) + log_det


def e_step(x, weights, means, prec_chol, cov_type):
    """(log_norm (N,), log_resp (N, K))."""
    wlp = log_gaussian_prob(x, means, prec_chol, cov_type) + torch.log(weights.to(D))
    log_norm = torch.logsumexp(wlp, 1)
    return log_norm, wlp - log_norm[:, None]


def sufficient_stats(x, resp, cov_type):
    """(nk (K,), sx (K, D), sxx): sxx is sum r x x^T (K, D, D) for "full", sum r x^2 (K, D) for "diag" and
    "spherical", None for "tied"."""
    x, r = x.to(D), resp.to(D)
    nk, sx = r.sum(0), r.T @ x
    if cov_type == "full":
        sxx = torch.einsum("nk,ni,nj->kij", r, x, x)
    elif cov_type in ("diag", "spherical"):
        sxx = r.T @ (x * x)
    else:
        sxx = None
    return nk, sx, sxx


def m_step(x, resp, reg_covar, cov_type):
    """(weights, means, covariances) as scikit-learn's _estimate_gaussian_parameters (+ weight
    normalisation): two-pass covariances about the new means."""
    x, r = x.to(D), resp.to(D)
    nk = r.sum(0) + 10 * torch.finfo(D).eps
    means = (r.T @ x) / nk[:, None]
    d = x.shape[1]
    if cov_type == "full":
        diff = x[None] - means[:, None, :]
        cov = torch.einsum("kn,kni,knj->kij", r.T, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * torch.eye(d, dtype=D)
    elif cov_type == "tied":
        cov = (x.T @ x - (nk[:, None] * means).T @ means) / nk.sum() + reg_covar * torch.eye(d, dtype=D)
    else:
        var = (r.T @ (x * x)) / nk[:, None] - means**2 + reg_covar
        cov = var if cov_type == "diag" else var.mean(1)
    return nk / nk.sum(), means, cov


def precisions_cholesky(cov, cov_type):
    """U with U U^T = inverse(cov), U upper-triangular ("full", "tied"); 1 / sqrt(cov) otherwise."""
    cov = cov.to(D)
    if cov_type in ("full", "tied"):
        L = torch.linalg.cholesky(cov)
        eye = torch.eye(cov.shape[-1], dtype=D).expand_as(cov)
        return torch.linalg.solve_triangular(L, eye, upper=False).transpose(-1, -2)
    return 1.0 / torch.sqrt(cov)
