"""Philox4x32-10 counter-based random numbers in Triton: the twin of csrc/common/philox.h.

What it is for: the noise of the fused diffusion kernels (kernels/diffusion.py) and the Triton
backend of `genengine.ops` random fills, with the same stream as the C++ and CUDA kernels.

Stream layout (identical in csrc/common/philox.h and genengine/reference/rng.py):
  key     = (seed_lo, seed_hi)                       the 64-bit seed, split in 32-bit halves
  counter = (block_lo, block_hi, offset_lo, offset_hi)
Philox block `b` yields four uint32 words, i.e. random values 4b .. 4b+3 of the stream
(seed, offset); element i of a fill is value i of the stream.

  uniform:  u = (2 * (w >> 9) + 1) * 2^-24, an odd multiple of 2^-24 in (0, 1), exact in float32
  normal:   Box-Muller on the word pairs (w0, w1) and (w2, w3) of a block:
            z0 = sqrt(-2 ln u(w0)) * cos(2 pi u(w1)),  z1 = sqrt(-2 ln u(w0)) * sin(2 pi u(w1))
            with ln, sin and cos evaluated by the fixed float32 polynomials of philox.h, in the
            same order of operations, so that under TRITON_INTERPRET=1 (numpy float32, no FMA)
            the results are bit-identical to the C++ kernels. (Compiled for a GPU, Triton may fuse
            multiply-adds, like nvcc does for the CUDA kernels: the normals then agree to ~1e-6.)

Shape conventions: the @triton.jit helpers work elementwise on tensors of any (broadcastable)
shape; words are tl.uint32, floats tl.float32. The fill kernel handles BLOCK elements per program
laid out as [BLOCK // 4, 4] (one Philox call per row of four consecutive elements) on a 1-D grid
of cdiv(n, BLOCK) programs. Seeds and offsets cross the host/device boundary as 32-bit halves
reinterpreted as signed int32 (see `split_u64`) and are bitcast back to uint32 inside.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "philox4x32_10",
    "uniform_from_u32",
    "minus_two_log_uniform",
    "sincos_two_pi_uniform",
    "box_muller",
    "normal4",
    "interleave4",
    "split_u64",
    "philox_fill",
    "FILL_BLOCK",
    "FILL_NUM_WARPS",
]

# Elements per program and warps of the fill kernel (H100: 256 Philox blocks per program,
# two rows of four elements per thread).
FILL_BLOCK = 1024
FILL_NUM_WARPS = 4


@triton.jit
def _u32(v):
    """Reinterprets a 32-bit integer (int32 argument half, or uint32) as tl.uint32."""
    return v.to(tl.uint32, bitcast=True)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1), all tl.uint32 (broadcastable).

    Returns the four output words (tl.uint32 tensors of the broadcast shape)."""
    zero = tl.zeros_like(c0 ^ c1 ^ c2 ^ c3)  # uint32 tensor of the broadcast shape
    c0 = c0 + zero
    c1 = c1 + zero
    c2 = c2 + zero
    c3 = c3 + zero
    k0 = k0 + zero
    k1 = k1 + zero
    m0 = zero + 0xD2511F53
    m1 = zero + 0xCD9E8D57
    w0 = zero + 0x9E3779B9
    w1 = zero + 0xBB67AE85
    for _ in tl.static_range(10):
        lo0 = m0 * c0
        hi0 = tl.umulhi(m0, c0)
        lo1 = m1 * c2
        hi1 = tl.umulhi(m1, c2)
        n0 = hi1 ^ c1 ^ k0
        n2 = hi0 ^ c3 ^ k1
        c0 = n0
        c1 = lo1
        c2 = n2
        c3 = lo0
        k0 = k0 + w0
        k1 = k1 + w1
    return c0, c1, c2, c3


@triton.jit
def _odd24(w):
    """(w >> 9) << 1 | 1 as int32: the uniform of w is this times 2^-24."""
    return (((w >> 9) << 1) | 1).to(tl.int32, bitcast=True)


