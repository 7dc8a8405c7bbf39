"""Attention for autoregressive sampling: decode attention (contiguous and paged caches, GQA/MQA, Q > 1,
window, softcap, lengths 0 and 1, split-count invariance, the LSE merge), packed variable-length prefill
and fused rotary + KV append, every backend against the float64 reference of
genengine.reference.attention on fresh random odd shapes; unused cache slots hold NaN so that any read
past a length shows; bad input raises before any kernel runs."""

import math
import random

import pytest
import torch

import genengine as ge
from genengine.ops import attention as A
from genengine.reference import attention as R

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# |out - ref| <= ATOL + RTOL * |ref| against the float64 reference from the same rounded inputs; the
# half types are dominated by rounding the output (and, in Triton, the probabilities fed to the dot)
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2.5e-2, 2e-2), torch.float16: (4e-3, 3e-3),
       torch.float64: (1e-10, 1e-10)}
LSE_TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float64: 1e-10}
KERNEL_BACKENDS = ["cpp", "triton"]  # triton on CPU tensors under the interpreter (small shapes)
BACKENDS = ["torch", *KERNEL_BACKENDS]


def _available(backend, device="cpu"):
    reason = ge._backends.unavailable_reason(backend, device)
    if reason:
        pytest.skip(reason)


def _close(out, ref, dtype, what="out"):
    atol, rtol = TOL[dtype]
    out = out.double()
    err = (out - ref).abs()
    bound = atol + rtol * ref.abs()
    assert torch.isfinite(out).all(), f"{what}: non-finite values (a read past a length?)"
    assert (err <= bound).all(), f"{what}: max error {err.max().item():.3g} (bound {atol} + {rtol} |ref|)"


def _close_lse(lse, ref, dtype):
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(lse), inf) and (lse[inf] < 0).all(), "lse: -inf exactly where no key is attended"
    d = (lse.double() - ref)[~inf].abs()
    assert d.numel() == 0 or d.max() <= LSE_TOL[dtype] * (1 + ref[~inf].abs().max()), f"lse: max error {d.max().item():.3g}"


