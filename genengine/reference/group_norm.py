"""Plain-PyTorch specification of fused GroupNorm + SiLU: y = silu(group_norm(x, G, weight, bias, eps)).

Shapes: x is (N, C, *spatial) with any number (>= 0) of spatial dims; weight and bias are (C,) or
None; the C channels split into G = num_groups consecutive groups of C / G channels, and each
(sample, group) is normalised over its C / G channels and all spatial positions with the biased
variance. mean and rstd = 1 / sqrt(var + eps) are (N, G).

Written from the definition, independently of the fused kernels (which recompute the normalised
value from the saved statistics in backward), and run in float64 unless `dtype` says otherwise, so
that autograd through it is the reference gradient.
"""

from __future__ import annotations

import torch


def group_norm_stats(x, num_groups, eps=1e-5, dtype=torch.float64):
    """(mean, rstd), each (N, G), in `dtype`."""
    xg = x.to(dtype).reshape(x.shape[0], num_groups, -1)
    mean = xg.mean(-1)
    var = ((xg - mean.unsqueeze(-1)) ** 2).mean(-1)
    return mean, torch.rsqrt(var + eps)


def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, dtype=torch.float64):
    """silu(group_norm(x)) computed in `dtype` (float64 by default) and returned in `dtype`."""
    n, c = x.shape[0], x.shape[1]
    mean, rstd = group_norm_stats(x, num_groups, eps, dtype)
    xg = x.to(dtype).reshape(n, num_groups, -1)
    xhat = ((xg - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)).reshape(x.shape)
    bshape = (1, c) + (1,) * (x.dim() - 2)
    z = xhat
    if weight is not None:
        z = z * weight.to(dtype).reshape(bshape)
    if bias is not None:
        z = z + bias.to(dtype).reshape(bshape)
    return z * torch.sigmoid(z)
