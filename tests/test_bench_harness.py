"""The benchmark harness's cold-input rotation: how many input sets a row gets, that calls walk them in
turn, and that consecutive decode candidates never read the set the previous call read."""

import torch

from genengine.bench import attention as bench_attention
from genengine.bench import harness


def test_cold_sets_cover_the_multiple_of_the_last_level_cache():
    llc = harness.last_level_cache_bytes("cpu")
    assert llc >= 1 << 20
    want = harness.COLD_CACHE_MULTIPLE * llc
    # The cap sits above the 1-byte row's count whatever this machine's cache (CI has seen 260 MB).
    for nbytes in (1, 1000, llc // 3 + 7, llc, want - 1, want, 10 * want):
        n = harness.cold_sets(nbytes, "cpu", cap=2 * want)
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


# ---- the JSON rows: per-sweep Gibbs statistics, strict JSON (no NaN) --------------------------------------


class _FakeCeilings:
    """Ceilings without measuring anything: the tests below check the rows' bookkeeping, not timings."""

    def matmul(self):
        return 1024, harness.Stats(1e-3, 1e-3, 1e-3, 3), 1e12

    def copy_callable(self, nbytes, dtype=torch.float32, sets=1):
        return lambda: None


class _FakeCtx:
    device = torch.device("cpu")
    quick = True
    backends = None
    dtypes = None
    ceilings = _FakeCeilings()

    @staticmethod
    def print(*a):
        pass


def _fixed_interleave(candidates, device, budget_s, **kw):
    # every candidate: 10 ms per call (min 8, p90 12), whatever it is; nothing is called
    return {k: harness.Stats(0.010, 0.008, 0.012, 5) for k in candidates}


def test_gibbs_json_statistics_are_per_sweep_like_the_table(monkeypatch):
    from genengine.bench import gibbs

    monkeypatch.setattr(gibbs, "interleave", _fixed_interleave)
    rows = gibbs.run(_FakeCtx())["rows"]
    multi = [r for r in rows if r.get("sweeps_per_call", 1) > 1]
    assert multi  # the rows this is about: one call runs several sweeps
    for r in rows:
        per = r.get("sweeps_per_call", 1)
        assert r["median_s"] == (r["sweep_s"] if "sweep_s" in r else r["median_s"])
        assert abs(r["median_s"] - 0.010 / per) < 1e-15
        assert abs(r["min_s"] - 0.008 / per) < 1e-15 and abs(r["p90_s"] - 0.012 / per) < 1e-15


def test_flows_rows_have_no_nan(monkeypatch):
    import json

    from genengine.bench import flows

    monkeypatch.setattr(flows, "interleave", _fixed_interleave)
    rows = flows.run(_FakeCtx())["rows"]
    tiny = [r for r in rows if r["shape"][0] * r["shape"][1] < 4096]
    assert tiny and all(r["pct_of_copy"] is None for r in tiny)  # not measured: null, as other families write
    json.dumps(rows, allow_nan=False)


def test_suite_json_is_strict_json(tmp_path, monkeypatch):
    import json

    import genengine.bench.__main__ as bench_main

    # a family whose rows hold NaN and infinities: the writer turns them into null
    monkeypatch.setitem(bench_main.OPS, "hmm", lambda ctx: {"rows": [{"a": float("nan"), "b": [float("inf"), 1.5]}]})
    monkeypatch.setattr(bench_main.Ceilings, "matmul", lambda self: None)
    monkeypatch.setattr(bench_main, "busy_note", lambda: (None, None))
    out = tmp_path / "run.json"
    assert bench_main.main(["--ops", "hmm", "--quick", "--json", str(out)]) == 0

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    doc = json.loads(out.read_text(), parse_constant=reject)
    assert doc["results"]["hmm"]["rows"] == [{"a": None, "b": [None, 1.5]}]
