"""The Gaussian-mixture E-step with the M-step's sufficient statistics in Triton: the triton backend of
genengine.ops.gmm_e_step (twin of csrc/cpu/mixture.cpp; the contract is in csrc/cpu/mixture.h).

A program owns BLOCK_N rows (all D features, padded to BLOCK_D) and loops over the K components twice:
  pass 1: lp[n, c] = cst[c] - 1/2 m_c(x_n) (Mahalanobis distance through the triangular factor: for
          "full" x @ U_c, as a tl.dot for float32 tiles, a broadcast-multiply-sum otherwise; "tied"
          computes x @ U once), written to the (N, K) `lp` buffer (the resp output or a scratch), with an
          online log-sum-exp per row;
  pass 2: r = exp(lp - lse) per component: the responsibilities / their logs are written, and N_k,
          sum r x, sum r x x^T (or sum r x^2) are added to the float64 statistics with atomics (so
          their summation order, and last bits, vary from run to run).
Math in x's dtype. Shapes: x (N, D) contiguous; shift (D,) or a dummy; prec / b / cst as in mixture.h,
in x's dtype; log_norm (N,), lp (N, K) in x's dtype; nk (K,), sx (K, D), sxx (K, D, D) or (K, D) float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["gmm_e_step", "plan"]


@triton.jit
def _mdist(x, prec_ptr, b_ptr, c, D, dj, di, dmask, COV: tl.constexpr, BLOCK_D: tl.constexpr, USE_DOT: tl.constexpr):
    """m_c(x) for a [BLOCK_N, BLOCK_D] tile (full / diag / spherical)."""
    if COV == 0:
        um = dmask[:, None] & dmask[None, :]
        u = tl.load(prec_ptr + c * D * D + di[:, None] * D + dj[None, :], mask=um, other=0.0)
        if USE_DOT:
            y = tl.dot(x, u, input_precision="tf32x3")
        else:
            y = tl.sum(x[:, :, None] * u[None, :, :], axis=1)
        bc = tl.load(b_ptr + c * D + dj, mask=dmask, other=0.0)
        e = y - bc[None, :]
        m = tl.sum(e * e, axis=1)
    else:
        mu = tl.load(b_ptr + c * D + dj, mask=dmask, other=0.0)
        e = tl.where(dmask[None, :], x - mu[None, :], 0.0)
        if COV == 2:
            p = tl.load(prec_ptr + c * D + dj, mask=dmask, other=0.0)
            m = tl.sum(e * e * p[None, :], axis=1)
        else:
            m = tl.sum(e * e, axis=1) * tl.load(prec_ptr + c)
    return m


@triton.jit
def _gmm_kernel(x_ptr, shift_ptr, prec_ptr, b_ptr, cst_ptr, ln_ptr, lp_ptr, nk_ptr, sx_ptr, sxx_ptr, N, D, K,
                COV: tl.constexpr, RESP_MODE: tl.constexpr, STATS: tl.constexpr, HAS_SHIFT: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, USE_DOT: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    dj = tl.arange(0, BLOCK_D)
    dmask = dj < D
    xm = rmask[:, None] & dmask[None, :]
    x = tl.load(x_ptr + rows64[:, None] * D + dj[None, :], mask=xm, other=0.0)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + dj, mask=dmask, other=0.0)
        x = tl.where(xm, x - sh[None, :], 0.0)
    if COV == 1:
        um = dmask[:, None] & dmask[None, :]
        u = tl.load(prec_ptr + dj[:, None] * D + dj[None, :], mask=um, other=0.0)
        if USE_DOT:
            yt = tl.dot(x, u, input_precision="tf32x3")
        else:
            yt = tl.sum(x[:, :, None] * u[None, :, :], axis=1)
    m_run = tl.full((BLOCK_N,), float("-inf"), dtype=x.dtype)
    s_run = tl.zeros((BLOCK_N,), dtype=x.dtype)
    for c in range(K):
        if COV == 1:
            bc = tl.load(b_ptr + c * D + dj, mask=dmask, other=0.0)
            e = tl.where(dmask[None, :], yt - bc[None, :], 0.0)
            m = tl.sum(e * e, axis=1)
        else:
            m = _mdist(x, prec_ptr, b_ptr, c, D, dj, dj, dmask, COV, BLOCK_D, USE_DOT)
        lp = tl.load(cst_ptr + c) - 0.5 * m
        tl.store(lp_ptr + rows64 * K + c, lp, mask=rmask)
        m_new = tl.maximum(m_run, lp)
        s_run = s_run * tl.exp(m_run - m_new) + tl.exp(lp - m_new)
        m_run = m_new
    lse = m_run + tl.log(s_run)
    tl.store(ln_ptr + rows64, lse, mask=rmask)
    if RESP_MODE != 0 or STATS:
        tl.debug_barrier()
        for c in range(K):
            lp = tl.load(lp_ptr + rows64 * K + c, mask=rmask, other=0.0)
            if RESP_MODE == 2:
                tl.store(lp_ptr + rows64 * K + c, lp - lse, mask=rmask)
            r = tl.where(rmask, tl.exp(lp - lse), 0.0)
            if RESP_MODE == 1:
                tl.store(lp_ptr + rows64 * K + c, r, mask=rmask)
            if STATS:
                tl.atomic_add(nk_ptr + c, tl.sum(r, axis=0).to(tl.float64))
                rx = r[:, None] * x
                tl.atomic_add(sx_ptr + c * D + dj, tl.sum(rx, axis=0).to(tl.float64), mask=dmask)
                if COV == 0:
                    if USE_DOT:
                        s2 = tl.dot(tl.trans(rx), x, input_precision="tf32x3")
                    else:
                        s2 = tl.sum(rx[:, :, None] * x[:, None, :], axis=0)
                    tl.atomic_add(sxx_ptr + c * D * D + dj[:, None] * D + dj[None, :], s2.to(tl.float64),
                                  mask=dmask[:, None] & dmask[None, :])
                elif COV >= 2:
                    tl.atomic_add(sxx_ptr + c * D + dj, tl.sum(rx * x, axis=0).to(tl.float64), mask=dmask)


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def plan(n, d, dtype, cov):
    """(BLOCK_N, BLOCK_D, USE_DOT): tl.dot for float32 tiles of at least 16 x 16 (tf32x3: float32
    accuracy on tensor cores); the broadcast product otherwise, with the 3-D tile kept near 16K elements."""
    bd = max(2, _next_pow2(d))
    use_dot = dtype == torch.float32 and bd >= 16 and cov in (0, 1)
    if use_dot:
        return (64 if bd <= 64 else 32), bd, True
    bn = max(2, min(64, _next_pow2(max(1, 16384 // (bd * bd)))))
    return bn, bd, False


def gmm_e_step(x, shift, cov, prec, b, cst, log_norm, resp, resp_mode, stats):
    n, d = x.shape
    k = cst.shape[0]
    lp = resp if resp is not None else (torch.empty((n, k), dtype=x.dtype, device=x.device) if stats else
                                        torch.empty((1,), dtype=x.dtype, device=x.device))
    dummy64 = torch.zeros(1, dtype=torch.float64, device=x.device)
    nk, sx, sxx = stats if stats is not None else (dummy64, dummy64, dummy64)
    if sxx.numel() == 0:
        sxx = dummy64
    bn, bd, use_dot = plan(n, d, x.dtype, cov)
    grid = (triton.cdiv(n, bn),)
    _gmm_kernel[grid](x, shift if shift is not None else cst, prec, b, cst, log_norm, lp, nk, sx, sxx, n, d, k,
                      COV=cov, RESP_MODE=resp_mode, STATS=stats is not None, HAS_SHIFT=shift is not None,
                      BLOCK_N=bn, BLOCK_D=bd, USE_DOT=use_dot)