@triton.jit
def uniform_from_u32(w):
    """u = (2 * (w >> 9) + 1) * 2^-24 in (0, 1), float32 (exact), for uint32 words w."""
    return _odd24(w).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def minus_two_log_uniform(w):
    """-2 ln(uniform_from_u32(w)), float32: Cephes-style range reduction to m in [sqrt(1/2),
    sqrt(2)) and a degree-9 polynomial for ln(1 + x), in the exact operation order of philox.h."""
    bits = uniform_from_u32(w).to(tl.uint32, bitcast=True)
    mant = bits & 0x007FFFFF
    # m > sqrt(2) exactly when the mantissa bits exceed those of sqrt(2) (0x3504F3): halve m
    big = tl.where(mant > 0x003504F3, 1, 0)  # int32
    e = (bits >> 23).to(tl.int32, bitcast=True) - 127 + big
    m = (mant | (0x3F800000 - (big.to(tl.uint32, bitcast=True) << 23))).to(tl.float32, bitcast=True)
    x = m - 1.0
    z = x * x
    p = x * 7.0376836292e-2
    p = p + -1.1514610310e-1
    p = p * x + 1.1676998740e-1
    p = p * x + -1.2420140846e-1
    p = p * x + 1.4249322787e-1
    p = p * x + -1.6668057665e-1
    p = p * x + 2.0000714765e-1
    p = p * x + -2.4999993993e-1
    p = p * x + 3.3333331174e-1
    fe = e.to(tl.float32)
    y = x * z * p
    y = y + fe * -2.12194440e-4
    y = y - 0.5 * z
    ln = (x + y) + fe * 0.693359375
    return -2.0 * ln


@triton.jit
def sincos_two_pi_uniform(w):
    """(sin, cos) of 2 pi uniform_from_u32(w), float32: quadrant from the integer bits, a polynomial
    on [-pi/4, pi/4], and the rotation by quarter turns done with integer selects on the bits."""
    k2 = _odd24(w)                              # u = k2 * 2^-24
    q = (k2 + (1 << 21)) >> 22                  # nearest quarter turn, 0..4
    rem = k2 - (q << 22)                        # in [-2^21, 2^21]
    a = rem.to(tl.float32) * 3.7450702829e-07   # * 2 pi * 2^-24
    a2 = a * a
    sp = a2 * -1.9515295891e-4
    sp = sp + 8.3321608736e-3
    sp = sp * a2 + -1.6666654611e-1
    sin_a = a + a * a2 * sp
    cp = a2 * 2.443315711809948e-5
    cp = cp + -1.388731625493765e-3
    cp = cp * a2 + 4.166664568298827e-2
    cos_a = (1.0 - 0.5 * a2) + a2 * a2 * cp
    # q odd swaps sin and cos; sin is negated for q = 2, 3 and cos for q = 1, 2 (sign-bit flips,
    # so that signed zeros come out exactly as in C++)
    swap = (0 - (q & 1)).to(tl.uint32, bitcast=True)
    keep = ((q & 1) - 1).to(tl.uint32, bitcast=True)  # ~swap, spelled so Triton 3.6's interpreter takes it
    sb = sin_a.to(tl.uint32, bitcast=True)
    cb = cos_a.to(tl.uint32, bitcast=True)
    s0 = (sb & keep) | (cb & swap)
    c0 = (cb & keep) | (sb & swap)
    s = (s0 ^ ((q & 2).to(tl.uint32, bitcast=True) << 30)).to(tl.float32, bitcast=True)
    c = (c0 ^ (((q + 1) & 2).to(tl.uint32, bitcast=True) << 30)).to(tl.float32, bitcast=True)
    return s, c


@triton.jit
def box_muller(w0, w1):
    """Two standard normals (z0, z1) = r * (cos, sin)(2 pi u(w1)), r = sqrt(-2 ln u(w0))."""
    r = tl.sqrt_rn(minus_two_log_uniform(w0))
    s, c = sincos_two_pi_uniform(w1)
    return r * c, r * s


@triton.jit
def _normal4_lohi(k0, k1, o0, o1, lo, hi):
    """Normals 4b .. 4b+3 for block b = (hi << 32) | lo, all arguments tl.uint32."""
    w0, w1, w2, w3 = philox4x32_10(lo, hi, o0, o1, k0, k1)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return z0, z1, z2, z3


