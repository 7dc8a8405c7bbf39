"""The Philox4x32-10 stream: known answers, backends bit for bit, statistics, determinism."""

import math

import pytest
import torch
from conftest import CPU_BACKENDS, GPU_BACKENDS

import genengine as ge
from genengine.reference import rng as ref

# Known-answer vectors of Philox4x32-10 (Salmon et al. 2011, Random123's kat_vectors)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_reference_known_answers(ctr, key, expected):
    c = [torch.tensor([v], dtype=torch.int64) for v in ctr]
    out = ref.philox4x32_10(*c, *key)
    assert tuple(int(t) for t in out) == expected


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_known_answer_through_stream(backend):
    # stream (seed 0, offset 0), block 0 is counter (0, 0, 0, 0) under key (0, 0): the first vector
    w = ge.ops.philox_words(4, 0, 0, backend=backend).to(torch.int64) & 0xFFFFFFFF
    assert w.tolist() == list(KAT[0][2])


SEEDS = [(0, 0), (1, 2), (12345, 2**32 + 7), (2**63 + 11, 2**40), (2**64 - 1, 2**64 - 1)]


@pytest.mark.parametrize("seed,offset", SEEDS)
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_words_and_uniforms_bit_exact(backend, seed, offset):
    n = 1001
    want_w = ge.ops.philox_words(n, seed, offset, backend="torch")
    assert torch.equal(ge.ops.philox_words(n, seed, offset, backend=backend), want_w)
    want_u = ge.ops.philox_uniform(n, seed, offset, backend="torch")
    got_u = ge.ops.philox_uniform(n, seed, offset, backend=backend)
    assert torch.equal(got_u, want_u)
    assert float(got_u.min()) > 0 and float(got_u.max()) < 1


@pytest.mark.parametrize("seed,offset", SEEDS)
def test_normals_cpp_triton_agree(seed, offset):
    n = 2049
    a = ge.ops.philox_normal(n, seed, offset, backend="cpp")
    b = ge.ops.philox_normal(n, seed, offset, backend="triton")
    assert (a - b).abs().max().item() <= 1e-6
    # and both are the exact Box-Muller transform of the same uniforms, to float32 rounding
    exact = ge.ops.philox_normal(n, seed, offset, backend="torch")
    assert (a - exact).abs().max().item() <= 1e-6


def test_large_stream_matches_reference_everywhere(gen):
    seed, offset = int(torch.randint(0, 2**62, (), generator=gen)), int(torch.randint(0, 2**62, (), generator=gen))
    n = 300_007  # several parallel chunks, odd tail
    assert torch.equal(ge.ops.philox_words(n, seed, offset, backend="cpp"),
                       ge.ops.philox_words(n, seed, offset, backend="torch"))
    z = ge.ops.philox_normal(n, seed, offset, backend="cpp")
    assert (z - ge.ops.philox_normal(n, seed, offset, backend="torch")).abs().max().item() <= 1e-6


# Kolmogorov-Smirnov critical value sqrt(n) * D at alpha = 1e-6 (P(sqrt(n) D > c) ~ 2 exp(-2 c^2)):
# the seeds are fresh every run, and at alpha = 1e-3 (1.95) a fair generator failed CI about one
# run in a thousand per test (seed 1201873944, 2.0). At n = 2e5 it still flags a CDF off by 0.6%.
KS_CRITICAL = 2.69


def _ks_statistic(samples, cdf):
    x, _ = torch.sort(samples.double())
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max(float((i / n - f).max()), float((f - (i - 1) / n).max()))


def test_normal_distribution(gen):
    n = 400_000
    z = ge.ops.philox_normal(n, *ge.ops.draw_key(gen), backend="cpp").double()
    d = _ks_statistic(z, lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))))  # against N(0, 1)
    assert d < KS_CRITICAL / math.sqrt(n), d
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    # fourth moment (3 for a normal; its standard error is sqrt(96 / n))
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    # neighbours, including the two normals of one Box-Muller pair, are uncorrelated
    for lag in (1, 2, 3, 4):
        r = float(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1])
        assert abs(r) < 5 / math.sqrt(n), (lag, r)


def test_uniform_distribution(gen):
    n = 200_000
    u = ge.ops.philox_uniform(n, *ge.ops.draw_key(gen), backend="cpp")
    d = _ks_statistic(u, lambda x: x)
    assert d < KS_CRITICAL / math.sqrt(n), d


