"""Plain-PyTorch specification of the hidden-Markov-model recursions (forward, forward-backward, Viterbi).

Shapes: log_emissions (B, T, S): log p(x_t | state s) of B sequences padded to T steps; only the
first lengths[b] steps of sequence b count (lengths (B,) int64 in [0, T], or None for all T).
log_startprob (S,), log_transmat (S, S) with log_transmat[i, j] = log p(state j at t+1 | state i at t).

Results:
  forward     log_likelihood (B,): log p(x_1..x_L) (0 for an empty sequence)
  posteriors  (log_likelihood (B,), gamma (B, T, S), xi (B, S, S)): gamma[b, t, s] = p(z_t = s | x),
              zero for padded steps; xi[b, i, j] = sum_t p(z_t = i, z_{t+1} = j | x) (the expected
              transition counts of Baum-Welch). A sequence of probability zero (log-likelihood -inf)
              gets zero posteriors.
  viterbi     (path (B, T) int64, log_prob (B,)): the most probable state path (-1 at padded steps;
              ties go to the lowest state index) and its joint log-probability log p(x, path).

Written in log space with logsumexp, one step at a time over the batch, in the input's dtype
(float64 for the reference), independently of the kernels (which run scaled probabilities).
"""

from __future__ import annotations

import torch


def _lengths(log_emissions, lengths):
    b, t = log_emissions.shape[:2]
    if lengths is None:
        return torch.full((b,), t, dtype=torch.int64, device=log_emissions.device)
    return lengths.to(device=log_emissions.device, dtype=torch.int64)


def forward_lattice(log_emissions, log_startprob, log_transmat, lengths=None):
    """(log_alpha (B, T, S), log_likelihood (B,)); log_alpha[b, t] = log p(x_1..x_t, z_t) for t < L."""
    le = log_emissions
    b, t_max, s = le.shape
    L = _lengths(le, lengths)
    la = torch.full_like(le, -torch.inf)
    if t_max == 0:
        return la, torch.zeros(b, dtype=le.dtype, device=le.device)
    cur = log_startprob.to(le.dtype) + le[:, 0]
    la[:, 0] = cur
    lt = log_transmat.to(le.dtype)
    for t in range(1, t_max):
        nxt = torch.logsumexp(cur.unsqueeze(2) + lt.unsqueeze(0), dim=1) + le[:, t]
        active = (t < L).unsqueeze(1)
        cur = torch.where(active, nxt, cur)
        la[:, t] = torch.where(active, nxt, torch.full_like(nxt, -torch.inf))
    ll = torch.logsumexp(cur, dim=1)
    ll = torch.where(L > 0, ll, torch.zeros_like(ll))
    la = torch.where((torch.arange(t_max, device=le.device)[None, :] < L[:, None]).unsqueeze(2), la,
                     torch.full_like(la, -torch.inf))
    return la, ll


def forward(log_emissions, log_startprob, log_transmat, lengths=None):
    """log_likelihood (B,)."""
    return forward_lattice(log_emissions, log_startprob, log_transmat, lengths)[1]


def backward_lattice(log_emissions, log_transmat, lengths=None):
    """log_beta (B, T, S): log p(x_{t+1}..x_L | z_t) for t < L (0 at t = L - 1), -inf at padded steps."""
    le = log_emissions
    b, t_max, s = le.shape
    L = _lengths(le, lengths)
    lt = log_transmat.to(le.dtype)
    lb = torch.full_like(le, -torch.inf)
    cur = torch.zeros(b, s, dtype=le.dtype, device=le.device)
    for t in range(t_max - 1, -1, -1):
        # steps t >= L - 1 hold beta = 0 (nothing observed after the last step)
        last_or_beyond = (t >= L - 1).unsqueeze(1)
        if t + 1 < t_max:
            nxt = torch.logsumexp(lt.unsqueeze(0) + (le[:, t + 1] + cur).unsqueeze(1), dim=2)
        else:
            nxt = torch.zeros_like(cur)
        cur = torch.where(last_or_beyond, torch.zeros_like(cur), nxt)
        lb[:, t] = torch.where((t < L).unsqueeze(1), cur, torch.full_like(cur, -torch.inf))
    return lb


def posteriors(log_emissions, log_startprob, log_transmat, lengths=None):
    """(log_likelihood (B,), gamma (B, T, S), xi (B, S, S))."""
    le = log_emissions
    b, t_max, s = le.shape
    L = _lengths(le, lengths)
    la, ll = forward_lattice(le, log_startprob, log_transmat, L)
    lb = backward_lattice(le, log_transmat, L)
    ok = torch.isfinite(ll)
    llc = torch.where(ok, ll, torch.zeros_like(ll))
    gamma = torch.exp(la + lb - llc[:, None, None])
    gamma = torch.where(ok[:, None, None], gamma, torch.zeros_like(gamma))
    lt = log_transmat.to(le.dtype)
    xi = torch.zeros(b, s, s, dtype=le.dtype, device=le.device)
    for t in range(t_max - 1):
        term = la[:, t].unsqueeze(2) + lt.unsqueeze(0) + (le[:, t + 1] + lb[:, t + 1]).unsqueeze(1) - llc[:, None, None]
        step = torch.exp(term)
        xi = xi + torch.where(((t + 1 < L) & ok)[:, None, None], step, torch.zeros_like(step))
    return ll, gamma, xi


def viterbi(log_emissions, log_startprob, log_transmat, lengths=None):
    """(path (B, T) int64, log_prob (B,))."""
    le = log_emissions
    b, t_max, s = le.shape
    L = _lengths(le, lengths)
    path = torch.full((b, t_max), -1, dtype=torch.int64, device=le.device)
    if t_max == 0:
        return path, torch.zeros(b, dtype=le.dtype, device=le.device)
    lt = log_transmat.to(le.dtype)
    delta = log_startprob.to(le.dtype) + le[:, 0]
    back = torch.zeros(b, t_max, s, dtype=torch.int64, device=le.device)
    for t in range(1, t_max):
        cand = delta.unsqueeze(2) + lt.unsqueeze(0)  # [b, i, j]
        best, arg = cand.max(dim=1)  # torch.max returns the first index of a tie
        active = (t < L).unsqueeze(1)
        delta = torch.where(active, best + le[:, t], delta)
        back[:, t] = arg
    score, last = delta.max(dim=1)
    state = last
    for t in range(t_max - 1, -1, -1):
        at_end = t == L - 1
        inside = t < L - 1
        state = torch.where(at_end, last, state)
        path[:, t] = torch.where(t < L, state, torch.full_like(state, -1))
        if t > 0:
            prev = back[:, t].gather(1, state.clamp(min=0).unsqueeze(1)).squeeze(1)
            state = torch.where(inside | at_end, prev, state)
    score = torch.where(L > 0, score, torch.zeros_like(score))
    return path, score
