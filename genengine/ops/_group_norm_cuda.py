"""The cuda backend of fused GroupNorm + SiLU: a thin shim over genengine._cuda.group_norm_silu_fwd /
_bwd (csrc/cuda/group_norm.cu), with the same contract as genengine.kernels.group_norm:

    group_norm_silu_fwd(x, weight, bias, num_groups, eps, channels_last, y, mean, rstd) -> None
    group_norm_silu_bwd(dy, x, weight, bias, mean, rstd, num_groups, channels_last, dx, dweight, dbias) -> None

Shape conventions: x, y, dy, dx (N, C, *spatial), S = prod(spatial), one dtype (float32, bfloat16,
float16) on one CUDA device, (N, C, S) contiguous memory, or (N, S, C) with channels_last;
weight, bias, dweight, dbias float32 contiguous (C,) or None; mean, rstd float32 (N, G).

The shim plans the launch (each (sample, group) is split into `splits` chunks of s_chunk spatial
positions so that about WAVES blocks per SM run even for N * G = 64 groups), allocates the float32
workspaces for the partial sums as torch tensors (the extension does not link libtorch) and
launches on the current torch stream. Argument checks reuse the Triton module's when it imports.
"""

from __future__ import annotations

import torch

from .. import _backends

__all__ = ["group_norm_silu_fwd", "group_norm_silu_bwd", "plan"]

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
WAVES = 4                  # blocks per SM to aim for
MIN_BLOCK_ELEMS = 8192     # no split below this many elements per block
MAX_SPLITS = 64            # the finalize reads the partials of one group with one warp
_sms = {}


def _num_sms(device):
    idx = device.index if device.index is not None else torch.cuda.current_device()
    v = _sms.get(idx)
    if v is None:
        v = _sms[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return v


def plan(n, c, s, g, sms):
    """(s_chunk, splits): spatial positions per block and blocks per (sample, group). Chunks are
    whole multiples of 16 elements, so 16-byte vectors stay aligned at every chunk start."""
    group = (c // g) * s
    want = -(-WAVES * sms // (n * g))
    splits = max(1, min(want, MAX_SPLITS, group // MIN_BLOCK_ELEMS, s))
    s_chunk = -(-s // splits)
    if s_chunk < s:
        s_chunk = min(s, -(-s_chunk // 16) * 16)
    return s_chunk, -(-s // s_chunk)


def _checks():
    """The argument checks shared with the Triton backend (plain Python, no Triton needed)."""
    try:
        from ..kernels import group_norm as k
    except Exception:  # triton not installed: minimal checks of our own
        return None
    return k


def _check(x, num_groups, channels_last, outs, vecs, stats):
    k = _checks()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPE_CODE:
        raise TypeError(f"x: expected float32, bfloat16 or float16, got {x.dtype}")
    if x.device.type != "cuda":
        raise ValueError(f"x: the cuda backend needs a CUDA tensor, got one on {x.device}")
    if x.dim() < 2:
        raise ValueError(f"x: expected shape (N, C, *spatial), got {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    if not isinstance(num_groups, int) or num_groups <= 0 or c % num_groups:
        raise ValueError(f"num_groups: expected a positive divisor of C={c}, got {num_groups!r}")
    s = x.numel() // (n * c) if n * c else 0
    if k is not None:
        for name, t in [("x", x), *outs]:
            k._check_layout(name, t, tuple(x.shape), x.dtype, x.device, channels_last)
        for name, t in vecs:
            k._check_vec(name, t, c, x.device)
        for name, t in stats:
            k._check_stats(name, t, n, num_groups, x.device)
    else:
        for name, t in [("x", x), *outs]:
            if not isinstance(t, torch.Tensor) or t.shape != x.shape or t.dtype != x.dtype or t.device != x.device:
                raise ValueError(f"{name}: expected a tensor like x")
            ok = t.movedim(1, -1).is_contiguous() if channels_last else t.is_contiguous()
            if not ok:
                raise ValueError(f"{name}: expected {'channels_last' if channels_last else 'contiguous'} memory")
        for name, t in vecs:
            if t is not None and (t.shape != (c,) or t.dtype != torch.float32 or not t.is_contiguous()
                                  or t.device != x.device):
                raise ValueError(f"{name}: expected a contiguous float32 ({c},) tensor on {x.device}")
        for name, t in stats:
            if t.numel() != n * num_groups or t.dtype != torch.float32 or not t.is_contiguous() or t.device != x.device:
                raise ValueError(f"{name}: expected a contiguous float32 ({n}, {num_groups}) tensor on {x.device}")
    return n, c, s


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def group_norm_silu_fwd(x, weight, bias, num_groups: int, eps: float, channels_last: bool, y, mean, rstd) -> None:
    """y = silu(group_norm(x)); writes y, mean and rstd, asynchronously on the current stream."""
    channels_last = bool(channels_last)
    n, c, s = _check(x, num_groups, channels_last, [("y", y)], [("weight", weight), ("bias", bias)],
                     [("mean", mean), ("rstd", rstd)])
    if n * c == 0:
        return
    if s == 0:
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return
    g = num_groups
    s_chunk, splits = plan(n, c, s, g, _num_sms(x.device))
    part = torch.empty(n * g * splits * 2, dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        _backends.load_cuda().group_norm_silu_fwd(
            _DTYPE_CODE[x.dtype], n, c, s, g, channels_last, x.data_ptr(), _ptr(weight), _ptr(bias), float(eps),
            y.data_ptr(), mean.data_ptr(), rstd.data_ptr(), part.data_ptr(), s_chunk, splits,
            torch.cuda.current_stream(x.device).cuda_stream,
        )


def group_norm_silu_bwd(dy, x, weight, bias, mean, rstd, num_groups: int, channels_last: bool, dx, dweight, dbias) -> None:
    """Gradients of y = silu(group_norm(x)): writes dx (and dweight / dbias when not None)."""
    channels_last = bool(channels_last)
    n, c, s = _check(x, num_groups, channels_last, [("dy", dy), ("dx", dx)],
                     [("weight", weight), ("bias", bias), ("dweight", dweight), ("dbias", dbias)],
                     [("mean", mean), ("rstd", rstd)])
    if dweight is not None and weight is None:
        raise ValueError("dweight: given, but weight is None")
    if dbias is not None and bias is None:
        raise ValueError("dbias: given, but bias is None")
    if n * c * s == 0:
        for t in (dweight, dbias):
            if t is not None:
                t.zero_()
        return
    g = num_groups
    s_chunk, splits = plan(n, c, s, g, _num_sms(x.device))
    pc = torch.empty(n * splits * c * 2, dtype=torch.float32, device=x.device)
    pg = torch.empty(n * g * splits * 2, dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        _backends.load_cuda().group_norm_silu_bwd(
            _DTYPE_CODE[x.dtype], n, c, s, g, channels_last, dy.data_ptr(), x.data_ptr(), _ptr(weight), _ptr(bias),
            mean.data_ptr(), rstd.data_ptr(), dx.data_ptr(), _ptr(dweight), _ptr(dbias), pc.data_ptr(),
            pg.data_ptr(), s_chunk, splits, torch.cuda.current_stream(x.device).cuda_stream,
        )