def test_draw_key_replays_with_the_seed():
    g = torch.Generator().manual_seed(7)
    k1, k2 = ge.ops.draw_key(g), ge.ops.draw_key(g)
    assert k1 != k2  # each call takes a fresh stream
    g.manual_seed(7)
    assert ge.ops.draw_key(g) == k1


@pytest.mark.parametrize("bad", [dict(n=-1), dict(seed=-1), dict(offset=2**64), dict(seed=1.5)])
def test_bad_arguments(bad):
    args = dict(n=10, seed=1, offset=2) | bad
    name = next(iter(bad))
    with pytest.raises((ValueError, TypeError), match=name):
        ge.ops.philox_normal(args["n"], args["seed"], args["offset"], backend="cpp")


def test_bad_generator():
    with pytest.raises(TypeError, match="generator"):
        ge.ops.draw_key(generator=42)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [b for b in GPU_BACKENDS if b != "torch"])
def test_gpu_streams_match_cpu(backend):
    n = 100_003
    for seed, offset in SEEDS:
        w = ge.ops.philox_words(n, seed, offset, device="cuda", backend=backend).cpu()
        assert torch.equal(w, ge.ops.philox_words(n, seed, offset, backend="cpp"))
        z = ge.ops.philox_normal(n, seed, offset, device="cuda", backend=backend).cpu()
        assert (z - ge.ops.philox_normal(n, seed, offset, backend="cpp")).abs().max().item() <= 1e-6


def test_cpu_backends_listed():
    assert set(CPU_BACKENDS) <= set(ge.BACKENDS)


# ---- the CPU generator's instruction-set paths (GENENGINE_CPU_ISA) ---------------------------------
# The path is chosen once when genengine._C loads, so each one runs in its own interpreter. Words and
# uniforms must match the reference bit for bit on every path, normals must match across paths bit
# for bit (the same float32 operations in the same order), and so must a stochastic step.

CPU_ISAS = ("baseline", "avx2", "avx512")

# (kind, n, seed, offset, start): counts around the 16-block (64-value) group of the AVX-512 path and
# the 8-block group of the AVX2 one, starts inside a block, a fill across parallel chunks, and a range
# across the 2^32 wrap of the block counter's low word (value 2^34).
ISA_CASES = [
    (kind, n, seed, offset, start)
    for kind in (0, 1, 2)
    for (n, start) in [(1, 0), (3, 1), (15, 2), (16, 0), (17, 3), (31, 33), (63, 1), (64, 0), (65, 62),
                       (250, 7), (257, 64), (1001, 0), (1001, 5), (70_001, 13), (300, 2**34 - 150),
                       (129, 2**64 - 129)]
    for (seed, offset) in [(0, 0), (2**64 - 1, 2**40 + 3)]
]

_ISA_PROBE = r"""
import json, sys
import torch
import genengine as ge
from genengine import _backends

cpp = _backends.load_cpp()
out = {"isa": cpp.isa()}
for i, (kind, n, seed, offset, start) in enumerate(json.loads(sys.argv[2])):
    t = torch.empty(n, dtype=torch.int32)
    cpp.philox_fill(kind, t.data_ptr(), n, seed, offset, start)
    out[i] = t
g = torch.Generator().manual_seed(1234)
for dtype in (torch.float32, torch.bfloat16):
    # an odd sample size, so the per-sample segments of dynamic thresholding start inside blocks
    x = torch.randn(3, 3, 17, 19, generator=g).to(dtype)
    e = torch.randn(3, 3, 17, 19, generator=g).to(dtype)
    for thresh in (None, (0.9, 1.5)):
        gen = torch.Generator().manual_seed(99)
        y = ge.ops.ddpm_step(x, e, 0.3, 0.5, generator=gen, backend="cpp", dynamic_threshold=thresh)
        out[f"ddpm {dtype} {thresh}"] = y
    big = torch.randn(2, 4, 64, 64, generator=g)  # several parallel chunks of the step
    out["ddpm big"] = ge.ops.ddpm_step(big, big, 0.3, 0.5, generator=torch.Generator().manual_seed(5), backend="cpp")
torch.save(out, sys.argv[1])
"""


