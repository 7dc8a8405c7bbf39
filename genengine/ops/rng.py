"""Counter-based random numbers (Philox4x32-10), the stream every stochastic kernel draws from.

A stream is keyed by (seed, offset), two unsigned 64-bit integers; value i of the stream depends only
on (seed, offset, i), so results do not depend on the backend, the thread count or the launch
shape. `draw_key(generator)` takes a fresh key from a `torch.Generator`:
  * CPU generators: seed = generator.initial_seed(), offset = a 63-bit number drawn from it;
  * CUDA generators: seed = generator.initial_seed(), offset = its Philox offset (advanced by 4 per
    call) with bit 63 set, which keeps our counters disjoint from the ones torch's own CUDA kernels
    use with the same seed.
Either way, re-seeding the generator replays the same samples.

Public functions (all take `backend="auto"`):
  philox_words(n, seed, offset)    -> int32 [n]  (the raw 32-bit words, as signed int32 bits)
  philox_uniform(n, seed, offset)  -> float32 [n] in (0, 1): odd multiples of 2^-24
  philox_normal(n, seed, offset)   -> float32 [n] standard normals (Box-Muller on word pairs)
"""

from __future__ import annotations

import torch

from .. import _backends
from ..reference import rng as ref

_MASK64 = (1 << 64) - 1
_CUDA_STREAM_BIT = 1 << 63
_KIND = {"words": 0, "uniform": 1, "normal": 2}


def _default_generator(device):
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


def draw_key(generator=None, device=None):
    """A fresh (seed, offset) pair from `generator` (torch's default generator for `device` if None).
    generator may also be a key itself: an int64 [2] tensor of the (seed, offset) bits (key_tensor), the
    form compiled code passes, since torch.compile cannot read a torch.Generator inside a graph."""
    if isinstance(generator, torch.Tensor):
        return key_ints(_checked_key_tensor(generator))
    if generator is None:
        generator = _default_generator(torch.device(device) if device is not None else torch.device("cpu"))
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    seed = generator.initial_seed() & _MASK64
    if generator.device.type == "cpu":
        offset = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    else:
        offset = generator.get_offset()
        generator.set_offset(offset + 4)
        offset |= _CUDA_STREAM_BIT
    return seed, offset


def key_tensor(seed, offset):
    """(seed, offset) as a CPU int64 [2] tensor of their signed bits: how a key crosses a torch.library op,
    so that a new key is new data to torch.compile, not a new constant (no recompilation per draw)."""
    return torch.tensor([v - (1 << 64) if v >= 1 << 63 else v for v in (seed, offset)], dtype=torch.int64)


def _checked_key_tensor(key):
    if key.dtype != torch.int64 or key.shape != (2,):
        raise ValueError(f"generator: a key tensor must be int64 of shape [2] (seed, offset), got {key.dtype} "
                         f"{tuple(key.shape)}")
    return key


def op_key(generator, device):
    """The key as the registered (torch.library) ops take it: an int64 [2] tensor, drawn from `generator`
    unless it is one already (then used as is, so that a compiled graph reads it as data)."""
    if isinstance(generator, torch.Tensor):
        return _checked_key_tensor(generator)
    return key_tensor(*draw_key(generator, device))


def key_ints(key):
    """The (seed, offset) pair of a key_tensor."""
    seed, offset = (int(v) & _MASK64 for v in key.tolist())
    return seed, offset


def _check_key(seed, offset):
    for name, v in (("seed", seed), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name}: expected an int in [0, 2**64), got {type(v).__name__}")
        if not 0 <= v <= _MASK64:
            raise ValueError(f"{name}: expected an int in [0, 2**64), got {v}")


def _fill(kind, n, seed, offset, device, backend):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    _check_key(seed, offset)
    device = torch.device(device)
    name = _backends.resolve(backend, device.type)
    dtype = torch.int32 if kind == "words" else torch.float32
    if name == "torch":
        return ref.philox_stream(kind, n, seed, offset, device=device)
    out = torch.empty(n, dtype=dtype, device=device)
    if n == 0:
        return out
    if name == "cpp":
        _backends.load_cpp().philox_fill(_KIND[kind], out.data_ptr(), n, seed, offset)
    elif name == "triton":
        _backends.load_kernels("rng").philox_fill(out, _KIND[kind], seed, offset)
    else:
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            _backends.load_cuda().philox_fill(_KIND[kind], out.data_ptr(), n, seed, offset, stream)
    return out


def philox_words(n, seed, offset, *, device="cpu", backend="auto"):
    """The first `n` 32-bit words of stream (seed, offset), as int32 (reinterpret & 0xFFFFFFFF)."""
    return _fill("words", n, seed, offset, device, backend)


def philox_uniform(n, seed, offset, *, device="cpu", backend="auto"):
    """`n` uniforms in (0, 1) from stream (seed, offset); value i is (2 * (word_i >> 9) + 1) / 2^24."""
    return _fill("uniform", n, seed, offset, device, backend)


def philox_normal(n, seed, offset, *, device="cpu", backend="auto"):
    """`n` standard normals from stream (seed, offset) (the noise the stochastic kernels add)."""
    return _fill("normal", n, seed, offset, device, backend)
