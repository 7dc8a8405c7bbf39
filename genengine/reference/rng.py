"""Plain-PyTorch specification of the Philox4x32-10 stream (see csrc/common/philox.h).

Integer arithmetic runs on uint32 values held in int64 tensors; the 32x32-bit products are formed
from 16-bit halves so no intermediate overflows int64. The normal transform is Box-Muller in float64 with exact
log/sin/cos: the kernels' float32 polynomials must agree with it to ~1e-6.
"""

from __future__ import annotations

import math

import torch

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
_U32 = 0xFFFFFFFF


def _mulhilo(a, b):
    # a: int64 tensor of uint32 values, b: python int < 2^32. Split b into 16-bit halves so every
    # partial product stays below 2^48 and the sum below 2^63.
    b_lo, b_hi = b & 0xFFFF, b >> 16
    p_lo = a * b_lo
    p_hi = a * b_hi
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & _U32
    hi = ((p_lo >> 16) + p_hi) >> 16
    return hi & _U32, lo


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on int64 tensors of uint32 counters; k0, k1 python ints. Returns 4 tensors."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, M0)
        hi1, lo1 = _mulhilo(c2, M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + W0) & _U32, (k1 + W1) & _U32
    return c0, c1, c2, c3


def philox_words_u32(n, seed, offset, device="cpu"):
    """The first n words of stream (seed, offset) as an int64 tensor of uint32 values."""
    n_blocks = (n + 3) // 4
    block = torch.arange(n_blocks, dtype=torch.int64, device=device)
    c0, c1 = block & _U32, block >> 32
    c2 = torch.full_like(block, offset & _U32)
    c3 = torch.full_like(block, (offset >> 32) & _U32)
    w = philox4x32_10(c0, c1, c2, c3, seed & _U32, (seed >> 32) & _U32)
    return torch.stack(w, dim=1).reshape(-1)[:n]


def uniform_from_words(w):
    """float64 uniforms (2 * (w >> 9) + 1) / 2^24 from uint32 words held in int64."""
    return (((w >> 9) << 1) | 1).to(torch.float64) * 2.0**-24


def normals_from_words(w):
    """float64 standard normals: Box-Muller on consecutive word pairs (exact log/sin/cos).

    Normal 2j and 2j+1 both come from words 2j and 2j+1, so `w` must have an even length.
    """
    u = uniform_from_words(w)
    r = torch.sqrt(-2.0 * torch.log(u[0::2]))
    theta = 2.0 * math.pi * u[1::2]
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1).reshape(-1)


def philox_stream(kind, n, seed, offset, device="cpu", dtype=torch.float32):
    """The stream as the public ops return it: kind "words" (int32), "uniform" or "normal" (`dtype`)."""
    w = philox_words_u32(n + (n & 1), seed, offset, device=device)
    if kind == "words":
        return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)[:n]
    x = uniform_from_words(w) if kind == "uniform" else normals_from_words(w)
    return x[:n].to(dtype)
