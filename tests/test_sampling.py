"""Fused token sampling (ge.ops.sample_tokens): the reference rule on hand-worked cases, every backend
against it (tokens and log-probabilities), chi-square of many draws against the exact filtered,
renormalised distribution (scalar and per-row parameters), greedy, ties at the thresholds, NaN and
-inf rows, strided logits, the registered op, and bad input."""

import math

import pytest
import torch

import genengine as ge
from genengine.ops import sampling as S
from genengine.reference import sampling as R

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _available(backend):
    reason = ge._backends.unavailable_reason(backend, "cpu")
    if reason:
        pytest.skip(reason)


def _rows(params, b):
    """The [B] tensors the reference takes, from scalars or tensors as the op accepts them."""
    t = params.get("temperature", 1.0)
    k = params.get("top_k", 0)
    p = params.get("top_p", 1.0)
    mp = params.get("min_p", 0.0)

    def full(v, dt):
        return v.to(dt) if isinstance(v, torch.Tensor) else torch.full((b,), v, dtype=dt)

    mp = full(mp, torch.float32)
    return full(t, torch.float32), full(k, torch.int64), full(p, torch.float32), torch.log(mp)


def _exact(logits, **params):
    return R.filtered_probs(logits, *_rows(params, logits.shape[0]))


def _chi2_z(counts, expected):
    """Wilson-Hilferty normal score of Pearson's chi-square (bins with expected < 5 pooled)."""
    big = expected >= 5
    c = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    e = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = e > 0
    c, e = c[keep], e[keep]
    assert float(c.sum()) == pytest.approx(float(e.sum()), rel=1e-9)
    x2 = float(((c - e) ** 2 / e).sum())
    k = len(e) - 1
    if k <= 0:
        return 0.0
    return ((x2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))


# ----------------------------------------------------------------------------------------------
# the rule itself, on cases worked by hand


