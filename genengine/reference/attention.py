"""Plain-PyTorch specification of the attention ops for autoregressive sampling: decode attention
over a (paged) KV cache, packed variable-length prefill attention, and rotary embedding + KV append.

Written from the definitions, SDPA-style with explicit boolean masks (no online softmax, no
splits), and run in float64 unless `dtype` says otherwise; every kernel backend is tested against it.

Conventions (the same in genengine.ops.attention):
  scores s = (q . k) * scale, then with softcap > 0: s = softcap * tanh(s / softcap)
  decode   q [B, Hq, D] or [B, Q, Hq, D]; query i of Q sits at position p = L - Q + i of its sequence
           (L = cache_seqlens[b]) and attends keys j with max(0, p - window + 1) <= j <= p (window
           None: no lower bound). A query with no key (L = 0, or p < 0) has output 0 and lse -inf.
  caches   contiguous [B, Hkv, S, D], or paged [num_pages, page_size, Hkv, D] where key j of sequence
           b lives in page block_table[b, j // page_size], slot j % page_size.
  GQA      query head h reads kv head h // (Hq // Hkv).
  lse      log(sum_j exp(s_j)) over the attended keys (natural log), float32 in the op, -inf when empty.
  prefill  packed q [T, Hq, D], k, v [Tk, Hkv, D]; sequence b owns queries cu_seqlens[b]:cu_seqlens[b+1]
           and keys cu_seqlens_k[b]:cu_seqlens_k[b+1]; with Lq queries and Lk keys, query i sits at
           position i + Lk - Lq (causal aligned bottom-right) and attends keys j <= that position (all
           keys when causal=False), and with a window only j > position - window.
  rope     NeoX (half-split) rotation of x[:rd]: x1 = x[:rd/2], x2 = x[rd/2:rd],
           out = (x1 cos - x2 sin, x2 cos + x1 sin); GPT-J (interleaved): pairs (x[2i], x[2i+1])
           rotate by angle i; dims >= rotary_dim pass through.
"""

from __future__ import annotations

import math

import torch


def _scores(q, k, scale, softcap, dtype):
    # q [..., Rq, D], k [..., Rk, D] -> [..., Rq, Rk]
    s = torch.matmul(q.to(dtype), k.to(dtype).transpose(-1, -2)) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    return s


def _masked_softmax_av(s, mask, v, dtype):
    """(out, lse): softmax over the last dim restricted to mask; rows without a key give 0 / -inf."""
    s = s.masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(s, dim=-1)
    empty = ~mask.any(-1)
    p = torch.exp(s - torch.where(empty, 0.0, lse).unsqueeze(-1))
    p = p.masked_fill(~mask, 0.0)
    out = torch.matmul(p, v.to(dtype))
    return out, lse


