"""Plain-PyTorch specification of the Gibbs-sampling ops (genengine.ops.gibbs), float64-capable.

Every random value is read from the Philox stream at the position the kernels use (the layouts are
documented in genengine/ops/gibbs.py), so the reference given the same key draws the same chain as
the kernels, up to draws whose uniform lies within rounding of its probability.

Shapes: v [batch, n_visible], W [n_visible, n_hidden], h [batch, n_hidden]; spins int8 [L, H, W];
Boltzmann-machine states x [batch, n] of 0/1; Langevin x of any shape.
"""

from __future__ import annotations

import math

import torch

from . import rng as _rng

_U32 = 0xFFFFFFFF


# ---- the Philox stream at arbitrary positions --------------------------------------------------


def words_at(pos, seed, offset):
    """uint32 words (in int64) at stream positions `pos` (int64 tensor) of stream (seed, offset)."""
    pos = pos.to(torch.int64)
    block = pos >> 2
    c0, c1 = block & _U32, block >> 32
    c2 = torch.full_like(block, offset & _U32)
    c3 = torch.full_like(block, (offset >> 32) & _U32)
    w = torch.stack(_rng.philox4x32_10(c0, c1, c2, c3, seed & _U32, (seed >> 32) & _U32), dim=-1)
    return torch.gather(w, -1, (pos & 3).unsqueeze(-1)).squeeze(-1)


def uniform_at(pos, seed, offset):
    """float64 uniforms (2 * (w >> 9) + 1) / 2^24 at stream positions `pos`."""
    return _rng.uniform_from_words(words_at(pos, seed, offset))


def normal_at(pos, seed, offset):
    """float64 standard normals at stream positions `pos`: Box-Muller on the word pair (2q, 2q + 1)
    with q = pos // 2, cosine branch for even positions, sine for odd (exact log/sin/cos)."""
    pos = pos.to(torch.int64)
    even = pos & ~1
    u0 = _rng.uniform_from_words(words_at(even, seed, offset))
    u1 = _rng.uniform_from_words(words_at(even + 1, seed, offset))
    r = torch.sqrt(-2.0 * torch.log(u0))
    theta = 2.0 * math.pi * u1
    return torch.where((pos & 1) == 0, r * torch.cos(theta), r * torch.sin(theta))


def _grid(base, rows, cols, device):
    r = torch.arange(rows, dtype=torch.int64, device=device).unsqueeze(1)
    c = torch.arange(cols, dtype=torch.int64, device=device).unsqueeze(0)
    return base + r * cols + c


# ---- RBM -----------------------------------------------------------------------------------------


def _beta_rows(beta, batch, dtype, device):
    if isinstance(beta, torch.Tensor):
        return beta.to(dtype=dtype, device=device).reshape(batch, 1)
    return torch.full((batch, 1), float(beta), dtype=dtype, device=device)


def rbm_half(x, Wm, bias, *, beta, gaussian, seed, offset, base, clamp_mask=None, clamp_values=None):
    """(sample, prob): one half-step with pre-activation x @ Wm + bias; uniforms / normals at
    base + row * cols + col. For Gaussian units prob is the mean and the sample mean + N(0, 1/beta)."""
    rows, cols = x.shape[0], Wm.shape[1]
    ct = x.dtype
    pre = x @ Wm + bias.to(ct)
    b = _beta_rows(beta, rows, ct, x.device)
    pos = _grid(base, rows, cols, x.device)
    if gaussian:
        prob = pre
        sample = pre + normal_at(pos, seed, offset).to(ct) / torch.sqrt(b)
    else:
        prob = torch.sigmoid(b * pre)
        sample = (uniform_at(pos, seed, offset).to(ct) < prob).to(ct)
    if clamp_mask is not None:
        sample = torch.where(clamp_mask, clamp_values.to(ct), sample)
        prob = torch.where(clamp_mask, clamp_values.to(ct), prob)
    return sample, prob


def rbm_stream_bases(step, batch, n_visible, n_hidden):
    """(hidden base, visible base) of sweep `step` (0-based) in one call's stream."""
    h = step * batch * (n_visible + n_hidden)
    return h, h + batch * n_hidden


