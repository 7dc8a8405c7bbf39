"""Fused token sampling: temperature, top-k, top-p (nucleus), min-p and the draw, in one op.

    tokens = ge.ops.sample_tokens(logits, temperature=0.8, top_p=0.9, generator=g)        # [B] int64
    tokens, logprobs = ge.ops.sample_tokens(logits, top_k=50, return_logprobs=True)

Shapes: logits [B, V] float32, bfloat16 or float16 (float64 on the torch backend), rows may be
strided (e.g. logits[:, -1] of a [B, T, V] tensor: only the last dim must be contiguous). Each
parameter is a Python number (the same for every row) or a [B] tensor on the logits' device (one
per row): temperature and top_p / min_p floating, top_k integer.

The filters, in this order (that of Hugging Face's warpers, SGLang and FlashInfer; vLLM v1 applies
min-p before top-k/top-p), on z = logits * (1 / temperature) in float32 with m = max(z):
  * temperature 0: greedy, the lowest index among the maxima of the logits, log-prob 0. So is a
    temperature so small that z overflows float32 and the row's max z is not finite though its
    logits are (the t -> 0 limit).
  * top_k > 0: keep the tokens whose z is >= the k-th largest z (ties at that value are kept, so
    more than k tokens can survive); 0 (or >= V) = off.
  * top_p < 1: of the tokens kept so far, keep the smallest set of largest values whose probability
    (renormalised over the kept tokens) reaches top_p; every token tied with the last value taken is
    kept; 1 = off.
  * min_p > 0: keep the tokens with p >= min_p * p_max, tested as z - m >= log(min_p) in float32;
    0 = off.
Then one token is drawn from the kept tokens, renormalised, by inverse CDF in index order with a
53-bit uniform from Philox words 2b, 2b + 1 of the stream `draw_key(generator)` gives for row b,
so every backend draws the same tokens for the same seed (up to float rounding of the cumulative
weights at a boundary, about 1e-7 of the mass). A filtered-out token is never drawn; nor is a token
whose weight exp(z - m) underflows float32 (below about 1e-38 of the maximum's). The log-probability
returned is that of the chosen token under the filtered, renormalised distribution.

Rows without a distribution: a row with a NaN, or whose z are all -inf, or (when sampling, not
greedy) that has a +inf logit, gives token -1 and log-prob NaN; it never raises (that would need a
host synchronisation) and never draws an arbitrary token.
Per-row tensors are not range-checked on the host (no synchronisation): there, temperature <= 0 or
NaN means greedy, top_k <= 0 or >= V off, top_p >= 1 or NaN off and <= 0 keeps only the maxima,
min_p <= 0 or NaN off and > 1 acts as 1 (the maxima). Python numbers out of range raise ValueError.

The kernels never sort: thresholds come from a radix search over a monotone 32-bit key of z
(histograms of digits of the key, counting tokens for top-k and summing weights for top-p), a few
passes over the row; see csrc/cpu/sampling.cpp and kernels/sampling.py. No host synchronisation.

Kernel contract (cpp: genengine._C.sample_tokens; triton: genengine.kernels.sampling.sample_tokens):
    (logits, params, seed, offset, tokens, logprobs) with params a dict of
    temperature / top_k / top_p / log_min_p, each a float (int for top_k) or a [B] contiguous
    float32 (int64 for top_k) tensor; tokens int64 [B]; logprobs float32 [B] or None.
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _backends
from .._checks import to_float
from ..reference import sampling as ref
from . import rng

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_SUPPORTED = ("torch", "cpp", "triton")


def _number(name, v, lo, hi, lo_open=False, integer=False):
    if isinstance(v, bool):
        raise TypeError(f"{name}: expected a {'int' if integer else 'number'} or a [B] tensor, got {v!r}")
    if integer:
        if not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected an int or a [B] integer tensor, got {type(v).__name__}")
        v = int(v)
    else:
        if not isinstance(v, numbers.Real):
            raise TypeError(f"{name}: expected a number or a [B] tensor, got {type(v).__name__}")
        v = to_float(name, v)
    bad = v != v or v > hi or v < lo or (lo_open and v == lo)
    if bad:
        lo_s = "(" if lo_open else "["
        raise ValueError(f"{name}: expected a value in {lo_s}{lo}, {hi}], got {v}")
    return v


def _tensor_param(name, v, logits, integer):
    if v.device != logits.device:
        raise ValueError(f"{name}: on device {v.device}, but logits are on {logits.device}")
    if integer:
        if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor, got {v.dtype}")
    elif not v.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {v.dtype}")
    b = logits.shape[0]
    if v.dim() == 0:
        v = v.expand(b)
    if tuple(v.shape) != (b,):
        raise ValueError(f"{name}: expected a number or a tensor of shape ({b},) (one per row of logits), "
                         f"got shape {tuple(v.shape)}")
    want = torch.int64 if integer else torch.float32
    return v.to(want).contiguous() if (v.dtype != want or not v.is_contiguous()) else v


def _params(logits, temperature, top_k, top_p, min_p):
    """{name: number or [B] tensor}: the kernels' parameters (min_p as log_min_p)."""
    p = {}
    if isinstance(temperature, torch.Tensor):
        p["temperature"] = _tensor_param("temperature", temperature, logits, False)
    else:
        p["temperature"] = _number("temperature", temperature, 0.0, math.inf)
    if isinstance(top_k, torch.Tensor):
        p["top_k"] = _tensor_param("top_k", top_k, logits, True)
    else:
        p["top_k"] = _number("top_k", top_k, 0, 2**62, integer=True)
    if isinstance(top_p, torch.Tensor):
        p["top_p"] = _tensor_param("top_p", top_p, logits, False)
    else:
        p["top_p"] = _number("top_p", top_p, 0.0, 1.0, lo_open=True)
    if isinstance(min_p, torch.Tensor):
        mp = _tensor_param("min_p", min_p, logits, False)
        p["log_min_p"] = torch.log(mp)  # float32, like the scalar's rounding below
    else:
        mp = _number("min_p", min_p, 0.0, 1.0)
        p["log_min_p"] = float(torch.tensor(mp, dtype=torch.float32).log()) if mp > 0 else -math.inf
    if not isinstance(p["temperature"], torch.Tensor) and p["temperature"] == math.inf:
        raise ValueError("temperature: expected a finite value, got inf")
    return p


