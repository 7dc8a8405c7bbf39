"""Hidden-Markov-model recursions over many padded sequences at once: forward, forward-backward, Viterbi.

    ll = ge.ops.hmm_forward(log_emissions, log_startprob, log_transmat, lengths)        # (B,)
    ll, gamma, xi = ge.ops.hmm_posteriors(log_emissions, log_startprob, log_transmat, lengths)
    path, best = ge.ops.hmm_viterbi(log_emissions, log_startprob, log_transmat, lengths)

Shapes: log_emissions (B, T, S), float32 or float64: log p(x_t | z_t = s) for B sequences padded to T
steps; lengths (B,) integer in [0, T] (a tensor or a list; None: every sequence has T steps);
log_startprob (S,), log_transmat (S, S) (row i: log p(z_{t+1} = . | z_t = i)), any floating dtype
(converted to log_emissions'). Results have log_emissions' dtype: log-likelihoods (B,), posteriors
gamma (B, T, S) (zero at padded steps), expected transition counts xi (B, S, S), Viterbi paths (B, T)
int64 (-1 at padded steps) and the best path's joint log-probability (B,). An empty sequence has
log-likelihood 0; a sequence of probability zero has -inf and zero posteriors. The definitions are
genengine.reference.hmm (log space, float64), which every backend is tested against.

Backends: torch (the reference, any device and dtype), cpp (CPU: one thread per sequence; scaled
probabilities in double with a per-step max shift, a log-space fallback per sequence where scaling
underflows: csrc/cpu/hmm.cpp), triton (CUDA, or CPU under TRITON_INTERPRET=1: one program per
sequence, log space with a per-step max shift: kernels/hmm.py). None of these ops carries autograd
(Baum-Welch needs the posteriors, not gradients); inputs that require grad are read detached.
"""

from __future__ import annotations

import torch

from .. import _backends
from ..reference import hmm as ref

_SUPPORTED = ("torch", "cpp", "triton")
_DTYPE_CODE = {torch.float32: 0, torch.float64: 1}


def _prepare(log_emissions, log_startprob, log_transmat, lengths, backend):
    le = log_emissions
    if not isinstance(le, torch.Tensor):
        raise TypeError(f"log_emissions: expected a torch.Tensor, got {type(le).__name__}")
    if le.dtype not in _DTYPE_CODE:
        raise TypeError(f"log_emissions: expected float32 or float64, got {le.dtype}")
    if le.dim() != 3:
        raise ValueError(f"log_emissions: expected shape (B, T, S), got {tuple(le.shape)}")
    b, t, s = le.shape
    if s == 0:
        raise ValueError("log_emissions: expected at least one state (S = log_emissions.shape[2] > 0), got 0")
    for name, p, shape in (("log_startprob", log_startprob, (s,)), ("log_transmat", log_transmat, (s, s))):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {p.dtype}")
        if tuple(p.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (S = {s} states, from log_emissions), got {tuple(p.shape)}")
        if p.device != le.device:
            raise ValueError(f"{name}: on device {p.device}, but log_emissions is on {le.device}")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor):
            try:
                lengths = torch.as_tensor(lengths)
            except Exception:
                raise TypeError(f"lengths: expected a 1-D integer tensor or list, got {type(lengths).__name__}") from None
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths: expected an integer tensor, got {lengths.dtype}")
        if tuple(lengths.shape) != (b,):
            raise ValueError(f"lengths: expected shape ({b},) (one length per sequence), got {tuple(lengths.shape)}")
        lengths = lengths.to(device=le.device, dtype=torch.int64).contiguous()
        if b:
            lo, hi = int(lengths.min()), int(lengths.max())
            if lo < 0 or hi > t:
                raise ValueError(f"lengths: expected values in [0, {t}] (T = log_emissions.shape[1]), got {lo}..{hi}")
    name = _backends.resolve(backend, _backends.device_type(le), _SUPPORTED)
    le = le.detach().contiguous()
    ls = log_startprob.detach().to(le.dtype).contiguous()
    lt = log_transmat.detach().to(le.dtype).contiguous()
    return name, le, ls, lt, lengths


def _cpp(fn, le, ls, lt, lengths, *outs):
    b, t, s = le.shape
    getattr(_backends.load_cpp(), fn)(_DTYPE_CODE[le.dtype], b, t, s, le.data_ptr(), ls.data_ptr(), lt.data_ptr(),
                                      lengths.data_ptr() if lengths is not None else 0, *(o.data_ptr() for o in outs))


def hmm_forward(log_emissions, log_startprob, log_transmat, lengths=None, *, backend="auto"):
    """log p(x_1..x_L) per sequence, (B,), by the forward recursion (see the module docstring)."""
    name, le, ls, lt, lengths = _prepare(log_emissions, log_startprob, log_transmat, lengths, backend)
    if name == "torch":
        return ref.forward(le, ls, lt, lengths)
    ll = torch.empty(le.shape[0], dtype=le.dtype, device=le.device)
    if le.shape[0] == 0:
        return ll
    if name == "cpp":
        _cpp("hmm_forward", le, ls, lt, lengths, ll)
    else:
        _backends.load_kernels("hmm").hmm_forward(le, ls, lt, lengths, ll)
    return ll


def hmm_posteriors(log_emissions, log_startprob, log_transmat, lengths=None, *, backend="auto"):
    """(log_likelihood (B,), gamma (B, T, S), xi (B, S, S)) by forward-backward: gamma[b, t, s] =
    p(z_t = s | x), xi[b, i, j] = sum_t p(z_t = i, z_{t+1} = j | x)."""
    name, le, ls, lt, lengths = _prepare(log_emissions, log_startprob, log_transmat, lengths, backend)
    if name == "torch":
        return ref.posteriors(le, ls, lt, lengths)
    b, t, s = le.shape
    ll = torch.empty(b, dtype=le.dtype, device=le.device)
    gamma = torch.empty(b, t, s, dtype=le.dtype, device=le.device)
    xi = torch.empty(b, s, s, dtype=le.dtype, device=le.device)
    if b == 0:
        return ll, gamma, xi
    if name == "cpp":
        _cpp("hmm_posteriors", le, ls, lt, lengths, ll, gamma, xi)
    else:
        _backends.load_kernels("hmm").hmm_posteriors(le, ls, lt, lengths, ll, gamma, xi)
    return ll, gamma, xi


def hmm_viterbi(log_emissions, log_startprob, log_transmat, lengths=None, *, backend="auto"):
    """(path (B, T) int64, log_prob (B,)): the most probable state sequence of each sequence (-1 at
    padded steps; ties go to the lowest state index) and its joint log-probability log p(x, path)."""
    name, le, ls, lt, lengths = _prepare(log_emissions, log_startprob, log_transmat, lengths, backend)
    if name == "torch":
        return ref.viterbi(le, ls, lt, lengths)
    b, t, s = le.shape
    score = torch.empty(b, dtype=le.dtype, device=le.device)
    path = torch.empty(b, t, dtype=torch.int64, device=le.device)
    if b == 0:
        return path, score
    if name == "cpp":
        _cpp("hmm_viterbi", le, ls, lt, lengths, score, path)
    else:
        _backends.load_kernels("hmm").hmm_viterbi(le, ls, lt, lengths, score, path)
    return path, score


__all__ = ["hmm_forward", "hmm_posteriors", "hmm_viterbi"]
reference = ref
