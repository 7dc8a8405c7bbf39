"""Fused GroupNorm + SiLU in Triton (forward and backward): the triton backend of
`genengine.ops.group_norm_silu`, twin of csrc/cuda/group_norm.cu.

Math (float32): with G groups of cpg = C // G channels, per (n, g) mean and biased variance over the
cpg * S elements, rstd = 1 / sqrt(var + eps), xhat = (x - mean) * rstd, z = xhat * gamma + beta,
y = silu(z). Backward with g = dy * silu'(z) = dy * s * (1 + z * (1 - s)), s = sigmoid(z), gg = g * gamma:
    dbeta_c = sum_{n,s} g,  dgamma_c = sum_{n,s} g * xhat,
    dx = rstd * (gg - mean_group(gg) - xhat * mean_group(gg * xhat)).
z is recomputed from x, mean and rstd; no intermediate is stored.

Shape conventions: x, y, dy, dx have shape (N, C, *spatial), S = prod(spatial) (1 when there are no
spatial dims), one dtype (float32, bfloat16, float16), and one memory layout: (N, C, S) contiguous
("NCS"), or with channels_last (N, S, C) contiguous ("NSC"). weight, bias, dweight, dbias: float32
contiguous (C,) or None. mean, rstd: float32 (N, G).

Work decomposition (the same in the CUDA kernels): a program owns a "group block" of GPB whole groups
of one sample (GPB = 1 for NCS; for NSC enough groups that a row segment of GPB * cpg channels is a
long contiguous load) and one chunk of S_CHUNK spatial positions, so the grid is
(N * GBLOCKS, SPLITS) with SPLITS chosen from the SM count: even N * G = 64 groups fill an H100.
  forward   1. stats:  per (group, split) a partial (mean, M2), from per-tile column statistics
                       merged with Chan's formula (no E[x^2] - E[x]^2 cancellation; x = 50 + randn is fine).
            2. normalize: each program redoes the tiny finalize of its groups (the parallel Chan merge of
                       the SPLITS partials) and writes y; split 0 also writes mean and rstd.
  backward  1. reduce: per-(sample, split, channel) sums of g and g * xhat, and per-(group, split) sums
                       of gg and gg * xhat (gamma-weighted channel sums), into a float32 workspace.
            2. dx:     finalize the group sums, write dx; the program with n == 0 and split == 0 of each
                       group block also sums the per-channel partials into dweight / dbias in a fixed
                       order (deterministic, no atomics).
Tiles are [BC channels, BS spatial]; Triton picks the contiguous axis (spatial for NCS, channel for NSC).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .diffusion import _from_f32, _to_f32

__all__ = ["group_norm_silu_fwd", "group_norm_silu_bwd", "plan"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Planning knobs (module level so tests can force many splits on tiny inputs).
WAVES = 4                  # aim for this many programs per SM
MIN_PROGRAM_ELEMS = 8192   # do not split a group block below this many elements per program
MAX_SPLITS = 64            # the finalize gathers SPLITS partials per channel: keep it small
NSC_BLOCK_CHANNELS = 128   # channels-last: about this many channels per program (whole groups)
TILE = 2048                # elements per tile (16 per thread at 4 warps)
NSC_TILE_CHANNELS = 256    # channels-last: at most this many channels per tile (more loop)
SPLIT_ALIGN = 16           # spatial chunks are whole 16-byte vectors (for the CUDA twin's sake)
NUM_WARPS = 4


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _num_sms(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a small "GPU" so that the split paths run


def plan(n, c, s, g, channels_last, sms):
    """(GPB, GBLOCKS, S_CHUNK, SPLITS): groups per program, group blocks per sample, spatial positions
    per split and the number of splits."""
    cpg = c // g
    if channels_last:
        gpb = max(1, min(g, NSC_BLOCK_CHANNELS // cpg))
    else:
        gpb = 1
    gblocks = -(-g // gpb)
    nch = gpb * cpg
    rows = n * gblocks
    want = -(-WAVES * sms // rows)
    most = max(1, min(MAX_SPLITS, s * nch // MIN_PROGRAM_ELEMS, s))
    splits = max(1, min(want, most))
    s_chunk = -(-s // splits)
    if s_chunk < s:
        s_chunk = min(s, -(-s_chunk // SPLIT_ALIGN) * SPLIT_ALIGN)
    splits = -(-s // s_chunk)
    return gpb, gblocks, s_chunk, splits


def _tiles(cpg, gpb, s_chunk, channels_last):
    nch = gpb * cpg
    if channels_last:
        bc = min(_next_pow2(nch), NSC_TILE_CHANNELS)
        bs = max(1, min(TILE // bc, _next_pow2(s_chunk)))
    else:
        bs = min(_next_pow2(s_chunk), 512)
        bc = max(1, min(_next_pow2(nch), TILE // bs))
    return bc, bs


# ----------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _tile_offsets(c, s, C, S, CL: tl.constexpr, BIG: tl.constexpr):
    """Offsets inside one sample of the [BC, BS] tile (channels c, spatial positions s)."""
    if BIG:
        c = c.to(tl.int64)
        s = s.to(tl.int64)
    if CL:
        return c[:, None] + s[None, :] * C
    else:
        return c[:, None] * S + s[None, :]


@triton.jit
def _group_stats(part_ptr, gidx, cmask, cpg, S, S_CHUNK, SPLITS, eps, SB: tl.constexpr):
    """Finalize per channel: (mean, rstd) of the channel's group from the SPLITS partials (mean, M2)
    of gidx = n * G + group, by the parallel Chan merge. [BC] in, [BC] out."""
    j = tl.arange(0, SB)
    jm = j < SPLITS
    nj = (cpg * tl.minimum(tl.maximum(S - j * S_CHUNK, 0), S_CHUNK)).to(tl.float32)
    m2d = cmask[:, None] & jm[None, :]
    p = part_ptr + (gidx[:, None] * SPLITS + j[None, :]) * 2
    pm = tl.load(p, mask=m2d, other=0.0)
    pM2 = tl.load(p + 1, mask=m2d, other=0.0)
    total = (cpg * 1.0) * S  # float math: no int32 overflow; cpg and S may be constexpr 1 on a GPU
    mean = tl.sum(pm * nj[None, :], axis=1) / total
    d = pm - mean[:, None]
    M2 = tl.sum(pM2 + tl.where(m2d, nj[None, :] * d * d, 0.0), axis=1)
    var = M2 / total
    var = tl.where(var < 0.0, 0.0, var)  # a NaN stays NaN (a compiled maximum would drop it)
    rstd = 1.0 / tl.sqrt(var + eps)
    return mean, rstd


@triton.jit
def _affine(w_ptr, b_ptr, c, cm, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BC: tl.constexpr):
    """(gamma, beta) of channels c, [BC] float32; 1 and 0 when absent."""
    if HAS_W:
        gam = tl.load(w_ptr + c, mask=cm, other=0.0)
    else:
        gam = tl.where(cm, 1.0, 0.0)
    if HAS_B:
        bet = tl.load(b_ptr + c, mask=cm, other=0.0)
    else:
        bet = tl.zeros([BC], dtype=tl.float32)
    return gam, bet


@triton.jit
def _silu_grad(dy, xhat, gam, bet):
    z = xhat * gam + bet
    sig = 1.0 / (1.0 + tl.exp(-z))
    return dy * sig * (1.0 + z * (1.0 - sig))


# ----------------------------------------------------------------------------------------------
# forward


@triton.jit
def _gn_stats_kernel(
    x_ptr, part_ptr, C, S, G, cpg, GPB, GBLOCKS, S_CHUNK, SPLITS,
    CL: tl.constexpr, BIG: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr, GB: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    n = row // GBLOCKS
    g0 = (row - n * GBLOCKS) * GPB
    ch0 = g0 * cpg
    nch = tl.minimum(GPB * cpg, C - ch0)
    s_lo = split * S_CHUNK
    s_hi = tl.minimum(s_lo + S_CHUNK, S)
    xb = x_ptr + n.to(tl.int64) * C * S

    gi = tl.arange(0, GB)
    zero_g = tl.zeros([GB], dtype=tl.float32)
    acc_n = zero_g
    acc_m = zero_g
    acc_M2 = zero_g
    for cs in range(0, nch, BC):
        cl = cs + tl.arange(0, BC)
        cm = cl < nch
        c = ch0 + cl
        cnt = (s_lo * 0).to(tl.float32)
        m = tl.zeros([BC], dtype=tl.float32)
        M2 = tl.zeros([BC], dtype=tl.float32)
        for s0 in range(s_lo, s_hi, BS):
            s = s0 + tl.arange(0, BS)
            mask = cm[:, None] & (s < s_hi)[None, :]
            v = _to_f32(tl.load(xb + _tile_offsets(c, s, C, S, CL, BIG), mask=mask, other=0.0))
            nb = tl.minimum(s_hi - s0, BS).to(tl.float32)
            tm = tl.sum(v, axis=1) / nb
            d = tl.where(mask, v - tm[:, None], 0.0)
            tM2 = tl.sum(d * d, axis=1)
            tot = cnt + nb
            delta = tm - m
            m = m + delta * (nb / tot)
            M2 = M2 + tM2 + delta * delta * (cnt * nb / tot)
            cnt = tot
        # channels -> groups: every channel has cnt values; a group's mean is the mean of its channels'
        onehot = ((cl // cpg)[None, :] == gi[:, None]) & cm[None, :]
        k = tl.sum(onehot.to(tl.float32), axis=1)
        mg = tl.sum(tl.where(onehot, m[None, :], 0.0), axis=1) / tl.maximum(k, 1.0)
        dm = m[None, :] - mg[:, None]
        M2g = tl.sum(tl.where(onehot, M2[None, :] + cnt * dm * dm, 0.0), axis=1)
        nbg = k * cnt
        tot = acc_n + nbg
        w = nbg / tl.maximum(tot, 1.0)
        delta = mg - acc_m
        acc_m = acc_m + delta * w
        acc_M2 = acc_M2 + M2g + delta * delta * acc_n * w
        acc_n = tot
    gm = (gi < GPB) & (g0 + gi < G)
    p = part_ptr + ((n * G + g0 + gi) * SPLITS + split) * 2
    tl.store(p, acc_m, mask=gm)
    tl.store(p + 1, acc_M2, mask=gm)


@triton.jit
def _gn_norm_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, part_ptr, mean_ptr, rstd_ptr, eps,
    C, S, G, cpg, GPB, GBLOCKS, S_CHUNK, SPLITS,
    CL: tl.constexpr, BIG: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BC: tl.constexpr, BS: tl.constexpr, SB: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    n = row // GBLOCKS
    g0 = (row - n * GBLOCKS) * GPB
    ch0 = g0 * cpg
    nch = tl.minimum(GPB * cpg, C - ch0)
    s_lo = split * S_CHUNK
    s_hi = tl.minimum(s_lo + S_CHUNK, S)
    off0 = n.to(tl.int64) * C * S
    xb = x_ptr + off0
    yb = y_ptr + off0
    for cs in range(0, nch, BC):
        cl = cs + tl.arange(0, BC)
        cm = cl < nch
        c = ch0 + cl
        gidx = n * G + c // cpg
        mean, rstd = _group_stats(part_ptr, gidx, cm, cpg, S, S_CHUNK, SPLITS, eps, SB)
        first = cm & (cl % cpg == 0) & ((cl * 0 + split) == 0)  # a tensor mask on every Triton
        tl.store(mean_ptr + gidx, mean, mask=first)
        tl.store(rstd_ptr + gidx, rstd, mask=first)
        a = rstd
        if HAS_W:
            a = a * tl.load(w_ptr + c, mask=cm, other=0.0)
        b = -mean * a
        if HAS_B:
            b = b + tl.load(b_ptr + c, mask=cm, other=0.0)
        for s0 in range(s_lo, s_hi, BS):
            s = s0 + tl.arange(0, BS)
            mask = cm[:, None] & (s < s_hi)[None, :]
            offs = _tile_offsets(c, s, C, S, CL, BIG)
            v = _to_f32(tl.load(xb + offs, mask=mask, other=0.0))
            z = v * a[:, None] + b[:, None]
            out = z / (1.0 + tl.exp(-z))
            tl.store(yb + offs, _from_f32(out, y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# backward


@triton.jit
def _gn_bwd_reduce_kernel(
    dy_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, pc_ptr, pg_ptr,
    C, S, G, cpg, GPB, GBLOCKS, S_CHUNK, SPLITS,
    CL: tl.constexpr, BIG: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BC: tl.constexpr, BS: tl.constexpr, GB: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    n = row // GBLOCKS
    g0 = (row - n * GBLOCKS) * GPB
    ch0 = g0 * cpg
    nch = tl.minimum(GPB * cpg, C - ch0)
    s_lo = split * S_CHUNK
    s_hi = tl.minimum(s_lo + S_CHUNK, S)
    off0 = n.to(tl.int64) * C * S
    xb = x_ptr + off0
    dyb = dy_ptr + off0
    gi = tl.arange(0, GB)
    acc_gg = tl.zeros([GB], dtype=tl.float32)
    acc_ggx = tl.zeros([GB], dtype=tl.float32)
    for cs in range(0, nch, BC):
        cl = cs + tl.arange(0, BC)
        cm = cl < nch
        c = ch0 + cl
        gidx = n * G + c // cpg
        mean = tl.load(mean_ptr + gidx, mask=cm, other=0.0)
        rstd = tl.load(rstd_ptr + gidx, mask=cm, other=0.0)
        gam, bet = _affine(w_ptr, b_ptr, c, cm, HAS_W, HAS_B, BC)
        sg = tl.zeros([BC], dtype=tl.float32)
        sgx = tl.zeros([BC], dtype=tl.float32)
        for s0 in range(s_lo, s_hi, BS):
            s = s0 + tl.arange(0, BS)
            mask = cm[:, None] & (s < s_hi)[None, :]
            offs = _tile_offsets(c, s, C, S, CL, BIG)
            v = _to_f32(tl.load(xb + offs, mask=mask, other=0.0))
            dy = _to_f32(tl.load(dyb + offs, mask=mask, other=0.0))
            xhat = (v - mean[:, None]) * rstd[:, None]
            g = tl.where(mask, _silu_grad(dy, xhat, gam[:, None], bet[:, None]), 0.0)
            sg = sg + tl.sum(g, axis=1)
            sgx = sgx + tl.sum(g * xhat, axis=1)
        p = pc_ptr + ((n * SPLITS + split) * C + c) * 2
        tl.store(p, sgx, mask=cm)
        tl.store(p + 1, sg, mask=cm)
        onehot = ((cl // cpg)[None, :] == gi[:, None]) & cm[None, :]
        acc_gg = acc_gg + tl.sum(tl.where(onehot, (gam * sg)[None, :], 0.0), axis=1)
        acc_ggx = acc_ggx + tl.sum(tl.where(onehot, (gam * sgx)[None, :], 0.0), axis=1)
    gm = (gi < GPB) & (g0 + gi < G)
    p = pg_ptr + ((n * G + g0 + gi) * SPLITS + split) * 2
    tl.store(p, acc_gg, mask=gm)
    tl.store(p + 1, acc_ggx, mask=gm)


@triton.jit
def _gn_bwd_dx_kernel(
    dy_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, pc_ptr, pg_ptr, dx_ptr, dw_ptr, db_ptr,
    N, C, S, G, cpg, GPB, GBLOCKS, S_CHUNK, SPLITS,
    CL: tl.constexpr, BIG: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    WANT_DW: tl.constexpr, WANT_DB: tl.constexpr,
    BC: tl.constexpr, BS: tl.constexpr, SB: tl.constexpr, BR: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    n = row // GBLOCKS
    g0 = (row - n * GBLOCKS) * GPB
    ch0 = g0 * cpg
    nch = tl.minimum(GPB * cpg, C - ch0)
    s_lo = split * S_CHUNK
    s_hi = tl.minimum(s_lo + S_CHUNK, S)
    off0 = n.to(tl.int64) * C * S
    xb = x_ptr + off0
    dyb = dy_ptr + off0
    dxb = dx_ptr + off0
    inv_total = 1.0 / ((cpg * 1.0) * S)
    j = tl.arange(0, SB)
    jm = j < SPLITS
    for cs in range(0, nch, BC):
        cl = cs + tl.arange(0, BC)
        cm = cl < nch
        c = ch0 + cl
        gidx = n * G + c // cpg
        mean = tl.load(mean_ptr + gidx, mask=cm, other=0.0)
        rstd = tl.load(rstd_ptr + gidx, mask=cm, other=0.0)
        gam, bet = _affine(w_ptr, b_ptr, c, cm, HAS_W, HAS_B, BC)
        m2d = cm[:, None] & jm[None, :]
        p = pg_ptr + (gidx[:, None] * SPLITS + j[None, :]) * 2
        m1 = tl.sum(tl.load(p, mask=m2d, other=0.0), axis=1) * inv_total
        m2 = tl.sum(tl.load(p + 1, mask=m2d, other=0.0), axis=1) * inv_total
        for s0 in range(s_lo, s_hi, BS):
            s = s0 + tl.arange(0, BS)
            mask = cm[:, None] & (s < s_hi)[None, :]
            offs = _tile_offsets(c, s, C, S, CL, BIG)
            v = _to_f32(tl.load(xb + offs, mask=mask, other=0.0))
            dy = _to_f32(tl.load(dyb + offs, mask=mask, other=0.0))
            xhat = (v - mean[:, None]) * rstd[:, None]
            gg = _silu_grad(dy, xhat, gam[:, None], bet[:, None]) * gam[:, None]
            dx = rstd[:, None] * (gg - m1[:, None] - xhat * m2[:, None])
            tl.store(dxb + offs, _from_f32(dx, dx_ptr.dtype.element_ty), mask=mask)
        if WANT_DW or WANT_DB:
            if (n == 0) & (split == 0):
                # dweight / dbias of this block's channels: fixed-order sum over the N * SPLITS partials
                dwc = tl.zeros([BC], dtype=tl.float32)
                dbc = tl.zeros([BC], dtype=tl.float32)
                for r0 in range(0, N * SPLITS, BR):
                    r = r0 + tl.arange(0, BR)
                    pm = (r < N * SPLITS)[:, None] & cm[None, :]
                    q = pc_ptr + (r[:, None] * C + c[None, :]) * 2
                    dwc = dwc + tl.sum(tl.load(q, mask=pm, other=0.0), axis=0)
                    dbc = dbc + tl.sum(tl.load(q + 1, mask=pm, other=0.0), axis=0)
                if WANT_DW:
                    tl.store(dw_ptr + c, dwc, mask=cm)
                if WANT_DB:
                    tl.store(db_ptr + c, dbc, mask=cm)


# ----------------------------------------------------------------------------------------------
# host side


def _dims(x, num_groups):
    if x.dim() < 2:
        raise ValueError(f"x: expected shape (N, C, *spatial), got {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    s = 1
    for d in x.shape[2:]:
        s *= d
    if not isinstance(num_groups, int) or num_groups <= 0 or c % num_groups:
        raise ValueError(f"num_groups: expected a positive divisor of C={c}, got {num_groups!r}")
    return n, c, s


def _check_layout(name, t, shape, dtype, device, channels_last):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
        raise ValueError(f"{name}: expected {shape} {dtype} on {device}, got {tuple(t.shape)} {t.dtype} on {t.device}")
    n, c = shape[0], shape[1]
    s = t.numel() // max(1, n * c)
    ok = t.is_contiguous() if not channels_last else t.movedim(1, -1).reshape(n, s, c).is_contiguous()
    if not ok:
        want = "(N, S, C) (channels_last)" if channels_last else "(N, C, S)"
        raise ValueError(f"{name}: expected contiguous {want} memory")
    if channels_last and n * c * s and t.stride(1) != 1:
        raise ValueError(f"{name}: expected channels_last memory (stride 1 along C)")


def _check_vec(name, t, c, device):
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(t).__name__}")
    if t.shape != (c,) or t.dtype != torch.float32 or t.device != device or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous float32 ({c},) tensor on {device}, "
                         f"got {tuple(t.shape)} {t.dtype} on {t.device}")


def _check_stats(name, t, n, g, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.numel() != n * g or t.dtype != torch.float32 or t.device != device or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous float32 ({n}, {g}) tensor on {device}, "
                         f"got {tuple(t.shape)} {t.dtype} on {t.device}")


def _common(x, num_groups, channels_last):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x: expected float32, bfloat16 or float16, got {x.dtype}")
    n, c, s = _dims(x, num_groups)
    _check_layout("x", x, tuple(x.shape), x.dtype, x.device, channels_last)
    return n, c, s


def _launch_geometry(n, c, s, g, channels_last, device):
    gpb, gblocks, s_chunk, splits = plan(n, c, s, g, channels_last, _num_sms(device))
    bc, bs = _tiles(c // g, gpb, s_chunk, channels_last)
    big = n * c * s >= 2**31 or c * s + max(c, s) >= 2**31
    return gpb, gblocks, s_chunk, splits, bc, bs, big


def group_norm_silu_fwd(x, weight, bias, num_groups: int, eps: float, channels_last: bool, y, mean, rstd) -> None:
    """y = silu(group_norm(x)); writes y, mean and rstd (see the module docstring for layouts)."""
    channels_last = bool(channels_last)
    n, c, s = _common(x, num_groups, channels_last)
    g = num_groups
    _check_layout("y", y, tuple(x.shape), x.dtype, x.device, channels_last)
    _check_vec("weight", weight, c, x.device)
    _check_vec("bias", bias, c, x.device)
    _check_stats("mean", mean, n, g, x.device)
    _check_stats("rstd", rstd, n, g, x.device)
    if n * c == 0:
        return
    if s == 0:  # an empty group: the statistics of nothing, like torch's
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return
    gpb, gblocks, s_chunk, splits, bc, bs, big = _launch_geometry(n, c, s, g, channels_last, x.device)
    part = torch.empty(n * g * splits * 2, dtype=torch.float32, device=x.device)
    grid = (n * gblocks, splits)
    cpg = c // g
    _gn_stats_kernel[grid](
        x, part, c, s, g, cpg, gpb, gblocks, s_chunk, splits,
        CL=channels_last, BIG=big, BC=bc, BS=bs, GB=_next_pow2(gpb), num_warps=NUM_WARPS,
    )
    _gn_norm_kernel[grid](
        x, y, weight if weight is not None else x, bias if bias is not None else x, part, mean, rstd, float(eps),
        c, s, g, cpg, gpb, gblocks, s_chunk, splits,
        CL=channels_last, BIG=big, HAS_W=weight is not None, HAS_B=bias is not None,
        BC=bc, BS=bs, SB=_next_pow2(splits), num_warps=NUM_WARPS,
    )


def group_norm_silu_bwd(dy, x, weight, bias, mean, rstd, num_groups: int, channels_last: bool, dx, dweight, dbias) -> None:
    """Gradients of y = silu(group_norm(x)) given dy: writes dx (and dweight / dbias when not None)."""
    channels_last = bool(channels_last)
    n, c, s = _common(x, num_groups, channels_last)
    g = num_groups
    _check_layout("dy", dy, tuple(x.shape), x.dtype, x.device, channels_last)
    _check_layout("dx", dx, tuple(x.shape), x.dtype, x.device, channels_last)
    for name, t in (("weight", weight), ("bias", bias), ("dweight", dweight), ("dbias", dbias)):
        _check_vec(name, t, c, x.device)
    if dweight is not None and weight is None:
        raise ValueError("dweight: given, but weight is None")
    if dbias is not None and bias is None:
        raise ValueError("dbias: given, but bias is None")
    _check_stats("mean", mean, n, g, x.device)
    _check_stats("rstd", rstd, n, g, x.device)
    if n * c * s == 0:
        for t in (dweight, dbias):
            if t is not None:
                t.zero_()
        return
    gpb, gblocks, s_chunk, splits, bc, bs, big = _launch_geometry(n, c, s, g, channels_last, x.device)
    pc = torch.empty(n * splits * c * 2, dtype=torch.float32, device=x.device)
    pg = torch.empty(n * g * splits * 2, dtype=torch.float32, device=x.device)
    grid = (n * gblocks, splits)
    cpg = c // g
    w = weight if weight is not None else x
    b = bias if bias is not None else x
    flags = dict(CL=channels_last, BIG=big, HAS_W=weight is not None, HAS_B=bias is not None, BC=bc, BS=bs)
    _gn_bwd_reduce_kernel[grid](
        dy, x, w, b, mean, rstd, pc, pg, c, s, g, cpg, gpb, gblocks, s_chunk, splits,
        GB=_next_pow2(gpb), num_warps=NUM_WARPS, **flags,
    )
    want_w, want_b = dweight is not None, dbias is not None
    br = max(1, min(_next_pow2(n * splits), max(1, 4096 // bc)))
    _gn_bwd_dx_kernel[grid](
        dy, x, w, b, mean, rstd, pc, pg, dx,
        dweight if want_w else pc, dbias if want_b else pc,
        n, c, s, g, cpg, gpb, gblocks, s_chunk, splits,
        WANT_DW=want_w, WANT_DB=want_b, SB=_next_pow2(splits), BR=br, num_warps=NUM_WARPS, **flags,
    )