def test_reference_special_greedy_rows():
    """The specification's own special rows: a greedy row with a NaN (its maximum matches no index) or
    all -inf is all-NaN; a finite greedy row is one-hot at its first maximum."""
    x = torch.tensor([[0.5, 2.0, 2.0, -1.0], [0.5, float("nan"), 1.0, 0.0], [-math.inf] * 4])
    pr = _exact(x, temperature=0.0)
    assert pr[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert torch.isnan(pr[1:]).all()


def test_reference_rule_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    lg = p.log().float()

    def kept(**kw):
        return (_exact(lg, **kw)[0] > 0).nonzero().flatten().tolist()

    assert kept() == [0, 1, 2, 3]
    assert kept(top_k=1) == [0]
    assert kept(top_k=3) == [0, 1, 2]
    assert kept(top_p=0.75) == [0, 1]            # 0.5 + 0.3 reaches 0.75
    assert kept(top_p=0.5) == [0]                # 0.5 reaches 0.5 (float32 rounding of log aside)
    assert kept(top_p=0.85) == [0, 1, 2]
    assert kept(min_p=0.35) == [0, 1]            # p >= 0.175
    assert kept(top_k=3, top_p=0.9) == [0, 1, 2]  # 0.9 of the top-3 mass 0.95 is 0.855 > 0.8
    assert kept(top_k=2, top_p=0.6) == [0]       # 0.6 * 0.8 = 0.48 <= 0.5
    pr = _exact(lg, top_k=3)[0]
    torch.testing.assert_close(pr[:3], p[0, :3] / 0.95, rtol=1e-6, atol=0)
    # ties at a threshold are all kept
    lt = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    assert (_exact(lt, top_k=2)[0] > 0).tolist() == [True, True, True, True, False]
    assert (_exact(lt, top_p=0.01)[0] > 0).tolist() == [True, False, False, False, False]
    # greedy: the first maximum
    lg2 = torch.tensor([[1.0, 5.0, 5.0, -2.0]])
    assert _exact(lg2, temperature=0.0)[0].tolist() == [0.0, 1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------------------------
# every backend against the reference


def _case(gen, b, v, dtype, per_row):
    x = (torch.randn(b, v, generator=gen, dtype=torch.float64) * 2.5).to(dtype)
    if per_row:
        t = torch.rand(b, generator=gen) * 1.5 + 0.2
        t[0] = 0.0
        params = dict(temperature=t, top_k=torch.randint(0, v + 3, (b,), generator=gen),
                      top_p=torch.rand(b, generator=gen) * 0.95 + 0.05, min_p=torch.rand(b, generator=gen) * 0.2)
    else:
        params = dict(temperature=float(torch.rand(1, generator=gen)) * 1.5 + 0.2,
                      top_k=int(torch.randint(0, v + 3, (1,), generator=gen)),
                      top_p=float(torch.rand(1, generator=gen)) * 0.95 + 0.05,
                      min_p=float(torch.rand(1, generator=gen)) * 0.2)
    return x, params


def _compare(backend, x, params, seed):
    a, la = S.sample_tokens(x, **params, generator=torch.Generator().manual_seed(seed), return_logprobs=True,
                            backend=backend)
    b, lb = S.sample_tokens(x, **params, generator=torch.Generator().manual_seed(seed), return_logprobs=True,
                            backend="torch")
    assert a.dtype == torch.int64 and a.shape == (x.shape[0],)
    assert torch.equal(a, b), (a, b)
    torch.testing.assert_close(la, lb, rtol=2e-5, atol=2e-5)
    probs = _exact(x, **params)
    assert bool((probs.gather(1, a[:, None]) > 0).all())  # a filtered-out token is never drawn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_cpp_matches_reference(gen, dtype, per_row):
    _available("cpp")
    for _ in range(8):
        b = int(torch.randint(1, 9, (1,), generator=gen))
        v = int(torch.randint(1, 5000, (1,), generator=gen))
        x, params = _case(gen, b, v, dtype, per_row)
        for key in ("top_k", "top_p", "min_p"):  # each filter also alone and off
            if float(torch.rand(1, generator=gen)) < 0.3 and not per_row:
                params[key] = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}[key]
        _compare("cpp", x, params, int(torch.randint(0, 2**31, (1,), generator=gen)))


def test_cpp_large_vocab_matches_reference(gen):
    _available("cpp")
    x = torch.randn(2, 131_072 + 17, generator=gen) * 3
    for params in (dict(top_p=0.9), dict(top_k=40, top_p=0.95, temperature=0.7, min_p=0.05)):
        _compare("cpp", x, params, int(torch.randint(0, 2**31, (1,), generator=gen)))


@pytest.mark.parametrize("per_row", [False, True])
def test_triton_matches_cpp(gen, per_row):
    _available("triton")
    _available("cpp")
    for dtype in DTYPES:
        b = 3
        v = int(torch.randint(1, 70, (1,), generator=gen))
        x, params = _case(gen, b, v, dtype, per_row)
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        tt, lt = S.sample_tokens(x, **params, generator=torch.Generator().manual_seed(seed), return_logprobs=True,
                                 backend="triton")
        tc, lc = S.sample_tokens(x, **params, generator=torch.Generator().manual_seed(seed), return_logprobs=True,
                                 backend="cpp")
        assert torch.equal(tt, tc), (tt, tc, params)
        torch.testing.assert_close(lt, lc, rtol=2e-5, atol=2e-5)


def test_triton_special_rows():
    _available("triton")
    x = torch.tensor([[1.0, float("nan"), 0.0], [float("-inf")] * 3, [0.5, float("inf"), 1.0], [2.0, 1.0, 2.0]])
    tok, lp = S.sample_tokens(x, top_p=0.5, return_logprobs=True, backend="triton",
                              generator=torch.Generator().manual_seed(3))
    assert tok[:3].tolist() == [-1, -1, -1] and bool(lp[:3].isnan().all())
    assert tok[3].item() in (0, 2)
    tok = S.sample_tokens(x, temperature=0.0, backend="triton")
    assert tok.tolist() == [-1, -1, 1, 0]


# ----------------------------------------------------------------------------------------------
# statistics: many draws against the exact distribution


STAT_CASES = [
    dict(),
    dict(temperature=0.6),
    dict(top_k=5),
    dict(top_p=0.7),
    dict(min_p=0.1),
    dict(temperature=1.7, top_k=12, top_p=0.9, min_p=0.02),
]


# the torch reference is checked against the cpp kernel draw for draw above; here it gets the combined case
CHI_CASES = [("cpp", p) for p in STAT_CASES] + [("torch", STAT_CASES[-1])]


@pytest.mark.parametrize(("backend", "params"), CHI_CASES,
                         ids=lambda p: p if isinstance(p, str) else ",".join(f"{k}={v}" for k, v in p.items()) or "plain")
def test_chi_square(gen, backend, params):
    _available(backend)
    v, n = 23, 40_000
    row = torch.randn(1, v, generator=gen) * 1.5
    x = row.expand(n, v)
    tok = S.sample_tokens(x, **params, generator=gen, backend=backend)
    probs = _exact(row, **params)[0]
    assert bool((probs[tok] > 0).all())
    counts = torch.bincount(tok, minlength=v).double()
    z = _chi2_z(counts, probs * n)
    assert z < 4.5, (z, counts, probs * n)


def test_chi_square_per_row_parameters(gen):
    _available("cpp")
    v, n = 31, 25_000
    row = torch.randn(1, v, generator=gen) * 2
    groups = [dict(temperature=0.8, top_k=7, top_p=1.0, min_p=0.0), dict(temperature=1.3, top_k=0, top_p=0.8, min_p=0.0),
              dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.15), dict(temperature=0.5, top_k=20, top_p=0.95, min_p=0.01)]
    x = row.expand(n * len(groups), v)
    per = {k: torch.tensor([g[k] for g in groups for _ in range(n)]) for k in groups[0]}
    tok = S.sample_tokens(x, **per, generator=gen)
    for i, g in enumerate(groups):
        probs = _exact(row, **g)[0]
        t = tok[i * n:(i + 1) * n]
        assert bool((probs[t] > 0).all())
        z = _chi2_z(torch.bincount(t, minlength=v).double(), probs * n)
        assert z < 4.5, (g, z)


