"""The fused diffusion sampler step in Triton: the twin of csrc/common/step.h / csrc/cpu/diffusion.cpp.

What it is for: the Triton backend of `genengine.ops` sampler steps (DDPM, DDIM, Euler, Euler
ancestral, DPM-Solver++(2M)), one pass over the latent. Per element i (float32 math, the same
operations in the same order as the C++ kernel):
  p   = uncond + w * (cond - uncond)     with uncond (w = guidance_per_sample[i // inner] or guidance)
      = cond                              without
  x0  = kx * x + kp * p,  clamped to [clip_lo, clip_hi] when clipping (NaN passes through),
        or clamp(x0, -s, s) / s with s = thresholds[i // inner] (dynamic thresholding; the
        per-sample s come from kernels/threshold.py)
  out = ax * x + ap * p + a0 * x0 + aprev * prev + anoise * z
  x0_out[i] = x0                          when asked for
  out_dup[i] = out[i]                     when asked for (the same stored bits: a guided sampling
                                          loop writes the halves of its next model input [x; x])
where z is normal number i of the Philox stream (seed, offset) (kernels/rng.py) -- or of the stream
whose (seed, offset) the kernel loads from noise_key (int64 [2], uint64 bit patterns) when given, so
a captured CUDA graph draws with whatever key is in that memory at replay -- and the prev / z
terms are zero when prev is not given / anoise is 0 in float32 (like the C++ kernel, a zero term is
still added, so signed zeros come out the same).

Shape conventions: every latent tensor (out, x0_out, out_dup, x, cond, uncond, prev) is contiguous, has the
same dtype (float32, bfloat16 or float16) and n = x.numel() elements, viewed flat;
guidance_per_sample is a float32 tensor of [batch] weights, element i using weight i // inner
(inner = elements per sample). Each program handles BLOCK consecutive elements laid out as
[BLOCK // 4, 4]: row r holds the four normals of one Philox block, so there is one Philox call per
four elements. The grid is 1-D, cdiv(n, BLOCK). Index math is int64 (any n).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rng import _normal4_lohi, _u32, interleave4, split_u64

__all__ = ["sampler_step", "STEP_BLOCK", "STEP_NUM_WARPS"]

# Elements per program and warps (H100: 128 threads, two rows of four elements per thread, i.e.
# 8 elements and two Philox calls per thread; loads of 4 contiguous elements per row).
STEP_BLOCK = 1024
STEP_NUM_WARPS = 4

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _to_f32(v):
    """Widens a loaded tile to float32; bfloat16 by its bits (exact, also for NaN/inf/subnormals)."""
    if v.dtype == tl.bfloat16:
        return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return v.to(tl.float32)


@triton.jit
def _from_f32(v, dtype: tl.constexpr):
    """Narrows float32 to the latent dtype. bfloat16 rounds to nearest even by integer ops, NaN kept
    NaN with the quiet bit set, exactly like from_float<BF16> in csrc/cpu/cpu_common.h (the Triton
    interpreter's own float32 -> bfloat16 cast truncates); float16 uses the (RNE) cast."""
    if dtype == tl.bfloat16:
        b = v.to(tl.uint32, bitcast=True)
        rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        h = tl.where((b & 0x7FFFFFFF) > 0x7F800000, (b >> 16) | 0x40, rounded)
        return h.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)


@triton.jit
def _term(a, v):
    # a * v, where a zero coefficient drops its term (step.h's term): no 0 * inf = NaN from an input
    # the sampler's formula does not read
    return tl.where(a == 0.0, 0.0, a * v)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi"])
