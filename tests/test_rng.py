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


def _ks_statistic(samples, cdf):
    x, _ = torch.sort(samples.double())
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max(float((i / n - f).max()), float((f - (i - 1) / n).max()))


def test_normal_distribution(gen):
    n = 400_000
    z = ge.ops.philox_normal(n, *ge.ops.draw_key(gen), backend="cpp").double()
    # Kolmogorov-Smirnov against N(0, 1): critical value at alpha = 1e-3 is 1.95 / sqrt(n)
    d = _ks_statistic(z, lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))))
    assert d < 1.95 / math.sqrt(n), d
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
    assert d < 1.95 / math.sqrt(n), d


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