def test_ties_at_threshold_are_kept_and_drawn_evenly(gen):
    _available("cpp")
    n = 30_000
    x = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 2.0]]).expand(n, 6)
    tok = S.sample_tokens(x, top_k=2, generator=gen)
    counts = torch.bincount(tok, minlength=6).double()
    assert counts[4] == 0
    probs = _exact(x[:1], top_k=2)[0]
    assert _chi2_z(counts, probs * n) < 4.5
    # -0.0 and +0.0 are one value
    y = torch.tensor([[0.0, -0.0, -5.0]]).expand(n, 3)
    c = torch.bincount(S.sample_tokens(y, top_k=1, generator=gen), minlength=3)
    assert c[2] == 0 and c[0] > 0.45 * n and c[1] > 0.45 * n


# ----------------------------------------------------------------------------------------------
# greedy, special rows, reproducibility, layouts


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_greedy_and_special_rows(backend):
    _available(backend)
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([
        [1.0, 5.0, 5.0, -2.0],       # ties: the first maximum
        [1.0, nan, 0.0, 0.0],        # NaN: no distribution
        [-inf, -inf, -inf, -inf],    # all -inf: none either
        [-inf, 0.5, -inf, 0.2],      # -inf entries are never drawn
        [0.0, inf, 1.0, 2.0],        # +inf: a fine greedy maximum, no distribution to sample from
    ])
    tok, lp = S.sample_tokens(x, temperature=0.0, return_logprobs=True, backend=backend)
    assert tok.tolist() == [1, -1, -1, 1, 1]
    assert lp[[0, 3, 4]].tolist() == [0.0, 0.0, 0.0] and bool(lp[[1, 2]].isnan().all())
    many = x.repeat(500, 1)
    tok, lp = S.sample_tokens(many, top_p=0.99, return_logprobs=True, backend=backend,
                              generator=torch.Generator().manual_seed(0))
    tok = tok.reshape(500, 5)
    assert bool((tok[:, 1] == -1).all() and (tok[:, 2] == -1).all() and (tok[:, 4] == -1).all())
    assert set(tok[:, 3].tolist()) <= {1, 3} and set(tok[:, 0].tolist()) <= {0, 1, 2, 3}
    assert bool(lp.reshape(500, 5)[:, [1, 2, 4]].isnan().all())
    # per-row temperature: 0 is greedy on that row only
    t = torch.tensor([0.0, 1.0])
    y = torch.tensor([[0.0, 0.1, 0.0], [0.0, 0.1, 0.0]]).repeat(200, 1)
    tok = S.sample_tokens(y, temperature=t.repeat(200), backend=backend, generator=torch.Generator().manual_seed(1))
    assert bool((tok[0::2] == 1).all()) and len(set(tok[1::2].tolist())) == 3


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_temperature_too_small_for_float32_is_greedy(backend):
    """A temperature whose z = logits / t overflows float32 for a finite logit samples greedily (the
    t -> 0 limit; it gave token -1 for every row), whether 1 / t itself overflows (1e-40) or only the
    large logits' z (1e-38); a +inf logit still leaves a sampled row without a distribution."""
    _available(backend)
    x = torch.tensor([[0.5, 4.0, 3.0, 4.0], [-7.0, -2.0, -9.0, -2.5], [1.0, float("inf"), 0.0, 0.0]])
    for t in (1e-38, 1e-40, 1e-45):
        tok, lp = S.sample_tokens(x, temperature=t, top_p=0.9, return_logprobs=True, backend=backend,
                                  generator=torch.Generator().manual_seed(3))
        assert tok.tolist() == [1, 1, -1], t
        assert lp[:2].tolist() == [0.0, 0.0] and bool(lp[2].isnan())
    # the rule does not reach temperatures whose z stays finite: there the row is sampled as before
    y = torch.tensor([[0.0, 1e-37, 0.0]]).repeat(300, 1)
    tok = S.sample_tokens(y, temperature=1e-38, backend=backend, generator=torch.Generator().manual_seed(4))
    assert set(tok.tolist()) == {1}  # weights exp(0), exp(-10), exp(-10): token 1 nearly always
    tok = S.sample_tokens(y, temperature=1e-37, backend=backend, generator=torch.Generator().manual_seed(4))
    assert set(tok.tolist()) == {0, 1, 2}


