"""Flow transforms in Triton: the triton backend of genengine.ops.rq_spline / affine_coupling (twin of
csrc/cuda/flows.cu and csrc/cpu/flows.cpp; the formulas are genengine/reference/flows.py's).

rq_spline: a program owns BLOCK elements and holds their parameters as [BLOCK, KP] tiles (KP = the
next power of two >= K + 1): the softmaxes, the cumulative knots (tl.cumsum), the bin index (a count
of the interior knots <= the point) and the bin's values (one-hot row sums) all stay in registers;
nothing is gathered from memory by index and nothing is synchronised with the host. The backward
recomputes the knots and writes the gradients of x and of every parameter row.

Shapes (the op's kernel contract): x, y, lad, gx (n,) contiguous; widths, heights rows of K and
derivatives rows of KD = K - 1 (interior knots, boundary derivatives 1) or K + 1, each with a row
stride (unit stride along the row); gw, gh, gd likewise (their own row strides). dtypes: float32 or float64 throughout.

affine_coupling: a program owns ROWS rows and walks D in BLOCK_D columns, writing y and summing
log_scale into the row's log-determinant (backward: gx, gshift, glog_scale in one pass).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["rq_spline_fwd", "rq_spline_bwd", "affine_coupling_fwd", "affine_coupling_bwd"]

BLOCK = 128       # elements per program (float32 at K = 8: 3 tiles of [128, 16] registers)
NUM_WARPS = 4
AFFINE_ROWS = 4
AFFINE_BLOCK_D = 256


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


@triton.jit
def _log1p(e):
    # log(1 + e) without losing tiny e: log(u) * e / (u - 1) with u = 1 + e (exact where u == 1)
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _knots(p_ptr, rows, stride, mask, j, K: tl.constexpr, minv, bound):
    """(knots, bin sizes, softmax probabilities), each [BLOCK, KP], of the rows' K unnormalised sizes.
    A size is 2B w itself, not a difference of knots (full relative precision for narrow bins)."""
    jk = j[None, :] < K
    u = tl.load(p_ptr + rows[:, None] * stride + j[None, :], mask=mask[:, None] & jk, other=0.0)
    if u.dtype == tl.bfloat16:  # bfloat16 parameters (half the bytes): the math stays float32
        u = u.to(tl.float32)
    u = tl.where(jk, u, -float("inf"))
    umax = tl.max(u, axis=1)
    e = tl.where(jk, tl.exp(u - umax[:, None]), 0.0)
    p = e / tl.sum(e, axis=1)[:, None]
    size = tl.where(jk, minv + (1.0 - minv * K) * p, 0.0)
    before = tl.cumsum(size, axis=1) - size  # sizes of the bins below knot j
    kn = -bound + 2.0 * bound * before
    kn = tl.where(j[None, :] == 0, -bound, kn)
    kn = tl.where(j[None, :] >= K, bound, kn)
    return kn, 2.0 * bound * size, p


@triton.jit
def _pick(t, j, idx):
    return tl.sum(tl.where(j[None, :] == idx[:, None], t, 0.0), axis=1)


@triton.jit
def _setup(offs, mask, w_ptr, h_ptr, d_ptr, sw, sh, sd, bound, min_w, min_h, min_d, K: tl.constexpr, KD: tl.constexpr,
           KP: tl.constexpr, INVERSE_SEARCH: tl.constexpr, q):
    """The bin of q (in the heights' knots when INVERSE_SEARCH) and its values."""
    j = tl.arange(0, KP)
    rows = offs.to(tl.int64)
    cw, szw, pw = _knots(w_ptr, rows, sw, mask, j, K, min_w, bound)
    ch, szh, ph = _knots(h_ptr, rows, sh, mask, j, K, min_h, bound)
    if INVERSE_SEARCH:
        by = ch
    else:
        by = cw
    interior = (j[None, :] >= 1) & (j[None, :] < K)
    k = tl.sum(tl.where(interior & (q[:, None] >= by), 1, 0), axis=1)
    lo = _pick(cw, j, k)
    wk = _pick(szw, j, k)
    ylo = _pick(ch, j, k)
    hk = _pick(szh, j, k)
    if KD == K - 1:
        dm = (j[None, :] >= 1) & (j[None, :] < K)
        dcol = j - 1
    else:
        dm = j[None, :] <= K
        dcol = j
    raw = tl.load(d_ptr + rows[:, None] * sd + dcol[None, :], mask=mask[:, None] & dm, other=0.0)
    if raw.dtype == tl.bfloat16:
        raw = raw.to(tl.float32)
    rlo = _pick(raw, j, k)
    rhi = _pick(raw, j, k + 1)
    elo = tl.exp(-tl.abs(rlo))
    ehi = tl.exp(-tl.abs(rhi))
    dk = min_d + tl.maximum(rlo, 0.0) + _log1p(elo)
    dk1 = min_d + tl.maximum(rhi, 0.0) + _log1p(ehi)
    sk = tl.where(rlo >= 0, 1.0 / (1.0 + elo), elo / (1.0 + elo))
    sk1 = tl.where(rhi >= 0, 1.0 / (1.0 + ehi), ehi / (1.0 + ehi))
    if KD == K - 1:
        dk = tl.where(k == 0, 1.0, dk)
        sk = tl.where(k == 0, 0.0, sk)
        dk1 = tl.where(k == K - 1, 1.0, dk1)
        sk1 = tl.where(k == K - 1, 0.0, sk1)
    return j, k, lo, wk, ylo, hk, dk, dk1, sk, sk1, pw, ph


@triton.jit
def _rq_fwd_kernel(x_ptr, w_ptr, h_ptr, d_ptr, y_ptr, lad_ptr, n, sw, sh, sd, bound, min_w, min_h, min_d,
                   K: tl.constexpr, KD: tl.constexpr, KP: tl.constexpr, INVERSE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    inside = (x >= -bound) & (x <= bound)
    q = tl.minimum(tl.maximum(x, -bound), bound)
    j, k, lo, wk, ylo, hk, dk, dk1, sk, sk1, pw, ph = _setup(
        offs, mask, w_ptr, h_ptr, d_ptr, sw, sh, sd, bound, min_w, min_h, min_d, K, KD, KP, INVERSE, q)
    s = hk / wk
    c2 = dk + dk1 - 2.0 * s
    if INVERSE:
        dy = q - ylo
        qa = dy * c2 + hk * (s - dk)
        qb = hk * dk - dy * c2
        qc = -s * dy
        disc = tl.maximum(qb * qb - 4.0 * qa * qc, 0.0)
        t = (2.0 * qc) / (-qb - tl.sqrt(disc))
        t = tl.minimum(tl.maximum(t, 0.0), 1.0)
        # one Newton step on the forward map (the quadratic's root loses ulps where its roots are close)
        tt0 = t * (1.0 - t)
        om0 = 1.0 - t
        den0 = s + c2 * tt0
        f = hk * (s * t * t + dk * tt0) / den0 - dy
        dydt = hk * s * (dk1 * t * t + 2.0 * s * tt0 + dk * om0 * om0) / (den0 * den0)
        t = tl.minimum(tl.maximum(t - f / dydt, 0.0), 1.0)
        out = lo + t * wk
    else:
        t = tl.minimum(tl.maximum((q - lo) / wk, 0.0), 1.0)
        tt0 = t * (1.0 - t)
        out = ylo + hk * (s * t * t + dk * tt0) / (s + c2 * tt0)
    omt = 1.0 - t
    tt = t * omt
    den = s + c2 * tt
    dnum = s * s * (dk1 * t * t + 2.0 * s * tt + dk * omt * omt)
    lad = tl.log(dnum / (den * den))
    if INVERSE:
        lad = -lad
    out = tl.minimum(tl.maximum(out, -bound), bound)  # the last bin's lo + size may round past B
    tl.store(y_ptr + offs, tl.where(inside, out, x), mask=mask)
    tl.store(lad_ptr + offs, tl.where(inside, lad, 0.0), mask=mask)


@triton.jit
def _size_grads(p, j, k, gk, gk1, minv, bound, K: tl.constexpr):
    c = (1.0 - minv * K) * 2.0 * bound
    b = tl.where(k <= K - 2, gk1, 0.0)
    g = c * (tl.where(j[None, :] < k[:, None], gk[:, None], 0.0) + tl.where(j[None, :] <= k[:, None], b[:, None], 0.0))
    g = tl.where(j[None, :] < K, g, 0.0)
    dot = tl.sum(p * g, axis=1)
    return p * (g - dot[:, None])


@triton.jit
def _rq_bwd_kernel(x_ptr, w_ptr, h_ptr, d_ptr, gy_ptr, gl_ptr, gx_ptr, gw_ptr, gh_ptr, gd_ptr, n, sw, sh, sd, gsw, gsh, gsd,
                   bound,
                   min_w, min_h, min_d, K: tl.constexpr, KD: tl.constexpr, KP: tl.constexpr, INVERSE: tl.constexpr,
                   HAS_GY: tl.constexpr, HAS_GL: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)  # the point in the spline's domain
    if HAS_GY:
        gout = tl.load(gy_ptr + offs, mask=mask, other=0.0)
    else:
        gout = x * 0.0
    if HAS_GL:
        gl = tl.load(gl_ptr + offs, mask=mask, other=0.0)
    else:
        gl = x * 0.0
    inside = (x >= -bound) & (x <= bound)
    q = tl.minimum(tl.maximum(x, -bound), bound)
    j, k, lo, wk, ylo, hk, dk, dk1, sk, sk1, pw, ph = _setup(
        offs, mask, w_ptr, h_ptr, d_ptr, sw, sh, sd, bound, min_w, min_h, min_d, K, KD, KP, False, q)
    rw = 1.0 / wk
    s = hk * rw
    c2 = dk + dk1 - 2.0 * s
    t = tl.minimum(tl.maximum((q - lo) * rw, 0.0), 1.0)
    omt = 1.0 - t
    tt = t * omt
    up = 1.0 - 2.0 * t
    A = s * t * t + dk * tt
    den = s + c2 * tt
    rden = 1.0 / den
    R = A * rden
    Bq = dk1 * t * t + 2.0 * s * tt + dk * omt * omt
    rB = 1.0 / Bq
    dden_dt = c2 * up
    dden_ds = 1.0 - 2.0 * tt
    dR_dt = (2.0 * s * t + dk * up - R * dden_dt) * rden
    dR_ds = (t * t - R * dden_ds) * rden
    dR_ddk = tt * (1.0 - R) * rden
    dR_ddk1 = -R * tt * rden
    dL_dt = (2.0 * dk1 * t + 2.0 * s * up - 2.0 * dk * omt) * rB - 2.0 * dden_dt * rden
    dL_ds = 2.0 / s + 2.0 * tt * rB - 2.0 * dden_ds * rden
    dL_ddk = omt * omt * rB - 2.0 * tt * rden
    dL_ddk1 = t * t * rB - 2.0 * tt * rden
    g1 = gout
    if INVERSE:
        # implicit function theorem at x = g^{-1}(y): dL/dy = (g1 - gl Lx) / g'(x), and the
        # parameters see the forward's backward with (gy, gl) = (-dL/dy, -gl)
        F = s * s * Bq * rden * rden
        gin = (g1 - gl * (dL_dt * rw)) / F
        g1 = -gin
        gl = -gl
    hg = g1 * hk
    # the inverse holds y fixed: G_t is exactly -gy wk, which the sum reaches only as the difference
    # of two terms of size gl Lx wk (6% off in float32 at a steep bin's edge); as the C++ kernel
    if INVERSE:
        G_t = -gout * wk
    else:
        G_t = hg * dR_dt + gl * dL_dt
    G_s = hg * dR_ds + gl * dL_ds
    G_dk = (hg * dR_ddk + gl * dL_ddk) * sk
    G_dk1 = (hg * dR_ddk1 + gl * dL_ddk1) * sk1
    if not INVERSE:
        gin = G_t * rw
    g_lo = -G_t * rw
    g_wk = -(G_t * t + G_s * s) * rw
    g_hk = G_s * rw + g1 * R
    gck = tl.where(inside, g_lo - g_wk, 0.0)
    gck1 = tl.where(inside, g_wk, 0.0)
    ghk = tl.where(inside, g1 - g_hk, 0.0)
    ghk1 = tl.where(inside, g_hk, 0.0)
    rows = offs.to(tl.int64)
    kmask = mask[:, None] & (j[None, :] < K)
    tl.store(gw_ptr + rows[:, None] * gsw + j[None, :], _size_grads(pw, j, k, gck, gck1, min_w, bound, K), mask=kmask)
    tl.store(gh_ptr + rows[:, None] * gsh + j[None, :], _size_grads(ph, j, k, ghk, ghk1, min_h, bound, K), mask=kmask)
    if KD == K - 1:
        koff = k - 1
    else:
        koff = k
    gdk = tl.where(inside, G_dk, 0.0)
    gdk1 = tl.where(inside, G_dk1, 0.0)
    gd = tl.where(j[None, :] == koff[:, None], gdk[:, None], 0.0) + tl.where(j[None, :] == koff[:, None] + 1,
                                                                               gdk1[:, None], 0.0)
    tl.store(gd_ptr + rows[:, None] * gsd + j[None, :], gd, mask=mask[:, None] & (j[None, :] < KD))
    tl.store(gx_ptr + offs, tl.where(inside, gin, gout), mask=mask)


@triton.jit
def _affine_fwd_kernel(x_ptr, t_ptr, s_ptr, y_ptr, ld_ptr, rows, D, sx, st, ss, INVERSE: tl.constexpr,
                       ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rm = r < rows
    acc = tl.zeros([ROWS], dtype=tl.float32)
    acc = acc.to(x_ptr.dtype.element_ty)
    for c0 in range(0, D, BLOCK_D):
        c = c0 + tl.arange(0, BLOCK_D)
        m = rm[:, None] & (c[None, :] < D)
        x = tl.load(x_ptr + r[:, None] * sx + c[None, :], mask=m, other=0.0)
        t = tl.load(t_ptr + r[:, None] * st + c[None, :], mask=m, other=0.0)
        s = tl.load(s_ptr + r[:, None] * ss + c[None, :], mask=m, other=0.0)
        acc += tl.sum(s, axis=1)
        if INVERSE:
            y = (x - t) * tl.exp(-s)
        else:
            y = x * tl.exp(s) + t
        tl.store(y_ptr + r[:, None] * D + c[None, :], y, mask=m)
    if INVERSE:
        acc = -acc
    tl.store(ld_ptr + r, acc, mask=rm)


@triton.jit
def _affine_bwd_kernel(x_ptr, t_ptr, s_ptr, gy_ptr, gld_ptr, gx_ptr, gt_ptr, gs_ptr, rows, D, sx, st, ss,
                       INVERSE: tl.constexpr, HAS_GY: tl.constexpr, HAS_GLD: tl.constexpr, ROWS: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rm = r < rows
    if HAS_GLD:
        gld = tl.load(gld_ptr + r, mask=rm, other=0.0)
    else:
        gld = tl.zeros([ROWS], dtype=tl.float32).to(x_ptr.dtype.element_ty)
    for c0 in range(0, D, BLOCK_D):
        c = c0 + tl.arange(0, BLOCK_D)
        m = rm[:, None] & (c[None, :] < D)
        x = tl.load(x_ptr + r[:, None] * sx + c[None, :], mask=m, other=0.0)
        s = tl.load(s_ptr + r[:, None] * ss + c[None, :], mask=m, other=0.0)
        if HAS_GY:
            g = tl.load(gy_ptr + r[:, None] * D + c[None, :], mask=m, other=0.0)
        else:
            g = x * 0.0
        o = r[:, None] * D + c[None, :]
        if INVERSE:
            t = tl.load(t_ptr + r[:, None] * st + c[None, :], mask=m, other=0.0)
            e = g * tl.exp(-s)
            tl.store(gx_ptr + o, e, mask=m)
            tl.store(gt_ptr + o, -e, mask=m)
            tl.store(gs_ptr + o, -(e * (x - t)) - gld[:, None], mask=m)
        else:
            e = g * tl.exp(s)
            tl.store(gx_ptr + o, e, mask=m)
            tl.store(gt_ptr + o, g, mask=m)
            tl.store(gs_ptr + o, e * x + gld[:, None], mask=m)


# ----------------------------------------------------------------------------------------------
# launchers (the op's kernel contract)


def _check_f(name, t, dtype, device):
    if t.dtype != dtype or t.device != device:
        raise ValueError(f"{name}: expected {dtype} on {device}, got {t.dtype} on {t.device}")


def _spline_meta(x, w, d):
    k, kd = w.shape[1], d.shape[1]
    return k, kd, max(2, _next_pow2(k + 1))


def _param_dtype(x, w):
    """The parameters' dtype: x's, or bfloat16 with float32 x (read as is, math in float32)."""
    return torch.bfloat16 if (x.dtype == torch.float32 and w.dtype == torch.bfloat16) else x.dtype


def rq_spline_fwd(x, w, h, d, inverse, bound, min_w, min_h, min_d, y, lad) -> None:
    pd = _param_dtype(x, w)
    for nm, t, dt in (("w", w, pd), ("h", h, pd), ("d", d, pd), ("y", y, x.dtype), ("lad", lad, x.dtype)):
        _check_f(nm, t, dt, x.device)
    n = x.shape[0]
    k, kd, kp = _spline_meta(x, w, d)
    _rq_fwd_kernel[(triton.cdiv(n, BLOCK),)](
        x, w, h, d, y, lad, n, w.stride(0), h.stride(0), d.stride(0), float(bound), float(min_w), float(min_h),
        float(min_d), K=k, KD=kd, KP=kp, INVERSE=bool(inverse), BLOCK=BLOCK, num_warps=NUM_WARPS)


def rq_spline_bwd(inp, out, w, h, d, inverse, bound, min_w, min_h, min_d, gy, gl, gx, gw, gh, gd) -> None:
    pt = out if inverse else inp
    pd = _param_dtype(pt, w)
    for nm, t, dt in (("w", w, pd), ("h", h, pd), ("d", d, pd), ("gx", gx, pt.dtype), ("gw", gw, pd), ("gh", gh, pd),
                      ("gd", gd, pd)):
        _check_f(nm, t, dt, pt.device)
    n = pt.shape[0]
    k, kd, kp = _spline_meta(pt, w, d)
    final = None
    if pt.device.type == "cpu" and len({t.untyped_storage().data_ptr() for t in (gw, gh, gd)}) < 3:
        # the interpreter copies each pointer argument's storage and writes it back: outputs that share
        # one (the column blocks of a packed gradient) would overwrite each other, so they get their own
        final = (gw, gh, gd)
        gw, gh, gd = (torch.empty(t.shape, dtype=t.dtype) for t in final)
    _rq_bwd_kernel[(triton.cdiv(n, BLOCK),)](
        pt, w, h, d, gy if gy is not None else pt, gl if gl is not None else pt, gx, gw, gh, gd, n, w.stride(0),
        h.stride(0), d.stride(0), gw.stride(0), gh.stride(0), gd.stride(0), float(bound), float(min_w), float(min_h),
        float(min_d), K=k, KD=kd, KP=kp,
        INVERSE=bool(inverse), HAS_GY=gy is not None, HAS_GL=gl is not None, BLOCK=BLOCK, num_warps=NUM_WARPS)
    if final is not None:
        for dst, src in zip(final, (gw, gh, gd)):
            dst.copy_(src)


def affine_coupling_fwd(x, t, s, inverse, y, logdet) -> None:
    rows, dd = x.shape
    _affine_fwd_kernel[(triton.cdiv(rows, AFFINE_ROWS),)](
        x, t, s, y, logdet, rows, dd, x.stride(0), t.stride(0), s.stride(0), INVERSE=bool(inverse), ROWS=AFFINE_ROWS,
        BLOCK_D=min(AFFINE_BLOCK_D, max(16, _next_pow2(dd))), num_warps=NUM_WARPS)


def affine_coupling_bwd(x, t, s, inverse, gy, gld, gx, gt, gs) -> None:
    rows, dd = x.shape
    _affine_bwd_kernel[(triton.cdiv(rows, AFFINE_ROWS),)](
        x, t, s, gy if gy is not None else x, gld if gld is not None else x, gx, gt, gs, rows, dd, x.stride(0),
        t.stride(0), s.stride(0), INVERSE=bool(inverse), HAS_GY=gy is not None, HAS_GLD=gld is not None,
        ROWS=AFFINE_ROWS, BLOCK_D=min(AFFINE_BLOCK_D, max(16, _next_pow2(dd))), num_warps=NUM_WARPS)


