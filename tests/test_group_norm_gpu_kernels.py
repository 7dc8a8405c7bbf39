"""The GPU kernels of fused GroupNorm + SiLU, called directly through their kernel contract:
    group_norm_silu_fwd(x, weight, bias, num_groups, eps, channels_last, y, mean, rstd)
    group_norm_silu_bwd(dy, x, weight, bias, mean, rstd, num_groups, channels_last, dx, dweight, dbias)
Triton (kernels/group_norm.py) runs here under TRITON_INTERPRET=1 on CPU tensors with tiny shapes and
planning knobs forced so that groups are split across several programs; the CUDA shim
(genengine/ops/_group_norm_cuda.py) runs in the tests marked `gpu`. Both are compared with a float64
reference (F.group_norm + silu, autograd for the backward).

Shapes: x (N, C, *spatial), with (N, C, S) memory or channels_last (N, S, C) memory.
"""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}


def _kernels(backend):
    if backend == "triton":
        return importlib.import_module("genengine.kernels.group_norm")
    return importlib.import_module("genengine.ops._group_norm_cuda")


def _make(shape, channels_last, dtype, device, gen, offset=0.0):
    """Random (N, C, *spatial) tensor with the requested memory layout."""
    n, c, *sp = shape
    if channels_last:
        t = torch.randn(n, *sp, c, generator=gen, dtype=torch.float64) + offset
        t = t.to(device=device, dtype=dtype).movedim(-1, 1)
    else:
        t = (torch.randn(*shape, generator=gen, dtype=torch.float64) + offset).to(device=device, dtype=dtype)
    return t


def _empty_like_layout(x, channels_last):
    if channels_last:
        return torch.empty_like(x.movedim(1, -1)).movedim(-1, 1)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _reference(x, w, b, dy, g, eps):
    """float64 (y, mean, rstd, dx, dw, db)."""
    xd = x.detach().double().requires_grad_(True)
    wd = w.double().requires_grad_(True) if w is not None else None
    bd = b.double().requires_grad_(True) if b is not None else None
    n, c = x.shape[:2]
    xg = xd.reshape(n, g, -1)
    mean = xg.mean(-1)
    rstd = 1.0 / torch.sqrt(xg.var(-1, unbiased=False) + eps)
    # the affine part by hand: F.group_norm's backward fails with weight=None and a bias (torch 2.13)
    z = F.group_norm(xd, g, None, None, eps)
    bshape = (1, c) + (1,) * (x.dim() - 2)
    if wd is not None:
        z = z * wd.reshape(bshape)
    if bd is not None:
        z = z + bd.reshape(bshape)
    y = F.silu(z)
    ins = [t for t in (xd, wd, bd) if t is not None]
    grads = torch.autograd.grad(y, ins, dy.double())
    dx = grads[0]
    dw = grads[1] if w is not None else None
    db = grads[-1] if b is not None else None
    return y.detach(), mean.detach(), rstd.detach(), dx, dw, db


def _close(name, got, want, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    got = got.double().cpu()
    want = want.cpu()
    err = (got - want).abs()
    bound = atol * scale + rtol * want.abs()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    assert (err <= bound).all(), f"{name}: max abs err {err.max().item():.3g} (scale {scale:.3g})"


def _run(mod, shape, g, channels_last, dtype, has_w, has_b, device, gen, offset=0.0, eps=1e-5):
    x = _make(shape, channels_last, dtype, device, gen, offset)
    dy = _make(shape, channels_last, dtype, device, gen)
    c = shape[1]
    w = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5 + 1.0).float().to(device) if has_w else None
    b = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5).float().to(device) if has_b else None
    y = _empty_like_layout(x, channels_last)
    mean = torch.empty(shape[0], g, dtype=torch.float32, device=device)
    rstd = torch.empty_like(mean)
    mod.group_norm_silu_fwd(x, w, b, g, eps, channels_last, y, mean, rstd)
    ry, rmean, rrstd, rdx, rdw, rdb = _reference(x, w, b, dy, g, eps)
    _close("mean", mean, rmean, torch.float32, scale=max(1.0, abs(offset)))
    _close("rstd", rstd, rrstd, torch.float32)
    _close("y", y, ry, dtype)
    assert y.stride() == x.stride()

    dx = _empty_like_layout(x, channels_last)
    dw = torch.full((c,), float("nan"), device=device) if has_w else None
    db = torch.full((c,), float("nan"), device=device) if has_b else None
    # the backward takes the kernel's own statistics, like the op does
    mod.group_norm_silu_bwd(dy, x, w, b, mean, rstd, g, channels_last, dx, dw, db)
    # the cancellation in dx = rstd (gg - mean(gg) - xhat mean(gg xhat)) scales with |gg|
    _close("dx", dx, rdx, dtype, scale=float(rdx.abs().max()) + 1.0)
    s = math.prod(shape[2:]) * shape[0]
    if has_w:
        _close("dweight", dw, rdw, dtype if dtype == torch.float32 else torch.float16, scale=max(1.0, math.sqrt(s)))
    if has_b:
        _close("dbias", db, rdb, dtype if dtype == torch.float32 else torch.float16, scale=max(1.0, math.sqrt(s)))


pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # exp(-z) = inf is fine


def _force_splits(monkeypatch, small_tiles):
    """Tiny inputs, yet groups split across programs (ragged last chunk included), channels-last
    blocks of several groups (the last one partial), and with small tiles the channel loops inside
    a program too."""
    mod = importlib.import_module("genengine.kernels.group_norm")
    monkeypatch.setattr(mod, "MIN_PROGRAM_ELEMS", 1)
    monkeypatch.setattr(mod, "WAVES", 64)
    monkeypatch.setattr(mod, "MAX_SPLITS", 3)
    monkeypatch.setattr(mod, "SPLIT_ALIGN", 1)
    monkeypatch.setattr(mod, "NSC_BLOCK_CHANNELS", 8)
    if small_tiles:
        monkeypatch.setattr(mod, "TILE", 16)
        monkeypatch.setattr(mod, "NSC_TILE_CHANNELS", 4)
    return mod


@pytest.fixture(params=["big-tiles", "small-tiles"])
def many_splits(monkeypatch, request):
    return _force_splits(monkeypatch, request.param == "small-tiles")


@pytest.fixture
def split_big_tiles(monkeypatch):
    return _force_splits(monkeypatch, False)


CASES = [((1, 6, 7), 3), ((3, 12, 33), 6), ((3, 6, 1), 1), ((1, 12, 5, 7), 3), ((1, 12), 3), ((3, 12, 3, 11), 1)]