def test_logprobs_are_those_of_the_filtered_distribution(gen):
    _available("cpp")
    x = torch.randn(64, 50, generator=gen) * 2
    params = dict(temperature=0.9, top_k=20, top_p=0.85, min_p=0.01)
    tok, lp = S.sample_tokens(x, **params, generator=gen, return_logprobs=True)
    probs = _exact(x, **params)
    torch.testing.assert_close(lp.double(), probs.gather(1, tok[:, None]).squeeze(1).log(), rtol=0, atol=3e-5)


def test_same_seed_same_tokens_and_strided_rows(gen):
    _available("cpp")
    x = torch.randn(4, 9, 301, generator=gen)
    last = x[:, -1]  # strided rows: only the last dim is contiguous
    assert last.stride(0) != last.shape[1]
    a = S.sample_tokens(last, top_p=0.9, generator=torch.Generator().manual_seed(5))
    b = S.sample_tokens(last.contiguous(), top_p=0.9, generator=torch.Generator().manual_seed(5))
    c = S.sample_tokens(last.t().contiguous().t(), top_p=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a, c)
    g = torch.Generator().manual_seed(6)
    draws = torch.stack([S.sample_tokens(last, generator=g) for _ in range(20)])
    assert len({tuple(r.tolist()) for r in draws}) > 1  # the generator advances