@pytest.fixture(scope="module")
def isa_results(tmp_path_factory):
    import json
    import os
    import subprocess
    import sys

    results = {}
    for isa in CPU_ISAS:
        path = tmp_path_factory.mktemp("isa") / f"{isa}.pt"
        env = dict(os.environ, GENENGINE_CPU_ISA=isa)
        subprocess.run([sys.executable, "-c", _ISA_PROBE, str(path), json.dumps(ISA_CASES)], env=env, check=True)
        res = torch.load(path)
        if res["isa"].split("philox: ", 1)[1].startswith(isa):
            results[isa] = res
        else:
            assert "not supported by this CPU" in res["isa"], res["isa"]  # skipped, not silently run
    assert "baseline" in results
    return results


def _reference_words(n, seed, offset, start):
    """int64 words [start, start + n) of stream (seed, offset) from the pure-torch reference."""
    b0 = start // 4
    block = torch.arange((start + n + 3) // 4 - b0, dtype=torch.int64) + b0 if b0 < 2**62 else None
    if block is None:  # past int64: the counter's words directly
        blocks = [b0 + j for j in range((start + n + 3) // 4 - b0)]
        c0 = torch.tensor([b & 0xFFFFFFFF for b in blocks], dtype=torch.int64)
        c1 = torch.tensor([b >> 32 for b in blocks], dtype=torch.int64)
    else:
        c0, c1 = block & 0xFFFFFFFF, block >> 32
    c2 = torch.full_like(c0, offset & 0xFFFFFFFF)
    c3 = torch.full_like(c0, offset >> 32)
    w = torch.stack(ref.philox4x32_10(c0, c1, c2, c3, seed & 0xFFFFFFFF, seed >> 32), dim=1).reshape(-1)
    return w[start - 4 * b0:start - 4 * b0 + n]


def test_forced_isa_is_reported():
    import os
    import subprocess
    import sys

    code = "from genengine import _backends; print(_backends.load_cpp().isa())"
    for value, expect in [("baseline", "philox: baseline (GENENGINE_CPU_ISA=baseline)"),
                          ("nonsense", "not understood")]:
        env = dict(os.environ, GENENGINE_CPU_ISA=value)
        got = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
        assert expect in got, got


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_isa_words_and_uniforms_match_reference(isa_results, isa):
    if isa not in isa_results:
        pytest.skip(f"this CPU lacks {isa}")
    res = isa_results[isa]
    for i, (kind, n, seed, offset, start) in enumerate(ISA_CASES):
        if kind == 2:
            continue
        w = _reference_words(n, seed, offset, start)
        if kind == 0:
            want = torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)
        else:
            want = ref.uniform_from_words(w).to(torch.float32).view(torch.int32)
        assert torch.equal(res[i], want), (isa, kind, n, seed, offset, start)


@pytest.mark.parametrize("isa", [i for i in CPU_ISAS if i != "baseline"])
def test_isa_paths_bit_identical(isa_results, isa):
    if isa not in isa_results:
        pytest.skip(f"this CPU lacks {isa}")
    base, res = isa_results["baseline"], isa_results[isa]
    assert base.keys() == res.keys()
    for key in base:
        if key != "isa":
            assert torch.equal(base[key].view(-1).view(torch.int16 if base[key].element_size() == 2 else torch.int32),
                               res[key].view(-1).view(torch.int16 if res[key].element_size() == 2 else torch.int32)), (isa, key)


def test_isa_normals_are_the_stream(isa_results):
    # normals filled from a start inside a block are that slice of the stream, and close to exact
    res = isa_results["baseline"]
    for i, (kind, n, seed, offset, start) in enumerate(ISA_CASES):
        if kind != 2:
            continue
        got = res[i].view(torch.float32)
        lead = start % 4
        w = _reference_words((lead + n + 3) // 4 * 4, seed, offset, start - lead)  # whole blocks
        exact = ref.normals_from_words(w).to(torch.float32)[lead:lead + n]
        assert (got - exact).abs().max().item() <= 1e-6, (n, seed, offset, start)


def test_fill_start_is_a_slice():
    from genengine import _backends

    cpp = _backends.load_cpp()
    for kind in (0, 1, 2):
        full = torch.empty(5000, dtype=torch.int32)
        cpp.philox_fill(kind, full.data_ptr(), full.numel(), 11, 22)
        for start, n in [(0, 5000), (1, 77), (3, 1000), (62, 3), (65, 4935)]:
            part = torch.empty(n, dtype=torch.int32)
            cpp.philox_fill(kind, part.data_ptr(), n, 11, 22, start)
            assert torch.equal(part, full[start:start + n]), (kind, start, n)