def _check_logits(logits):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape [B, V] (2 dimensions), got {tuple(logits.shape)}")
    if logits.shape[1] == 0:
        raise ValueError("logits: the vocabulary (last dim) is empty")
    if logits.dtype not in _DTYPE_CODE and logits.dtype != torch.float64:
        raise TypeError(f"logits: expected float32, bfloat16, float16 (or float64 on the torch backend), got {logits.dtype}")


def _rows(logits):
    """logits with a unit last stride (the row stride is free)."""
    if logits.stride(1) != 1 or logits.stride(0) < logits.shape[1]:
        return logits.contiguous()
    return logits


def _as_tensor(v, b, dtype, device):
    return v if isinstance(v, torch.Tensor) else torch.full((b,), v, dtype=dtype, device=device)


def _torch(logits, params, seed, offset, tokens, logprobs):
    b = logits.shape[0]
    dev = logits.device
    t = _as_tensor(params["temperature"], b, torch.float32, dev)
    k = _as_tensor(params["top_k"], b, torch.int64, dev)
    p = _as_tensor(params["top_p"], b, torch.float32, dev)
    lmp = _as_tensor(params["log_min_p"], b, torch.float32, dev)
    tok, lp = ref.sample_tokens(logits, t, k, p, lmp, seed, offset)
    tokens.copy_(tok)
    if logprobs is not None:
        logprobs.copy_(lp)