def rbm_gibbs(v, W, vbias, hbias, *, steps, seed, offset, beta=1.0, gaussian=False, clamp_mask=None,
              clamp_values=None):
    """(v, h, v_prob, h_prob, h_prob_first) after `steps` sweeps v -> h -> v; h is the hidden sample
    of the last sweep, *_prob the probabilities (Gaussian means) of the last sweep's draws and
    h_prob_first p(h = 1 | v_0) of the first sweep."""
    ct = v.dtype
    batch, nv = v.shape
    nh = W.shape[1]
    W = W.to(ct)
    if clamp_mask is not None:
        clamp_mask = clamp_mask.expand(batch, nv)
        clamp_values = clamp_values.to(ct).expand(batch, nv)
        v = torch.where(clamp_mask, clamp_values, v)
    first = h = ph = pv = None
    for s in range(steps):
        bh, bv = rbm_stream_bases(s, batch, nv, nh)
        h, ph = rbm_half(v, W, hbias, beta=beta, gaussian=False, seed=seed, offset=offset, base=bh)
        if first is None:
            first = ph
        v, pv = rbm_half(h, W.t(), vbias, beta=beta, gaussian=gaussian, seed=seed, offset=offset, base=bv,
                         clamp_mask=clamp_mask, clamp_values=clamp_values)
    return v, h, pv, ph, first


def rbm_hidden_prob(v, W, hbias, beta=1.0):
    """p(h = 1 | v) = sigmoid(beta * (v @ W + hbias))."""
    return torch.sigmoid(_beta_rows(beta, v.shape[0], v.dtype, v.device) * (v @ W.to(v.dtype) + hbias.to(v.dtype)))


def rbm_cd_stats(v0, vk, W, hbias):
    """(grad_W, grad_vbias, grad_hbias): positive minus negative phase, each a batch mean, with the
    hidden probabilities (not samples) of data v0 and chain states vk."""
    p0 = rbm_hidden_prob(v0, W, hbias)
    pk = rbm_hidden_prob(vk, W, hbias)
    gw = v0.t() @ p0 / v0.shape[0] - vk.t() @ pk / vk.shape[0]
    return gw, v0.mean(0) - vk.mean(0), p0.mean(0) - pk.mean(0)


def rbm_free_energy(v, W, vbias, hbias, *, gaussian=False, beta=1.0):
    """F(v) with p(v) = exp(-beta F(v)) / Z: Bernoulli visible F = -v.b - sum softplus-like terms,
    i.e. -beta F(v) = beta v.b + sum_j log(1 + exp(beta (v W + c)_j)); Gaussian visible adds
    |v - b|^2 / 2 in place of -v.b."""
    ct = v.dtype
    pre = v @ W.to(ct) + hbias.to(ct)
    hid = torch.nn.functional.softplus(beta * pre).sum(-1) / beta
    if gaussian:
        return 0.5 * ((v - vbias.to(ct)) ** 2).sum(-1) - hid
    return -(v @ vbias.to(ct)) - hid


def rbm_energy(v, h, W, vbias, hbias, *, gaussian=False):
    """E(v, h) = -v W h - c.h - b.v (Bernoulli) or + |v - b|^2 / 2 - v W h - c.h (Gaussian)."""
    ct = v.dtype
    inter = ((v @ W.to(ct)) * h).sum(-1) + h @ hbias.to(ct)
    if gaussian:
        return 0.5 * ((v - vbias.to(ct)) ** 2).sum(-1) - inter
    return -(v @ vbias.to(ct)) - inter


# ---- Ising ----------------------------------------------------------------------------------------


def ising_probs(beta, J, h):
    """P(spin = +1 | neighbour sum s) for s = -4, -2, 0, 2, 4: sigmoid(2 beta (J s + h)), float64."""
    out = []
    for s in (-4, -2, 0, 2, 4):
        a = 2.0 * beta * (J * s + h)
        out.append(1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a)))
    return out


def ising_thresholds(beta, J, h):
    """int thresholds T[k]: the site becomes +1 iff (word >> 9) < T[k], k = (s + 4) / 2; exactly
    u < p for the uniform u = (2 (w >> 9) + 1) / 2^24 and p = ising_probs(...)[k] in float64."""
    return [max(0, min(1 << 23, math.ceil((p * 2.0**24 - 1.0) / 2.0))) for p in ising_probs(beta, J, h)]


