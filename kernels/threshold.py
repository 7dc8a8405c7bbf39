"""Per-sample dynamic thresholds in Triton: the twin of csrc/cpu/threshold.cpp.

What it is for: the Triton backend of `dynamic_threshold=(ratio, max_value)` on the fused sampler
steps (genengine/ops/diffusion.py). For each sample b of x0 = kx * x + kp * p (p guided as in
kernels/diffusion.py, x0 recomputed on the fly and never stored):
    s_b = clamp(lerp(v_rank, v_rank1, frac), 1, max_value)
where v_j is the j-th smallest |x0| of the sample: torch.quantile's linear interpolation, with
rank = floor(ratio * (inner - 1)), rank1 = min(rank + 1, inner - 1), frac the remainder. A NaN in a
sample's x0 makes s_b NaN (torch.quantile's rule).

Selection without a sort: |x0| as a non-negative int32 key (its float bits; every NaN mapped to
0x7FFFFFFF, the largest key) is radix selected in three passes over digits of 11, 10 and 10 bits
(shifts 20, 10, 0). Each pass is two launches: a histogram kernel on a (cdiv(inner, BLOCK), B) grid
that histograms the keys matching each wanted rank's prefix (tl.histogram per program, then atomic
adds into a global [B, 2, 4096] int32 histogram whose bins 2048+ collect the non-matching keys), and
a (B,) scan kernel that finds the digit holding each rank (tl.cumsum), moves the prefix one digit
down, zeroes the histogram for the next pass and, after the last pass, writes s. State per sample
(int64 [B, 5]: prefix0, prefix1, rank0, rank1, nan flag) lives on the device: no host sync.

Shapes: x, cond, uncond contiguous [B, inner] of one dtype (float32, bfloat16, float16);
guidance_per_sample float32 [B] or None; thresholds float32 [B] (out).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .diffusion import _to_f32

__all__ = ["dynamic_thresholds", "SELECT_BLOCK"]

SELECT_BLOCK = 2048
_BINS = 4096          # 2048 digit bins + a dump region for keys outside the prefix
_DUMP = 2048
_NAN_DIGIT = 0x7FF    # first-pass digit of the NaN key 0x7FFFFFFF, and of nothing else
_STATE = 5


@triton.jit
def _keys(x_ptr, cond_ptr, uncond_ptr, gps_ptr, guidance, kx, kp, b, offs, mask,
          HAS_UNCOND: tl.constexpr, PER_SAMPLE_GUIDANCE: tl.constexpr):
    """int32 keys of |x0| (monotone; NaN -> 0x7FFFFFFF) for elements offs of the flat tensors."""
    x = _to_f32(tl.load(x_ptr + offs, mask=mask, other=0.0))
    c = _to_f32(tl.load(cond_ptr + offs, mask=mask, other=0.0))
    if HAS_UNCOND:
        u = _to_f32(tl.load(uncond_ptr + offs, mask=mask, other=0.0))
        if PER_SAMPLE_GUIDANCE:
            w = tl.load(gps_ptr + b)
            p = u + w * (c - u)
        else:
            p = u + guidance * (c - u)
    else:
        p = c
    x0 = tl.where(kx == 0.0, 0.0, kx * x) + kp * p  # as step.h's term
    key = x0.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    return tl.where(key > 0x7F800000, 0x7FFFFFFF, key)


@triton.jit
def _hist_kernel(x_ptr, cond_ptr, uncond_ptr, gps_ptr, state_ptr, hist_ptr, inner, guidance, kx, kp,
                 PASS: tl.constexpr, HAS_UNCOND: tl.constexpr, PER_SAMPLE_GUIDANCE: tl.constexpr,
                 BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    local = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = local < inner
    key = _keys(x_ptr, cond_ptr, uncond_ptr, gps_ptr, guidance, kx, kp, b, b * inner + local, mask,
                HAS_UNCOND, PER_SAMPLE_GUIDANCE)
    bins = tl.arange(0, 4096)
    h_ptr = hist_ptr + b * (2 * 4096)
    if PASS == 0:
        digit = tl.where(mask, key >> 20, 2048)
        tl.atomic_add(h_ptr + bins, tl.histogram(digit, 4096), mask=bins < 2048)
    else:
        if PASS == 1:
            SHIFT: tl.constexpr = 10
        else:
            SHIFT: tl.constexpr = 0
        top = key.to(tl.int64) >> (SHIFT + 10)
        digit = (key >> SHIFT) & 1023
        p0 = tl.load(state_ptr + b * 5)
        p1 = tl.load(state_ptr + b * 5 + 1)
        d0 = tl.where(mask & (top == p0), digit, 2048)
        tl.atomic_add(h_ptr + bins, tl.histogram(d0, 4096), mask=bins < 1024)
        if p1 != p0:
            d1 = tl.where(mask & (top == p1), digit, 2048)
            tl.atomic_add(h_ptr + 4096 + bins, tl.histogram(d1, 4096), mask=bins < 1024)


@triton.jit
def _descend(h, bits, prefix, rank):
    """(prefix, rank) one digit down: the digit whose cumulative count passes rank."""
    cum = tl.cumsum(h, 0).to(tl.int64)
    below = cum <= rank
    d = tl.sum(below.to(tl.int64), 0)
    before = tl.max(tl.where(below, cum, 0), 0)
    return (prefix << bits) | d, rank - before


@triton.jit
def _scan_kernel(state_ptr, hist_ptr, thr_ptr, rank0, rank1, frac, max_value,
                 PASS: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    bins = tl.arange(0, 2048)
    h_ptr = hist_ptr + b * (2 * 4096)
    s_ptr = state_ptr + b * 5
    h0 = tl.load(h_ptr + bins)
    if PASS == 0:
        p0 = tl.full([], 0, tl.int64)
        p1 = tl.full([], 0, tl.int64)
        r0 = rank0 + p0
        r1 = rank1 + p0
        nan = tl.sum(tl.where(bins == 0x7FF, h0, 0), 0).to(tl.int64)
        h1 = h0
        BITS: tl.constexpr = 11
    else:
        p0 = tl.load(s_ptr)
        p1 = tl.load(s_ptr + 1)
        r0 = tl.load(s_ptr + 2)
        r1 = tl.load(s_ptr + 3)
        nan = tl.load(s_ptr + 4)
        h1 = tl.load(h_ptr + 4096 + bins)
        h1 = tl.where(p1 == p0, h0, h1)
        BITS: tl.constexpr = 10
    p0, r0 = _descend(h0, BITS, p0, r0)
    p1, r1 = _descend(h1, BITS, p1, r1)
    zero = tl.zeros((2048,), tl.int32)
    tl.store(h_ptr + bins, zero)
    tl.store(h_ptr + 4096 + bins, zero)
    if PASS == 2:
        lo = p0.to(tl.int32).to(tl.float32, bitcast=True)
        hi = p1.to(tl.int32).to(tl.float32, bitcast=True)
        q = tl.where(frac < 0.5, lo + frac * (hi - lo), hi - (hi - lo) * (1.0 - frac))
        q = tl.where(q < 1.0, 1.0, q)
        q = tl.where(q > max_value, max_value, q)
        q = tl.where(nan != 0, tl.full([], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True), q)
        tl.store(thr_ptr + b, q)
    else:
        tl.store(s_ptr, p0)
        tl.store(s_ptr + 1, p1)
        tl.store(s_ptr + 2, r0)
        tl.store(s_ptr + 3, r1)
        tl.store(s_ptr + 4, nan)


def dynamic_thresholds(out, x, cond, uncond, guidance_per_sample, guidance, kx, kp, rank, frac, max_value):
    """Writes the per-sample thresholds (see the module docstring) into float32 `out` [B] and returns it.

    x, cond (and uncond when not None): contiguous, one dtype, B = out.numel() samples of
    inner = x.numel() // B elements (< 2^31). rank in [0, inner); frac in [0, 1)."""
    batch = out.numel()
    n = x.numel()
    if batch == 0 or n == 0:
        return out
    inner = n // batch
    if out.dtype != torch.float32 or not out.is_contiguous() or n != batch * inner or inner >= 2**31:
        raise ValueError("dynamic_thresholds: out must be contiguous float32 [B] with x [B, inner < 2^31]")
    per_sample = guidance_per_sample is not None and uncond is not None
    dev = x.device
    state = torch.empty(batch, _STATE, dtype=torch.int64, device=dev)
    hist = torch.zeros(batch, 2, _BINS, dtype=torch.int32, device=dev)
    rank = int(rank)
    rank1 = min(rank + 1, inner - 1)
    grid = (triton.cdiv(inner, SELECT_BLOCK), batch)
    u = uncond if uncond is not None else x
    g = guidance_per_sample if per_sample else out
    for p in range(3):
        _hist_kernel[grid](x, cond, u, g, state, hist, inner, float(guidance), float(kx), float(kp),
                           PASS=p, HAS_UNCOND=uncond is not None, PER_SAMPLE_GUIDANCE=per_sample,
                           BLOCK=SELECT_BLOCK, num_warps=8)
        _scan_kernel[(batch,)](state, hist, out, rank, rank1, float(frac), float(max_value), PASS=p, num_warps=8)
    return out