def _randn(shape, gen, dtype):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def _caches(gen, B, Hkv, D, lengths, S, dtype, page_size=None):
    """(contiguous k, v [B, Hkv, S, D], paged k, v, block_table) holding the same keys; every slot past a
    sequence's length, and every page no sequence uses, is NaN."""
    k = _randn((B, Hkv, S, D), gen, dtype)
    v = _randn((B, Hkv, S, D), gen, dtype)
    for b, L in enumerate(lengths):
        k[b, :, L:] = float("nan")
        v[b, :, L:] = float("nan")
    if page_size is None:
        return k, v, None, None, None
    pps = -(-S // page_size)
    extra = int(torch.randint(0, 3, (1,), generator=gen))
    P = B * pps + extra
    perm = torch.randperm(P, generator=gen)
    block_table = perm[: B * pps].view(B, pps).to(torch.int32).contiguous()
    kp = torch.full((P, page_size, Hkv, D), float("nan"), dtype=dtype)
    vp = torch.full((P, page_size, Hkv, D), float("nan"), dtype=dtype)
    for b in range(B):
        for j in range(lengths[b]):
            page, slot = int(block_table[b, j // page_size]), j % page_size
            kp[page, slot] = k[b, :, j]
            vp[page, slot] = v[b, :, j]
    # pages past a sequence's length may hold garbage indices: the kernels must never follow them
    for b in range(B):
        used = -(-lengths[b] // page_size)
        if used < pps:
            block_table[b, used:] = torch.randint(-5, P + 5, (pps - used,), generator=gen, dtype=torch.int32)
    return k, v, kp, vp, block_table


def _decode_case(gen, backend, dtype, *, paged, Q=1, D=None, small=None, device="cpu", num_splits=None):
    small = (backend == "triton" and device == "cpu") if small is None else small
    rnd = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    B = rnd.randint(1, 3 if small else 4)
    Hkv = rnd.randint(1, 3)
    G = rnd.choice([1, 2, 3, 4])
    D = D or rnd.choice([16, 32, 64] if small else [16, 64, 80, 96, 128])
    S = rnd.randint(40, 90 if small else 300)
    lengths = [rnd.choice([0, 1, rnd.randint(2, S), S]) for _ in range(B)]
    lengths[rnd.randrange(B)] = rnd.randint(max(2, S // 2), S)  # at least one long sequence
    page_size = rnd.choice([1, 3, 16, 64]) if paged else None
    window = rnd.choice([None, None, rnd.randint(1, 40)])
    softcap = rnd.choice([0.0, 0.0, rnd.uniform(1.0, 30.0)])
    scale = rnd.choice([None, rnd.uniform(0.05, 0.3)])
    k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, dtype, page_size)
    Hq = Hkv * G
    q = _randn((B, Hq, D) if Q == 1 else (B, Q, Hq, D), gen, dtype)
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    kw = dict(scale=scale, softcap=softcap, window=window)
    ro, rl = R.decode_attention(q, k, v, seqlens, **kw)
    dev = [t.to(device) if t is not None else None for t in (q, k, v, kp, vp, bt, seqlens)]
    if paged:
        o, lse = ge.ops.decode_attention(dev[0], dev[3], dev[4], dev[6], block_table=dev[5], return_lse=True,
                                         backend=backend, num_splits=num_splits, **kw)
    else:
        o, lse = ge.ops.decode_attention(dev[0], dev[1], dev[2], dev[6], return_lse=True, backend=backend,
                                         num_splits=num_splits, **kw)
    assert o.shape == q.shape and o.dtype == q.dtype and o.device == dev[0].device
    o, lse = o.cpu(), lse.cpu()
    _close(o, ro, dtype)
    _close_lse(lse, rl, dtype)
    return q, k, v, kp, vp, bt, seqlens, kw, o


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_matches_reference(backend, dtype, paged, gen):
    _available(backend)
    for _ in range(1 if backend == "triton" else 3):
        _decode_case(gen, backend, dtype, paged=paged)


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_multi_query(backend, paged, gen):
    """Q > 1 query tokens (speculative decoding): causal among themselves, at the last Q positions;
    with Q > L some queries sit at negative positions and attend nothing."""
    _available(backend)
    for Q in (2, 3, 5):
        _decode_case(gen, backend, torch.float32, paged=paged, Q=Q)


@pytest.mark.parametrize("D", A.HEAD_DIMS)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_decode_head_dims(backend, D, gen):
    _available(backend)
    _decode_case(gen, backend, torch.float32, paged=bool(D % 3), D=D)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_paged_equals_contiguous(backend, gen):
    _available(backend)
    q, k, v, kp, vp, bt, seqlens, kw, o = _decode_case(gen, backend, torch.float32, paged=True)
    oc = ge.ops.decode_attention(q, k, v, seqlens, backend=backend, **kw)
    torch.testing.assert_close(o, oc, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_split_count_invariance(backend, gen):
    """Any number of KV splits (including more splits than keys) gives the same result up to rounding."""
    _available(backend)
    B, Hkv, G, D, S = 3, 2, 3, 64, 257
    lengths = [257, 1, 130]
    k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, torch.float32, page_size=16)
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    ro, rl = R.decode_attention(q, k, v, seqlens, window=200)
    base = None
    # 300 splits: more than any sequence has keys (empty splits merge as nothing)
    for ns in (1, 3, 7) if backend == "triton" else (1, 2, 3, 7, 64, 300):
        o, lse = ge.ops.decode_attention(q, kp, vp, seqlens, block_table=bt, window=200, num_splits=ns,
                                         return_lse=True, backend=backend)
        _close(o, ro, torch.float32)
        _close_lse(lse, rl, torch.float32)
        if base is None:
            base = (o, lse)
        torch.testing.assert_close(o, base[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(lse, base[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lse_merges_partial_attention(backend, gen):
    """Attention over keys [0, L) equals the LSE-weighted merge of attention over [0, L1) and [L1, L):
    the returned lse is the true normaliser."""
    _available(backend)
    B, Hkv, G, D, S = 2, 2, 2, 32, 120
    L, L1 = [120, 77], [50, 1]
    k, v, *_ = _caches(gen, B, Hkv, D, L, S, torch.float32)
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    full, lf = ge.ops.decode_attention(q, k, v, torch.tensor(L, dtype=torch.int32), return_lse=True, backend=backend)
    k1, v1 = k.clone(), v.clone()
    k2, v2 = torch.full_like(k, float("nan")), torch.full_like(v, float("nan"))
    for b in range(B):
        k2[b, :, : L[b] - L1[b]] = k[b, :, L1[b]: L[b]]
        v2[b, :, : L[b] - L1[b]] = v[b, :, L1[b]: L[b]]
    o1, l1 = ge.ops.decode_attention(q, k1, v1, torch.tensor(L1, dtype=torch.int32), return_lse=True, backend=backend)
    o2, l2 = ge.ops.decode_attention(q, k2, v2, torch.tensor([a - c for a, c in zip(L, L1)], dtype=torch.int32),
                                     return_lse=True, backend=backend)
    lm = torch.logaddexp(l1, l2)
    om = (torch.exp(l1 - lm)[..., None] * o1 + torch.exp(l2 - lm)[..., None] * o2)
    torch.testing.assert_close(lm, lf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(om, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_single_key(backend, gen):
    """Length 0: output 0 and lse -inf (documented); length 1: the output is that key's value."""
    _available(backend)
    B, Hkv, G, D, S = 3, 1, 4, 16, 8
    k, v, kp, vp, bt = _caches(gen, B, Hkv, D, [0, 1, 0], S, torch.float32, page_size=4)
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    seqlens = torch.tensor([0, 1, 0], dtype=torch.int32)
    for kw in (dict(), dict(block_table=bt)):
        kc, vc = (kp, vp) if kw else (k, v)
        o, lse = ge.ops.decode_attention(q, kc, vc, seqlens, return_lse=True, backend=backend, **kw)
        assert torch.equal(o[0], torch.zeros_like(o[0])) and torch.equal(o[2], torch.zeros_like(o[2]))
        assert torch.isneginf(lse[0]).all() and torch.isneginf(lse[2]).all()
        torch.testing.assert_close(o[1], v[1, 0, 0].expand(G, D), atol=1e-6, rtol=1e-6)
        s = (q[1].double() @ k[1, 0, 0].double()) / math.sqrt(D)
        torch.testing.assert_close(lse[1].double(), s, atol=1e-5, rtol=1e-5)


def test_float32_cpu_paths_all_match_reference():
    """float32 decode and prefill run an AVX-512 core on CPUs that have it, else an AVX2 one where
    the CPU has AVX2 and FMA; GENENGINE_CPU_ISA=avx2 picks the second on an AVX-512 CPU and
    GENENGINE_CPU_ISA=baseline the multiversioned loops. This file's cpp decode / prefill cases run
    in-process on the CPU's best core (asserted to be in use) and here, in subprocesses, on each core
    below it."""
    import os
    import subprocess
    import sys

    from genengine import _backends

    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        flags = []
    has512 = all(f in flags for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq"))
    has2 = all(f in flags for f in ("avx2", "fma"))
    levels = [("baseline", "attention float32: the loops' clone")] + \
        ([("avx2", "attention float32: avx2, prefetch")] if has2 else []) + \
        ([("avx512", "attention float32: avx512, prefetch")] if has2 and has512 else [])
    cap = os.environ.get("GENENGINE_CPU_ISA")  # the suite itself may run under a cap
    names = [name for name, _ in levels]
    if cap in names:
        levels = levels[:names.index(cap) + 1]
    assert levels[-1][1] in _backends.load_cpp().isa()
    lower = levels[:-1][::-1]
    if not lower:
        pytest.skip("this process runs the lowest attention core (the loops' clone): no lower one to check")
    for isa_name, expect in lower:
        env = dict(os.environ, GENENGINE_CPU_ISA=isa_name)
        isa = subprocess.run([sys.executable, "-c", "from genengine import _backends; print(_backends.load_cpp().isa())"],
                             env=env, capture_output=True, text=True, check=True).stdout
        assert expect in isa, isa
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                              "cpp and (decode or prefill) and not float32_cpu_paths"], env=env, capture_output=True,
                             text=True)
        assert run.returncode == 0 and " passed" in run.stdout, isa_name + run.stdout[-3000:] + run.stderr[-2000:]


def test_attention_prefetch_level_override():
    """The AVX-512 and AVX2 cores' software prefetch is planned by CPU and read pattern (t0 on AMD family 1Ah,
    t2 on other AMD and unknown CPUs, on Intel t2 for contiguous row groups and none where the
    hardware streams the reads) and GENENGINE_ATTENTION_PREFETCH=t0|t2|off sets every pattern's
    level. info() says which plan runs and that a value it does not know is ignored; each forced
    level runs this file's float32 row-group cases (contiguous and paged, both paged walks for single
    rows: t2 keeps the one-head walk, off takes the all-heads walk) in a subprocess: a prefetch plan
    must not change a result."""
    import os
    import subprocess
    import sys

    from genengine import _backends

    isa = _backends.load_cpp().isa()
    if ", prefetch " not in isa.split("attention float32: ")[1]:
        pytest.skip("only the loops' attention core runs on this CPU (no software prefetch to choose)")
    auto = isa.split("attention float32: ")[1].split(", prefetch ")[1]
    assert "GENENGINE_ATTENTION_PREFETCH" not in auto, isa

    def isa_with(value):
        env = dict(os.environ, GENENGINE_ATTENTION_PREFETCH=value)
        return subprocess.run([sys.executable, "-c", "from genengine import _backends; print(_backends.load_cpp().isa())"],
                              env=env, capture_output=True, text=True, check=True).stdout

    for level in ("t0", "t2", "off"):
        walk = ", paged single rows by the all-heads walk" if level == "off" else ""
        assert f"prefetch {level}{walk} (GENENGINE_ATTENTION_PREFETCH)" in isa_with(level)
    bogus = isa_with("t1")
    assert auto.split(" (")[0] in bogus and "GENENGINE_ATTENTION_PREFETCH=t1 not understood" in bogus, bogus
    for level in ("t0", "t2", "off"):
        env = dict(os.environ, GENENGINE_ATTENTION_PREFETCH=level)
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "row_groups"],
                             env=env, capture_output=True, text=True)
        assert run.returncode == 0 and "2 passed" in run.stdout, level + run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.parametrize("paged", [False, True])
def test_decode_cpp_float32_row_groups(paged, gen):
    """The float32 core takes a kv head's Q * G query rows four at a time and keeps their softmax
    state together: rows of one group with different key ranges (Q > 1 causal, short windows,
    lengths 0 and 1), so that in a block some rows attend keys and others none, over several
    128-key blocks, softcap on and off, page sizes of both paged schedules, and a single row per kv
    head (G = Q = 1, which the paged all-heads walk takes where the CPU's plan says so). A NaN in a
    key that rows attend makes exactly those rows NaN, as in the reference."""
    for G, Q, window, softcap, page_size in [(4, 3, 5, 0.0, 16), (8, 2, 3, 7.5, 3), (4, 1, None, 0.0, 16),
                                            (4, 4, 1, 0.0, 64), (2, 2, 40, 0.0, 16), (1, 5, 2, 3.0, 16),
                                            (1, 1, None, 0.0, 16), (1, 1, 9, 3.0, 3)]:
        B, Hkv, D, S = 4, 2, 80, 300
        lengths = [0, 1, S, 131]
        k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, torch.float32, page_size if paged else None)
        q = _randn((B, Q, Hkv * G, D), gen, torch.float32)
        L = torch.tensor(lengths, dtype=torch.int32)
        kw = dict(softcap=softcap, window=window)
        ro, rl = R.decode_attention(q, k, v, L, **kw)
        args = (q, kp, vp, L) if paged else (q, k, v, L)
        o, lse = ge.ops.decode_attention(*args, block_table=bt if paged else None, return_lse=True, backend="cpp", **kw)
        _close(o, ro, torch.float32)
        _close_lse(lse, rl, torch.float32)
        # a NaN key at a position the last query rows of sequence 2 attend (with finite keys beside it)
        pos = S - 2
        k[2, 1, pos] = float("nan")
        kp = _copy_slot_to_paged(k, kp, bt, pos, page_size) if paged else kp
        ro, _ = R.decode_attention(q, k, v, L, **kw)
        o = ge.ops.decode_attention(*((q, kp, vp, L) if paged else (q, k, v, L)), block_table=bt if paged else None,
                                    backend="cpp", **kw)
        nan = torch.isnan(ro)
        assert nan.any() and torch.equal(torch.isnan(o), nan), "NaN rows differ from the reference's"
        _close(o[~nan].view(-1), ro[~nan].view(-1), torch.float32)


def _copy_slot_to_paged(k, kp, bt, pos, page_size):
    """kp with sequence 2, kv head 1, position pos set from the contiguous k (the paged copy of one slot)."""
    kp = kp.clone()
    kp[bt[2, pos // page_size], pos % page_size, 1] = k[2, 1, pos]
    return kp


def _softcap_precision_case(gen, backend, device="cpu"):
    """softcap * tanh(s / softcap) to float32 precision for every score, decode (contiguous and paged)
    and prefill. A cap of 10,000 over scores of a few units: tanh computed as 1 - 2 / (exp(2t) + 1)
    is exact only to ~1e-7 absolutely, which the cap scales to ~1e-3 on each score (and so on the
    output). A cap of 3 over scores up to ~40: both sides of the kernels' switch (|t| = 0.55) from
    tanh's odd polynomial to the exp form, and saturation."""
    B, Hkv, G, S = 2, 2, 4, 37
    for D, softcap, spread in ((64, 1e4, 3.0), (80, 3.0, 12.0)):
        lengths = [S, 23]
        k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, torch.float32, 16)
        q = _randn((B, Hkv * G, D), gen, torch.float32) * spread  # scores q . k / sqrt(D) ~ N(0, spread^2)
        L = torch.tensor(lengths, dtype=torch.int32)
        ro, rl = R.decode_attention(q, k, v, L, softcap=softcap)
        on = lambda *t: [x.to(device) for x in t]  # noqa: E731
        for paged in (False, True):
            kc, vc = (kp, vp) if paged else (k, v)
            o, lse = ge.ops.decode_attention(*on(q, kc, vc, L), block_table=on(bt)[0] if paged else None,
                                             softcap=softcap, return_lse=True, backend=backend)
            _close(o.cpu(), ro, torch.float32, f"decode (paged={paged}, softcap={softcap:g})")
            _close_lse(lse.cpu(), rl, torch.float32)
        cu = torch.tensor([0, 9, 9 + S], dtype=torch.int32)
        qp = _randn((int(cu[-1]), Hkv * G, D), gen, torch.float32) * spread
        kk, vv = (_randn((int(cu[-1]), Hkv, D), gen, torch.float32) for _ in range(2))
        ro, _ = R.prefill_attention(qp, kk, vv, cu, softcap=softcap)
        o = ge.ops.prefill_attention(*on(qp, kk, vv, cu), softcap=softcap, backend=backend)
        _close(o.cpu(), ro, torch.float32, f"prefill (softcap={softcap:g})")


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_and_prefill_softcap_precise_at_any_cap(backend, gen):
    _available(backend)
    _softcap_precision_case(gen, backend)


def _nan_in_kv_case(gen, backend, device="cpu"):
    """A NaN in one in-range key (or value) makes exactly the reference's rows NaN, out and lse alike, on
    every split count (a split whose l is NaN must not be merged as an empty one), contiguous and paged
    decode and prefill; the other rows stay exact. A NaN key is also put where only some rows attend
    it (a window, Q > 1, causal prefill). A NaN value is put only where every row attends it: a value
    a row reads but masks (in the window's or the causal block's range) spreads as 0 * NaN, as in SDPA
    and the reference, except where a kernel skips the read, so that case has no single answer."""
    B, Hkv, G, D, S = 3, 2, 4, 64, 45
    lengths = [S, 1, 19]

    def on(*t):
        return [x.to(device) for x in t]

    for where, Q, window, causal in (("k", 2, 3, True), ("v", 1, None, False)):
        k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, torch.float32, 16)
        q = _randn((B, Q, Hkv * G, D), gen, torch.float32)
        L = torch.tensor(lengths, dtype=torch.int32)
        # sequence 0, kv head 1: its last position (with the window, only its last query token attends
        # it); sequence 1, kv head 0: its one key (no finite key beside it in any split)
        cells = [(0, 1, S - 1), (1, 0, 0)]
        for b, h, pos in cells:
            (k if where == "k" else v)[b, h, pos] = float("nan")
            (kp if where == "k" else vp)[bt[b, pos // 16], pos % 16, h] = float("nan")
        ro, rl = R.decode_attention(q, k, v, L, window=window)
        for ns in (1, 3):
            for paged in (False, True):
                args = on(q, kp, vp, L, bt) if paged else on(q, k, v, L)
                o, lse = ge.ops.decode_attention(*args[:4], block_table=args[4] if paged else None,
                                                 window=window, return_lse=True, num_splits=ns, backend=backend)
                o, lse = o.cpu(), lse.cpu()
                what = f"NaN {where}, splits {ns}, paged {paged}"
                nan = torch.isnan(ro)
                assert nan.any() and torch.equal(torch.isnan(o), nan), f"{what}: NaN rows differ from the reference's"
                assert torch.equal(torch.isnan(lse), torch.isnan(rl)), f"{what}: NaN lse differ from the reference's"
                _close(o[~nan].view(-1), ro[~nan].view(-1), torch.float32, what)
        T = 11
        qp, kk, vv = _randn((T, Hkv * G, D), gen, torch.float32), _randn((T, Hkv, D), gen, torch.float32), \
            _randn((T, Hkv, D), gen, torch.float32)
        (kk if where == "k" else vv)[3, 1] = float("nan")
        cu = torch.tensor([0, 6, T], dtype=torch.int32)
        ro, rl = R.prefill_attention(qp, kk, vv, cu, causal=causal)
        pre = "triton" if backend == "cuda" else backend  # triton serves prefill on the GPU
        o, lse = ge.ops.prefill_attention(*on(qp, kk, vv, cu), causal=causal, return_lse=True, backend=pre)
        nan = torch.isnan(ro)
        assert nan.any() and torch.equal(torch.isnan(o.cpu()), nan), f"prefill NaN {where}: NaN rows differ"
        assert torch.equal(torch.isnan(lse.cpu()), torch.isnan(rl)), f"prefill NaN {where}: NaN lse differ"


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_and_prefill_nan_in_kv_makes_its_rows_nan(backend, gen):
    _available(backend)
    _nan_in_kv_case(gen, backend)


def test_decode_float64_torch_backend(gen):
    _decode_case(gen, "torch", torch.float64, paged=True)


# ----------------------------------------------------------------------------------------------
# prefill


def _prefill_case(gen, backend, dtype, *, small=None, causal=True, extra_keys=False):
    small = backend == "triton" if small is None else small
    rnd = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    B = rnd.randint(1, 3 if small else 4)
    Hkv = rnd.randint(1, 2 if small else 3)
    G = rnd.choice([1, 2, 3])
    D = rnd.choice([16, 32] if small else [16, 64, 96])
    lq = [rnd.choice([0, 1, rnd.randint(2, 12 if small else 40)]) for _ in range(B)]
    lq[rnd.randrange(B)] = rnd.randint(3, 12 if small else 40)
    lk = [a + (rnd.randint(0, 9) if extra_keys else 0) for a in lq]
    cu = torch.tensor([0, *torch.tensor(lq).cumsum(0).tolist()], dtype=torch.int32)
    cuk = torch.tensor([0, *torch.tensor(lk).cumsum(0).tolist()], dtype=torch.int32)
    T, Tk = int(cu[-1]), int(cuk[-1])
    q = _randn((T, Hkv * G, D), gen, dtype)
    k = _randn((Tk, Hkv, D), gen, dtype)
    v = _randn((Tk, Hkv, D), gen, dtype)
    window = rnd.choice([None, rnd.randint(1, 10)]) if causal else None
    softcap = rnd.choice([0.0, rnd.uniform(2.0, 20.0)])
    kw = dict(causal=causal, window=window, softcap=softcap)
    ro, rl = R.prefill_attention(q, k, v, cu, cu_seqlens_k=cuk if extra_keys else None, **kw)
    o, lse = ge.ops.prefill_attention(q, k, v, cu, cu_seqlens_k=cuk if extra_keys else None, return_lse=True,
                                      backend=backend, **kw)
    assert o.shape == q.shape and o.dtype == dtype
    _close(o, ro, dtype)
    _close_lse(lse, rl, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_matches_reference(backend, dtype, gen):
    _available(backend)
    for causal, extra in ((True, False), (True, True), (False, False), (False, True)):
        _prefill_case(gen, backend, dtype, causal=causal, extra_keys=extra)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_single_sequence_matches_sdpa(backend, gen):
    """cu_seqlens=None: one causal sequence, as torch's SDPA with is_causal (GQA by repeating kv heads)."""
    _available(backend)
    T, Hq, Hkv, D = 37, 6, 2, 64
    q, k, v = (_randn((T, h, D), gen, torch.float32) for h in (Hq, Hkv, Hkv))
    o = ge.ops.prefill_attention(q, k, v, backend=backend)
    kr, vr = (t.repeat_interleave(Hq // Hkv, dim=1) for t in (k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1), kr.transpose(0, 1), vr.transpose(0, 1),
                                                           is_causal=True).transpose(0, 1)
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_prefill_then_decode_agree(backend, gen):
    """The last prompt token's prefill output equals decode attention of that token over the cache."""
    _available(backend)
    T, Hq, Hkv, D = 29, 4, 2, 32
    q, k, v = (_randn((T, h, D), gen, torch.float32) for h in (Hq, Hkv, Hkv))
    o = ge.ops.prefill_attention(q, k, v, window=11, backend=backend)
    kc, vc = k.transpose(0, 1)[None].contiguous(), v.transpose(0, 1)[None].contiguous()
    od = ge.ops.decode_attention(q[-3:][None], kc, vc, torch.tensor([T], dtype=torch.int32), window=11, backend=backend)
    torch.testing.assert_close(od[0], o[-3:], atol=2e-6, rtol=2e-6)


# ----------------------------------------------------------------------------------------------
# rotary + KV append


def _rope_case(gen, backend, dtype, *, paged, small=None):
    small = backend == "triton" if small is None else small
    rnd = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    B = rnd.randint(1, 4)
    Hkv = rnd.randint(1, 3)
    Hq = Hkv * rnd.choice([1, 2, 4])
    D = rnd.choice([16, 32] if small else [16, 64, 80, 128])
    S = rnd.randint(10, 60)
    rd = rnd.choice([None, D // 2, D - 2 if D > 16 else D])
    interleaved = rnd.random() < 0.5
    decode = rnd.random() < 0.5
    if decode:  # one token per sequence, seq_ids None
        T = B
        seq_ids = None
        pos = torch.randint(0, S, (T,), generator=gen, dtype=torch.int32)
    else:  # a packed prefill: distinct (row, position) pairs
        slots = torch.randperm(B * S, generator=gen)[: rnd.randint(1, min(40, B * S))]
        seq_ids = (slots // S).to(torch.int32)
        pos = (slots % S).to(torch.int32)
        T = slots.numel()
    cos, sin = ge.ops.rope_tables(S + rnd.randint(0, 5), rd or D, base=rnd.choice([10000.0, 500.0]))
    q = _randn((T, Hq, D), gen, dtype)
    k = _randn((T, Hkv, D), gen, dtype)
    v = _randn((T, Hkv, D), gen, dtype)
    if paged:
        ps = rnd.choice([1, 4, 16])
        pps = -(-S // ps)
        P = B * pps + 2
        bt = torch.randperm(P, generator=gen)[: B * pps].view(B, pps).to(torch.int32)
        kc = _randn((P, ps, Hkv, D), gen, dtype)
    else:
        bt = None
        kc = _randn((B, Hkv, S, D), gen, dtype)
    vc = torch.randn(kc.shape, generator=gen).to(dtype)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    rq, rk = R.rope_append_kv(q, k, v, kc_ref, vc_ref, pos, cos, sin, seq_ids=seq_ids, block_table=bt, rotary_dim=rd,
                              interleaved=interleaved)
    qo, ko = ge.ops.rope_append_kv(q, k, v, kc, vc, pos, cos, sin, seq_ids=seq_ids, block_table=bt, rotary_dim=rd,
                                   interleaved=interleaved, backend=backend)
    assert qo.dtype == dtype and ko.dtype == dtype and qo.shape == q.shape and ko.shape == k.shape
    _close(qo, rq, dtype, "q_rot")
    _close(ko, rk, dtype, "k_rot")
    # the cache: written slots hold k_rot (as returned) and v; every other slot is untouched
    assert torch.equal(vc, vc_ref)
    written = torch.zeros(kc.shape[:2] if paged else (kc.shape[0], kc.shape[2]), dtype=torch.bool)
    b = seq_ids.long() if seq_ids is not None else torch.arange(T)
    if paged:
        page = bt.long()[b, pos.long() // kc.shape[1]]
        written[page, pos.long() % kc.shape[1]] = True
        assert torch.equal(kc[page, pos.long() % kc.shape[1]], ko)
        assert torch.equal(kc[~written], kc_ref[~written])
    else:
        written[b, pos.long()] = True
        assert torch.equal(kc[b, :, pos.long()], ko)
        assert torch.equal(kc.transpose(1, 2)[~written], kc_ref.transpose(1, 2)[~written])


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_rope_append_matches_reference(backend, dtype, paged, gen):
    _available(backend)
    for _ in range(1 if backend == "triton" else 3):
        _rope_case(gen, backend, dtype, paged=paged)


def test_rope_tables_values():
    cos, sin = ge.ops.rope_tables(7, 8, base=100.0)
    assert cos.shape == (7, 4) and cos.dtype == torch.float32
    ang = torch.arange(7.0, dtype=torch.float64)[:, None] * 100.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(cos.double(), torch.cos(ang), atol=1e-7, rtol=0)
    torch.testing.assert_close(sin.double(), torch.sin(ang), atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_rope_then_decode_is_rotary_attention(backend, gen):
    """Appending a whole sequence with rope_append_kv then decoding its last token equals attention with
    rotary embeddings applied by the reference: the two ops compose as a model uses them."""
    _available(backend)
    T, Hq, Hkv, D, S = 13, 4, 2, 32, 16
    q, k, v = (_randn((T, h, D), gen, torch.float32) for h in (Hq, Hkv, Hkv))
    cos, sin = ge.ops.rope_tables(S, D)
    kc = torch.full((1, Hkv, S, D), float("nan"))
    vc = torch.full((1, Hkv, S, D), float("nan"))
    pos = torch.arange(T, dtype=torch.int32)
    qr, kr = ge.ops.rope_append_kv(q, k, v, kc, vc, pos, cos, sin, seq_ids=torch.zeros(T, dtype=torch.int32),
                                   backend=backend)
    o = ge.ops.decode_attention(qr[-1:], kc, vc, torch.tensor([T], dtype=torch.int32), backend=backend)
    rq, rk = R.rotate(q, cos, sin, pos), R.rotate(k, cos, sin, pos)
    ref, _ = R.prefill_attention(rq, rk, v.double())
    torch.testing.assert_close(o[0].double(), ref[-1], atol=2e-5, rtol=2e-5)


# ----------------------------------------------------------------------------------------------
# torch.library registration


def test_registered_ops_opcheck(gen):
    B, Hkv, G, D, S = 2, 2, 2, 16, 20
    k, v, kp, vp, bt = _caches(gen, B, Hkv, D, [20, 7], S, torch.float32, page_size=4)
    k, v = torch.nan_to_num(k), torch.nan_to_num(v)
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    L = torch.tensor([20, 7], dtype=torch.int32)
    torch.library.opcheck(A._decode_op, (q, k, v, L, None, 0.25, 0.0, 0, 0, "cpp"))
    torch.library.opcheck(A._decode_op, (q, torch.nan_to_num(kp), torch.nan_to_num(vp), L, bt, 0.25, 3.0, 5, 2, "cpp"))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    qp, kk, vv = (_randn((12, h, D), gen, torch.float32) for h in (Hkv * G, Hkv, Hkv))
    torch.library.opcheck(A._prefill_op, (qp, kk, vv, cu, cu, True, 0.25, 0.0, 0, "cpp"))
    cos, sin = ge.ops.rope_tables(S, D)
    pos = torch.tensor([3, 9], dtype=torch.int32)
    torch.library.opcheck(A._rope_op, (q, kk[:2], vv[:2], k.clone(), v.clone(), pos, cos, sin, None, None, D, False, "cpp"))


def test_compiled_decode_step_matches_eager(gen):
    """Under torch.compile the ops go through their registrations and give the eager result."""
    B, Hkv, G, D, S = 2, 1, 2, 16, 12
    k, v, *_ = _caches(gen, B, Hkv, D, [12, 5], S, torch.float32)
    k, v = torch.nan_to_num(k), torch.nan_to_num(v)
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    L = torch.tensor([12, 5], dtype=torch.int32)

    def step(q, k, v, L):
        return ge.ops.decode_attention(q, k, v, L, softcap=4.0) * 2

    eager = step(q, k, v, L)
    compiled = torch.compile(step, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, L), eager)
    # int64 lengths: converted inside the op, where a value outside int32 still raises
    torch.testing.assert_close(compiled(q, k, v, L.long()), eager)
    with pytest.raises(ValueError, match="cache_seqlens: value 4294967308 does not fit"):
        compiled(q, k, v, torch.tensor([2**32 + 12, 5], dtype=torch.int64))


# ----------------------------------------------------------------------------------------------
# bad input


def _good(gen):
    B, Hkv, G, D, S, ps = 2, 2, 2, 16, 12, 4
    q = _randn((B, Hkv * G, D), gen, torch.float32)
    k = _randn((B, Hkv, S, D), gen, torch.float32)
    kp = _randn((7, ps, Hkv, D), gen, torch.float32)
    bt = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    L = torch.tensor([12, 5], dtype=torch.int32)
    return q, k, kp, bt, L


def test_decode_bad_inputs(gen):
    q, k, kp, bt, L = _good(gen)
    dec = ge.ops.decode_attention
    with pytest.raises(ValueError, match="not a multiple"):
        dec(q[:, :3], k, k, L)
    with pytest.raises(ValueError, match="block_table: entry \\[1, 1\\] = 7"):
        dec(q, kp, kp, L, block_table=torch.tensor([[0, 1, 2], [3, 7, 5]], dtype=torch.int32))
    with pytest.raises(ValueError, match="block_table: entry \\[0, 0\\] = -1"):
        dec(q, kp, kp, L, block_table=torch.tensor([[-1, 1, 2], [3, 4, 5]], dtype=torch.int32))
    # an out-of-range entry past every length is never read, so it is accepted
    dec(q, kp, kp, torch.tensor([8, 5], dtype=torch.int32), block_table=torch.tensor([[0, 1, 99], [3, 4, -3]],
                                                                                     dtype=torch.int32))
    with pytest.raises(ValueError, match="exceeds the cache capacity 12"):
        dec(q, k, k, torch.tensor([13, 5], dtype=torch.int32))
    with pytest.raises(ValueError, match="exceeds the cache capacity 12"):
        dec(q, kp, kp, torch.tensor([13, 5], dtype=torch.int32), block_table=bt)
    with pytest.raises(ValueError, match="lengths >= 0"):
        dec(q, k, k, torch.tensor([-1, 5], dtype=torch.int32))
    # int64 indices are taken, but one outside int32 must not wrap into a valid value (2**32 + 5 -> 5)
    torch.testing.assert_close(dec(q, k, k, L.long()), dec(q, k, k, L), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cache_seqlens: value 4294967301 does not fit"):
        dec(q, k, k, torch.tensor([2**32 + 5, 5], dtype=torch.int64))
    with pytest.raises(ValueError, match="block_table: value -4294967295 does not fit"):
        dec(q, kp, kp, L, block_table=torch.tensor([[0, 1, 2], [3, 1 - 2**32, 5]], dtype=torch.int64))
    with pytest.raises(TypeError, match="k_cache: dtype torch.float16 differs"):
        dec(q, k.half(), k, L)
    with pytest.raises(TypeError, match="v_cache: dtype"):
        dec(q, k, k.double(), L)
    with pytest.raises(ValueError, match="head dim 72 is not supported"):
        dec(torch.randn(2, 4, 72), torch.randn(2, 2, 12, 72), torch.randn(2, 2, 12, 72), L)
    with pytest.raises(ValueError, match="head dim"):
        dec(q, k[..., :8], k[..., :8], L)
    with pytest.raises(ValueError, match="v_cache: expected k_cache's shape"):
        dec(q, k, k[:, :, :5], L)
    with pytest.raises(ValueError, match="cache_seqlens: expected shape"):
        dec(q, k, k, L[:1])
    with pytest.raises(TypeError, match="cache_seqlens: expected an int32"):
        dec(q, k, k, L.float())
    with pytest.raises(ValueError, match="page size"):
        dec(q, torch.randn(3, 257, 2, 16), torch.randn(3, 257, 2, 16), L, block_table=bt)
    with pytest.raises(ValueError, match="block_table: expected shape"):
        dec(q, kp, kp, L, block_table=bt[:1])
    with pytest.raises(ValueError, match="window: expected an int >= 1"):
        dec(q, k, k, L, window=0)
    with pytest.raises(ValueError, match="softcap"):
        dec(q, k, k, L, softcap=-1.0)
    with pytest.raises(ValueError, match="softcap: expected 0 \\(off\\) or a cap in \\[1e-06, 1e\\+30\\]"):
        dec(q, k, k, L, softcap=1e-39)  # the kernels' 1 / softcap would overflow float32
    with pytest.raises(ValueError, match="softcap: expected 0 \\(off\\) or a cap in"):
        dec(q, k, k, L, softcap=3e38)  # softcap * log2(e) would overflow float32: all-NaN outputs
    with pytest.raises(ValueError, match="num_splits"):
        dec(q, k, k, L, num_splits=0)
    with pytest.raises(ValueError, match="scale: expected a finite number, got an int too large"):
        dec(q, k, k, L, scale=10**400)  # float() raises OverflowError, which names nothing
    with pytest.raises(ValueError, match="q: expected a head dim \\(last\\) >= 1"):
        dec(q[..., :0], k[..., :0], k[..., :0], L, backend="torch")  # not 1 / sqrt(0)
    # more splits than keys, and a window longer than the cache, change nothing (2**62 splits overflowed
    # the workspace's size and crashed; 2**64 did not fit the binding's int64)
    plain = dec(q, k, k, L)
    for kw in (dict(num_splits=2**62), dict(num_splits=2**64), dict(window=2**70)):
        for backend in ("cpp", "torch"):
            torch.testing.assert_close(dec(q, k, k, L, backend=backend, **kw), plain, rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match="q: expected shape"):
        dec(q[0], k, k, L)
    with pytest.raises(ValueError, match="k_cache: expected 2 sequences"):
        dec(q, k[:1], k[:1], L)
    with pytest.raises(TypeError, match="q: expected a torch.Tensor"):
        dec(q.tolist(), k, k, L)
    with pytest.raises(TypeError, match="q: expected a floating-point"):
        dec(q.to(torch.int64), k, k, L)
    with pytest.raises(ge.BackendUnavailableError):
        dec(q, k, k, L, backend="cuda")


def test_prefill_bad_inputs(gen):
    q = _randn((10, 4, 16), gen, torch.float32)
    k = _randn((10, 2, 16), gen, torch.float32)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    pre = ge.ops.prefill_attention
    with pytest.raises(ValueError, match="not a multiple"):
        pre(q[:, :3], k, k, cu)
    with pytest.raises(ValueError, match="cu_seqlens: expected offsets from 0 to 10"):
        pre(q, k, k, torch.tensor([0, 4, 9], dtype=torch.int32))
    with pytest.raises(ValueError, match="must not decrease"):
        pre(q, k, k, torch.tensor([0, 6, 4, 10], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens: value 4294967300 does not fit"):
        pre(q, k, k, torch.tensor([0, 4 + 2**32, 10], dtype=torch.int64))
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        pre(q, k[:8], k[:8], cu)
    with pytest.raises(ValueError, match="cu_seqlens_k: expected 3 offsets"):
        pre(q, k, k, cu, cu_seqlens_k=torch.tensor([0, 10], dtype=torch.int32))
    with pytest.raises(TypeError, match="k: dtype"):
        pre(q, k.bfloat16(), k, cu)
    with pytest.raises(ValueError, match="window"):
        pre(q, k, k, cu, causal=False, window=3)
    with pytest.raises(ValueError, match="softcap: expected 0"):
        pre(q, k, k, cu, softcap=1e-46)
    with pytest.raises(ValueError, match="head dim 24"):
        pre(torch.randn(3, 2, 24), torch.randn(3, 2, 24), torch.randn(3, 2, 24))
    with pytest.raises(ValueError, match="softcap: expected 0"):
        pre(q, k, k, cu, softcap=1e31)
    with pytest.raises(ValueError, match="q: expected a head dim"):
        pre(q[..., :0], k[..., :0], k[..., :0], cu, backend="torch")
    for backend in ("cpp", "torch"):
        torch.testing.assert_close(pre(q, k, k, cu, window=2**70, backend=backend), pre(q, k, k, cu), rtol=2e-6,
                                   atol=2e-6)


def test_rope_bad_inputs(gen):
    B, Hkv, D, S = 2, 2, 16, 8
    q = _randn((2, 4, D), gen, torch.float32)
    k = _randn((2, Hkv, D), gen, torch.float32)
    kc = torch.zeros(B, Hkv, S, D)
    cos, sin = ge.ops.rope_tables(S, D)
    pos = torch.tensor([1, 7], dtype=torch.int32)
    rope = ge.ops.rope_append_kv
    rope(q, k, k, kc, kc.clone(), pos, cos, sin)
    with pytest.raises(ValueError, match="beyond the cache capacity 8"):
        rope(q, k, k, kc, kc.clone(), torch.tensor([1, 8], dtype=torch.int32), *ge.ops.rope_tables(20, D))
    with pytest.raises(ValueError, match="beyond the rotary tables"):
        rope(q, k, k, torch.zeros(B, Hkv, 20, D), torch.zeros(B, Hkv, 20, D), torch.tensor([1, 9], dtype=torch.int32),
             cos, sin)
    with pytest.raises(ValueError, match="positions >= 0"):
        rope(q, k, k, kc, kc.clone(), torch.tensor([-1, 2], dtype=torch.int32), cos, sin)
    with pytest.raises(ValueError, match="seq_ids: batch row 2"):
        rope(q, k, k, kc, kc.clone(), pos, cos, sin, seq_ids=torch.tensor([0, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="positions: value 4294967297 does not fit"):
        rope(q, k, k, kc, kc.clone(), torch.tensor([1, 2**32 + 1], dtype=torch.int64), cos, sin)
    with pytest.raises(ValueError, match="seq_ids: value 4294967296 does not fit"):
        rope(q, k, k, kc, kc.clone(), pos, cos, sin, seq_ids=torch.tensor([2**32, 1], dtype=torch.int64))
    with pytest.raises(ValueError, match="seq_ids: None"):
        rope(q.repeat(2, 1, 1), k.repeat(2, 1, 1), k.repeat(2, 1, 1), kc, kc.clone(), pos.repeat(2), cos, sin)
    with pytest.raises(ValueError, match="block_table: entry \\[1, 3\\] = 9"):
        rope(q, k, k, torch.zeros(9, 2, Hkv, D), torch.zeros(9, 2, Hkv, D), pos, cos, sin,
             block_table=torch.tensor([[0, 1, 2, 3], [4, 5, 6, 9]], dtype=torch.int32))
    with pytest.raises(ValueError, match="rotary_dim"):
        rope(q, k, k, kc, kc.clone(), pos, cos, sin, rotary_dim=5)
    with pytest.raises(ValueError, match="cos: expected shape"):
        rope(q, k, k, kc, kc.clone(), pos, cos[:, :3], sin[:, :3])
    with pytest.raises(TypeError, match="k_cache: dtype"):
        rope(q, k, k, kc.half(), kc.half(), pos, cos, sin)
    with pytest.raises(ValueError, match="unit stride"):
        kt = torch.zeros(B, Hkv, D, S).transpose(2, 3)
        rope(q, k, k, kt, kt.clone(), pos, cos, sin)
    with pytest.raises(ValueError, match="k_cache: 1 kv heads"):
        rope(q, k, k, kc[:, :1], kc[:, :1].clone(), pos, cos, sin)
    with pytest.raises(TypeError, match="cos: expected a float32"):
        rope(q, k, k, kc, kc.clone(), pos, cos.half(), sin.half())


# ----------------------------------------------------------------------------------------------
# GPU: the triton and cuda backends on CUDA tensors (pytest -m gpu on a GPU machine)

GPU_KERNELS = ["triton", "cuda"]


@pytest.mark.gpu
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_decode_matches_reference(backend, dtype, paged, gen):
    _available(backend, "cuda")
    for Q in (1, 1, 3):
        for ns in (None, 1, 5):
            _decode_case(gen, backend, dtype, paged=paged, Q=Q, device="cuda", num_splits=ns)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_softcap_precise_at_any_cap(backend, gen):
    _available(backend, "cuda")
    _softcap_precision_case(gen, backend, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_nan_in_kv_makes_its_rows_nan(backend, gen):
    _available(backend, "cuda")
    _nan_in_kv_case(gen, backend, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("D", A.HEAD_DIMS)
@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_decode_head_dims(backend, D, gen):
    _available(backend, "cuda")
    _decode_case(gen, backend, torch.bfloat16, paged=bool(D % 3), D=D, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_decode_long_cache(backend, gen):
    """A long cache (many auto-planned splits) against the reference, and paged == contiguous."""
    _available(backend, "cuda")
    B, Hkv, G, D, S = 2, 2, 4, 128, 5000
    lengths = [5000, 3001]
    k, v, kp, vp, bt = _caches(gen, B, Hkv, D, lengths, S, torch.bfloat16, page_size=16)
    q = _randn((B, Hkv * G, D), gen, torch.bfloat16)
    L = torch.tensor(lengths, dtype=torch.int32)
    ro, rl = R.decode_attention(q, k, v, L)
    o, lse = ge.ops.decode_attention(q.cuda(), kp.cuda(), vp.cuda(), L.cuda(), block_table=bt.cuda(), return_lse=True,
                                     backend=backend)
    _close(o.cpu(), ro, torch.bfloat16)
    _close_lse(lse.cpu(), rl, torch.bfloat16)
    oc = ge.ops.decode_attention(q.cuda(), k.cuda(), v.cuda(), L.cuda(), backend=backend)
    torch.testing.assert_close(oc.float(), o.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_triton_prefill_and_rope(dtype, gen):
    _available("triton", "cuda")
    q = _randn((50, 8, 64), gen, dtype)
    k = _randn((50, 2, 64), gen, dtype)
    cu = torch.tensor([0, 17, 17, 50], dtype=torch.int32)
    ro, _ = R.prefill_attention(q, k, k, cu, window=9)
    o = ge.ops.prefill_attention(q.cuda(), k.cuda(), k.cuda(), cu.cuda(), window=9, backend="triton")
    _close(o.cpu(), ro, dtype)
    cos, sin = ge.ops.rope_tables(64, 64)
    kc = torch.zeros(4, 2, 64, 64, dtype=dtype)
    pos = torch.tensor([3, 9, 0, 63], dtype=torch.int32)
    rq, rk = R.rope_append_kv(q[:4], k[:4], k[:4], kc.clone(), kc.clone(), pos, cos, sin)
    kcd = kc.cuda()
    qo, ko = ge.ops.rope_append_kv(q[:4].cuda(), k[:4].cuda(), k[:4].cuda(), kcd, kc.cuda(), pos.cuda(), cos.cuda(),
                                   sin.cuda(), backend="triton")
    _close(qo.cpu(), rq, dtype, "q_rot")
    _close(ko.cpu(), rk, dtype, "k_rot")
    assert torch.equal(kcd[torch.arange(4), :, pos.long()].cpu(), ko.cpu())


def test_core_cycles_harness_builds_and_paged_matches_contiguous(tmp_path):
    """benchmarks/attention_core_cycles.cpp (the C++ timing harness NOTES.md quotes) still builds
    against csrc/, and its paged and contiguous runs of the float32 core give the same outputs."""
    import os
    import re
    import shutil
    import subprocess
    from pathlib import Path

    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++ on PATH to build the harness")
    root = Path(__file__).resolve().parents[1]
    exe = tmp_path / "attention_core_cycles"
    srcs = ["benchmarks/attention_core_cycles.cpp", "csrc/cpu/attention.cpp", "csrc/cpu/rng.cpp", "csrc/cpu/parallel.cpp"]
    subprocess.run([cxx, "-O0", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-fopenmp", "-Icsrc", "-Icsrc/cpu",
                    *srcs, "-o", str(exe)], cwd=root, check=True, capture_output=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", QUICK="1")
    for args in (["paged", "4", "2", "64"], ["paged", "1", "4", "48"], ["paged", "3", "2", "32"]):
        out = subprocess.run([str(exe), *args], env=env, check=True, capture_output=True, text=True).stdout
        diff = float(re.search(r"outputs differ by ([0-9.eE+-]+)", out).group(1))
        assert diff < 1e-5, out
    out = subprocess.run([str(exe), "hot", "2", "64"], env=env, check=True, capture_output=True, text=True).stdout
    assert float(re.search(r"([0-9.]+) cycles per key", out).group(1)) > 0, out
    bad = subprocess.run([str(exe), "paged", "1", "2", "20"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
