"""TransformerLM: a character model trained on the built-in corpus beats the unigram baseline on
held-out text, and so does (under a bigram model of the corpus) the text it generates; the KV-cache
generation path (prefill_attention, rope_append_kv, decode_attention, sample_tokens) reproduces the
full-recompute logits; paged and contiguous caches give the same tokens; prompts, stop tokens,
save/load, and bad input."""

import math

import pytest
import torch

import genengine as ge
from genengine.models.transformer import TransformerLM


@pytest.fixture
def one_thread():
    """Training and generating on one thread: on a shared 2-core machine a descheduled second thread
    makes every small multi-threaded op wait for a time slice."""
    cpp = ge._backends.load_cpp()
    t, c = torch.get_num_threads(), cpp.get_num_threads()
    torch.set_num_threads(1)
    cpp.set_num_threads(1)
    yield
    torch.set_num_threads(t)
    cpp.set_num_threads(c)


@pytest.fixture(scope="module")
def corpus():
    text = ge.data.tiny_corpus(40_000)
    tok = ge.data.CharTokenizer.from_text(text)
    ids = tok.encode(text)
    return tok, ids[:36_000], ids[36_000:]


@pytest.fixture(scope="module")
def trained(corpus):
    tok, train, _ = corpus
    cpp = ge._backends.load_cpp()
    t, c = torch.get_num_threads(), cpp.get_num_threads()
    torch.set_num_threads(1)
    cpp.set_num_threads(1)
    try:
        torch.manual_seed(0)
        lm = TransformerLM(tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256)
        lm.fit(train, steps=150, batch_size=16, seq_len=64, lr=5e-3, progress=False,
               generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(t)
        cpp.set_num_threads(c)
    return lm


def _unigram_ppl(train, test, v):
    p = (torch.bincount(train, minlength=v).double() + 1)
    p = p / p.sum()
    return math.exp(-float(p.log()[test].mean()))


def _bigram_ppl(train, test, v):
    counts = torch.ones(v, v, dtype=torch.float64)  # add-one smoothing
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    return math.exp(-float(logp[test[:-1], test[1:]].mean()))


def test_char_lm_beats_unigram_on_held_out_text(corpus, trained, one_thread):
    tok, train, test = corpus
    uni = _unigram_ppl(train, test, tok.vocab_size)
    ppl = trained.perplexity(test, seq_len=128)
    assert ppl < 0.4 * uni, (ppl, uni)
    # perplexity is exp of the mean negative log_prob per token
    x = test[: 4 * 100].reshape(4, 100)
    assert trained.perplexity(x) == pytest.approx(math.exp(-float(trained.log_prob(x).sum()) / x.numel()), rel=1e-6)


def test_generated_text_beats_unigram_under_a_bigram_model(corpus, trained, one_thread):
    tok, train, test = corpus
    uni = _unigram_ppl(train, test, tok.vocab_size)
    real = _bigram_ppl(train, test, tok.vocab_size)
    gen = trained.sample(4, length=150, generator=torch.Generator().manual_seed(1))
    assert gen.shape == (4, 150) and gen.dtype == torch.int64
    gen_ppl = _bigram_ppl(train, gen.reshape(-1), tok.vocab_size)
    assert gen_ppl < 0.6 * uni, (gen_ppl, real, uni)
    noise = torch.randint(0, tok.vocab_size, (600,), generator=torch.Generator().manual_seed(2))
    assert _bigram_ppl(train, noise, tok.vocab_size) > uni  # the yardstick can tell noise apart
    # and the model itself finds its samples likely
    assert trained.perplexity(gen) < 0.5 * uni


def test_paged_and_contiguous_caches_give_the_same_tokens(corpus, trained, one_thread):
    tok = corpus[0]
    prompts = [tok.encode("The cat"), tok.encode(""), tok.encode("The bright garden saw"), tok.encode("T")]
    runs = []
    for paged, page in ((True, 16), (True, 5), (False, 16)):
        runs.append(trained.generate(prompts, 40, temperature=0.9, top_p=0.95, top_k=20, generator=torch.Generator().manual_seed(7),
                                     paged=paged, page_size=page))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))
    for p, out in zip(prompts, runs[0]):
        assert torch.equal(out[: len(p)], p) and len(out) == len(p) + 40
    # padded prompts with lengths are the same prompts
    pad = torch.zeros(len(prompts), 25, dtype=torch.int64)
    for i, p in enumerate(prompts):
        pad[i, : len(p)] = p
    again = trained.generate(pad, 40, temperature=0.9, top_p=0.95, top_k=20, lengths=[len(p) for p in prompts],
                             generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], again))


@pytest.mark.parametrize("paged", [True, False])
def test_kv_cache_logits_equal_full_recompute_float64(paged, one_thread):
    torch.manual_seed(3)
    lm = TransformerLM(29, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2, max_seq_len=32).double()
    prompts = [torch.randint(0, 29, (n,)) for n in (5, 0, 9)]
    steps = 6
    seqs, logits = lm.generate(prompts, steps, temperature=0.0, paged=paged, page_size=4, return_logits=True,
                               backend="torch")
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        with torch.no_grad():
            full = lm.forward(s[None])[0]  # full[t] predicts s[t]
        for step in range(steps):
            # float64 throughout (logits are returned as float32: compare at that rounding)
            torch.testing.assert_close(logits[step][i].double(), full[len(p) + step].float().double(), rtol=0, atol=1e-6)
        assert torch.equal(s[len(p):], full[len(p):].argmax(-1))  # greedy = the argmax of the recompute