def test_registered_op_matches_eager(gen):
    _available("cpp")
    x = torch.randn(5, 77, generator=gen)
    seed, offset = 123, 456
    t = torch.full((5,), 0.8)
    k = torch.full((5,), 10, dtype=torch.int64)
    p = torch.full((5,), 0.9)
    lmp = torch.full((5,), 0.05).log()
    tok, lp = S._sample_tokens_op(x, t, k, p, lmp, torch.tensor([seed, offset]), "cpp")
    ref_tok, ref_lp = R.sample_tokens(x, t, k, p, lmp, seed, offset)
    assert torch.equal(tok, ref_tok)
    torch.testing.assert_close(lp, ref_lp, rtol=2e-5, atol=2e-5)


def test_compiled_sample_tokens_takes_a_key_tensor(gen):
    """Under torch.compile(fullgraph=True): a key tensor as generator (as eager accepts) draws the eager
    tokens, and greedy sampling with no generator needs no key (a torch.Generator cannot be read there)."""
    from genengine.ops.rng import key_tensor

    x = torch.randn(4, 37, generator=gen)
    key = key_tensor(int(torch.randint(0, 2**62, (), generator=gen)), 3)
    eager = S.sample_tokens(x, top_p=0.9, generator=key)
    torch._dynamo.reset()
    f = torch.compile(lambda x, k: S.sample_tokens(x, top_p=0.9, generator=k), fullgraph=True, backend="eager")
    assert torch.equal(f(x, key), eager)
    g = torch.compile(lambda x: S.sample_tokens(x, temperature=0.0), fullgraph=True, backend="eager")
    assert torch.equal(g(x), x.argmax(1))


def test_empty_batch_and_single_token_vocab():
    assert S.sample_tokens(torch.zeros(0, 5)).shape == (0,)
    assert S.sample_tokens(torch.zeros(3, 1), top_p=0.5, top_k=1).tolist() == [0, 0, 0]


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    x = torch.randn(3, 10)
    with pytest.raises(TypeError, match="logits"):
        S.sample_tokens([[1.0, 2.0]])
    with pytest.raises(TypeError, match="logits"):
        S.sample_tokens(torch.zeros(3, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits"):
        S.sample_tokens(torch.zeros(10))
    with pytest.raises(ValueError, match="logits"):
        S.sample_tokens(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="temperature"):
        S.sample_tokens(x, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        S.sample_tokens(x, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature: expected a finite number, got an int too large"):
        S.sample_tokens(x, temperature=10**400)
    with pytest.raises(ValueError, match="top_p"):
        S.sample_tokens(x, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        S.sample_tokens(x, top_p=1.5)
    with pytest.raises(ValueError, match="min_p"):
        S.sample_tokens(x, min_p=-0.1)
    with pytest.raises(ValueError, match="top_k"):
        S.sample_tokens(x, top_k=-3)
    with pytest.raises(TypeError, match="top_k"):
        S.sample_tokens(x, top_k=2.5)
    with pytest.raises(TypeError, match="top_k"):
        S.sample_tokens(x, top_k=torch.ones(3))
    with pytest.raises(TypeError, match="temperature"):
        S.sample_tokens(x, temperature=torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="top_p"):
        S.sample_tokens(x, top_p=torch.ones(4))
    with pytest.raises(TypeError, match="temperature"):
        S.sample_tokens(x, temperature="hot")
    with pytest.raises(TypeError, match="generator"):
        S.sample_tokens(x, generator=0)
    with pytest.raises(ge.BackendUnavailableError):
        S.sample_tokens(x, backend="cuda")
    with pytest.raises(TypeError, match="backend"):
        S.sample_tokens(x.double(), backend="cpp")
    # float64 runs on the reference
    assert S.sample_tokens(x.double()).shape == (3,)
