"""Plain-PyTorch specification of the flow transforms: the rational-quadratic spline (Durkan et al.
2019, "Neural Spline Flows") with identity tails, and the affine coupling transform.

rq_spline shapes: x (*batch); widths, heights (*batch, K); derivatives (*batch, K - 1) (interior
knots; the two boundary derivatives are 1, so the spline joins the identity tails smoothly) or
(*batch, K + 1) (every knot, the boundary ones through the same min + softplus). Returns
(y, logabsdet), both (*batch): y = g(x) inside [-B, B] and y = x outside (logabsdet 0 there).

Parameterisation (per element; B = tail_bound):
    w = min_bin_width + (1 - min_bin_width * K) * softmax(widths)            (sums to 1)
    knots x_0 = -B, x_j = -B + 2B * (w_0 + ... + w_{j-1}) for 0 < j < K, x_K = B (exactly)
    heights likewise give y_0..y_K;  d_j = min_derivative + softplus(derivatives) at the knots
    bin k: x_k <= x < x_{k+1} (k counts the interior knots <= x);  t = (x - x_k) / (2B w_k)
    s = h_k / w_k (the bin's slope; bin sizes 2B w_k, 2B h_k: see _knots)
    y = y_k + (y_{k+1} - y_k) (s t^2 + d_k t (1 - t)) / (s + (d_k + d_{k+1} - 2 s) t (1 - t))
    logabsdet = log(s^2 (d_{k+1} t^2 + 2 s t (1 - t) + d_k (1 - t)^2)) - 2 log(denominator)
inverse: x from y by the root of the quadratic in t written as 2c / (-b - sqrt(b^2 - 4ac)) (no
cancellation), polished by one Newton step on the forward map; logabsdet = -logabsdet(x).

Written directly from the paper's formulas with gathers and masks (the specification, not a fast
path); run in float64 unless `dtype` says otherwise, so autograd through it is the reference gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _knots(unnorm, k, minimum, bound):
    """(knot positions (..., K+1), bin sizes (..., K)) on [-bound, bound].

    The sizes are 2B * w directly rather than differences of neighbouring knots: equal in exact
    arithmetic (and the gradients to the unnormalised sizes are the same, the softmax removing the
    one direction in which they differ), but a narrow bin's size keeps its full relative precision
    in float32 instead of inheriting the knots' absolute rounding error."""
    p = torch.softmax(unnorm, dim=-1)
    w = minimum + (1 - minimum * k) * p
    inner = -bound + 2 * bound * torch.cumsum(w, dim=-1)[..., : k - 1]
    edge = torch.full_like(p[..., :1], bound)  # from p, not inner: inner has no column when K = 1
    knots = torch.cat([-edge, inner, edge], dim=-1)
    return knots, 2 * bound * w


def _derivs(unnorm, k, min_derivative):
    d = min_derivative + F.softplus(unnorm)
    if unnorm.shape[-1] == k - 1:
        one = d.new_ones(d.shape[:-1] + (1,))  # not ones_like(d[..., :1]): d has no column when K = 1
        d = torch.cat([one, d, one], dim=-1)
    return d


def _take(t, idx):
    return torch.gather(t, -1, idx.unsqueeze(-1)).squeeze(-1)


def rq_spline(x, widths, heights, derivatives, *, inverse=False, tail_bound=3.0, min_bin_width=1e-3,
              min_bin_height=1e-3, min_derivative=1e-3, dtype=torch.float64):
    """(y, logabsdet) computed in `dtype` (float64 by default) and returned in it."""
    x, widths, heights, derivatives = (t.to(dtype) for t in (x, widths, heights, derivatives))
    k = widths.shape[-1]
    b = float(tail_bound)
    inside = (x >= -b) & (x <= b)
    xc = x.clamp(-b, b)
    cw, bw = _knots(widths, k, min_bin_width, b)
    ch, bh = _knots(heights, k, min_bin_height, b)
    d = _derivs(derivatives, k, min_derivative)
    # bin index: the number of interior knots at or below the point
    knots = ch if inverse else cw
    idx = (xc.unsqueeze(-1) >= knots[..., 1:k]).sum(-1)
    xk, wk, yk, hk = _take(cw, idx), _take(bw, idx), _take(ch, idx), _take(bh, idx)
    dk, dk1 = _take(d, idx), _take(d, idx + 1)
    s = hk / wk
    if not inverse:
        t = ((xc - xk) / wk).clamp(0, 1)
        tt = t * (1 - t)
        den = s + (dk + dk1 - 2 * s) * tt
        y = yk + hk * (s * t * t + dk * tt) / den
        dnum = s * s * (dk1 * t * t + 2 * s * tt + dk * (1 - t) ** 2)
        lad = torch.log(dnum) - 2 * torch.log(den)
    else:
        dy = xc - yk
        c2 = dk + dk1 - 2 * s
        a = dy * c2 + hk * (s - dk)
        bq = hk * dk - dy * c2
        c = -s * dy
        disc = (bq * bq - 4 * a * c).clamp_min(0)
        t = (2 * c / (-bq - torch.sqrt(disc))).clamp(0, 1)
        # one Newton step on the forward map: a no-op in float64, it restores float32's accuracy
        # where the quadratic's two roots are close (the kernels do the same)
        tt0 = t * (1 - t)
        den0 = s + c2 * tt0
        f = hk * (s * t * t + dk * tt0) / den0 - dy
        dydt = hk * s * (dk1 * t * t + 2 * s * tt0 + dk * (1 - t) ** 2) / (den0 * den0)
        t = (t - f / dydt).clamp(0, 1)
        y = xk + t * wk
        tt = t * (1 - t)
        den = s + c2 * tt
        dnum = s * s * (dk1 * t * t + 2 * s * tt + dk * (1 - t) ** 2)
        lad = 2 * torch.log(den) - torch.log(dnum)
    y = torch.where(inside, y.clamp(-b, b), x)
    lad = torch.where(inside, lad, torch.zeros_like(lad))
    return y, lad


