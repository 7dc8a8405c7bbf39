"""The benchmark harness's cold-input rotation: how many input sets a row gets, that calls walk them in
turn, and that consecutive decode candidates never read the set the previous call read."""

import torch

from genengine.bench import attention as bench_attention
from genengine.bench import harness


def test_cold_sets_cover_the_multiple_of_the_last_level_cache():
    llc = harness.last_level_cache_bytes("cpu")
    assert llc >= 1 << 20
    want = harness.COLD_CACHE_MULTIPLE * llc
    for nbytes in (1, 1000, llc // 3 + 7, llc, want - 1, want, 10 * want):
        n = harness.cold_sets(nbytes, "cpu", cap=10**9)
        assert n * nbytes >= want  # enough to evict
        assert n == 1 or (n - 1) * nbytes < want  # and no more than needed
    assert harness.cold_sets(1, "cpu", cap=5) == 5


def test_rotating_calls_each_in_turn():
    seen = []
    fn = harness.rotating([lambda i=i: seen.append(i) for i in range(3)])
    for _ in range(7):
        fn()
    assert seen == [0, 1, 2, 0, 1, 2, 0]


def test_rotating_ceilings_use_distinct_buffers():
    ceil = harness.Ceilings("cpu")
    ptrs = []
    real_copy = torch.Tensor.copy_

    def spy(dst, src, *a, **k):
        ptrs.append(src.data_ptr())
        return real_copy(dst, src, *a, **k)

    fn = ceil.copy_callable(4096, torch.float32, sets=3)
    torch.Tensor.copy_ = spy
    try:
        for _ in range(6):
            fn()
    finally:
        torch.Tensor.copy_ = real_copy
    assert len(set(ptrs)) == 3 and ptrs[:3] == ptrs[3:]


def test_decode_candidates_never_repeat_the_previous_set(monkeypatch):
    real_inputs = bench_attention.inputs

    def tagged(shape, dtype, device, seed=0):  # q[0, 0, 0] = the set's seed
        q, *rest = real_inputs(shape, dtype, device, seed)
        q[0, 0, 0] = seed
        return (q, *rest)

    read = []
    monkeypatch.setattr(bench_attention, "inputs", tagged)
    monkeypatch.setattr(bench_attention.ops, "decode_attention", lambda q, *a, **kw: read.append(int(q[0, 0, 0])))
    monkeypatch.setattr(bench_attention.F, "scaled_dot_product_attention", lambda q, *a, **kw: read.append(int(q[0, 0, 0, 0])))
    cands = bench_attention.candidates((2, 4, 2, 32, 16), torch.float32, torch.device("cpu"), ["cpp"], sets=3)
    calls = list(cands.values())
    assert len(calls) == 3  # cpp contiguous, cpp paged, SDPA
    for j in [0, 1, 0, 2, 2, 1, 0, 0, 2, 1, 1, 2, 0]:  # any order: the counter is shared
        calls[j]()
    assert read == [i % 3 for i in range(13)]
