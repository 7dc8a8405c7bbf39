"""The VAE's sampling step in Triton: z = mu + exp(logvar / 2) * eps with in-kernel Philox normals
and kl[b] = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), one pass (the triton backend of
genengine.ops.reparameterize / reparameterize_kl / gaussian_kl; twin of csrc/cpu/latent.cpp).

Shapes: mu, logvar, z (rows, cols) contiguous, float32 / bfloat16 / float16 (math in float32);
kl (rows,) float32; z or kl may be None. eps for element i = r * cols + j is normal i of the
Philox stream (seed, offset) (kernels/rng.py), as on every backend.

One program per row; the row's elements are walked in tiles of [BLOCK // 4, 4] laid over whole
Philox blocks (4 normals each): tile row k holds stream values 4 (b0 + k) .. 4 (b0 + k) + 3, with
b0 = (r * cols) // 4 rounded down, so each Philox block is computed once per row (the two blocks
straddling a row boundary twice in all) and the masks drop the values outside the row.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .rng import _normal4_lohi, _u32, interleave4, split_u64

__all__ = ["reparameterize_kl", "BLOCK"]

BLOCK = 1024
NUM_WARPS = 4


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi"])
def _reparam_kl_kernel(mu_ptr, lv_ptr, z_ptr, kl_ptr, cols, seed_lo, seed_hi, off_lo, off_hi, WANT_Z: tl.constexpr,
                       WANT_KL: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    start = r * cols
    end = start + cols
    b_first = start // 4
    rows = tl.arange(0, BLOCK // 4)
    lane = tl.arange(0, 4)
    k0 = _u32(seed_lo)
    k1 = _u32(seed_hi)
    o0 = _u32(off_lo)
    o1 = _u32(off_hi)
    acc = tl.zeros((BLOCK // 4, 4), dtype=tl.float32)
    n_blocks = (end + 3) // 4 - b_first
    for i in range(0, tl.cdiv(n_blocks, BLOCK // 4)):
        blk = b_first + i * (BLOCK // 4) + rows  # int64 Philox block numbers
        idx = blk[:, None] * 4 + lane[None, :]
        mask = (idx >= start) & (idx < end)
        m = tl.load(mu_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        lv = tl.load(lv_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        s = tl.exp(0.5 * lv)
        if WANT_Z:
            lo = blk.to(tl.uint32)
            hi = (blk >> 32).to(tl.uint32)
            z0, z1, z2, z3 = _normal4_lohi(k0, k1, o0, o1, lo, hi)
            eps = interleave4(z0, z1, z2, z3)
            z = m + s * eps
            tl.store(z_ptr + idx, z.to(z_ptr.dtype.element_ty), mask=mask)
        if WANT_KL:
            acc += tl.where(mask, m * m + s * s - 1.0 - lv, 0.0)
    if WANT_KL:
        tl.store(kl_ptr + r, 0.5 * tl.sum(tl.sum(acc, 1), 0))


def reparameterize_kl(mu, logvar, z, kl, seed, offset):
    rows = mu.shape[0]
    cols = mu.numel() // rows
    s_lo, s_hi = split_u64(seed)
    o_lo, o_hi = split_u64(offset)
    _reparam_kl_kernel[(rows,)](mu, logvar, z if z is not None else mu, kl if kl is not None else mu, cols, s_lo, s_hi,
                                o_lo, o_hi, WANT_Z=z is not None, WANT_KL=kl is not None, BLOCK=BLOCK,
                                num_warps=NUM_WARPS)
