"""Attention for autoregressive sampling: decode attention over a contiguous or paged KV cache,
packed variable-length prefill attention, and rotary embedding fused with the KV-cache append.

Shapes:
  decode_attention   q [B, Hq, D] (one token per sequence) or [B, Q, Hq, D] (Q tokens at the last Q
                     positions of each sequence, causal among themselves: speculative decoding);
                     k_cache, v_cache contiguous [B, Hkv, S, D], or paged [num_pages, page_size, Hkv, D]
                     with block_table [B, pages_per_seq] int32; cache_seqlens [B] int32 (the keys
                     each sequence has, its queries included). -> out like q, lse float32 [B, (Q,) Hq].
  prefill_attention  q [T, Hq, D], k, v [Tk, Hkv, D] packed; cu_seqlens [B + 1] int32 offsets of the
                     sequences' queries (and cu_seqlens_k of their keys, default cu_seqlens).
  rope_append_kv     q [T, Hq, D], k, v [T, Hkv, D] packed tokens; positions [T] int32 (rotary
                     position = cache slot); seq_ids [T] int32 (batch row; None: token t is row t);
                     cos, sin [max_position, rotary_dim // 2] float32 (rope_tables).
Semantics (the specification is genengine.reference.attention): scores (q . k) * scale (default
1 / sqrt(D)), then softcap * tanh(s / softcap) when softcap > 0; query at position p attends keys
(p - window, p] (window None: [0, p]); GQA/MQA: query head h reads kv head h // (Hq // Hkv). A query
with no key to attend (cache_seqlens 0, or a position < 0 when Q > L) gets output 0 and lse -inf.

dtypes: float32, bfloat16, float16 on the kernel backends (q and the caches share one dtype; math in
float32), float64 too on the torch backend. Head dims: 16, 32, 64, 80, 96, 128, 256 on the kernel
backends, any on torch. Page sizes 1..256. No autograd: these ops serve sampling (train with
PyTorch attention).

Checks (all before any kernel runs): shapes, dtypes, devices, Hq % Hkv, head dims, page sizes, and
the values: lengths within the cache capacity, block-table entries of every page a length reaches
within [0, num_pages), positions within the tables and the cache, seq_ids within the batch. The
value checks read the index tensors on the host (a device sync for CUDA tensors; skipped while a
CUDA graph is being captured, where the kernels' own clamping still keeps every access in bounds).

Kernels (cpp: genengine._C, csrc/cpu/attention.cpp; triton: genengine.kernels.attention; cuda:
genengine._cuda, csrc/cuda/attention.cu) split the KV length of each (sequence, kv head) across
workers and merge the partial results by log-sum-exp; `num_splits` forces the split count (the
result does not depend on it beyond rounding).
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _backends
from .._checks import to_float
from ..reference import attention as ref

__all__ = ["decode_attention", "prefill_attention", "rope_append_kv", "rope_tables", "HEAD_DIMS", "MAX_PAGE_SIZE"]

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
HEAD_DIMS = (16, 32, 64, 80, 96, 128, 256)  # on the kernel backends
MAX_PAGE_SIZE = 256

_DECODE_BACKENDS = ("torch", "cpp", "triton", "cuda")
_PREFILL_BACKENDS = ("torch", "cpp", "triton")
_ROPE_BACKENDS = ("torch", "cpp", "triton")
_modules = {}


def _kernel_module(name):
    mod = _modules.get(name)
    if mod is None:
        if name == "triton":
            mod = _backends.load_kernels("attention")
        else:
            import importlib

            mod = importlib.import_module("genengine.ops._attention_cuda")
        _modules[name] = mod
    return mod


def _on_device(t):
    """The tensor's CUDA device as the current one (launches go to its current stream); a no-op on the CPU."""
    import contextlib

    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# argument checks


def _tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return t


def _same_device(name, t, ref_t):
    if t.device != ref_t.device:
        raise ValueError(f"{name}: on device {t.device}, but q is on {ref_t.device}")


def _index_tensor(name, t, shape, device):
    _tensor(name, t)
    if t.dtype not in (torch.int32, torch.int64, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name}: expected an int32 tensor, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: on device {t.device}, but q is on {device}")
    if torch.compiler.is_compiling():
        return t  # traced: the custom op's eager body (the same checks) converts it, so no value is read here
    if t.dtype == torch.int64 and t.numel() and not _capturing(t):
        lo, hi = (int(x) for x in torch.aminmax(t))
        if lo < -(2**31) or hi >= 2**31:
            bad = lo if lo < -(2**31) else hi
            raise ValueError(f"{name}: value {bad} does not fit the kernels' int32 indices")
    if t.dtype != torch.int32 or not t.is_contiguous():
        t = t.to(torch.int32).contiguous()
    return t