def _sampler_step_kernel(
    out_ptr, x0_ptr, x_ptr, cond_ptr, uncond_ptr, prev_ptr, gps_ptr, thr_ptr, key_ptr, dup_ptr,
    n, inner,
    guidance, kx, kp, ax, ap, a0, aprev, anoise, clip_lo, clip_hi,
    seed_lo, seed_hi, off_lo, off_hi,
    HAS_UNCOND: tl.constexpr, PER_SAMPLE_GUIDANCE: tl.constexpr, HAS_PREV: tl.constexpr,
    HAS_NOISE: tl.constexpr, WRITE_X0: tl.constexpr, CLIP: tl.constexpr,
    INNER_I32: tl.constexpr, BLOCK: tl.constexpr,
    THRESH: tl.constexpr = False, KEY_PTR: tl.constexpr = False, NEED_SAMPLE: tl.constexpr = False,
    WRITE_DUP: tl.constexpr = False,
):
    ROWS: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    start = pid * BLOCK                                      # int64 first element
    rows = tl.arange(0, ROWS)
    local = rows[:, None] * 4 + tl.arange(0, 4)[None, :]     # [ROWS, 4] int32, < BLOCK
    mask = local < (n - start)
    offs = start + local                                     # int64 element index

    x = _to_f32(tl.load(x_ptr + offs, mask=mask, other=0.0))
    c = _to_f32(tl.load(cond_ptr + offs, mask=mask, other=0.0))
    if NEED_SAMPLE:
        # sample = offs // inner, with one int64 division per program and int32 ones per element
        s0 = start // inner
        r = start - s0 * inner + local                   # < inner + BLOCK
        if INNER_I32:
            sample = s0 + (r.to(tl.int32) // inner)  # inner is int32 here
        else:
            sample = s0 + r // inner
    if HAS_UNCOND:
        u = _to_f32(tl.load(uncond_ptr + offs, mask=mask, other=0.0))
        if PER_SAMPLE_GUIDANCE:
            w = tl.load(gps_ptr + sample, mask=mask, other=0.0)
            p = u + w * (c - u)
        else:
            p = u + guidance * (c - u)
    else:
        p = c

    x0 = _term(kx, x) + kp * p
    if CLIP:
        x0 = tl.where(x0 < clip_lo, clip_lo, x0)
        x0 = tl.where(x0 > clip_hi, clip_hi, x0)
    if THRESH:
        s = tl.load(thr_ptr + sample, mask=mask, other=1.0)
        x0 = tl.where(x0 < -s, -s, x0)
        x0 = tl.where(x0 > s, s, x0)
        x0 = x0 / s

    acc = _term(ax, x) + _term(ap, p)
    acc = acc + _term(a0, x0)
    if HAS_PREV:
        pv = _to_f32(tl.load(prev_ptr + offs, mask=mask, other=0.0))
        acc = acc + _term(aprev, pv)
    else:
        acc = acc + aprev * 0.0
    if HAS_NOISE:
        # Philox block of row r is start // 4 + r; ROWS is a power of two, so the low word of the
        # program's first block plus r never carries into the high word
        b0 = pid * ROWS
        lo = b0.to(tl.uint32) + rows.to(tl.uint32)
        hi = (b0 >> 32).to(tl.uint32) + tl.zeros_like(lo)
        if KEY_PTR:
            # the key as it is in memory now (int64 bit patterns of the uint64 seed and offset)
            seed = tl.load(key_ptr)
            off = tl.load(key_ptr + 1)
            k0 = seed.to(tl.uint32)
            k1 = (seed >> 32).to(tl.uint32)
            o0 = off.to(tl.uint32)
            o1 = (off >> 32).to(tl.uint32)
        else:
            k0 = _u32(seed_lo)
            k1 = _u32(seed_hi)
            o0 = _u32(off_lo)
            o1 = _u32(off_hi)
        z0, z1, z2, z3 = _normal4_lohi(k0, k1, o0, o1, lo, hi)
        z = interleave4(z0, z1, z2, z3)
        acc = acc + anoise * z
    else:
        acc = acc + anoise * 0.0

    res = _from_f32(acc, out_ptr.dtype.element_ty)
    tl.store(out_ptr + offs, res, mask=mask)
    if WRITE_DUP:
        tl.store(dup_ptr + offs, res, mask=mask)
    if WRITE_X0:
        tl.store(x0_ptr + offs, _from_f32(x0, x0_ptr.dtype.element_ty), mask=mask)


def _f32_nonzero(v: float) -> bool:
    """Whether float(v) rounded to float32 is non-zero (NaN counts as non-zero), like `v != 0.0f`."""
    return not (abs(float(v)) <= 2.0 ** -150)  # |v| <= 2^-150 rounds to (signed) zero


def _check(name, t, ref):
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"sampler_step: {name} must be a tensor or None")
    if t.dtype != ref.dtype or t.numel() != ref.numel() or t.device != ref.device:
        raise ValueError(f"sampler_step: {name} must match x in dtype, numel and device "
                         f"(got {t.dtype}/{t.numel()}/{t.device}, x is {ref.dtype}/{ref.numel()}/{ref.device})")
    if not t.is_contiguous():
        raise ValueError(f"sampler_step: {name} must be contiguous")