def gather_paged(cache, block_table, length):
    """The first `length` keys of one sequence from a paged cache [P, ps, Hkv, D] -> [Hkv, length, D]."""
    ps = cache.shape[1]
    j = torch.arange(length, device=cache.device)
    pages = block_table[j // ps].long()
    return cache[pages, j % ps].transpose(0, 1)


def decode_attention(q, k_cache, v_cache, cache_seqlens, *, block_table=None, scale=None, softcap=0.0, window=None,
                     dtype=torch.float64):
    """(out, lse) in `dtype`; shapes as the op: out like q, lse [B, (Q,) Hq]."""
    single = q.dim() == 3
    q4 = q.unsqueeze(1) if single else q
    B, Q, Hq, D = q4.shape
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    hkv = k_cache.shape[1] if block_table is None else k_cache.shape[2]
    G = Hq // hkv
    out = torch.zeros(B, Q, Hq, D, dtype=dtype, device=q.device)
    lse = torch.full((B, Q, Hq), -math.inf, dtype=dtype, device=q.device)
    for b in range(B):
        L = int(cache_seqlens[b])
        if L == 0:
            continue
        if block_table is None:
            k, v = k_cache[b, :, :L], v_cache[b, :, :L]
        else:
            k, v = gather_paged(k_cache, block_table[b], L), gather_paged(v_cache, block_table[b], L)
        k = k.repeat_interleave(G, dim=0)  # [Hq, L, D]
        v = v.repeat_interleave(G, dim=0)
        qb = q4[b].transpose(0, 1)  # [Hq, Q, D]
        s = _scores(qb, k, scale, softcap, dtype)  # [Hq, Q, L]
        pos = L - Q + torch.arange(Q, device=q.device)
        j = torch.arange(L, device=q.device)
        mask = j[None, :] <= pos[:, None]
        if window is not None:
            mask &= j[None, :] > pos[:, None] - window
        o, lb = _masked_softmax_av(s, mask.expand(Hq, Q, L), v, dtype)
        out[b] = o.transpose(0, 1)
        lse[b] = lb.transpose(0, 1)
    if single:
        return out[:, 0], lse[:, 0]
    return out, lse


def prefill_attention(q, k, v, cu_seqlens=None, *, cu_seqlens_k=None, causal=True, scale=None, softcap=0.0,
                      window=None, dtype=torch.float64):
    """(out [T, Hq, D], lse [T, Hq]) in `dtype`."""
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    if cu_seqlens is None:
        cu_q = [0, T]
        cu_k = [0, k.shape[0]] if cu_seqlens_k is None else [int(x) for x in cu_seqlens_k]
    else:
        cu_q = [int(x) for x in cu_seqlens]
        cu_k = cu_q if cu_seqlens_k is None else [int(x) for x in cu_seqlens_k]
    out = torch.zeros(T, Hq, D, dtype=dtype, device=q.device)
    lse = torch.full((T, Hq), -math.inf, dtype=dtype, device=q.device)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        lq, lk = q1 - q0, k1 - k0
        if lq == 0:
            continue
        qb = q[q0:q1].transpose(0, 1)  # [Hq, lq, D]
        kb = k[k0:k1].transpose(0, 1).repeat_interleave(G, dim=0)
        vb = v[k0:k1].transpose(0, 1).repeat_interleave(G, dim=0)
        s = _scores(qb, kb, scale, softcap, dtype)
        pos = torch.arange(lq, device=q.device) + (lk - lq)
        j = torch.arange(lk, device=q.device)
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
        if causal:
            mask &= j[None, :] <= pos[:, None]
        if window is not None:
            mask &= j[None, :] > pos[:, None] - window
        o, lb = _masked_softmax_av(s, mask.expand(Hq, lq, lk), vb, dtype)
        out[q0:q1] = o.transpose(0, 1)
        lse[q0:q1] = lb.transpose(0, 1)
    return out, lse


def rope_tables(max_position, rotary_dim, base=10000.0, dtype=torch.float64, device=None):
    """(cos, sin), each [max_position, rotary_dim // 2]: angle(p, i) = p * base^(-2i / rotary_dim)."""
    i = torch.arange(rotary_dim // 2, dtype=torch.float64, device=device)
    inv_freq = base ** (-2.0 * i / rotary_dim)
    ang = torch.arange(max_position, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def rotate(x, cos, sin, positions, rotary_dim=None, interleaved=False, dtype=torch.float64):
    """x [T, H, D] rotated at positions [T] with tables cos, sin [max_position, >= rotary_dim // 2]."""
    D = x.shape[-1]
    rd = D if rotary_dim is None else rotary_dim
    x = x.to(dtype)
    c = cos.to(dtype)[positions.long(), : rd // 2][:, None, :]
    s = sin.to(dtype)[positions.long(), : rd // 2][:, None, :]
    out = x.clone()
    if interleaved:
        x1, x2 = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = x1 * c - x2 * s
        out[..., 1:rd:2] = x2 * c + x1 * s
    else:
        x1, x2 = x[..., : rd // 2], x[..., rd // 2: rd]
        out[..., : rd // 2] = x1 * c - x2 * s
        out[..., rd // 2: rd] = x2 * c + x1 * s
    return out


def rope_append_kv(q, k, v, k_cache, v_cache, positions, cos, sin, *, seq_ids=None, block_table=None, rotary_dim=None,
                   interleaved=False, dtype=torch.float64):
    """(q_rot, k_rot) in `dtype`, and k_rot, v written (in the caches' dtype) into the caches in place."""
    T = q.shape[0]
    if seq_ids is None:
        seq_ids = torch.arange(T, device=q.device)
    q_rot = rotate(q, cos, sin, positions, rotary_dim, interleaved, dtype)
    k_rot = rotate(k, cos, sin, positions, rotary_dim, interleaved, dtype)
    for t in range(T):
        b, p = int(seq_ids[t]), int(positions[t])
        if block_table is None:
            k_cache[b, :, p] = k_rot[t].to(k_cache.dtype)
            v_cache[b, :, p] = v[t].to(v_cache.dtype)
        else:
            ps = k_cache.shape[1]
            page = int(block_table[b, p // ps])
            k_cache[page, p % ps] = k_rot[t].to(k_cache.dtype)
            v_cache[page, p % ps] = v[t].to(v_cache.dtype)
    return q_rot, k_rot