def _float_arg(name, v, *, positive=False, nonneg=False, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    f = to_float(name, v)
    if not math.isfinite(f) or (positive and f <= 0) or (nonneg and f < 0):
        kind = "a finite number > 0" if positive else ("a finite number >= 0" if nonneg else "a finite number")
        raise ValueError(f"{name}: expected {kind}, got {v}")
    return f


# below this the kernels' 1 / softcap overflows float32 (a zero score would become 0 * inf = NaN);
# such a cap flattens every score to ~0 anyway. Above MAX_SOFTCAP, softcap * log2(e) overflows it
# (all-NaN outputs); such a cap changes no score below 1e26 (softcap * tanh(s / softcap) = s there).
MIN_SOFTCAP = 1e-6
MAX_SOFTCAP = 1e30


def _softcap(v):
    f = _float_arg("softcap", v, nonneg=True)
    if f != 0.0 and not MIN_SOFTCAP <= f <= MAX_SOFTCAP:
        raise ValueError(f"softcap: expected 0 (off) or a cap in [{MIN_SOFTCAP:g}, {MAX_SOFTCAP:g}], got {v}")
    return f


def _positive_head_dim(D, name):
    if D < 1:
        raise ValueError(f"{name}: expected a head dim (last) >= 1, got {D}")


def _int_arg(name, v, *, minimum=1, allow_none=True):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int{' or None' if allow_none else ''}, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return int(v)


def _dtype_ok(q, name="q"):
    if not q.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {q.dtype}")
    if q.dtype not in _DTYPE_CODE and q.dtype != torch.float64:
        raise TypeError(f"{name}: expected float32, bfloat16, float16 (or float64 on the torch backend), got {q.dtype}")
    return q.dtype in _DTYPE_CODE


def _head_dim(D, name, backend):
    if backend != "torch" and D not in HEAD_DIMS:
        raise ValueError(f"{name}: head dim {D} is not supported by the {backend} backend "
                         f"(expected one of {', '.join(map(str, HEAD_DIMS))}; backend='torch' takes any)")


def _last_contig(t):
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


class _Cache:
    """A checked KV-cache pair: layout, its strides for the kernels, and capacity per sequence."""

    __slots__ = ("k", "v", "paged", "B", "Hkv", "D", "page_size", "num_pages", "pages_per_seq", "capacity",
                 "block_table")

    def __init__(self, k_cache, v_cache, block_table, q, B, D, writable=False):
        _tensor("k_cache", k_cache)
        _tensor("v_cache", v_cache)
        for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
            if t.dtype != q.dtype:
                raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype} (expected one dtype for q and the caches)")
            _same_device(name, t, q)
            if t.dim() != 4:
                layout = "[num_pages, page_size, Hkv, D]" if block_table is not None else "[B, Hkv, S, D]"
                raise ValueError(f"{name}: expected a 4-d cache {layout}, got shape {tuple(t.shape)}")
        if v_cache.shape != k_cache.shape:
            raise ValueError(f"v_cache: expected k_cache's shape {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
        self.paged = block_table is not None
        if self.paged:
            P, ps, hkv, d = k_cache.shape
            if not 1 <= ps <= MAX_PAGE_SIZE:
                raise ValueError(f"k_cache: page size (dim 1) must be in 1..{MAX_PAGE_SIZE}, got {ps}")
            if P < 1:
                raise ValueError("k_cache: expected at least one page")
            _tensor("block_table", block_table)
            if block_table.dim() != 2 or block_table.shape[0] != B:
                raise ValueError(f"block_table: expected shape [B={B}, pages_per_seq], got {tuple(block_table.shape)}")
            self.block_table = _index_tensor("block_table", block_table, tuple(block_table.shape), q.device)
            self.page_size, self.num_pages, self.pages_per_seq = ps, P, block_table.shape[1]
            self.capacity = self.pages_per_seq * ps
        else:
            b, hkv, S, d = k_cache.shape
            if b != B:
                raise ValueError(f"k_cache: expected {B} sequences (dim 0, as q), got {b}")
            self.block_table = None
            self.page_size, self.num_pages, self.pages_per_seq = S, B, 1
            self.capacity = S
        if d != D:
            raise ValueError(f"k_cache: head dim (last) {d} differs from q's {D}")
        if hkv < 1:
            raise ValueError("k_cache: expected at least one kv head")
        self.B, self.Hkv, self.D = B, hkv, d
        if writable:
            for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
                if t.stride(-1) != 1 and d > 1:
                    raise ValueError(f"{name}: the written cache needs a unit stride in its last dim, got strides {t.stride()}")
            self.k, self.v = k_cache, v_cache
        else:
            self.k, self.v = _last_contig(k_cache), _last_contig(v_cache)

    def strides(self):
        """(k_sp, k_ss, k_sh, v_sp, v_ss, v_sh): page (batch), slot (position), head."""
        if self.paged:
            k, v = self.k.stride(), self.v.stride()
            return k[0], k[1], k[2], v[0], v[1], v[2]
        k, v = self.k.stride(), self.v.stride()
        return k[0], k[2], k[1], v[0], v[2], v[1]


def _host(t):
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


def _capturing(t):
    return t.device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _check_lengths(cache, seqlens, Q=1):
    """Values: 0 <= L <= capacity, and every page a length reaches is a valid page index."""
    if seqlens.device.type == "cpu" and not isinstance(_backends.load_cpp(), Exception):
        bt = cache.block_table
        code = _backends.load_cpp().attention_check_lengths(
            seqlens.data_ptr(), seqlens.shape[0], cache.capacity, bt.data_ptr() if bt is not None else 0,
            bt.stride(0) if bt is not None else 0, cache.page_size, cache.num_pages)
        if code == 0:
            return  # else the (rare) failure is described by the general path below
    if _capturing(seqlens):
        return
    L = _host(seqlens)
    if L.size == 0:
        return
    lo, hi = int(L.min()), int(L.max())
    if lo < 0:
        raise ValueError(f"cache_seqlens: expected lengths >= 0, got {lo} (sequence {int(L.argmin())})")
    if hi > cache.capacity:
        where = "pages_per_seq * page_size" if cache.paged else "the cache's S"
        raise ValueError(f"cache_seqlens: length {hi} (sequence {int(L.argmax())}) exceeds the cache capacity "
                         f"{cache.capacity} ({where})")
    if cache.paged:
        _check_pages(cache, L)


def _check_pages(cache, L):
    import numpy as np

    bt = _host(cache.block_table)
    need = -(-L.astype(np.int64) // cache.page_size)  # pages each sequence reaches
    used = np.arange(bt.shape[1])[None, :] < need[:, None]
    bad = used & ((bt < 0) | (bt >= cache.num_pages))
    if bad.any():
        b, j = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(f"block_table: entry [{b}, {j}] = {int(bt[b, j])} is outside [0, num_pages={cache.num_pages}) "
                         f"(sequence {b} reaches page {j})")


# ----------------------------------------------------------------------------------------------
# decode attention


class _Decode:
    __slots__ = ("name", "q", "cache", "seqlens", "B", "Q", "Hq", "D", "scale", "softcap", "window", "num_splits",
                 "single")


def _prepare_decode(q, k_cache, v_cache, cache_seqlens, block_table, scale, softcap, window, num_splits, backend):
    _tensor("q", q)
    dtype_ok = _dtype_ok(q)
    if q.dim() == 3:
        single = True
        B, Hq, D = q.shape
        Q = 1
    elif q.dim() == 4:
        single = False
        B, Q, Hq, D = q.shape
        if Q < 1:
            raise ValueError(f"q: expected at least one query token per sequence (dim 1), got {Q}")
    else:
        raise ValueError(f"q: expected shape [B, Hq, D] or [B, Q, Hq, D], got {tuple(q.shape)}")
    _positive_head_dim(D, "q")
    cache = _Cache(k_cache, v_cache, block_table, q, B, D)
    if Hq % cache.Hkv:
        raise ValueError(f"q: {Hq} query heads are not a multiple of the caches' {cache.Hkv} kv heads (Hq % Hkv must be 0)")
    s = _Decode()
    s.name = _backends.resolve(backend, _backends.device_type(q), _DECODE_BACKENDS, dtype_ok)
    _head_dim(D, "q", s.name)
    s.seqlens = _index_tensor("cache_seqlens", cache_seqlens, (B,), q.device)
    s.q = q.contiguous()
    s.cache, s.B, s.Q, s.Hq, s.D, s.single = cache, B, Q, Hq, D, single
    sc = _float_arg("scale", scale, allow_none=True)
    s.scale = 1.0 / math.sqrt(D) if sc is None else sc
    s.softcap = _softcap(softcap)
    # a window at least the cache's capacity bounds nothing, and more splits than keys split nothing:
    # clamped, so that huge values neither overflow the kernels' int64 sizes nor change the result
    s.window = min(_int_arg("window", window) or 0, cache.capacity)
    s.num_splits = min(_int_arg("num_splits", num_splits) or 0, max(cache.capacity, 1))
    return s


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _decode_torch(s, out, lse):
    c = s.cache
    ct = torch.float64 if s.q.dtype == torch.float64 else torch.float32
    o, lv = ref.decode_attention(s.q.view(s.B, s.Q, s.Hq, s.D), c.k, c.v, s.seqlens, block_table=c.block_table,
                                 scale=s.scale, softcap=s.softcap, window=s.window or None, dtype=ct)
    out.copy_(o)
    lse.copy_(lv)


def _decode_cpp(s, out, lse):
    c = s.cache
    bt = c.block_table
    _backends.load_cpp().decode_attention(
        _DTYPE_CODE[s.q.dtype], s.B, s.Q, s.Hq, c.Hkv, s.D, s.q.data_ptr(), out.data_ptr(),
        lse.data_ptr() if lse is not None else 0,
        c.k.data_ptr(), c.v.data_ptr(), *c.strides(), bt.data_ptr() if bt is not None else 0,
        bt.stride(0) if bt is not None else 0, c.page_size, c.num_pages, s.seqlens.data_ptr(), s.scale, s.softcap,
        s.window, s.num_splits)


def _run_decode(s, want_lse=True):
    """(out, lse); lse is None when not wanted and the backend can skip it (cpp)."""
    out = torch.empty((s.B, s.Q, s.Hq, s.D), dtype=s.q.dtype, device=s.q.device)
    lse = None
    if want_lse or s.name != "cpp":
        lse = torch.empty((s.B, s.Q, s.Hq), dtype=_lse_dtype(s.q), device=s.q.device)
    if s.B and s.Hq:
        if s.name == "cpp":
            _decode_cpp(s, out, lse)
        elif s.name == "torch":
            _decode_torch(s, out, lse)
        else:
            with _on_device(s.q):
                _kernel_module(s.name).decode_attention(s, out, lse)
    if s.single:
        return out.view(s.B, s.Hq, s.D), lse.view(s.B, s.Hq) if lse is not None else None
    return out, lse


@torch.library.custom_op("genengine::decode_attention", mutates_args=())
def _decode_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
               block_table: torch.Tensor | None, scale: float, softcap: float, window: int, num_splits: int,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = _prepare_decode(q, k_cache, v_cache, cache_seqlens, block_table, scale, softcap, window or None,
                        num_splits or None, backend)
    _check_lengths(s.cache, s.seqlens, s.Q)
    return _run_decode(s)


@_decode_op.register_fake
def _(q, k_cache, v_cache, cache_seqlens, block_table, scale, softcap, window, num_splits, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q))


def decode_attention(q, k_cache, v_cache, cache_seqlens, *, block_table=None, scale=None, softcap=0.0, window=None,
                     return_lse=False, num_splits=None, backend="auto"):
    """Attention of each sequence's newest query token(s) over its KV cache (flash-decoding).

    q [B, Hq, D] or [B, Q, Hq, D]; k_cache, v_cache [B, Hkv, S, D], or paged [num_pages, page_size,
    Hkv, D] with block_table [B, pages_per_seq] int32; cache_seqlens [B] int32, 0 allowed (that
    sequence's output is 0 and its lse -inf). The Q queries of a sequence of length L sit at
    positions L - Q .. L - 1 and are causal among themselves. window: attend only the last `window`
    positions (keys in (p - window, p]); softcap (0, or a cap in [1e-6, 1e30]): scores become softcap * tanh(s / softcap).
    Returns out (q's shape and dtype), and (out, lse) with return_lse, lse [B, (Q,) Hq] float32, the
    natural-log normaliser of each query's softmax. num_splits: KV splits per (sequence, kv head)
    (None: chosen from the shape and the thread / SM count).
    """
    s = _prepare_decode(q, k_cache, v_cache, cache_seqlens, block_table, scale, softcap, window, num_splits, backend)
    if torch.compiler.is_compiling():
        out, lse = _decode_op(s.q, s.cache.k, s.cache.v, s.seqlens, s.cache.block_table,
                              s.scale, s.softcap, s.window, s.num_splits, s.name)
    else:
        _check_lengths(s.cache, s.seqlens, s.Q)
        out, lse = _run_decode(s, want_lse=bool(return_lse))
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------------------------
# prefill attention


class _Prefill:
    __slots__ = ("name", "q", "k", "v", "cu_q", "cu_k", "B", "T", "Tk", "Hq", "Hkv", "D", "causal", "scale", "softcap",
                 "window", "max_q", "max_k")


def _cu(name, t, total, device):
    _tensor(name, t)
    if t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"{name}: expected a 1-d tensor of B + 1 >= 2 offsets, got shape {tuple(t.shape)}")
    return _index_tensor(name, t, tuple(t.shape), device)


