"""Plain-PyTorch specification of fused token sampling (genengine.ops.sample_tokens).

Shapes: logits [B, V] (float32, bfloat16, float16, or float64 here); the per-row parameters are
[B] tensors (already broadcast by the caller): temperature float, top_k int64, top_p float,
log_min_p float (log of min_p, the float32 value the kernels compare against). Returns tokens [B]
int64 and logprobs [B] float32.

The rule, row by row, with z = logits * (1 / temperature) rounded to float32 (float64 for float64
logits) and m = max(z):
  1. temperature <= 0 (or NaN): greedy, the lowest index among the maxima of the logits, log-prob 0;
     also a temperature so small that the row has no finite max z from finite logits (z overflowed
     float32: the t -> 0 limit).
  2. top_k in (0, V): keep z >= the k-th largest z (ties at that value are all kept).
  3. top_p < 1: among the tokens kept so far, with weights e = exp(z - m) and total S_k, keep the
     tokens with z >= t, t the largest value such that the kept weight at or above t reaches
     top_p * S_k (the smallest "nucleus"; ties at t all kept; top_p <= 0 keeps the maxima).
  4. min_p > 0: keep z - m >= log(min_p) (computed in float32), i.e. p >= min_p * p_max.
  5. draw by inverse CDF in index order: token = the first kept index i whose cumulative weight
     exceeds u * S, S the kept total, u a 53-bit uniform from Philox words 2b and 2b + 1 of stream
     (seed, offset) for row b: u = ((w0 << 21 | w1 >> 11) + 0.5) * 2^-53.
Rows with a NaN, a +inf logit, or no finite z (all -inf) have no distribution: token -1, log-prob NaN
(greedy rows: a NaN or all -inf row gives -1 / NaN; +inf is a fine maximum there).

This module sorts (it is the specification, not the fast path); `filtered_probs` returns the exact
float64 distribution the tests compare draws against.
"""

from __future__ import annotations

import torch

from . import rng as R


def _row_uniforms(batch, seed, offset, device):
    """[B] float64 uniforms in (0, 1), 53 bits each: Philox words 2b and 2b + 1 of (seed, offset)."""
    w = R.philox_words_u32(2 * batch, seed, offset, device=device)
    hi, lo = w[0::2], w[1::2]
    return (((hi << 21) | (lo >> 11)).to(torch.float64) + 0.5) * 2.0**-53


def _kept(z, m, top_k, top_p, log_min_p):
    """[B, V] bool mask of the kept tokens (valid rows only are meaningful) and the weights e."""
    b, v = z.shape
    e = torch.exp((z - m[:, None]).to(torch.float64))
    keep = torch.ones_like(z, dtype=torch.bool)
    zs, _ = torch.sort(z, dim=1, descending=True)
    k = top_k.to(torch.int64)
    k_on = (k > 0) & (k < v)
    kth = zs.gather(1, (k.clamp(1, v) - 1)[:, None]).squeeze(1)
    keep &= ~k_on[:, None] | (z >= kth[:, None])
    p = top_p.to(torch.float64)
    p_on = p < 1
    if bool(p_on.any()):
        ek = torch.where(keep, e, torch.zeros_like(e))
        # descending values with their kept weights; the weight at or above each distinct value
        order = torch.argsort(z, dim=1, descending=True)
        zsrt = z.gather(1, order)
        wsrt = ek.gather(1, order)
        csum = torch.cumsum(wsrt, dim=1)
        total = csum[:, -1]
        # weight at or above value zsrt[j] includes every tie of zsrt[j]: the cumsum at its last tie
        last_tie = torch.searchsorted(-zsrt.contiguous(), -zsrt.contiguous(), right=True) - 1
        above = csum.gather(1, last_tie)
        target = p.clamp(min=0.0) * total
        ok = (above >= target[:, None]) & keep.gather(1, order)
        # the largest value reaching the target = the first j (descending order) where ok holds
        idx = torch.where(ok, torch.arange(v, device=z.device)[None, :], v).min(dim=1).values
        idx = torch.where(idx >= v, torch.zeros_like(idx), idx)
        t = zsrt.gather(1, idx[:, None]).squeeze(1)
        # rows whose target rounding leaves no value reaching it keep everything that was kept
        none = ~ok.any(dim=1)
        keep &= ~(p_on & ~none)[:, None] | (z >= t[:, None])
    lmp = log_min_p.to(z.dtype)
    lmp = torch.where(torch.isnan(lmp), torch.full_like(lmp, -torch.inf), lmp.clamp(max=0.0))
    keep &= (z - m[:, None]) >= lmp[:, None]
    return keep, e


