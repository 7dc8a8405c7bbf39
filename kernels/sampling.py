"""Fused token sampling in Triton: the twin of csrc/cpu/sampling.cpp (rule: genengine/ops/sampling.py).

What it is for: the Triton backend of `ge.ops.sample_tokens` on CUDA tensors (and on CPU tensors
under TRITON_INTERPRET=1, which is how the CPU suite checks it against the C++ kernel).

One program per row of logits [B, V]; each pass loops over the row in BLOCK-element tiles:
  pass 1      z = x * (1 / T), its maximum m and first argmax, NaN detection
  top-k       radix select of the k-th largest z on a monotone 32-bit key (held in int64): 8 passes,
              one per 4-bit digit, each a 16-bin count histogram (a [BLOCK, 16] one-hot reduction)
              of the keys that match the prefix found so far
  top-p       the same 8 passes with weights exp(z - m) of the keys >= the top-k threshold
  draw        one pass for the kept total S, one that walks the tiles' cumulative weights (float64
              across tiles, tl.cumsum inside one) to the first kept token past u * S; tiles after
              the hit load nothing
The uniform of row b is built from Philox words 2b, 2b + 1 of (seed, offset) (kernels/rng.py's
philox4x32_10) as ((w0 << 21 | w1 >> 11) + 0.5) * 2^-53, and the weights come from the same
polynomial exp as the C++ kernel, so both backends draw the same tokens up to the rounding of the
cumulative sums. No host synchronisation: per-row parameters are read in the kernel.

Shapes: logits [B, V] float32 / bfloat16 / float16 with a unit last stride (any row stride);
per-row parameters [B] contiguous (float32, int64 for top_k) or scalars; tokens int64 [B];
logprobs float32 [B] or None.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rng import philox4x32_10, split_u64

__all__ = ["sample_tokens", "SAMPLE_BLOCK"]

SAMPLE_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _sort_key(z):
    """int64 in [0, 2^32): monotone in the float32 z (-0 as +0), the C++ kernel's uint32 key."""
    zc = tl.where(z == 0.0, 0.0, z)
    bi = zc.to(tl.int32, bitcast=True)
    k = bi ^ ((bi >> 31) & 0x7FFFFFFF)
    return k.to(tl.int64) + 2147483648


@triton.jit
def _exp_nonpos(x):
    """exp(x) for x <= 0: the polynomial of csrc/cpu/sampling.cpp (0 below -87.3)."""
    xc = tl.where(x < -87.3, -87.3, x)
    t = xc * 1.44269504088896341 + 12582912.0
    n = t - 12582912.0
    r = (xc - n * 0.693359375) - n * -2.12194440e-4
    p = r * 1.9875691500e-4 + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    y = p * r * r + r + 1.0
    ni = n.to(tl.int32)
    scale = ((ni + 127) << 23).to(tl.float32, bitcast=True)
    return tl.where(xc <= -87.3, 0.0, y * scale)


@triton.jit
def _load_z(row_ptr, offs, mask, inv_t):
    x = tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return x * inv_t


@triton.jit
def _radix_select(row_ptr, V, inv_t, m, floor_key, target, WEIGHTED: tl.constexpr, BLOCK: tl.constexpr):
    """The largest key t with (weight of {key >= t, key >= floor_key}) >= target and at least one such
    key; weights exp(z - m) when WEIGHTED, else 1 (a count: t = key of the target-th largest)."""
    d = tl.arange(0, 16)
    prefix = tl.zeros((), dtype=tl.int64)
    acc = tl.zeros((), dtype=tl.float64)
    for level in tl.static_range(8):
        shift = 28 - 4 * level
        cnt = tl.zeros((16,), dtype=tl.int32)
        mass = tl.zeros((16,), dtype=tl.float64)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < V
            z = _load_z(row_ptr, offs, mask, inv_t)
            key = _sort_key(z)
            sel = mask & ((key >> (shift + 4)) == prefix) & (key >= floor_key)
            dig = (key >> shift) & 15
            hit = sel[:, None] & (dig[:, None] == d[None, :])
            cnt += tl.sum(hit.to(tl.int32), axis=0)
            if WEIGHTED:
                w = _exp_nonpos(z - m)
                mass += tl.sum(tl.where(hit, w[:, None], 0.0), axis=0).to(tl.float64)
            else:
                mass += tl.sum(hit.to(tl.float32), axis=0).to(tl.float64)
        above = tl.sum(tl.where(d[None, :] > d[:, None], mass[None, :], 0.0), axis=1)
        ok = (cnt > 0) & (acc + above + mass >= target)
        chosen = tl.max(tl.where(ok, d, -1), axis=0)
        lowest = tl.min(tl.where(cnt > 0, d, 16), axis=0)
        chosen = tl.where(chosen >= 0, chosen, lowest)
        acc = acc + tl.sum(tl.where(d == chosen, above, 0.0), axis=0)
        prefix = prefix * 16 + chosen.to(tl.int64)
    return prefix


