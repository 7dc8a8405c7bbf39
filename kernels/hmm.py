"""Hidden-Markov-model recursions in Triton: the triton backend of genengine.ops.hmm_forward,
hmm_posteriors and hmm_viterbi (twin of csrc/cpu/hmm.cpp, same contract).

Shapes: log_emissions (B, T, S) contiguous, float32 or float64 (the math runs in that dtype);
log_startprob (S,), log_transmat (S, S) in the same dtype; lengths (B,) int64 or None (all T).
Outputs: log_likelihood (B,), gamma (B, T, S), xi (B, S, S), path (B, T) int64.

One program per sequence; the S states are one block of BS = next_pow2(S) lanes and the transition
matrix one [BS, BS] tile held for the whole sequence (S up to a few hundred). The forward recursion
runs in log space, each new entry shifted by the maximum of its own S terms,
la_t[j] = m_j + log(sum_i exp(la_{t-1}[i] + logA[i, j] - m_j)) + le_t[j], so nothing that matters
underflows, whatever the gaps between states (float32's e^-87 floor would otherwise bite in chains
with forbidden transitions). That is S^2 exps a step, cheap on a GPU's special-function units next
to the memory traffic; the CPU kernel uses scaled probabilities instead (S exps a step).
Forward-backward stores log alpha in the gamma output, then walks back with log beta, overwriting
it with the posteriors and accumulating xi in an [BS, BS] register tile.
Viterbi keeps its backpointers in an int32 (B, T, BS) workspace and backtracks in the same program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["hmm_forward", "hmm_posteriors", "hmm_viterbi", "block_states"]

NUM_WARPS = 4


def block_states(s):
    return max(2, triton.next_power_of_2(int(s)))


@triton.jit
def _length(len_ptr, b, T, HAS_LEN: tl.constexpr):
    if HAS_LEN:
        return tl.load(len_ptr + b).to(tl.int32)
    else:
        return T


@triton.jit
def _log_matvec(la, logA):
    """log(sum_i exp(la[i] + logA[i, j])) for every j, each column shifted by its own maximum (so no
    term that matters underflows, whatever the gaps between states); -inf where every term is."""
    w = la[:, None] + logA
    m = tl.max(w, 0)
    ms = tl.where(m == -float("inf"), 0.0, m)
    return tl.log(tl.sum(tl.exp(w - ms[None, :]), 0)) + ms


@triton.jit
def _hmm_forward_kernel(le_ptr, ls_ptr, lt_ptr, len_ptr, ll_ptr, T, S, HAS_LEN: tl.constexpr, BS: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    L = _length(len_ptr, b, T, HAS_LEN)
    offs = tl.arange(0, BS)
    smask = offs < S
    logA = tl.load(lt_ptr + offs[:, None] * S + offs[None, :], mask=smask[:, None] & smask[None, :],
                   other=-float("inf"))
    base = le_ptr + b * T * S
    la = tl.load(ls_ptr + offs, mask=smask, other=-float("inf")) + tl.load(base + offs, mask=smask & (offs * 0 < L),
                                                                            other=-float("inf"))
    for t in range(1, L):
        la = _log_matvec(la, logA) + tl.load(base + t * S + offs, mask=smask, other=-float("inf"))
    m = tl.max(la, 0)
    ms = tl.where(m == -float("inf"), 0.0, m)
    ll = tl.log(tl.sum(tl.exp(la - ms), 0)) + ms
    ll = tl.where(L > 0, ll, 0.0)
    tl.store(ll_ptr + b, ll)


@triton.jit
def _hmm_posteriors_kernel(le_ptr, ls_ptr, lt_ptr, len_ptr, ll_ptr, g_ptr, xi_ptr, T, S, HAS_LEN: tl.constexpr,
                           BS: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    L = _length(len_ptr, b, T, HAS_LEN)
    offs = tl.arange(0, BS)
    smask = offs < S
    mask2 = smask[:, None] & smask[None, :]
    logA = tl.load(lt_ptr + offs[:, None] * S + offs[None, :], mask=mask2, other=-float("inf"))
    base = le_ptr + b * T * S
    gbase = g_ptr + b * T * S
    # forward: log alpha into the gamma buffer
    la = tl.load(ls_ptr + offs, mask=smask, other=-float("inf")) + tl.load(base + offs, mask=smask & (offs * 0 < L),
                                                                            other=-float("inf"))
    tl.store(gbase + offs, la, mask=smask & (offs * 0 < L))
    for t in range(1, L):
        la = _log_matvec(la, logA) + tl.load(base + t * S + offs, mask=smask, other=-float("inf"))
        tl.store(gbase + t * S + offs, la, mask=smask)
    m = tl.max(la, 0)
    ms = tl.where(m == -float("inf"), 0.0, m)
    ll = tl.log(tl.sum(tl.exp(la - ms), 0)) + ms
    ll = tl.where(L > 0, ll, 0.0)
    ok = (ll > -float("inf")) & (ll < float("inf"))
    llc = tl.where(ok, ll, 0.0)
    # backward: log beta, posteriors over log alpha, xi in registers
    lb = tl.where(smask, 0.0, -float("inf")) + tl.zeros_like(la)
    xi = tl.zeros_like(logA)
    for k in range(0, L - 1):
        t = L - 1 - k
        la_t = tl.load(gbase + t * S + offs, mask=smask, other=-float("inf"))
        g = tl.where(ok, tl.exp(la_t + lb - llc), 0.0)
        tl.store(gbase + t * S + offs, g, mask=smask)
        v = tl.load(base + t * S + offs, mask=smask, other=-float("inf")) + lb
        la_p = tl.load(gbase + (t - 1) * S + offs, mask=smask, other=-float("inf"))
        xi += tl.exp(la_p[:, None] + logA + v[None, :] - llc)
        w = logA + v[None, :]
        mr = tl.max(w, 1)
        mrs = tl.where(mr == -float("inf"), 0.0, mr)
        lb = tl.log(tl.sum(tl.exp(w - mrs[:, None]), 1)) + mrs
    la0 = tl.load(gbase + offs, mask=smask & (offs * 0 < L), other=-float("inf"))
    tl.store(gbase + offs, tl.where(ok, tl.exp(la0 + lb - llc), 0.0), mask=smask & (offs * 0 < L))
    for t in range(L, T):
        tl.store(gbase + t * S + offs, tl.zeros_like(la), mask=smask)
    xi = tl.where(mask2, xi, 0.0)
    xi = tl.where(ok, xi, 0.0)
    tl.store(xi_ptr + b * S * S + offs[:, None] * S + offs[None, :], xi, mask=mask2)
    tl.store(ll_ptr + b, ll)


@triton.jit
def _hmm_viterbi_kernel(le_ptr, ls_ptr, lt_ptr, len_ptr, score_ptr, path_ptr, bp_ptr, T, S, HAS_LEN: tl.constexpr,
                        BS: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    L = _length(len_ptr, b, T, HAS_LEN)
    offs = tl.arange(0, BS)
    smask = offs < S
    logA = tl.load(lt_ptr + offs[:, None] * S + offs[None, :], mask=smask[:, None] & smask[None, :],
                   other=-float("inf"))
    base = le_ptr + b * T * S
    bpbase = bp_ptr + b * T * BS
    delta = tl.load(ls_ptr + offs, mask=smask, other=-float("inf")) + tl.load(base + offs, mask=smask & (offs * 0 < L),
                                                                               other=-float("inf"))
    for t in range(1, L):
        w = delta[:, None] + logA
        best = tl.max(w, 0)
        # the lowest i reaching the maximum (as the references): argmin of the index where w == best
        idx = tl.where(w == best[None, :], offs[:, None], BS)
        arg = tl.min(idx, 0)
        arg = tl.where(arg == BS, 0, arg)
        tl.store(bpbase + t * BS + offs, arg.to(tl.int32))
        delta = best + tl.load(base + t * S + offs, mask=smask, other=-float("inf"))
    best = tl.max(delta, 0)
    state = tl.min(tl.where(delta == best, offs, BS), 0)
    state = tl.where(state == BS, 0, state)
    tl.store(score_ptr + b, tl.where(L > 0, best, 0.0))
    pbase = path_ptr + b * T
    for k in range(0, L):
        t = L - 1 - k
        tl.store(pbase + t, state.to(tl.int64))
        if t > 0:
            state = tl.load(bpbase + t * BS + state)
    for t in range(L, T):
        tl.store(pbase + t, tl.full((), -1, tl.int64))


def _launch(kernel, le, ls, lt, lengths, *outs):
    b, t, s = le.shape
    bs = block_states(s)
    has_len = lengths is not None
    kernel[(b,)](le, ls, lt, lengths if has_len else ls, *outs, t, s, HAS_LEN=has_len, BS=bs, num_warps=NUM_WARPS)


def hmm_forward(le, ls, lt, lengths, ll):
    _launch(_hmm_forward_kernel, le, ls, lt, lengths, ll)


def hmm_posteriors(le, ls, lt, lengths, ll, gamma, xi):
    _launch(_hmm_posteriors_kernel, le, ls, lt, lengths, ll, gamma, xi)


def hmm_viterbi(le, ls, lt, lengths, score, path):
    b, t, s = le.shape
    bp = torch.empty((b, t, block_states(s)), dtype=torch.int32, device=le.device)
    _launch(_hmm_viterbi_kernel, le, ls, lt, lengths, score, path, bp)