def _prepare(logits, temperature):
    ct = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(ct)
    t = temperature.to(ct)
    greedy = ~(t > 0)
    inv_t = 1.0 / torch.where(greedy, torch.ones_like(t), t)
    # a row with t > 0 whose z has no finite maximum though its logits are finite is greedy (the t -> 0
    # limit): 1 / t overflowed, or z did; a +inf logit still leaves a sampled row without a distribution
    tiny = ~greedy & torch.isinf(inv_t)
    inv_t = torch.where(greedy | tiny, torch.ones_like(t), inv_t)
    z = x * inv_t[:, None]
    m = z.max(dim=1).values if z.shape[1] else torch.zeros(z.shape[0], dtype=ct, device=z.device)
    if z.shape[1]:
        xmax = x.max(dim=1).values
        tiny = tiny | (~greedy & torch.isinf(m) & ~torch.isnan(m))
        greedy = greedy | (tiny & (xmax != torch.inf))
    bad = torch.isnan(z).any(dim=1) | (m == torch.inf) | (m == -torch.inf)
    return x, z, m, greedy, bad


def filtered_probs(logits, temperature, top_k, top_p, log_min_p):
    """[B, V] float64: the exact distribution each row is drawn from (one-hot for greedy rows, all
    NaN for rows without a distribution)."""
    x, z, m, greedy, bad = _prepare(logits, temperature)
    keep, e = _kept(z, torch.where(bad, torch.zeros_like(m), m), top_k, top_p, log_min_p)
    w = torch.where(keep, e, torch.zeros_like(e))
    probs = w / w.sum(dim=1, keepdim=True)
    g = _greedy(x)
    onehot = torch.zeros_like(probs).scatter_(1, g.clamp(0, x.shape[1] - 1)[:, None], 1.0)
    probs = torch.where(greedy[:, None], onehot, probs)
    gbad = torch.isnan(x).any(dim=1) | (x.max(dim=1).values == -torch.inf)
    probs[(greedy & gbad) | (~greedy & bad)] = torch.nan
    return probs


def _greedy(x):
    mx = x.max(dim=1, keepdim=True).values
    v = x.shape[1]
    idx = torch.where(x == mx, torch.arange(v, device=x.device)[None, :], v).min(dim=1).values
    return idx


def sample_tokens(logits, temperature, top_k, top_p, log_min_p, seed, offset):
    """(tokens [B] int64, logprobs [B] float32) by the rule in the module docstring."""
    b, v = logits.shape
    x, z, m, greedy, bad = _prepare(logits, temperature)
    m_safe = torch.where(bad, torch.zeros_like(m), m)
    keep, e = _kept(z, m_safe, top_k, top_p, log_min_p)
    w = torch.where(keep, e, torch.zeros_like(e))
    s = w.sum(dim=1)
    u = _row_uniforms(b, seed, offset, logits.device)
    cum = torch.cumsum(w, dim=1)
    hit = (cum > (u * s)[:, None]) & (w > 0)
    idx = torch.where(hit, torch.arange(v, device=logits.device)[None, :], v).min(dim=1).values
    g = _greedy(z)  # the fallback when rounding leaves u * S above the last cumulative weight
    idx = torch.where(idx >= v, g, idx)
    lp = (z.gather(1, idx.clamp(0, v - 1)[:, None]).squeeze(1).to(torch.float64) - m_safe.to(torch.float64)) - torch.log(s)
    tokens = torch.where(greedy, _greedy(x), idx)
    lp = torch.where(greedy, torch.zeros_like(lp), lp)
    gbad = torch.isnan(x).any(dim=1) | (x.max(dim=1).values == -torch.inf)
    invalid = (greedy & gbad) | (~greedy & bad)
    tokens = torch.where(invalid, torch.full_like(tokens, -1), tokens)
    lp = torch.where(invalid, torch.full_like(lp, torch.nan), lp)
    return tokens.to(torch.int64), lp.to(torch.float32)