@triton.jit
def _max_argmax(row_ptr, V, inv_t, BLOCK: tl.constexpr):
    """Pass 1 over z = x * inv_t: its maximum, the first index reaching it, and the NaN count."""
    m = tl.full((), float("-inf"), tl.float32)
    arg = tl.zeros((), dtype=tl.int64)
    nan = tl.zeros((), dtype=tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        z = _load_z(row_ptr, offs, mask, inv_t)
        isnan = mask & (z != z)
        nan += tl.sum(isnan.to(tl.int32), axis=0)
        zm = tl.where(mask & ~isnan, z, float("-inf"))
        bm = tl.max(zm, axis=0)
        bi = tl.min(tl.where(zm == bm, offs, V), axis=0).to(tl.int64)
        better = bm > m
        arg = tl.where(better | ((start == 0) & (bm == m)), bi, arg)
        m = tl.where(better, bm, m)
    return m, arg, nan


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "t_s", "k_s", "p_s", "lmp_s"])
def _sample_kernel(x_ptr, row_stride, V, t_ptr, t_s, k_ptr, k_s, p_ptr, p_s, lmp_ptr, lmp_s,
                   seed_lo, seed_hi, off_lo, off_hi, tok_ptr, lp_ptr,
                   T_PTR: tl.constexpr, K_PTR: tl.constexpr, P_PTR: tl.constexpr, LMP_PTR: tl.constexpr,
                   WRITE_LP: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + b * row_stride
    if T_PTR:
        t = tl.load(t_ptr + b)
    else:
        t = t_s
    if K_PTR:
        k = tl.load(k_ptr + b)
    else:
        k = k_s
    if P_PTR:
        p = tl.load(p_ptr + b)
    else:
        p = p_s
    if LMP_PTR:
        lmp = tl.load(lmp_ptr + b)
    else:
        lmp = lmp_s
    # a row with t > 0 whose z has no finite maximum though its logits are finite is greedy (the t -> 0
    # limit): 1 / t overflowed float32, or z did; a +inf logit still leaves a sampled row without one
    greedy = ~(t > 0.0)
    inv_t = tl.math.div_rn(1.0, tl.where(greedy, 1.0, t))
    tiny = ~greedy & (inv_t == float("inf"))
    inv_t = tl.where(greedy | tiny, 1.0, inv_t)
    m, arg, nan = _max_argmax(row_ptr, V, inv_t, BLOCK)
    if ~greedy & ~tiny & (nan == 0) & ((m == float("inf")) | (m == float("-inf"))):
        m, arg, nan = _max_argmax(row_ptr, V, tl.full((), 1.0, tl.float32), BLOCK)  # the logits themselves
        tiny = ~greedy
    greedy = greedy | (tiny & (m != float("inf")))
    invalid = (nan > 0) | (m == float("-inf")) | (~greedy & (m == float("inf")))
    token = arg
    logprob = tl.zeros((), dtype=tl.float32)
    if invalid:
        token = token * 0 - 1
        logprob = logprob + float("nan")
    elif greedy:
        token = arg
    else:
        floor_key = tl.zeros((), dtype=tl.int64)
        if (k > 0) & (k < V):
            floor_key = _radix_select(row_ptr, V, inv_t, m, floor_key, k.to(tl.float64), False, BLOCK)
        tau = floor_key
        if p < 1.0:
            total = tl.zeros((), dtype=tl.float64)
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                mask = offs < V
                z = _load_z(row_ptr, offs, mask, inv_t)
                w = tl.where(mask & (_sort_key(z) >= floor_key), _exp_nonpos(z - m), 0.0)
                total += tl.sum(w, axis=0).to(tl.float64)
            target = tl.maximum(p, 0.0).to(tl.float64) * total
            tau = tl.maximum(tau, _radix_select(row_ptr, V, inv_t, m, floor_key, target, True, BLOCK))
        lmp = tl.where(lmp != lmp, float("-inf"), tl.minimum(lmp, 0.0))
        s = tl.zeros((), dtype=tl.float64)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < V
            z = _load_z(row_ptr, offs, mask, inv_t)
            dz = z - m
            w = tl.where(mask & (_sort_key(z) >= tau) & (dz >= lmp), _exp_nonpos(dz), 0.0)
            s += tl.sum(w, axis=0).to(tl.float64)
        # the row's uniform: Philox block b >> 1, words (2 (b & 1), 2 (b & 1) + 1)
        lanes = tl.arange(0, 2)
        zero = tl.zeros((2,), dtype=tl.uint32)
        blk = b >> 1
        w0, w1, w2, w3 = philox4x32_10(zero + blk.to(tl.uint32), zero + (blk >> 32).to(tl.uint32),
                                       zero + off_lo.to(tl.uint32, bitcast=True), zero + off_hi.to(tl.uint32, bitcast=True),
                                       zero + seed_lo.to(tl.uint32, bitcast=True), zero + seed_hi.to(tl.uint32, bitcast=True))
        odd = (b & 1) == 1
        hi = tl.sum(tl.where(lanes == 0, tl.where(odd, w2, w0), 0).to(tl.uint64), axis=0)
        lo = tl.sum(tl.where(lanes == 0, tl.where(odd, w3, w1), 0).to(tl.uint64), axis=0)
        u = (((hi << 21) | (lo >> 11)).to(tl.float64) + 0.5) * 1.1102230246251565e-16
        target = u * s
        cum = tl.zeros((), dtype=tl.float64)
        found = tl.zeros((), dtype=tl.int32)
        zc = m
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = (offs < V) & ((offs * 0 + found) == 0)
            z = _load_z(row_ptr, offs, mask, inv_t)
            dz = z - m
            w = tl.where(mask & (_sort_key(z) >= tau) & (dz >= lmp), _exp_nonpos(dz), 0.0)
            cs = tl.cumsum(w, axis=0).to(tl.float64) + cum
            hit = (cs > target) & (w > 0.0)
            first = tl.min(tl.where(hit, offs, V), axis=0)
            newly = (found == 0) & (first < V)
            token = tl.where(newly, first.to(tl.int64), token)
            zc = tl.where(newly, tl.sum(tl.where(offs == first, z, 0.0), axis=0), zc)
            found = tl.where(newly, 1, found)
            cum += tl.sum(w, axis=0).to(tl.float64)
        logprob = ((zc - m).to(tl.float64) - tl.log(s)).to(tl.float32)
    tl.store(tok_ptr + b, token)
    if WRITE_LP:
        tl.store(lp_ptr + b, logprob)


def _scalar_or_ptr(v, dummy):
    if isinstance(v, torch.Tensor):
        return v, 0, True
    return dummy, v, False


def sample_tokens(logits, params, seed, offset, tokens, logprobs):
    """Fills tokens (and logprobs) for logits [B, V] (unit last stride); params: see the op."""
    b, v = logits.shape
    if b == 0:
        return
    t, ts, tp = _scalar_or_ptr(params["temperature"], tokens)
    if 0.0 < ts < 2.0**-126:  # below float32's normal range a Python float is typed fp64: pass it per row
        t, ts, tp = torch.full((b,), ts, dtype=torch.float32, device=logits.device), 0.0, True
    k, ks, kp = _scalar_or_ptr(params["top_k"], tokens)
    p, ps, pp = _scalar_or_ptr(params["top_p"], tokens)
    lm, ls, lp_ = _scalar_or_ptr(params["log_min_p"], tokens)
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    block = min(SAMPLE_BLOCK, triton.next_power_of_2(v))
    _sample_kernel[(b,)](logits, logits.stride(0), v, t, float(ts), k, int(min(ks, 2**62)), p, float(ps), lm,
                         float(ls), s0, s1, o0, o1, tokens, logprobs if logprobs is not None else tokens,
                         T_PTR=tp, K_PTR=kp, P_PTR=pp, LMP_PTR=lp_, WRITE_LP=logprobs is not None,
                         BLOCK=block, num_warps=_NUM_WARPS)
