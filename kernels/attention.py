"""Attention for autoregressive sampling in Triton: the triton backend of genengine.ops.decode_attention,
prefill_attention and rope_append_kv (twins of csrc/cpu/attention.cpp and csrc/cuda/attention.cu).

Contract (the op has checked everything; `s` is its prepared argument record):
    decode_attention(s, out, lse)     out [B, Q, Hq, D] (q's dtype), lse float32 [B, Q, Hq]
    prefill_attention(s, out, lse)    out [T, Hq, D], lse float32 [T, Hq]
    rope_append_kv(s, q_out, k_out)   q_out [T, Hq, D], k_out [T, Hkv, D]; writes the caches

Decode (flash-decoding): one program per (sequence, kv head, KV split) holds the whole query group
(Q * Hq / Hkv rows, padded to >= 16 for tl.dot) and streams its share of the keys in blocks of
BLOCK_N: scores by tl.dot in float32 (input_precision="ieee": no TF32 rounding of the keys), an
online softmax in base 2 (queries pre-scaled by scale * log2 e), the value update by a second dot.
With several splits each program writes its normalised partial output and log-sum-exp, and a merge
kernel combines them; the split count is planned from the cache capacity (not the lengths, which
would need a device sync). Paged caches look each key's page up in the block table (clamped into
[0, num_pages), so no index can reach outside the cache); masked lanes are never loaded.
Prefill: one program per (sequence, query head, block of BLOCK_M queries) over its key range.
Rope: one program per token rotates all its heads (partner lanes loaded directly) and writes k, v.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .diffusion import _from_f32, _to_f32

__all__ = ["decode_attention", "prefill_attention", "rope_append_kv", "plan_splits"]

LOG2E = 1.4426950408889634
BLOCK_N = 64          # keys per step (decode and prefill)
BLOCK_M = 32          # prefill queries per program
MIN_SPLIT_KEYS = 256  # no KV split shorter than this
MAX_SPLITS = 64
WAVES = 2             # programs per SM to aim for


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _num_sms(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a small "GPU", so that the split path runs


def plan_splits(B, Hkv, capacity, sms):
    """KV splits per (sequence, kv head): enough programs for WAVES per SM, none under MIN_SPLIT_KEYS keys."""
    want = -(-WAVES * sms // max(1, B * Hkv))
    most = max(1, capacity // MIN_SPLIT_KEYS)
    return max(1, min(want, most, MAX_SPLITS))


@triton.jit
def _softcap2(s, softcap):
    """softcap * tanh(s / softcap) * log2(e). tanh(t) = t + t^3 Q(t^2) for |t| < 0.55 (relative error
    6.6e-8; the CPU kernel's kTanhQ), else 1 - 2 / (exp(2t) + 1) (exp2 saturates to inf / 0), which is
    only absolutely exact and would put ~1e-7 * softcap of error on every small score."""
    t = s * (1.0 / softcap)
    u = t * t
    q = (((-0.006274845646750267 * u + 0.021072091626934204) * u - 0.05385240570398127) * u
         + 0.13332587002559224) * u - 0.33333317583376937
    e = tl.exp2(tl.minimum(t * (2.0 * 1.4426950408889634), 126.0))
    th = tl.where(tl.abs(t) < 0.55, t + t * u * q, 1.0 - 2.0 / (e + 1.0))
    return th * (softcap * 1.4426950408889634)


@triton.jit
def _attend_block(q, acc, m, l, k_ptr, v_ptr, koff, voff, d, jm, dmask, j, lo, hi, rmask, softcap,
                  SOFTCAP: tl.constexpr):
    """One online-softmax step of the rows in q [R, BD] over the keys at koff / voff ([BN] offsets)."""
    kv_mask = jm[:, None] & dmask[None, :]
    k = _to_f32(tl.load(k_ptr + koff[:, None] + d[None, :], mask=kv_mask, other=0.0))
    s = tl.dot(q, tl.trans(k), input_precision="ieee")
    if SOFTCAP:
        s = _softcap2(s, softcap)
    mask = (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None]) & jm[None, :] & rmask[:, None]
    s = tl.where(mask, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m - m_safe)
    l = l * alpha + tl.sum(p, axis=1)
    v = _to_f32(tl.load(v_ptr + voff[:, None] + d[None, :], mask=kv_mask, other=0.0))
    acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
    return acc, m_new, l


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, len_ptr, out_ptr, lse_ptr, po_ptr, pl_ptr,
    Q, Hq, Hkv, G, R, D, k_sp, k_ss, k_sh, v_sp, v_ss, v_sh, bt_stride, page_size, num_pages, capacity,
    mult, softcap, window, splits,
    PAGED: tl.constexpr, SOFTCAP: tl.constexpr, WINDOW: tl.constexpr, PARTIAL: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // Hkv
    h = bh - b * Hkv
    L = tl.minimum(tl.maximum(tl.load(len_ptr + b), 0), capacity)
    rows = tl.arange(0, BLOCK_R)
    rmask = rows < R
    qi = rows // G
    g = rows - qi * G
    pos = L - Q + qi
    hi = tl.where(pos >= 0, pos + 1, 0)
    if WINDOW:
        lo = tl.minimum(tl.maximum(pos - window + 1, 0), hi)
        kb = tl.maximum(L - Q - window + 1, 0)
    else:
        lo = hi * 0
        kb = L * 0
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    qrow = ((b * Q + qi) * Hq + h * G + g).to(tl.int64)
    q = _to_f32(tl.load(q_ptr + qrow[:, None] * D + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)) * mult
    total = tl.maximum(L - kb, 0)
    chunk = (total + splits - 1) // splits
    klo = tl.minimum(L, kb + split * chunk)
    khi = tl.minimum(L, kb + (split + 1) * chunk)
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    for start in range(klo, khi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        jm = j < khi
        if PAGED:
            pi = j // page_size
            page = tl.load(bt_ptr + b.to(tl.int64) * bt_stride + pi, mask=jm, other=0)
            page = tl.minimum(tl.maximum(page, 0), num_pages - 1).to(tl.int64)
            slot = (j - pi * page_size).to(tl.int64)
        else:
            page = (j * 0 + b).to(tl.int64)
            slot = j.to(tl.int64)
        koff = page * k_sp + slot * k_ss + h * k_sh
        voff = page * v_sp + slot * v_ss + h * v_sh
        acc, m, l = _attend_block(q, acc, m, l, k_ptr, v_ptr, koff, voff, d, jm, dmask, j, lo, hi, rmask, softcap,
                                  SOFTCAP)
    has = (l > 0.0) | (l != l)  # a NaN score leaves l NaN: the row and its lse are NaN, as in the reference
    o = acc / tl.where(has, l, 1.0)[:, None]
    lse = tl.where(has, (m + tl.log2(tl.where(has, l, 1.0))) * 0.6931471805599453, float("-inf"))
    omask = rmask[:, None] & dmask[None, :]
    if PARTIAL:
        w = ((bh * R + rows) * splits + split).to(tl.int64)
        tl.store(po_ptr + w[:, None] * D + d[None, :], o, mask=omask)
        tl.store(pl_ptr + w, lse, mask=rmask)
    else:
        tl.store(out_ptr + qrow[:, None] * D + d[None, :], _from_f32(o, out_ptr.dtype.element_ty), mask=omask)
        tl.store(lse_ptr + qrow, lse, mask=rmask)


@triton.jit
def _merge_kernel(po_ptr, pl_ptr, out_ptr, lse_ptr, Q, Hq, Hkv, G, R, D, splits,
                  BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // Hkv
    h = bh - b * Hkv
    rows = tl.arange(0, BLOCK_R)
    rmask = rows < R
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    w0 = ((bh * R + rows) * splits).to(tl.int64)
    mx = tl.full([BLOCK_R], float("-inf"), tl.float32)
    for s in range(0, splits):
        mx = tl.maximum(mx, tl.load(pl_ptr + w0 + s, mask=rmask, other=float("-inf")))
    mx_safe = tl.where(mx == float("-inf"), 0.0, mx)
    tot = tl.zeros([BLOCK_R], tl.float32)
    o = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    for s in range(0, splits):
        ls = tl.load(pl_ptr + w0 + s, mask=rmask, other=float("-inf"))
        wgt = tl.exp(ls - mx_safe)
        part = tl.load(po_ptr + (w0 + s)[:, None] * D + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
        o += wgt[:, None] * part
        tot += wgt
    has = (tot > 0.0) | (tot != tot)  # a NaN split stays NaN
    o = o / tl.where(has, tot, 1.0)[:, None]
    lse = tl.where(has, mx_safe + tl.log(tl.where(has, tot, 1.0)), float("-inf"))
    qi = rows // G
    g = rows - qi * G
    qrow = ((b * Q + qi) * Hq + h * G + g).to(tl.int64)
    tl.store(out_ptr + qrow[:, None] * D + d[None, :], _from_f32(o, out_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])
    tl.store(lse_ptr + qrow, lse, mask=rmask)


def decode_attention(s, out, lse):
    """Runs decode attention for the op's prepared record `s` into out [B, Q, Hq, D] and lse [B, Q, Hq]."""
    c = s.cache
    G = s.Hq // c.Hkv
    R = s.Q * G
    splits = s.num_splits or plan_splits(s.B, c.Hkv, c.capacity, _num_sms(s.q.device))
    BR = max(16, _next_pow2(R))
    BD = max(16, _next_pow2(s.D))
    mult = s.scale if s.softcap > 0 else s.scale * LOG2E
    bt = c.block_table if c.paged else s.seqlens  # any int32 tensor when unused
    partial = splits > 1
    if partial:
        po = torch.empty((s.B * c.Hkv * R * splits, s.D), dtype=torch.float32, device=s.q.device)
        pl = torch.empty((s.B * c.Hkv * R * splits,), dtype=torch.float32, device=s.q.device)
    else:
        po, pl = lse, lse
    _decode_kernel[(s.B * c.Hkv, splits)](
        s.q, c.k, c.v, bt, s.seqlens, out, lse, po, pl,
        s.Q, s.Hq, c.Hkv, G, R, s.D, *c.strides(), bt.stride(0) if c.paged else 0, c.page_size, c.num_pages,
        c.capacity, mult, s.softcap if s.softcap > 0 else 1.0, s.window, splits,
        PAGED=c.paged, SOFTCAP=s.softcap > 0, WINDOW=s.window > 0, PARTIAL=partial,
        BLOCK_R=BR, BLOCK_N=BLOCK_N, BLOCK_D=BD, num_warps=4,
    )
    if partial:
        _merge_kernel[(s.B * c.Hkv,)](po, pl, out, lse, s.Q, s.Hq, c.Hkv, G, R, s.D, splits, BLOCK_R=BR, BLOCK_D=BD,
                                      num_warps=4)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, cuq_ptr, cuk_ptr, out_ptr, lse_ptr,
    Hq, G, D, k_st, k_sh, v_st, v_sh, mult, softcap, window,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    hq = tl.program_id(1)
    mb = tl.program_id(2)
    h = hq // G
    q0 = tl.load(cuq_ptr + b)
    lq = tl.load(cuq_ptr + b + 1) - q0
    k0 = tl.load(cuk_ptr + b)
    lk = tl.load(cuk_ptr + b + 1) - k0
    i = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    im = i < lq
    pos = i + lk - lq
    if CAUSAL:
        hi = tl.maximum(tl.minimum(pos + 1, lk), 0)
    else:
        hi = i * 0 + lk
    if WINDOW:
        lo = tl.minimum(tl.maximum(pos - window + 1, 0), hi)
    else:
        lo = i * 0
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    qrow = ((q0 + i) * Hq + hq).to(tl.int64)
    q = _to_f32(tl.load(q_ptr + qrow[:, None] * D + d[None, :], mask=im[:, None] & dmask[None, :], other=0.0)) * mult
    live = im & (lo < hi)
    klo = tl.min(tl.where(live, lo, lk), axis=0)
    khi = tl.max(tl.where(live, hi, 0), axis=0)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(klo, khi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        jm = j < khi
        t = (k0 + j).to(tl.int64)
        acc, m, l = _attend_block(q, acc, m, l, k_ptr, v_ptr, t * k_st + h * k_sh, t * v_st + h * v_sh, d, jm, dmask,
                                  j, lo, hi, im, softcap, SOFTCAP)
    has = (l > 0.0) | (l != l)  # a NaN score leaves l NaN: the row and its lse are NaN, as in the reference
    o = acc / tl.where(has, l, 1.0)[:, None]
    lse = tl.where(has, (m + tl.log2(tl.where(has, l, 1.0))) * 0.6931471805599453, float("-inf"))
    tl.store(out_ptr + qrow[:, None] * D + d[None, :], _from_f32(o, out_ptr.dtype.element_ty),
             mask=im[:, None] & dmask[None, :])
    tl.store(lse_ptr + qrow, lse, mask=im)


def prefill_attention(s, out, lse):
    """Runs prefill attention for the op's prepared record `s` into out [T, Hq, D] and lse [T, Hq]."""
    lens = (s.cu_q[1:] - s.cu_q[:-1])
    max_q = int(lens.max()) if lens.numel() else 0  # the grid's extent: one host read of B values
    if max_q == 0:
        return
    G = s.Hq // s.Hkv
    mult = s.scale if s.softcap > 0 else s.scale * LOG2E
    grid = (s.B, s.Hq, triton.cdiv(max_q, BLOCK_M))
    _prefill_kernel[grid](
        s.q, s.k, s.v, s.cu_q, s.cu_k, out, lse, s.Hq, G, s.D, s.k.stride(0), s.k.stride(1), s.v.stride(0),
        s.v.stride(1), mult, s.softcap if s.softcap > 0 else 1.0, s.window,
        CAUSAL=s.causal, SOFTCAP=s.softcap > 0, WINDOW=s.window > 0,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=max(16, _next_pow2(s.D)), num_warps=4,
    )


@triton.jit
def _rotate(x_ptr, base, hh, d, H, D, c, sn, half, RD, mask, INTERLEAVED: tl.constexpr):
    """Rows hh of one token ([BH, BD] tile at base + hh * D + d) rotated in float32."""
    offs = base + hh[:, None] * D + d[None, :]
    x = _to_f32(tl.load(x_ptr + offs, mask=mask, other=0.0))
    if INTERLEAVED:
        partner = d ^ 1
        sign = tl.where((d & 1) == 0, -1.0, 1.0)
    else:
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
    rot = d < RD
    pm = mask & rot[None, :]
    xp = _to_f32(tl.load(x_ptr + base + hh[:, None] * D + partner[None, :], mask=pm, other=0.0))
    y = x * c[None, :] + sign[None, :] * xp * sn[None, :]
    return tl.where(rot[None, :], y, x)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, v_ptr, qo_ptr, ko_ptr, kc_ptr, vc_ptr, pos_ptr, sid_ptr, cos_ptr, sin_ptr, bt_ptr,
    Hq, Hkv, D, RD, cs_stride, k_sp, k_ss, k_sh, v_sp, v_ss, v_sh, bt_stride, page_size, num_pages,
    PAGED: tl.constexpr, HAS_SID: tl.constexpr, INTERLEAVED: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    pos = tl.load(pos_ptr + t)
    if HAS_SID:
        b = tl.load(sid_ptr + t)
    else:
        b = t
    half = RD // 2
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    if INTERLEAVED:
        fi = d // 2
    else:
        fi = tl.where(d < half, d, d - half)
    rot = d < RD
    crow = pos.to(tl.int64) * cs_stride
    c = tl.load(cos_ptr + crow + fi, mask=rot, other=1.0)
    sn = tl.load(sin_ptr + crow + fi, mask=rot, other=0.0)
    hq = tl.arange(0, BLOCK_HQ)
    qmask = (hq < Hq)[:, None] & dmask[None, :]
    qbase = t.to(tl.int64) * Hq * D
    yq = _rotate(q_ptr, qbase, hq, d, Hq, D, c, sn, half, RD, qmask, INTERLEAVED)
    tl.store(qo_ptr + qbase + hq[:, None] * D + d[None, :], _from_f32(yq, qo_ptr.dtype.element_ty), mask=qmask)
    hk = tl.arange(0, BLOCK_HK)
    kmask = (hk < Hkv)[:, None] & dmask[None, :]
    kbase = t.to(tl.int64) * Hkv * D
    yk = _from_f32(_rotate(k_ptr, kbase, hk, d, Hkv, D, c, sn, half, RD, kmask, INTERLEAVED), ko_ptr.dtype.element_ty)
    tl.store(ko_ptr + kbase + hk[:, None] * D + d[None, :], yk, mask=kmask)
    if PAGED:
        pi = pos // page_size
        page = tl.load(bt_ptr + b.to(tl.int64) * bt_stride + pi)
        page = tl.minimum(tl.maximum(page, 0), num_pages - 1).to(tl.int64)
        slot = (pos - pi * page_size).to(tl.int64)
    else:
        page = b.to(tl.int64)
        slot = pos.to(tl.int64)
    hk64 = hk.to(tl.int64)
    tl.store(kc_ptr + page * k_sp + slot * k_ss + hk64[:, None] * k_sh + d[None, :], yk, mask=kmask)
    vv = tl.load(v_ptr + kbase + hk[:, None] * D + d[None, :], mask=kmask, other=0.0)
    tl.store(vc_ptr + page * v_sp + slot * v_ss + hk64[:, None] * v_sh + d[None, :], vv, mask=kmask)


def rope_append_kv(s, q_out, k_out):
    """Runs the fused rotary + KV append for the op's prepared record `s`."""
    c = s.cache
    bt = c.block_table if c.paged else s.positions
    sid = s.seq_ids if s.seq_ids is not None else s.positions
    _rope_kernel[(s.T,)](
        s.q, s.k, s.v, q_out, k_out, c.k, c.v, s.positions, sid, s.cos, s.sin, bt,
        s.Hq, s.Hkv, s.D, s.rd, s.cos.stride(0), *c.strides(), bt.stride(0) if c.paged else 0, c.page_size, c.num_pages,
        PAGED=c.paged, HAS_SID=s.seq_ids is not None, INTERLEAVED=s.interleaved,
        BLOCK_HQ=_next_pow2(s.Hq), BLOCK_HK=_next_pow2(s.Hkv), BLOCK_D=_next_pow2(s.D), num_warps=4,
    )