def ising_sweep(spins, beta, *, J=1.0, h=0.0, sweeps=1, seed, offset):
    """spins int8 [L, H, W] after `sweeps` checkerboard heat-bath sweeps (colour 0 = (i + j) even
    first); the word of site (l, t, c, i, j) is at (((t L + l) 2 + c) H + i) (W / 2) + j // 2."""
    s = spins.to(torch.int64).clone()
    L, H, W = s.shape
    if s.numel() == 0:  # no lattice: nothing to sweep (and reshape(0, -1) below would be ambiguous)
        return s.to(torch.int8)
    betas = beta.tolist() if isinstance(beta, torch.Tensor) else [float(beta)] * L
    thr = torch.tensor([ising_thresholds(b, J, h) for b in betas], dtype=torch.int64, device=s.device)  # [L, 5]
    i = torch.arange(H, device=s.device).view(1, H, 1)
    j = torch.arange(W, device=s.device).view(1, 1, W)
    lat = torch.arange(L, device=s.device).view(L, 1, 1)
    colour = (i + j) % 2
    for t in range(sweeps):
        for c in (0, 1):
            nb = s.roll(1, 1) + s.roll(-1, 1) + s.roll(1, 2) + s.roll(-1, 2)
            pos = (((t * L + lat) * 2 + c) * H + i) * (W // 2) + j // 2
            m = words_at(pos, seed, offset) >> 9
            tk = torch.gather(thr, 1, ((nb + 4) // 2).reshape(L, -1)).reshape(L, H, W)
            new = torch.where(m < tk, 1, -1)
            s = torch.where(colour == c, new, s)
    return s.to(torch.int8)


def ising_energy(spins, J=1.0, h=0.0):
    """Energy per spin of each lattice, -J sum_<ij> s_i s_j / N - h sum_i s_i / N, float64 [L]."""
    s = spins.to(torch.float64)
    bonds = (s * s.roll(1, -1)).sum((-2, -1)) + (s * s.roll(1, -2)).sum((-2, -1))
    n = s.shape[-1] * s.shape[-2]
    return (-J * bonds - h * s.sum((-2, -1))) / n


# ---- sparse Boltzmann machine --------------------------------------------------------------------


def bm_gibbs(x, coupling, bias, colors, *, beta=1.0, sweeps=1, seed, offset):
    """x [batch, n] of 0/1 after `sweeps` block-Gibbs sweeps over the colour classes (classes in
    increasing colour order); the uniform of (sweep t, chain b, node i) is at (t batch + b) n + i.
    coupling: dense [n, n] symmetric with a zero diagonal."""
    ct = torch.float64
    x = x.to(ct).clone()
    batch, n = x.shape
    Wd = coupling.to(ct)
    b = bias.to(ct)
    pos0 = torch.arange(batch, dtype=torch.int64, device=x.device).unsqueeze(1) * n + torch.arange(n, device=x.device)
    for t in range(sweeps):
        u = uniform_at(pos0 + t * batch * n, seed, offset)
        for c in torch.unique(colors).tolist():
            sel = colors == c
            p = torch.sigmoid(beta * (x @ Wd[:, sel] + b[sel]))
            x[:, sel] = (u[:, sel] < p).to(ct)
    return x


def bm_energy(x, coupling, bias):
    """E(x) = -x W x / 2 - b.x for each row of x."""
    x = x.to(torch.float64)
    return -0.5 * ((x @ coupling.to(torch.float64)) * x).sum(-1) - x @ bias.to(torch.float64)


# ---- Langevin -------------------------------------------------------------------------------------


def langevin_step(x, grad, step_size, *, noise_scale=1.0, clamp=None, seed, offset):
    """x - step / 2 * grad + sqrt(step) * noise_scale * z, z the normals at flat positions 0..n-1."""
    z = normal_at(torch.arange(x.numel(), device=x.device), seed, offset).reshape(x.shape).to(x.dtype)
    out = x - 0.5 * step_size * grad + math.sqrt(step_size) * noise_scale * z
    if clamp is not None:
        out = out.clamp(clamp[0], clamp[1])
    return out