def affine_coupling(x, shift, log_scale, *, inverse=False, dtype=torch.float64):
    """(y, logdet): y = x * exp(log_scale) + shift (inverse: (x - shift) * exp(-log_scale)), elementwise
    over (N, D) (any leading dims), and logdet = log_scale.sum(-1) (inverse: its negative), (N,)."""
    x, shift, log_scale = (t.to(dtype) for t in (x, shift, log_scale))
    if not inverse:
        return x * torch.exp(log_scale) + shift, log_scale.sum(-1)
    return (x - shift) * torch.exp(-log_scale), -log_scale.sum(-1)


def boundary_derivative_logit(min_derivative=1e-3):
    """The unnormalised derivative whose min + softplus is exactly 1 (for K + 1 parameters that
    should match the identity tails)."""
    return math.log(math.expm1(1 - min_derivative))


def made_inverse(y, hidden, out_weight, out_bias, bounds, n_params, step):
    """The sampling direction of a MADE-conditioned elementwise layer, one hidden unit computed once.

    y (N, D). hidden: [(W (H_l, in_l), b (H_l,), ctx (N, H_l) or None)] per hidden layer, masked and
    relabelled by degree, so that units of degree k of layer l are rows bounds[l][k] .. bounds[l][k+1]-1
    (bounds: (L, D + 1) cumulative counts). A unit of degree k reads x_<k only (the masks), so step i
    computes the units of degree i of every layer, then dimension i's n_params outputs (rows
    i*n_params.. of out_weight) from the units of degree <= i, then x_i = step(i, y[:, i:i+1],
    params[:, i:i+1]) (N,). Returns (x (N, D), params (N, D, n_params)): one MADE forward pass of work."""
    n, d = y.shape
    m = n_params
    bl = bounds.tolist() if isinstance(bounds, torch.Tensor) else bounds
    x = torch.zeros_like(y)
    hs = [y.new_zeros(n, w.shape[0]) for w, _, _ in hidden]
    params = []
    # with autograd on, each write goes to a fresh copy: the products of earlier steps saved the old one
    fresh = (lambda t: t.clone()) if torch.is_grad_enabled() else (lambda t: t)
    for i in range(d):
        src = x
        for layer, (w, b, c) in enumerate(hidden):
            s, e = bl[layer][i], bl[layer][i + 1]
            if e > s:
                a = F.linear(src, w[s:e], b[s:e])
                if c is not None:
                    a = a + c[:, s:e]
                hs[layer] = fresh(hs[layer])
                hs[layer][:, s:e] = F.relu(a)
            src = hs[layer]
        p = F.linear(src, out_weight[i * m:(i + 1) * m], out_bias[i * m:(i + 1) * m])[:, None, :]
        params.append(p)
        x = fresh(x)
        x[:, i] = step(i, y[:, i:i + 1], p)
    return x, torch.cat(params, dim=1)


def made_affine_inverse(y, hidden, out_weight, out_bias, bounds, scale_bound):
    """made_inverse for the MAF layer: x_i = y_i exp(alpha_i) + mu_i, (mu_i, raw_i) its two outputs,
    alpha = scale_bound tanh(raw / scale_bound). Returns (x, logdet = sum_i alpha_i)."""

    def step(i, yi, p):
        alpha = scale_bound * torch.tanh(p[..., 1] / scale_bound)
        return (yi * torch.exp(alpha) + p[..., 0])[:, 0]

    x, params = made_inverse(y, hidden, out_weight, out_bias, bounds, 2, step)
    return x, (scale_bound * torch.tanh(params[..., 1] / scale_bound)).sum(-1)