def _ptr_or(v):
    """(pointer, scalar) for the C++ entry point."""
    if isinstance(v, torch.Tensor):
        return v.data_ptr(), 0
    return 0, v


def _cpp(logits, params, seed, offset, tokens, logprobs):
    tp, ts = _ptr_or(params["temperature"])
    kp, ks = _ptr_or(params["top_k"])
    pp, ps = _ptr_or(params["top_p"])
    mp, ms = _ptr_or(params["log_min_p"])
    _backends.load_cpp().sample_tokens(
        _DTYPE_CODE[logits.dtype], logits.shape[0], logits.shape[1], logits.stride(0), logits.data_ptr(),
        tp, float(ts), kp, int(min(ks, 2**62)), pp, float(ps), mp, float(ms), seed, offset, tokens.data_ptr(),
        logprobs.data_ptr() if logprobs is not None else 0)


def _run(name, logits, params, seed, offset, want_logprobs):
    b = logits.shape[0]
    tokens = torch.empty(b, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(b, dtype=torch.float32, device=logits.device) if want_logprobs else None
    if b == 0:
        return tokens, logprobs
    if name == "cpp":
        _cpp(logits, params, seed, offset, tokens, logprobs)
    elif name == "triton":
        _backends.load_kernels("sampling").sample_tokens(logits, params, seed, offset, tokens, logprobs)
    else:
        _torch(logits, params, seed, offset, tokens, logprobs)
    return tokens, logprobs


# ----------------------------------------------------------------------------------------------
# torch.library registration (torch.compile sees an opaque op; the key travels as a tensor so
# that a new seed does not recompile)


@torch.library.custom_op("genengine::sample_tokens", mutates_args=())
def _sample_tokens_op(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
    log_min_p: torch.Tensor, key: torch.Tensor, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    seed, offset = rng.key_ints(key)
    params = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "log_min_p": log_min_p}
    tokens, logprobs = _run(backend, _rows(logits), params, seed, offset, True)
    return tokens, logprobs


@_sample_tokens_op.register_fake
def _(logits, temperature, top_k, top_p, log_min_p, key, backend):
    b = logits.shape[0]
    return logits.new_empty(b, dtype=torch.int64), logits.new_empty(b, dtype=torch.float32)


def sample_tokens(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, generator=None,
                  return_logprobs=False, backend="auto"):
    """One token per row of `logits` [B, V] -> int64 [B] (and float32 [B] log-probabilities).

    temperature (0 = greedy), top_k (0 = off), top_p (1 = off), min_p (0 = off): numbers or [B]
    tensors; see the module docstring for the rule, its order, ties and rows without a distribution.
    generator: a torch.Generator on the logits' device (None: torch's default one).
    """
    _check_logits(logits)
    params = _params(logits, temperature, top_k, top_p, min_p)
    name = _backends.resolve(backend, _backends.device_type(logits), _SUPPORTED, logits.dtype in _DTYPE_CODE)
    logits = _rows(logits)
    if torch.compiler.is_compiling():
        b = logits.shape[0]
        t = [_as_tensor(params[n], b, d, logits.device) for n, d in
             (("temperature", torch.float32), ("top_k", torch.int64), ("top_p", torch.float32),
              ("log_min_p", torch.float32))]
        # a key tensor as generator stays data in the graph; greedy sampling needs no key at all (a
        # torch.Generator cannot be read inside a graph)
        greedy = generator is None and not isinstance(params["temperature"], torch.Tensor) and params["temperature"] == 0
        key = rng.key_tensor(0, 0) if greedy else rng.op_key(generator, logits.device)
        tokens, logprobs = _sample_tokens_op(logits, *t, key, name)
    else:
        seed, offset = rng.draw_key(generator, logits.device)
        tokens, logprobs = _run(name, logits, params, seed, offset, return_logprobs)
    return (tokens, logprobs) if return_logprobs else tokens


__all__ = ["sample_tokens"]
reference = ref
