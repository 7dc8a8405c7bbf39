"""Naive-Bayes joint log-likelihood over all classes in Triton: the triton backend of
genengine.ops.naive_bayes (twin of csrc/cpu/naive_bayes.cpp).

A program owns BLOCK_N rows and every class: the (BLOCK_N, BLOCK_C) tile of jll is accumulated over
feature blocks of BLOCK_F as a (BLOCK_N, BLOCK_C, BLOCK_F) broadcast, then normalised per row
(max, log-sum-exp) in registers and stored once, with the row's lse. Math in x's dtype.
    kind 0 Gaussian:  jll = cst - 1/2 sum_f (x - p0)^2 * p1
    kind 1 Bernoulli: jll = cst + sum_f b(x) * p0,  b(x) = x > threshold (or x when not thresholded)
    kind 2:           jll is read from out and only normalised
    mode 0 / 1 / 2:   out = jll / jll - lse / exp(jll - lse)
Shapes: x (N, F) contiguous, out (N, C), lse (N,); p0, p1 (C, F), cst (C,) in x's dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["nb_joint_log_likelihood"]


@triton.jit
def _nb_kernel(x_ptr, p0_ptr, p1_ptr, cst_ptr, out_ptr, lse_ptr, N, F, C, threshold,
               KIND: tl.constexpr, MODE: tl.constexpr, USE_THRESHOLD: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_F: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cls = tl.arange(0, BLOCK_C)
    rmask = rows < N
    cmask = cls < C
    rows64 = rows.to(tl.int64)
    omask = rmask[:, None] & cmask[None, :]
    cst = tl.load(cst_ptr + cls, mask=cmask, other=0.0)
    if KIND == 2:
        jll = tl.load(out_ptr + rows64[:, None] * C + cls[None, :], mask=omask, other=0.0)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=cst.dtype)
        for f0 in range(0, F, BLOCK_F):
            fs = f0 + tl.arange(0, BLOCK_F)
            fmask = fs < F
            x = tl.load(x_ptr + rows64[:, None] * F + fs[None, :], mask=rmask[:, None] & fmask[None, :], other=0.0)
            pm = cmask[:, None] & fmask[None, :]
            p0 = tl.load(p0_ptr + cls[:, None] * F + fs[None, :], mask=pm, other=0.0)
            if KIND == 0:
                p1 = tl.load(p1_ptr + cls[:, None] * F + fs[None, :], mask=pm, other=0.0)
                d = x[:, None, :] - p0[None, :, :]
                acc += tl.sum(d * d * p1[None, :, :], axis=2)
            else:
                if USE_THRESHOLD:
                    x = tl.where(x > threshold, 1.0, 0.0).to(cst.dtype)
                acc += tl.sum(x[:, None, :] * p0[None, :, :], axis=2)
        if KIND == 0:
            jll = cst[None, :] - 0.5 * acc
        else:
            jll = cst[None, :] + acc
    neg = tl.full((BLOCK_N, BLOCK_C), float("-inf"), dtype=jll.dtype)
    jm = tl.where(cmask[None, :], jll, neg)
    m = tl.max(jm, axis=1)
    s = tl.sum(tl.exp(jm - m[:, None]), axis=1)
    lse = m + tl.log(s)
    if MODE == 1:
        res = jll - lse[:, None]
    elif MODE == 2:
        res = tl.exp(jll - lse[:, None])
    else:
        res = jll
    tl.store(out_ptr + rows64[:, None] * C + cls[None, :], res, mask=omask)
    tl.store(lse_ptr + rows64, lse, mask=rmask)


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def plan(n, f, c):
    """(BLOCK_N, BLOCK_C, BLOCK_F): the 3-D broadcast tile kept near 8K elements."""
    bc = max(2, _next_pow2(c))
    bf = max(2, min(_next_pow2(f), 32, max(2, 8192 // (bc * 16))))
    bn = max(2, min(64, _next_pow2(max(1, 8192 // (bc * bf)))))
    return bn, bc, bf


def nb_joint_log_likelihood(x, kind, p0, p1, cst, mode, use_threshold, threshold, out, lse):
    n, f = x.shape
    c = cst.shape[0]
    bn, bc, bf = plan(n, f, c)
    dummy = cst
    grid = (triton.cdiv(n, bn),)
    _nb_kernel[grid](x, p0 if p0 is not None else dummy, p1 if p1 is not None else dummy, cst, out, lse, n, f, c,
                     float(threshold), KIND=kind, MODE=mode, USE_THRESHOLD=bool(use_threshold),
                     BLOCK_N=bn, BLOCK_C=bc, BLOCK_F=bf)