def _check_cu(name, t, total):
    if _capturing(t):
        return
    import numpy as np

    c = _host(t)
    if int(c[0]) != 0 or int(c[-1]) != total:
        raise ValueError(f"{name}: expected offsets from 0 to {total} (the packed length), got {int(c[0])} .. {int(c[-1])}")
    d = np.diff(c)
    if (d < 0).any():
        raise ValueError(f"{name}: offsets must not decrease (sequence {int(np.argmax(d < 0))} has a negative length)")


def _prepare_prefill(q, k, v, cu_seqlens, cu_seqlens_k, causal, scale, softcap, window, backend):
    _tensor("q", q)
    _tensor("k", k)
    _tensor("v", v)
    dtype_ok = _dtype_ok(q)
    if q.dim() != 3:
        raise ValueError(f"q: expected packed shape [T, Hq, D], got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        _same_device(name, t, q)
        if t.dim() != 3:
            raise ValueError(f"{name}: expected packed shape [Tk, Hkv, D], got {tuple(t.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    T, Hq, D = q.shape
    Tk, Hkv, Dk = k.shape
    if Dk != D:
        raise ValueError(f"k: head dim {Dk} differs from q's {D}")
    _positive_head_dim(D, "q")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"q: {Hq} query heads are not a multiple of k's {Hkv} kv heads (Hq % Hkv must be 0)")
    s = _Prefill()
    s.name = _backends.resolve(backend, _backends.device_type(q), _PREFILL_BACKENDS, dtype_ok)
    _head_dim(D, "q", s.name)
    if cu_seqlens is None:
        s.cu_q = torch.tensor([0, T], dtype=torch.int32, device=q.device)
        if cu_seqlens_k is None:
            s.cu_k = torch.tensor([0, Tk], dtype=torch.int32, device=q.device)
        else:
            s.cu_k = _cu("cu_seqlens_k", cu_seqlens_k, Tk, q.device)
    else:
        s.cu_q = _cu("cu_seqlens", cu_seqlens, T, q.device)
        if cu_seqlens_k is None:
            if Tk != T:
                raise ValueError(f"k: {Tk} packed keys but {T} queries; pass cu_seqlens_k for queries fewer than keys")
            s.cu_k = s.cu_q
        else:
            s.cu_k = _cu("cu_seqlens_k", cu_seqlens_k, Tk, q.device)
    if s.cu_k.shape != s.cu_q.shape:
        raise ValueError(f"cu_seqlens_k: expected {s.cu_q.shape[0]} offsets (as cu_seqlens), got {s.cu_k.shape[0]}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    s.causal = causal
    sc = _float_arg("scale", scale, allow_none=True)
    s.scale = 1.0 / math.sqrt(D) if sc is None else sc
    s.softcap = _softcap(softcap)
    s.window = _int_arg("window", window) or 0
    if s.window and not causal:
        raise ValueError("window: a sliding window needs causal=True (it bounds keys to (p - window, p])")
    s.window = min(s.window, max(Tk, 1))  # a window as long as every sequence bounds nothing (no overflow)
    s.q, s.k, s.v = q.contiguous(), _last_contig(k), _last_contig(v)
    s.B, s.T, s.Tk, s.Hq, s.Hkv, s.D = s.cu_q.shape[0] - 1, T, Tk, Hq, Hkv, D
    return s


def _check_prefill_values(s):
    _check_cu("cu_seqlens" if s.cu_q.shape[0] > 2 or s.cu_q is s.cu_k else "cu_seqlens", s.cu_q, s.T)
    if s.cu_k is not s.cu_q:
        _check_cu("cu_seqlens_k", s.cu_k, s.Tk)


def _run_prefill(s):
    out = torch.empty((s.T, s.Hq, s.D), dtype=s.q.dtype, device=s.q.device)
    lse = torch.empty((s.T, s.Hq), dtype=_lse_dtype(s.q), device=s.q.device)
    if s.T and s.Hq:
        if s.name == "cpp":
            _backends.load_cpp().prefill_attention(
                _DTYPE_CODE[s.q.dtype], s.B, s.Hq, s.Hkv, s.D, s.q.data_ptr(), out.data_ptr(), lse.data_ptr(),
                s.k.data_ptr(), s.v.data_ptr(), s.k.stride(0), s.k.stride(1), s.v.stride(0), s.v.stride(1),
                s.cu_q.data_ptr(), s.cu_k.data_ptr(), s.causal, s.scale, s.softcap, s.window)
        elif s.name == "torch":
            ct = torch.float64 if s.q.dtype == torch.float64 else torch.float32
            o, lv = ref.prefill_attention(s.q, s.k, s.v, s.cu_q, cu_seqlens_k=s.cu_k, causal=s.causal, scale=s.scale,
                                          softcap=s.softcap, window=s.window or None, dtype=ct)
            out.copy_(o)
            lse.copy_(lv)
        else:
            with _on_device(s.q):
                _kernel_module(s.name).prefill_attention(s, out, lse)
    return out, lse


@torch.library.custom_op("genengine::prefill_attention", mutates_args=())
def _prefill_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, cu_seqlens_k: torch.Tensor,
                causal: bool, scale: float, softcap: float, window: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = _prepare_prefill(q, k, v, cu_seqlens, cu_seqlens_k, causal, scale, softcap, window or None, backend)
    _check_prefill_values(s)
    return _run_prefill(s)


@_prefill_op.register_fake
def _(q, k, v, cu_seqlens, cu_seqlens_k, causal, scale, softcap, window, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q))


def prefill_attention(q, k, v, cu_seqlens=None, *, cu_seqlens_k=None, causal=True, scale=None, softcap=0.0, window=None,
                      return_lse=False, backend="auto"):
    """Attention over packed variable-length sequences (a batch of prompts in one [T, H, D] tensor).

    q [T, Hq, D]; k, v [Tk, Hkv, D]; cu_seqlens [B + 1] int32 offsets of each sequence's queries in
    q (None: one sequence), cu_seqlens_k of its keys in k (default: cu_seqlens, i.e. Tk == T). With
    Lq queries over Lk >= Lq keys, causal masking is aligned bottom-right: query i sits at position
    i + Lk - Lq (a query at a negative position attends nothing: output 0). window: keys in
    (p - window, p] (needs causal). Returns out [T, Hq, D] (and lse float32 [T, Hq] with return_lse).
    """
    s = _prepare_prefill(q, k, v, cu_seqlens, cu_seqlens_k, causal, scale, softcap, window, backend)
    if torch.compiler.is_compiling():
        out, lse = _prefill_op(s.q, s.k, s.v, s.cu_q, s.cu_k, s.causal, s.scale, s.softcap, s.window, s.name)
    else:
        _check_prefill_values(s)
        out, lse = _run_prefill(s)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------------------------
# rotary embedding + KV append


def rope_tables(max_position, rotary_dim, base=10000.0, device=None):
    """(cos, sin), float32 [max_position, rotary_dim // 2]: angle(p, i) = p * base^(-2i / rotary_dim),
    computed in float64 and rounded once."""
    mp = _int_arg("max_position", max_position, allow_none=False)
    rd = _int_arg("rotary_dim", rotary_dim, minimum=2, allow_none=False)
    if rd % 2:
        raise ValueError(f"rotary_dim: expected an even number, got {rd}")
    b = _float_arg("base", base, positive=True)
    return ref.rope_tables(mp, rd, b, dtype=torch.float32, device=device)


class _Rope:
    __slots__ = ("name", "q", "k", "v", "cache", "positions", "seq_ids", "cos", "sin", "T", "Hq", "Hkv", "D", "rd",
                 "interleaved", "max_position")


def _prepare_rope(q, k, v, k_cache, v_cache, positions, cos, sin, seq_ids, block_table, rotary_dim, interleaved, backend):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor(name, t)
    dtype_ok = _dtype_ok(q)
    if q.dim() != 3:
        raise ValueError(f"q: expected packed shape [T, Hq, D], got {tuple(q.shape)}")
    T, Hq, D = q.shape
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        _same_device(name, t, q)
        if t.dim() != 3 or t.shape[0] != T or t.shape[2] != D:
            raise ValueError(f"{name}: expected shape [T={T}, Hkv, D={D}], got {tuple(t.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    Hkv = k.shape[1]
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"q: {Hq} query heads are not a multiple of k's {Hkv} kv heads (Hq % Hkv must be 0)")
    s = _Rope()
    s.name = _backends.resolve(backend, _backends.device_type(q), _ROPE_BACKENDS, dtype_ok)
    _head_dim(D, "q", s.name)
    B = k_cache.shape[0] if (isinstance(k_cache, torch.Tensor) and block_table is None and k_cache.dim() == 4) else (
        block_table.shape[0] if isinstance(block_table, torch.Tensor) and block_table.dim() == 2 else 0)
    s.cache = _Cache(k_cache, v_cache, block_table, q, B, D, writable=True)
    if s.cache.Hkv != Hkv:
        raise ValueError(f"k_cache: {s.cache.Hkv} kv heads, but k has {Hkv}")
    s.positions = _index_tensor("positions", positions, (T,), q.device)
    if seq_ids is None:
        if T > B:
            raise ValueError(f"seq_ids: None means token t is batch row t, but there are {T} tokens and {B} cache rows")
        s.seq_ids = None
    else:
        s.seq_ids = _index_tensor("seq_ids", seq_ids, (T,), q.device)
    rd = D if rotary_dim is None else _int_arg("rotary_dim", rotary_dim, minimum=2, allow_none=False)
    if rd % 2 or rd > D:
        raise ValueError(f"rotary_dim: expected an even number <= D={D}, got {rd}")
    for name, t in (("cos", cos), ("sin", sin)):
        _tensor(name, t)
        if t.dtype != torch.float32 and not (t.dtype == torch.float64 and q.dtype == torch.float64):
            raise TypeError(f"{name}: expected a float32 table (rope_tables), got {t.dtype}")
        _same_device(name, t, q)
        if t.dim() != 2 or t.shape[1] < rd // 2:
            raise ValueError(f"{name}: expected shape [max_position, rotary_dim // 2 = {rd // 2}], got {tuple(t.shape)}")
    if sin.shape != cos.shape:
        raise ValueError(f"sin: expected cos's shape {tuple(cos.shape)}, got {tuple(sin.shape)}")
    if not isinstance(interleaved, bool):
        raise TypeError(f"interleaved: expected a bool, got {type(interleaved).__name__}")
    s.cos, s.sin = _last_contig(cos), _last_contig(sin)
    if s.cos.stride() != s.sin.stride():
        s.cos, s.sin = s.cos.contiguous(), s.sin.contiguous()
    s.q, s.k, s.v = q.contiguous(), k.contiguous(), v.contiguous()
    s.T, s.Hq, s.Hkv, s.D, s.rd, s.interleaved, s.max_position = T, Hq, Hkv, D, rd, interleaved, cos.shape[0]
    return s


def _check_rope_values(s):
    if _capturing(s.positions) or s.T == 0:
        return
    c = s.cache
    if s.positions.device.type == "cpu" and not isinstance(_backends.load_cpp(), Exception):
        bt = c.block_table
        if _backends.load_cpp().attention_rope_values_ok(
                s.positions.data_ptr(), s.seq_ids.data_ptr() if s.seq_ids is not None else 0, s.T, c.B, s.max_position,
                c.capacity, bt.data_ptr() if bt is not None else 0, bt.stride(0) if bt is not None else 0, c.page_size,
                c.num_pages):
            return  # else the general path below says what is wrong
    import numpy as np

    p = _host(s.positions)
    lo, hi = int(p.min()), int(p.max())
    if lo < 0:
        raise ValueError(f"positions: expected positions >= 0, got {lo} (token {int(p.argmin())})")
    if hi >= s.max_position:
        raise ValueError(f"positions: position {hi} (token {int(p.argmax())}) is beyond the rotary tables' "
                         f"{s.max_position} positions")
    if hi >= s.cache.capacity:
        raise ValueError(f"positions: position {hi} (token {int(p.argmax())}) is beyond the cache capacity {s.cache.capacity}")
    if s.seq_ids is not None:
        b = _host(s.seq_ids)
        if int(b.min()) < 0 or int(b.max()) >= s.cache.B:
            bad = int(b.min()) if int(b.min()) < 0 else int(b.max())
            raise ValueError(f"seq_ids: batch row {bad} is outside [0, {s.cache.B})")
    else:
        b = np.arange(s.T)
    if s.cache.paged:
        bt = _host(s.cache.block_table)
        pages = bt[b, p // s.cache.page_size]
        bad = (pages < 0) | (pages >= s.cache.num_pages)
        if bad.any():
            t = int(np.argmax(bad))
            raise ValueError(f"block_table: entry [{int(b[t])}, {int(p[t]) // s.cache.page_size}] = {int(pages[t])} is "
                             f"outside [0, num_pages={s.cache.num_pages}) (token {t} writes there)")


def _rope_torch(s, q_out, k_out):
    c = s.cache
    ct = torch.float64 if s.q.dtype == torch.float64 else torch.float32
    q_out.copy_(ref.rotate(s.q, s.cos, s.sin, s.positions, s.rd, s.interleaved, ct))
    k_out.copy_(ref.rotate(s.k, s.cos, s.sin, s.positions, s.rd, s.interleaved, ct))
    pos = s.positions.long()
    b = s.seq_ids.long() if s.seq_ids is not None else torch.arange(s.T, device=s.q.device)
    if c.paged:
        page = c.block_table.long()[b, pos // c.page_size]
        c.k[page, pos % c.page_size] = k_out
        c.v[page, pos % c.page_size] = s.v
    else:
        c.k[b, :, pos] = k_out
        c.v[b, :, pos] = s.v


def _run_rope(s):
    q_out = torch.empty_like(s.q)
    k_out = torch.empty_like(s.k)
    if s.T:
        c = s.cache
        if s.name == "cpp":
            bt = c.block_table
            _backends.load_cpp().rope_append_kv(
                _DTYPE_CODE[s.q.dtype], s.T, s.Hq, s.Hkv, s.D, s.rd, s.interleaved, s.q.data_ptr(), s.k.data_ptr(),
                s.v.data_ptr(), q_out.data_ptr(), k_out.data_ptr(), c.k.data_ptr(), c.v.data_ptr(), *c.strides(),
                bt.data_ptr() if bt is not None else 0, bt.stride(0) if bt is not None else 0, c.page_size, c.num_pages,
                s.positions.data_ptr(), s.seq_ids.data_ptr() if s.seq_ids is not None else 0, s.cos.data_ptr(),
                s.sin.data_ptr(), s.cos.stride(0))
        elif s.name == "torch":
            _rope_torch(s, q_out, k_out)
        else:
            with _on_device(s.q):
                _kernel_module(s.name).rope_append_kv(s, q_out, k_out)
    return q_out, k_out


@torch.library.custom_op("genengine::rope_append_kv", mutates_args=("k_cache", "v_cache"))
def _rope_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, seq_ids: torch.Tensor | None,
             block_table: torch.Tensor | None, rotary_dim: int, interleaved: bool, backend: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    s = _prepare_rope(q, k, v, k_cache, v_cache, positions, cos, sin, seq_ids, block_table, rotary_dim, interleaved, backend)
    _check_rope_values(s)
    return _run_rope(s)


@_rope_op.register_fake
def _(q, k, v, k_cache, v_cache, positions, cos, sin, seq_ids, block_table, rotary_dim, interleaved, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape)


def rope_append_kv(q, k, v, k_cache, v_cache, positions, cos, sin, *, seq_ids=None, block_table=None, rotary_dim=None,
                   interleaved=False, backend="auto"):
    """Rotary embedding of q and k, with the rotated k and v written into the KV cache, in one pass.

    q [T, Hq, D], k, v [T, Hkv, D] (T packed tokens); positions [T] int32: each token's position in
    its sequence, i.e. its rotary angle and its cache slot; seq_ids [T] int32: each token's batch row
    (None: token t is row t, one decode token per sequence); cos, sin [max_position, rotary_dim // 2]
    float32 from rope_tables. Rotates the first rotary_dim dims (None: all of D) in the half-split
    (GPT-NeoX, interleaved=False) or interleaved (GPT-J) layout and writes k_rot and v into k_cache,
    v_cache (contiguous [B, Hkv, S, D], or paged with block_table) in place. Two tokens writing the
    same (row, position) leave one of them there (which one is unspecified). Returns (q_rot, k_rot).
    """
    s = _prepare_rope(q, k, v, k_cache, v_cache, positions, cos, sin, seq_ids, block_table, rotary_dim, interleaved, backend)
    if torch.compiler.is_compiling():
        return _rope_op(s.q, s.k, s.v, s.cache.k, s.cache.v, s.positions, s.cos, s.sin, s.seq_ids, s.cache.block_table,
                        s.rd, s.interleaved, s.name)
    _check_rope_values(s)
    return _run_rope(s)


reference = ref