@pytest.mark.parametrize("paged", [True, False])
def test_kv_cache_logits_equal_full_recompute_cpp(paged, one_thread):
    torch.manual_seed(4)
    lm = TransformerLM(31, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    lm64 = TransformerLM(31, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64).double()
    lm64.load_state_dict(lm.state_dict())
    prompts = [torch.randint(0, 31, (n,)) for n in (7, 2, 13)]
    seqs, logits = lm.generate(prompts, 10, top_k=5, generator=torch.Generator().manual_seed(0), paged=paged,
                               page_size=3, return_logits=True)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        with torch.no_grad():
            full = lm64.forward(s[None])[0]
        for step in range(10):
            torch.testing.assert_close(logits[step][i].double(), full[len(p) + step], rtol=0, atol=2e-4)


def test_bench_torch_loop_is_the_same_greedy_model(one_thread):
    # the plain PyTorch loop `python -m genengine.bench --ops generate` compares against must decode
    # the same model: each of its tokens is the argmax of a full recompute, as generate's are
    from genengine.bench.generate import torch_generate

    torch.manual_seed(5)
    lm = TransformerLM(37, d_model=128, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=64).double()
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(25.0)  # logits far apart: greedy choices without near ties
    base = torch_generate(lm, 3, 20)
    ours = torch.stack(lm.generate([torch.zeros(0, dtype=torch.int64)] * 3, 20, temperature=0.0, backend="torch"))
    with torch.no_grad():
        full = lm.forward(base)
    assert len(set(base.flatten().tolist())) > 3  # a varied continuation, not one repeated token
    assert torch.equal(base, full.argmax(-1))
    assert torch.equal(ours, base)
    prompt = torch.randint(0, 37, (2, 9))  # with a prompt: its causal prefill, then the steps
    base = torch_generate(lm, 2, 12, prompt)
    ours = torch.stack(lm.generate(list(prompt), 12, temperature=0.0, backend="torch"))
    with torch.no_grad():
        full = lm.forward(ours)
    assert torch.equal(ours[:, :9], prompt) and torch.equal(ours[:, 9:], base)
    assert torch.equal(base, full[:, 9:].argmax(-1))


def test_stop_tokens_and_batch_of_one(corpus, trained, one_thread):
    tok = corpus[0]
    dot = tok.encode(".")[0]
    outs = trained.generate([tok.encode("The cat"), tok.encode("The old king")], 80, stop_tokens=[int(dot)],
                            generator=torch.Generator().manual_seed(3))
    for p, o in zip(("The cat", "The old king"), outs):
        cont = o[len(p):]
        stops = (cont == dot).nonzero().flatten().tolist()
        assert stops == [] or stops == [len(cont) - 1]  # nothing after the first stop token
    single = trained.generate(tok.encode("The"), 5, temperature=0.0)
    assert len(single) == 1 and len(single[0]) == 8


def test_save_load_round_trip(tmp_path, trained, corpus, one_thread):
    tok = corpus[0]
    path = tmp_path / "lm.pt"
    trained.save(path)
    back = ge.models.load(path)
    assert isinstance(back, TransformerLM)
    for (k, a), (_, b) in zip(trained.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    p = [tok.encode("The dog")]
    a = trained.generate(p, 20, generator=torch.Generator().manual_seed(9))
    b = back.generate(p, 20, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0])
    x = corpus[2][:200].reshape(2, 100)
    torch.testing.assert_close(trained.log_prob(x), back.log_prob(x), rtol=0, atol=0)


def test_fit_callback_and_sequences(one_thread):
    lm = TransformerLM(7, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    seen = []
    lm.fit(torch.randint(0, 7, (20, 10)), steps=50, batch_size=4, progress=False,
           callback=lambda m, info: seen.append(info["step"]) or info["step"] == 2)
    assert seen == [0, 1, 2]
    assert lm.log_prob(torch.randint(0, 7, (3, 10))).shape == (3,)
    assert ge.models.available()["TransformerLM"]["likelihood"] == "exact"


def test_bad_input():
    with pytest.raises(ValueError, match="n_kv_heads"):
        TransformerLM(10, d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="n_heads"):
        TransformerLM(10, d_model=30, n_heads=4)
    lm = TransformerLM(10, d_model=64, n_heads=4, n_kv_heads=2, max_seq_len=16)
    with pytest.raises(ValueError, match="token ids"):
        lm.log_prob(torch.tensor([[1, 2, 10]]))
    with pytest.raises(TypeError, match="token"):
        lm.log_prob(torch.rand(2, 3))
    with pytest.raises(ValueError, match="max_seq_len"):
        lm.log_prob(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate([torch.tensor([1, 2])], 20)
    with pytest.raises(ValueError, match="prompt_ids"):
        lm.generate([torch.tensor([[1, 2]])], 2)
    with pytest.raises(ValueError, match="lengths"):
        lm.generate(torch.zeros(2, 3, dtype=torch.int64), 2, lengths=[1, 4])
    with pytest.raises(ValueError, match="top_p"):
        lm.generate([torch.tensor([1])], 2, top_p=0.0)
    with pytest.raises(ValueError, match="page_size"):
        lm.generate([torch.tensor([1])], 2, page_size=0)