def sampler_step(out, x0_out, x, cond, uncond, prev, guidance_per_sample, guidance, kx, kp, ax, ap,
                 a0, aprev, anoise, clip, clip_lo, clip_hi, seed, offset, inner, thresholds=None, noise_key=None,
                 out_dup=None):
    """One fused sampler step (see the module docstring); writes out (and x0_out) and returns out.

    out, x, cond (and x0_out, uncond, prev when not None): contiguous, one dtype (float32,
    bfloat16, float16), n = x.numel() elements each. guidance_per_sample: None or float32 [batch]
    (used only with uncond), element i uses weight i // inner. The coefficients are rounded to
    float32; seed and offset (the Philox stream of the noise) are taken modulo 2^64.
    thresholds: None or float32 [batch] dynamic thresholds (then clip must be False).
    noise_key: None or a contiguous int64 [2] tensor on x's device, read by the kernel in place of
    seed and offset. out_dup: None or a second output like out (not overlapping it) that receives
    the same values."""
    if x.dtype not in _DTYPES:
        raise TypeError(f"sampler_step: dtype {x.dtype} not supported (float32, bfloat16, float16)")
    for name, t in (("out", out), ("x0_out", x0_out), ("out_dup", out_dup), ("cond", cond), ("uncond", uncond),
                    ("prev", prev)):
        _check(name, t, x)
    if out is None or cond is None:
        raise ValueError("sampler_step: out and cond are required")
    _check("x", x, x)
    n = x.numel()
    inner = int(inner) if int(inner) > 0 else 1
    per_sample = guidance_per_sample is not None and uncond is not None
    if per_sample:
        g = guidance_per_sample
        if g.dtype != torch.float32 or not g.is_contiguous() or g.device != x.device:
            raise ValueError("sampler_step: guidance_per_sample must be a contiguous float32 tensor on x's device")
        if g.numel() < (n + inner - 1) // inner:
            raise ValueError(f"sampler_step: guidance_per_sample has {g.numel()} weights, "
                             f"needs {(n + inner - 1) // inner} (n={n}, inner={inner})")
    thresh = thresholds is not None
    if thresh:
        t = thresholds
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device != x.device or t.numel() * inner < n:
            raise ValueError("sampler_step: thresholds must be a contiguous float32 [batch] tensor on x's device")
        if clip:
            raise ValueError("sampler_step: clip and thresholds are exclusive")
    if noise_key is not None:
        k = noise_key
        if k.dtype != torch.int64 or k.numel() != 2 or not k.is_contiguous() or k.device != x.device:
            raise ValueError("sampler_step: noise_key must be a contiguous int64 tensor of 2 elements on x's device")
    if n == 0:
        return out
    s0, s1 = split_u64(seed)
    o0, o1 = split_u64(offset)
    grid = (triton.cdiv(n, STEP_BLOCK),)
    _sampler_step_kernel[grid](
        out, x0_out if x0_out is not None else out, x, cond,
        uncond if uncond is not None else x, prev if prev is not None else x,
        guidance_per_sample if per_sample else x,
        thresholds if thresh else x, noise_key if noise_key is not None else x,
        out_dup if out_dup is not None else out,
        n, inner,
        float(guidance), float(kx), float(kp), float(ax), float(ap), float(a0), float(aprev),
        float(anoise), float(clip_lo), float(clip_hi),
        s0, s1, o0, o1,
        HAS_UNCOND=uncond is not None, PER_SAMPLE_GUIDANCE=per_sample, HAS_PREV=prev is not None,
        HAS_NOISE=_f32_nonzero(anoise), WRITE_X0=x0_out is not None, CLIP=bool(clip),
        INNER_I32=inner + STEP_BLOCK < 2**31, BLOCK=STEP_BLOCK,
        THRESH=thresh, KEY_PTR=noise_key is not None, NEED_SAMPLE=per_sample or thresh,
        WRITE_DUP=out_dup is not None,
        num_warps=STEP_NUM_WARPS,
    )
    return out
