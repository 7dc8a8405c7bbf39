"""The cuda backend of decode attention: a thin shim over genengine._cuda.decode_attention
(csrc/cuda/attention.cu), with the contract of genengine.kernels.attention.decode_attention:

    decode_attention(s, out, lse) -> None   s: the op's checked record; out [B, Q, Hq, D]; lse float32 [B, Q, Hq]

It plans the KV split count from the SM count and the cache capacity (never the lengths: reading
them would synchronise), allocates the float32 split workspaces as torch tensors (the extension does
not link libtorch) and launches on the current stream. Compiled for sm_80 / sm_90a, not yet run.
"""

from __future__ import annotations

import torch

from .. import _backends

__all__ = ["decode_attention", "plan_splits"]

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
ROWS_PER_BLOCK = 8    # kRows in attention.cu
MIN_SPLIT_KEYS = 256
MAX_SPLITS = 64
WAVES = 2
_sms = {}


def _num_sms(device):
    idx = device.index if device.index is not None else torch.cuda.current_device()
    v = _sms.get(idx)
    if v is None:
        v = _sms[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return v


def plan_splits(B, Hkv, R, capacity, sms):
    blocks = max(1, B * Hkv * -(-R // ROWS_PER_BLOCK))
    want = -(-WAVES * sms // blocks)
    return max(1, min(want, max(1, capacity // MIN_SPLIT_KEYS), MAX_SPLITS))


def decode_attention(s, out, lse):
    c = s.cache
    R = s.Q * (s.Hq // c.Hkv)
    splits = s.num_splits or plan_splits(s.B, c.Hkv, R, c.capacity, _num_sms(s.q.device))
    if splits > 1:
        ws_out = torch.empty((s.B * c.Hkv * R * splits, s.D), dtype=torch.float32, device=s.q.device)
        ws_lse = torch.empty((s.B * c.Hkv * R * splits,), dtype=torch.float32, device=s.q.device)
        wo, wl = ws_out.data_ptr(), ws_lse.data_ptr()
    else:
        wo = wl = 0
    bt = c.block_table
    _backends.load_cuda().decode_attention(
        _DTYPE_CODE[s.q.dtype], s.B, s.Q, s.Hq, c.Hkv, s.D, s.q.data_ptr(), out.data_ptr(), lse.data_ptr(), c.k.data_ptr(),
        c.v.data_ptr(), *c.strides(), bt.data_ptr() if bt is not None else 0, bt.stride(0) if bt is not None else 0,
        c.page_size, c.num_pages, s.seqlens.data_ptr(), s.scale, s.softcap, s.window, splits, wo, wl,
        torch.cuda.current_stream(s.q.device).cuda_stream)