@pytest.mark.parametrize("shape,g", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_float64_reference(many_splits, shape, g, channels_last, dtype, gen):
    has_w = bool(torch.randint(0, 2, (), generator=gen))
    has_b = bool(torch.randint(0, 2, (), generator=gen))
    _run(many_splits, shape, g, channels_last, dtype, has_w, has_b, "cpu", gen)


@pytest.mark.parametrize("has_w,has_b", [(False, False), (True, False), (False, True), (True, True)])
def test_triton_affine_combinations(split_big_tiles, has_w, has_b, gen):
    _run(split_big_tiles, (3, 12, 17), 3, True, torch.float32, has_w, has_b, "cpu", gen)
    _run(split_big_tiles, (1, 6, 33), 3, False, torch.float32, has_w, has_b, "cpu", gen)


@pytest.mark.parametrize("channels_last", [False, True])
def test_triton_large_mean(split_big_tiles, channels_last, gen):
    """x = 50 + randn: a sum-of-squares variance would lose every digit in float32."""
    _run(split_big_tiles, (3, 12, 33), 3, channels_last, torch.float32, True, True, "cpu", gen, offset=50.0)


def test_triton_default_plan_single_split(gen):
    """The default planning knobs (no forced splits) on a small input."""
    mod = importlib.import_module("genengine.kernels.group_norm")
    _run(mod, (3, 6, 7), 3, False, torch.float32, True, True, "cpu", gen)


@pytest.mark.parametrize("channels_last", [False, True])
def test_plan_covers_every_position(channels_last):
    """Splits tile [0, S) exactly and group blocks cover all groups, for many geometries."""
    mod = importlib.import_module("genengine.kernels.group_norm")
    for n, c, s, g in [(2, 320, 16384, 32), (1, 12, 33, 3), (7, 1280, 64, 32), (1, 4, 1, 1), (64, 640, 1024, 32)]:
        for sms in (1, 4, 132):
            gpb, gblocks, s_chunk, splits = mod.plan(n, c, s, g, channels_last, sms)
            assert 1 <= splits <= mod.MAX_SPLITS
            assert (splits - 1) * s_chunk < s <= splits * s_chunk
            assert gblocks * gpb >= g > (gblocks - 1) * gpb
            if s_chunk < s:
                assert s_chunk % 16 == 0


def test_triton_bad_arguments():
    mod = importlib.import_module("genengine.kernels.group_norm")
    x = torch.randn(2, 6, 5)
    y = torch.empty_like(x)
    mean = torch.empty(2, 3)
    rstd = torch.empty(2, 3)
    with pytest.raises(ValueError, match="num_groups"):
        mod.group_norm_silu_fwd(x, None, None, 4, 1e-5, False, y, mean, rstd)
    with pytest.raises(TypeError, match="x"):
        mod.group_norm_silu_fwd(x.double(), None, None, 3, 1e-5, False, y, mean, rstd)
    with pytest.raises(ValueError, match="weight"):
        mod.group_norm_silu_fwd(x, torch.ones(5), None, 3, 1e-5, False, y, mean, rstd)
    with pytest.raises(ValueError, match="y"):
        mod.group_norm_silu_fwd(x, None, None, 3, 1e-5, True, torch.empty_like(x), mean, rstd)
    with pytest.raises(ValueError, match="mean"):
        mod.group_norm_silu_fwd(x, None, None, 3, 1e-5, False, y, torch.empty(2, 2), rstd)


# ----------------------------------------------------------------------------------------------
# GPU: both backends on CUDA tensors (pytest -m gpu)

GPU_CASES = [
    ((2, 320, 64, 64), 32), ((3, 12, 33), 3), ((1, 6, 7), 6), ((2, 64, 5, 7), 32), ((1, 1280, 8, 8), 32),
    ((2, 96, 4, 9, 9), 32), ((4, 40, 1), 4), ((2, 30, 17), 3),
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("shape,g", GPU_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_matches_float64_reference(backend, shape, g, channels_last, dtype, gen):
    mod = _kernels(backend)
    has_w = bool(torch.randint(0, 2, (), generator=gen))
    has_b = bool(torch.randint(0, 2, (), generator=gen))
    _run(mod, shape, g, channels_last, dtype, has_w, has_b, "cuda", gen)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_large_mean_and_odd_offsets(backend, channels_last, gen):
    mod = _kernels(backend)
    _run(mod, (2, 320, 37, 41), 32, channels_last, torch.float32, True, True, "cuda", gen, offset=50.0)
    _run(mod, (2, 24, 19), 8, channels_last, torch.bfloat16, True, True, "cuda", gen, offset=50.0)


@pytest.mark.gpu
def test_gpu_cuda_misaligned_views(gen):
    """A storage offset of one element defeats 16-byte vectors: the scalar paths must take over."""
    mod = _kernels("cuda")
    base = torch.randn(1 + 2 * 40 * 32, generator=gen).cuda()
    x = base[1:].view(2, 40, 32)  # S = 32 would take the vector path if x were aligned
    y = torch.empty(1 + x.numel(), device="cuda")[1:].view_as(x)
    mean = torch.empty(2, 4, device="cuda")
    rstd = torch.empty_like(mean)
    mod.group_norm_silu_fwd(x, None, None, 4, 1e-5, False, y, mean, rstd)
    ry, rmean, rrstd, *_ = _reference(x, None, None, torch.zeros_like(x), 4, 1e-5)
    _close("y", y, ry, torch.float32)


@pytest.mark.gpu
def test_gpu_cuda_deterministic(gen):
    mod = _kernels("cuda")
    x = _make((2, 320, 32, 32), False, torch.bfloat16, "cuda", gen)
    dy = _make((2, 320, 32, 32), False, torch.bfloat16, "cuda", gen)
    w = torch.randn(320, generator=gen).cuda()
    b = torch.randn(320, generator=gen).cuda()
    mean = torch.empty(2, 32, device="cuda")
    rstd = torch.empty_like(mean)
    y = torch.empty_like(x)
    mod.group_norm_silu_fwd(x, w, b, 32, 1e-5, False, y, mean, rstd)
    outs = []
    for _ in range(2):
        dx, dw, db = torch.empty_like(x), torch.empty_like(w), torch.empty_like(b)
        mod.group_norm_silu_bwd(dy, x, w, b, mean, rstd, 32, False, dx, dw, db)
        outs.append((dx, dw, db))
    for a, b2 in zip(outs[0], outs[1]):
        assert torch.equal(a, b2)


# ----------------------------------------------------------------------------------------------
# CPU emulation of the CUDA kernels' index math (csrc/cuda/group_norm.cu), which cannot run here:
# every element is visited exactly once, with the right channel, and the split/merge arithmetic
# reproduces the group statistics.

_THREADS = 256


def _cuda_region(n_, c, s, g, s_chunk, n, grp, split, cl):
    """(start, stride, outer, inner, ch0) as region_of<CL>."""
    cpg = c // g
    s_lo = split * s_chunk
    len_s = min(s_chunk, s - s_lo)
    ch0 = grp * cpg
    if cl:
        return (n * s + s_lo) * c + ch0, c, len_s, cpg, ch0
    return (n * c + ch0) * s + s_lo, s, cpg, len_s, ch0


def _cursor_items(t, vpr, outer):
    """(o, iv) pieces of thread t, following Cursor's init and advance."""
    o, iv = t // vpr, t % vpr
    d_o, d_iv = _THREADS // vpr, _THREADS % vpr
    while o < outer:
        yield o, iv
        o += d_o
        iv += d_iv
        if iv >= vpr:
            iv -= vpr
            o += 1


def _cuda_vector_ok(s, cpg, s_chunk, splits, cl, v):
    return cpg % v == 0 if cl else (s % v == 0 and (splits == 1 or s_chunk % v == 0))


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("n_,c,s,g,sms", [(2, 40, 300, 4, 132), (1, 16, 1024, 2, 8), (3, 6, 7, 3, 4), (1, 64, 33, 1, 16)])
def test_cuda_index_math_emulated(cl, n_, c, s, g, sms, gen, monkeypatch):
    shim = importlib.import_module("genengine.ops._group_norm_cuda")
    monkeypatch.setattr(shim, "MIN_BLOCK_ELEMS", 16)
    s_chunk, splits = shim.plan(n_, c, s, g, sms)
    assert 1 <= splits <= shim.MAX_SPLITS and (splits - 1) * s_chunk < s <= splits * s_chunk
    cpg = c // g
    x = torch.randn(n_ * c * s, generator=gen, dtype=torch.float64)
    # the tensor's logical (n, c, s) element behind each memory offset
    idx = torch.arange(n_ * c * s)
    if cl:
        chan_of = idx % c
        logical = x.view(n_, s, c).permute(0, 2, 1)
    else:
        chan_of = (idx // s) % c
        logical = x.view(n_, c, s)
    for v in (1, 8):
        w = v if _cuda_vector_ok(s, cpg, s_chunk, splits, cl, v) else 1
        seen = torch.zeros(n_ * c * s, dtype=torch.int64)
        part = {}
        for n in range(n_):
            for grp in range(g):
                for split in range(splits):
                    start, stride, outer, inner, ch0 = _cuda_region(n_, c, s, g, s_chunk, n, grp, split, cl)
                    vpr = inner // w
                    assert vpr * w == inner
                    vals = []
                    for t in range(_THREADS):
                        for o, iv in _cursor_items(t, vpr, outer):
                            i = start + o * stride + iv * w
                            if w > 1:
                                assert i % w == 0  # 16-byte aligned piece
                            for k in range(w):
                                ch = ch0 + iv * w + k if cl else ch0 + o
                                assert chan_of[i + k] == ch
                                seen[i + k] += 1
                                vals.append(x[i + k])
                    vals = torch.stack(vals)
                    assert vals.numel() == cpg * min(s_chunk, s - split * s_chunk)
                    part[(n, grp, split)] = (vals.mean(), ((vals - vals.mean()) ** 2).sum())
        assert torch.equal(seen, torch.ones_like(seen))
        # finalize: the parallel Chan merge of the partials, as in gn_norm_kernel
        for n in range(n_):
            for grp in range(g):
                nj = [cpg * min(s_chunk, s - j * s_chunk) for j in range(splits)]
                mean = sum(nj[j] * part[(n, grp, j)][0] for j in range(splits)) / (cpg * s)
                m2 = sum(part[(n, grp, j)][1] + nj[j] * (part[(n, grp, j)][0] - mean) ** 2 for j in range(splits))
                ref = logical[n, grp * cpg:(grp + 1) * cpg]
                assert torch.allclose(mean, ref.mean(), rtol=1e-12, atol=1e-12)
                assert torch.allclose(m2 / (cpg * s), ref.var(unbiased=False), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cpg,w", [(10, 1), (40, 8), (4096, 8), (300, 1), (8, 8)])
def test_cuda_nsc_reduce_mapping_emulated(cpg, w):
    """gn_bwd_reduce_nsc_kernel: the [rt, ctw] thread grid over (rows, column tiles) covers each
    (row, channel) of the region once, and the shared-memory slots of a tile do not collide."""
    rows = 37
    vpr = cpg // w
    ctw = min(vpr, _THREADS)
    rt = _THREADS // ctw
    seen = torch.zeros(rows, cpg, dtype=torch.int64)
    for ct in range(0, vpr, ctw):
        slots = set()
        for t in range(_THREADS):
            tr, tc = t // ctw, t % ctw
            iv = ct + tc
            if not (tr < rt and iv < vpr):
                continue
            for k in range(w):
                slot = (tr * ctw + tc) * w + k
                assert slot < _THREADS * 8 and slot not in slots
                slots.add(slot)
            for o in range(tr, rows, rt):
                seen[o, iv * w:(iv + 1) * w] += 1
        ncols = min(vpr - ct, ctw) * w
        for cc in range(ncols):  # the column sums read slots q * ctw * w + cc, q < rt
            assert all(q * ctw * w + cc in slots for q in range(rt))
    assert torch.equal(seen, torch.ones_like(seen))
