"""Triton kernels of the Gibbs samplers (genengine.ops.gibbs): the twin of csrc/cpu/gibbs.cpp and
csrc/cuda/gibbs.cu, with the same Philox stream positions (documented in genengine/ops/gibbs.py).

  rbm_half(x, Wm, bias, out, prob, ...)   one RBM half-step in ONE kernel: the tile GEMM x @ Wm
                                          (x [M, K], Wm a [K, N] view of W or W^T, any strides), then
                                          bias, inverse temperature, sigmoid and the Bernoulli draw (or the
                                          Gaussian draw), clamping, in registers; grid (cdiv(M, BM), cdiv(N, BN))
  ising_sweep(spins, thr, ...)            one launch per colour of each sweep (a colour reads only the
                                          other colour, so updating in place is exact); grid (L H, cdiv(W/2, BLOCK))
  bm_gibbs(x, indptr, ...)                one launch per colour class of each sweep; grid (batch, cdiv(class, BLOCK))
  langevin_step(x, grad, out, ...)        elementwise, BLOCK elements per program as [BLOCK / 4, 4] Philox rows

Random values: the element at stream position p takes word p % 4 of Philox block p // 4 (normals:
Box-Muller on the word pair of p // 2, cosine for even p, sine for odd), as in philox.h.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .rng import box_muller, normal4, philox4x32_10, split_u64, uniform_from_u32

__all__ = ["rbm_half", "ising_sweep", "bm_gibbs", "langevin_step", "RBM_TILE"]

RBM_TILE = (32, 32, 32)      # BM, BN, BK under the interpreter (its cost grows with the tile)
RBM_TILE_GPU = (64, 64, 32)  # on a GPU


@triton.jit
def _u32(v):
    return v.to(tl.uint32, bitcast=True)


@triton.jit
def _words_at(pos, k0, k1, o0, o1):
    """The four words of the block holding int64 positions `pos`, and pos % 4."""
    block = pos >> 2
    w0, w1, w2, w3 = philox4x32_10(block.to(tl.uint32), (block >> 32).to(tl.uint32), o0, o1, k0, k1)
    return w0, w1, w2, w3, (pos & 3).to(tl.int32)


@triton.jit
def _word_at(pos, k0, k1, o0, o1):
    w0, w1, w2, w3, sel = _words_at(pos, k0, k1, o0, o1)
    return tl.where(sel == 0, w0, tl.where(sel == 1, w1, tl.where(sel == 2, w2, w3)))


@triton.jit
def _normal_at(pos, k0, k1, o0, o1):
    w0, w1, w2, w3, sel = _words_at(pos, k0, k1, o0, o1)
    wa = tl.where(sel < 2, w0, w2)
    wb = tl.where(sel < 2, w1, w3)
    zc, zs = box_muller(wa, wb)
    return tl.where((sel & 1) == 0, zc, zs)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "base", "beta"])
def _rbm_half_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, prob_ptr, beta_ptr, mask_ptr, vals_ptr, M, N, K,
                     sxm, sxk, swk, swn, beta, seed_lo, seed_hi, off_lo, off_hi, base,
                     HAS_PROB: tl.constexpr, BETA_ROWS: tl.constexpr, GAUSSIAN: tl.constexpr, CLAMP: tl.constexpr,
                     IEEE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        a = tl.load(x_ptr + rm[:, None].to(tl.int64) * sxm + kk[None, :] * sxk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(w_ptr + kk[:, None].to(tl.int64) * swk + rn[None, :] * swn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        if IEEE:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
    inb = (rm[:, None] < M) & (rn[None, :] < N)
    pre = acc + tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if BETA_ROWS:
        bt = tl.load(beta_ptr + rm, mask=rm < M, other=1.0)[:, None]
    else:
        bt = beta
    idx = rm[:, None].to(tl.int64) * N + rn[None, :]
    pos = base + idx
    k0_ = _u32(seed_lo)
    k1_ = _u32(seed_hi)
    o0 = _u32(off_lo)
    o1 = _u32(off_hi)
    if GAUSSIAN:
        z = _normal_at(pos, k0_, k1_, o0, o1)
        prob = pre
        sample = pre + z / tl.sqrt(bt + tl.zeros_like(pre))
    else:
        e = tl.exp(-(bt * pre))
        u = uniform_from_u32(_word_at(pos, k0_, k1_, o0, o1))
        sample = tl.where(u + u * e < 1.0, 1.0, 0.0)
        prob = 1.0 / (1.0 + e)
    if CLAMP:
        cm = tl.load(mask_ptr + idx, mask=inb, other=0)
        cv = tl.load(vals_ptr + idx, mask=inb, other=0.0)
        sample = tl.where(cm != 0, cv, sample)
        prob = tl.where(cm != 0, cv, prob)
    tl.store(out_ptr + idx, sample.to(out_ptr.dtype.element_ty), mask=inb)
    if HAS_PROB:
        tl.store(prob_ptr + idx, prob, mask=inb)


def rbm_half(x, Wm, bias, out, prob, beta, beta_rows, gaussian, mask_u8, vals, seed, offset, base):
    """out [M, N] (x's dtype) <- draw(x @ Wm + bias); prob [M, N] float32 or None; beta a number or
    beta_rows [M] float32; mask_u8 / vals [M, N] or None; element (m, n) at stream position base + m N + n."""
    M, K = x.shape
    N = Wm.shape[1]
    BM, BN, BK = RBM_TILE_GPU if x.is_cuda else RBM_TILE
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    dummy = bias
    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
    _rbm_half_kernel[grid](x, Wm, bias, out, prob if prob is not None else dummy,
                           beta_rows if beta_rows is not None else dummy,
                           mask_u8 if mask_u8 is not None else dummy, vals if vals is not None else dummy,
                           M, N, K, x.stride(0), x.stride(1), Wm.stride(0), Wm.stride(1),
                           float(beta if beta is not None else 1.0), s0, s1, o0, o1, int(base),
                           HAS_PROB=prob is not None, BETA_ROWS=beta_rows is not None, GAUSSIAN=bool(gaussian),
                           CLAMP=mask_u8 is not None, IEEE=x.dtype == Wm.dtype and str(x.dtype) == "torch.float32",
                           BM=BM, BN=BN, BK=BK)


@triton.jit(do_not_specialize=["t", "seed_lo", "seed_hi", "off_lo", "off_hi"])
def _ising_kernel(s_ptr, thr_ptr, L, H, W, t, c, PER_LATTICE: tl.constexpr, seed_lo, seed_hi, off_lo, off_hi,
                  BLOCK: tl.constexpr):
    g = tl.program_id(0)            # lattice * H + row
    pk = tl.program_id(1)
    lat = g // H
    i = g % H
    half = W // 2
    k = pk * BLOCK + tl.arange(0, BLOCK)
    m = k < half
    par = (i + c) % 2
    j = 2 * k + par
    row = s_ptr + lat.to(tl.int64) * H * W
    up = (i + H - 1) % H
    dn = (i + 1) % H
    jl = (j + W - 1) % W
    jr = (j + 1) % W
    s = (tl.load(row + up * W + j, mask=m, other=0).to(tl.int32) + tl.load(row + dn * W + j, mask=m, other=0).to(tl.int32)
         + tl.load(row + i * W + jl, mask=m, other=0).to(tl.int32) + tl.load(row + i * W + jr, mask=m, other=0).to(tl.int32))
    tb = thr_ptr + (lat * 5 if PER_LATTICE else 0)
    thr = tl.load(tb + (s + 4) // 2, mask=m, other=0)
    pos = (((t.to(tl.int64) * L + lat) * 2 + c) * H + i) * half + k
    w = _word_at(pos, _u32(seed_lo), _u32(seed_hi), _u32(off_lo), _u32(off_hi))
    new = tl.where((w >> 9).to(tl.int32) < thr, 1, -1).to(tl.int8)
    tl.store(row + i * W + j, new, mask=m)


def ising_sweep(spins, thr, per_lattice, sweeps, seed, offset):
    """spins int8 [L, H, W] contiguous, updated in place; thr int32 [L or 1, 5]."""
    L, H, W = spins.shape
    BLOCK = min(1024, triton.next_power_of_2(max(W // 2, 1)))
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    grid = (L * H, triton.cdiv(W // 2, BLOCK))
    for t in range(sweeps):
        for c in (0, 1):
            _ising_kernel[grid](spins, thr, L, H, W, t, c, PER_LATTICE=bool(per_lattice), seed_lo=s0, seed_hi=s1,
                                off_lo=o0, off_hi=o1, BLOCK=BLOCK)


@triton.jit(do_not_specialize=["t", "seed_lo", "seed_hi", "off_lo", "off_hi", "beta"])
def _bm_kernel(x_ptr, indptr_ptr, indices_ptr, values_ptr, bias_ptr, nodes_ptr, start, count, batch, n, max_deg,
               beta, t, seed_lo, seed_hi, off_lo, off_hi, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    q = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = q < count
    node = tl.load(nodes_ptr + start + q, mask=m, other=0)
    lo = tl.load(indptr_ptr + node, mask=m, other=0)
    hi = tl.load(indptr_ptr + node + 1, mask=m, other=0)
    xrow = x_ptr + b.to(tl.int64) * n
    acc = tl.load(bias_ptr + node, mask=m, other=0.0)
    for e in range(0, max_deg):
        me = m & (lo + e < hi)
        col = tl.load(indices_ptr + lo + e, mask=me, other=0)
        val = tl.load(values_ptr + lo + e, mask=me, other=0.0)
        acc += val * tl.load(xrow + col, mask=me, other=0.0)
    pos = (t.to(tl.int64) * batch + b) * n + node
    u = uniform_from_u32(_word_at(pos, _u32(seed_lo), _u32(seed_hi), _u32(off_lo), _u32(off_hi)))
    e = tl.exp(-(beta * acc))
    tl.store(xrow + node, tl.where(u + u * e < 1.0, 1.0, 0.0), mask=m)


def bm_gibbs(x, indptr, indices, values, bias, class_ptr, nodes, beta, sweeps, seed, offset):
    """x float32 [batch, n] updated in place; CSR (indptr, indices, values); classes nodes[class_ptr[c]:class_ptr[c+1]]."""
    batch, n = x.shape
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    deg = indptr[1:] - indptr[:-1]
    max_deg = int(deg.max()) if deg.numel() else 0
    cp = class_ptr.tolist()
    for t in range(sweeps):
        for c in range(len(cp) - 1):
            count = cp[c + 1] - cp[c]
            BLOCK = min(256, triton.next_power_of_2(max(count, 1)))
            _bm_kernel[(batch, triton.cdiv(count, BLOCK))](x, indptr, indices, values, bias, nodes, cp[c], count, batch, n,
                                                           max_deg, float(beta), t, s0, s1, o0, o1, BLOCK=BLOCK)


LANGEVIN_BLOCK = 1024


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "half", "coef", "lo", "hi"])
def _langevin_kernel(x_ptr, g_ptr, out_ptr, n, half, coef, lo, hi, seed_lo, seed_hi, off_lo, off_hi,
                     CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    ROWS: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    start = pid * BLOCK
    rows = tl.arange(0, ROWS)
    z0, z1, z2, z3 = normal4(seed_lo, seed_hi, off_lo, off_hi, pid * ROWS + rows)
    lane = tl.arange(0, 4)[None, :]
    z = tl.where(lane == 0, z0[:, None], tl.where(lane == 1, z1[:, None], tl.where(lane == 2, z2[:, None], z3[:, None])))
    local = rows[:, None] * 4 + lane
    msk = local < (n - start)
    x = tl.load(x_ptr + start + local, mask=msk, other=0.0)
    g = tl.load(g_ptr + start + local, mask=msk, other=0.0)
    v = (x - half * g) + coef * z
    if CLAMP:
        v = tl.where(v < lo, lo, tl.where(v > hi, hi, v))  # a NaN stays NaN (compiled maximum / minimum drop it)
    tl.store(out_ptr + start + local, v, mask=msk)


def langevin_step(x, grad, out, half, coef, clamp, lo, hi, seed, offset):
    """out <- (x - half grad) + coef z (clamped to [lo, hi]); x, grad, out float32 contiguous."""
    n = x.numel()
    if n == 0:
        return
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    _langevin_kernel[(triton.cdiv(n, LANGEVIN_BLOCK),)](x, grad, out, n, float(half), float(coef), float(lo), float(hi),
                                                         s0, s1, o0, o1, CLAMP=bool(clamp), BLOCK=LANGEVIN_BLOCK)