@triton.jit
def normal4(seed_lo, seed_hi, off_lo, off_hi, block):
    """The four normals (float32) of Philox block `block` of stream (seed, offset).

    seed_lo/seed_hi/off_lo/off_hi: 32-bit halves, int32 (bit pattern) or uint32, scalars or
    tensors; block: int64 or uint32 tensor of block indices. Counter = (block_lo, block_hi,
    off_lo, off_hi), key = (seed_lo, seed_hi). Returns z[4b], z[4b+1], z[4b+2], z[4b+3]."""
    b = block.to(tl.int64)
    lo = b.to(tl.uint32)
    hi = (b >> 32).to(tl.uint32)
    return _normal4_lohi(_u32(seed_lo), _u32(seed_hi), _u32(off_lo), _u32(off_hi), lo, hi)


@triton.jit
def interleave4(a, b, c, d):
    """[R] tensors a, b, c, d -> [R, 4] tensor whose row r is (a[r], b[r], c[r], d[r])."""
    lane = tl.arange(0, 4)[None, :]
    return tl.where(lane == 0, a[:, None],
                    tl.where(lane == 1, b[:, None],
                             tl.where(lane == 2, c[:, None], d[:, None])))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi"])
def _philox_fill_kernel(out_ptr, n, seed_lo, seed_hi, off_lo, off_hi,
                        KIND: tl.constexpr, BLOCK: tl.constexpr):
    ROWS: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    start = pid * BLOCK
    # first Philox block of this program; ROWS is a power of two, so adding the row index to the
    # low word never carries into the high word
    b0 = pid * ROWS
    rows = tl.arange(0, ROWS)
    lo = b0.to(tl.uint32) + rows.to(tl.uint32)
    hi = (b0 >> 32).to(tl.uint32) + tl.zeros_like(lo)
    local = rows[:, None] * 4 + tl.arange(0, 4)[None, :]  # [ROWS, 4] int32
    mask = local < (n - start)
    ptrs = out_ptr + start + local
    k0 = _u32(seed_lo)
    k1 = _u32(seed_hi)
    o0 = _u32(off_lo)
    o1 = _u32(off_hi)
    if KIND == 2:
        z0, z1, z2, z3 = _normal4_lohi(k0, k1, o0, o1, lo, hi)
        tl.store(ptrs, interleave4(z0, z1, z2, z3), mask=mask)
    else:
        w0, w1, w2, w3 = philox4x32_10(lo, hi, o0, o1, k0, k1)
        w = interleave4(w0, w1, w2, w3)
        if KIND == 0:
            tl.store(ptrs, w.to(tl.int32, bitcast=True), mask=mask)
        else:
            tl.store(ptrs, uniform_from_u32(w), mask=mask)


def _as_i32(v: int) -> int:
    """A value in [0, 2^32) as the signed int32 with the same bits."""
    return v - (1 << 32) if v >= (1 << 31) else v


def split_u64(v: int):
    """(lo, hi) 32-bit halves of v mod 2^64, each as a signed int32 (bitcast to uint32 in-kernel)."""
    v = int(v) % (1 << 64)
    return _as_i32(v & 0xFFFFFFFF), _as_i32(v >> 32)


_KIND_DTYPES = {0: (torch.int32,), 1: (torch.float32,), 2: (torch.float32,)}


def philox_fill(out: torch.Tensor, kind: int, seed: int, offset: int) -> torch.Tensor:
    """Fills contiguous `out` with values 0 .. out.numel()-1 of the Philox stream (seed, offset).

    kind 0: raw uint32 words, stored with the same bits into an int32 tensor; 1: uniforms in (0, 1),
    float32; 2: standard normals, float32. seed and offset are taken modulo 2^64. Returns out."""
    kind = int(kind)
    if kind not in _KIND_DTYPES:
        raise ValueError(f"philox_fill: kind must be 0 (words), 1 (uniform) or 2 (normal), got {kind}")
    if out.dtype not in _KIND_DTYPES[kind]:
        raise TypeError(f"philox_fill: kind {kind} needs a {_KIND_DTYPES[kind][0]} tensor, got {out.dtype}")
    if not out.is_contiguous():
        raise ValueError("philox_fill: out must be contiguous")
    n = out.numel()
    if n == 0:
        return out
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    grid = (triton.cdiv(n, FILL_BLOCK),)
    _philox_fill_kernel[grid](out, n, s0, s1, o0, o1, KIND=kind, BLOCK=FILL_BLOCK,
                              num_warps=FILL_NUM_WARPS)
    return out
