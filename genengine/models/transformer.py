"""A decoder-only transformer language model that generates through genengine's attention and
sampling kernels.

    tok = ge.data.CharTokenizer.from_text(text)
    lm = ge.models.TransformerLM(tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2)
    lm.fit(tok.encode(text), steps=300, batch_size=32, seq_len=64)
    lm.perplexity(tok.encode(held_out))
    out = lm.generate([tok.encode("The cat"), tok.encode("A")], 100, top_p=0.9, generator=g)

Architecture (Llama-style): token embedding, n_layers pre-norm blocks of RMSNorm -> grouped-query
attention with rotary embeddings (GPT-NeoX half-split layout on the whole head dim) -> residual,
RMSNorm -> SwiGLU MLP -> residual; a final RMSNorm and an output head tied to the embedding.
Every sequence starts with a BOS token (id vocab_size, an extra embedding row the head never
predicts), so `log_prob` is the exact log-probability of all of a sequence's tokens.

Shapes: token ids are int64; `log_prob(x)` takes [N, L] (or one [L] sequence) and returns [N];
`forward(x)` returns logits [N, L, vocab_size] of the token after each position (BOS prepended).

Training (`fit`) uses torch's scaled_dot_product_attention (autograd); generation runs in kernels:
  prefill  the prompts (each with its BOS) packed into one [T, ...] batch: per layer
           ge.ops.rope_append_kv rotates q, k and writes k, v into the cache, then
           ge.ops.prefill_attention (causal, cu_seqlens) attends within each prompt;
  decode   one token per sequence per step: rope_append_kv at the sequence's next slot, then
           ge.ops.decode_attention over the cache (cache_seqlens = the lengths including the new
           token); ge.ops.sample_tokens draws from the last logits (temperature, top-k, top-p, min-p).
The cache is contiguous [B, Hkv, S, D] per layer, or paged [num_pages, page_size, Hkv, D] with a
block table whose pages are interleaved across sequences (paged=True, the default); both give the
same tokens for the same seed.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .._checks import positive_int
from .._progress import Progress
from .base import GenerativeModel

__all__ = ["TransformerLM"]


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class _Block(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, eps):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.attn_norm = RMSNorm(d_model, eps)
        self.wq = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, d_model, bias=False)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def mlp(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def qkv(self, h):
        """h [..., d] -> q [..., Hq, D], k, v [..., Hkv, D]."""
        lead = h.shape[:-1]
        q = self.wq(h).reshape(*lead, self.n_heads, self.head_dim)
        k = self.wk(h).reshape(*lead, self.n_kv_heads, self.head_dim)
        v = self.wv(h).reshape(*lead, self.n_kv_heads, self.head_dim)
        return q, k, v


def _rotate(x, cos, sin):
    """Half-split rotary embedding of x [N, L, H, D] with cos, sin [L, D / 2] (the layout of
    rope_append_kv with interleaved=False)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class _Cache:
    """KV caches of every layer, contiguous or paged, for a batch of B sequences of capacity S."""

    def __init__(self, n_layers, batch, capacity, n_kv_heads, head_dim, dtype, device, paged, page_size):
        self.paged = paged
        if paged:
            per_seq = -(-capacity // page_size)
            # page j of sequence b is page j * B + b: each sequence's pages are scattered
            self.block_table = (torch.arange(per_seq, dtype=torch.int32, device=device)[None, :] * batch
                                + torch.arange(batch, dtype=torch.int32, device=device)[:, None]).contiguous()
            shape = (per_seq * batch, page_size, n_kv_heads, head_dim)
        else:
            self.block_table = None
            shape = (batch, n_kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]


def _scalar(name, v, lo, hi, integer=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real if not integer else numbers.Integral):
        raise TypeError(f"{name}: expected {'an int' if integer else 'a number'}, got {type(v).__name__}")
    v = int(v) if integer else float(v)
    if not (lo <= v <= hi):
        raise ValueError(f"{name}: expected a value in [{lo}, {hi}], got {v}")
    return v


class TransformerLM(GenerativeModel):
    """Decoder-only LM: RMSNorm, rotary, grouped-query attention, SwiGLU (see the module docstring).

    vocab_size: tokens the model predicts (a BOS id, vocab_size, is added internally);
    n_kv_heads: key/value heads (None: n_heads; n_heads % n_kv_heads == 0); d_ff: the SwiGLU width
    (None: 8/3 d_model rounded up to a multiple of 16); max_seq_len: the longest sequence, BOS
    included, that the rotary tables (and generate) cover.
    """

    likelihood = "exact"
    conditional = False

    def __init__(self, vocab_size, d_model=128, n_layers=2, n_heads=4, n_kv_heads=None, *, d_ff=None, max_seq_len=1024,
                 rope_base=10000.0, norm_eps=1e-5):
        super().__init__()
        vocab_size = positive_int("vocab_size", vocab_size)
        d_model = positive_int("d_model", d_model)
        n_layers = positive_int("n_layers", n_layers)
        n_heads = positive_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else positive_int("n_kv_heads", n_kv_heads)
        if d_model % n_heads:
            raise ValueError(f"n_heads: d_model {d_model} does not split into {n_heads} heads")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
        head_dim = d_model // n_heads
        if head_dim % 2:
            raise ValueError(f"n_heads: the head dim d_model / n_heads = {head_dim} must be even (rotary)")
        d_ff = (-(-8 * d_model // 3) + 15) // 16 * 16 if d_ff is None else positive_int("d_ff", d_ff)
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.max_seq_len = positive_int("max_seq_len", max_seq_len)
        self.bos_id = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, n_kv_heads, d_ff, norm_eps) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, norm_eps)
        nn.init.normal_(self.embed.weight, std=0.02)
        for blk in self.blocks:
            for lin in (blk.wq, blk.wk, blk.wv, blk.w1, blk.w3):
                nn.init.normal_(lin.weight, std=0.02)
            for lin in (blk.wo, blk.w2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * n_layers))
        cos, sin = ops.rope_tables(self.max_seq_len, head_dim, base=float(rope_base))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    # ---- the network ----------------------------------------------------------------------------
    def _head(self, h):
        return F.linear(self.norm(h), self.embed.weight[: self.vocab_size])

    def _tables(self, dtype):
        return self.rope_cos.to(dtype), self.rope_sin.to(dtype)

    def _check_ids(self, x, name="token_ids"):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected an int64 tensor of token ids, got {type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor of token ids, got {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(f"{name}: token ids must lie in [0, {self.vocab_size}), got [{int(x.min())}, {int(x.max())}]")
        return x.to(torch.int64)

    def forward(self, x):
        """Logits [N, L, vocab] of the token after each position of x [N, L], BOS prepended (so
        logits[:, t] predicts x[:, t] from x[:, :t]); torch SDPA attention (trainable)."""
        n, length = x.shape
        if length > self.max_seq_len:
            raise ValueError(f"token_ids: sequences of {length} tokens exceed max_seq_len {self.max_seq_len} "
                             "(BOS included)")
        seq = torch.cat([torch.full((n, 1), self.bos_id, dtype=torch.int64, device=x.device), x[:, :-1]], dim=1)
        h = self.embed(seq)
        cos, sin = self._tables(h.dtype)
        cos, sin = cos[:length], sin[:length]
        groups = self.n_heads // self.n_kv_heads
        for blk in self.blocks:
            q, k, v = blk.qkv(blk.attn_norm(h))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [N, H, L, D]
            if groups > 1:
                k = k.repeat_interleave(groups, dim=1)
                v = v.repeat_interleave(groups, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + blk.wo(a.transpose(1, 2).reshape(n, length, -1))
            h = h + blk.mlp(blk.mlp_norm(h))
        return self._head(h)

    # ---- likelihood -----------------------------------------------------------------------------
    def _as_batch(self, token_ids):
        x = self._check_ids(token_ids)
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2 or x.shape[1] == 0:
            raise ValueError(f"token_ids: expected [N, L] (or one [L] sequence) with L >= 1, got {tuple(token_ids.shape)}")
        return x.to(self.device)

    def log_prob(self, token_ids):
        """[N] log-probability (nats) of each whole sequence of token_ids [N, L] (or [L]), each read
        from a BOS token."""
        x = self._as_batch(token_ids)
        with torch.no_grad():
            logits = self.forward(x)
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, x[..., None]).squeeze(-1)
        return lp.sum(dim=1)

    def perplexity(self, token_ids, *, seq_len=None):
        """exp(mean negative log-likelihood per token). token_ids [N, L]: those sequences; a 1-D
        stream: cut into consecutive windows of seq_len tokens (default max_seq_len), each read
        from BOS (the last, shorter window included)."""
        x = self._check_ids(token_ids)
        if x.dim() == 2:
            return float(torch.exp(-self.log_prob(x).sum() / x.numel()))
        if x.dim() != 1 or x.numel() == 0:
            raise ValueError(f"token_ids: expected a non-empty 1-D stream or [N, L] sequences, got {tuple(x.shape)}")
        w = self.max_seq_len if seq_len is None else positive_int("seq_len", seq_len)
        w = min(w, self.max_seq_len)
        total, n_full = 0.0, x.numel() // w
        if n_full:
            total += float(self.log_prob(x[: n_full * w].reshape(n_full, w)).sum())
        if x.numel() % w:
            total += float(self.log_prob(x[n_full * w:][None]).sum())
        return math.exp(-total / x.numel())

    # ---- training -------------------------------------------------------------------------------
    def fit(self, token_ids, *, steps=None, epochs=None, batch_size=32, seq_len=128, lr=3e-3, weight_decay=0.01,
            warmup=20, generator=None, progress=True, callback=None):
        """Trains next-token prediction with AdamW and a cosine schedule; returns self.

        token_ids: a 1-D stream (random windows of seq_len tokens are drawn each step, each read
        from BOS) or [N, L] sequences (shuffled mini-batches of whole sequences). steps: optimiser
        steps (default: epochs passes over the data, epochs default 1). callback(model, {"step",
        "loss"}) after every step; returning True stops.
        """
        x = self._check_ids(token_ids).to(self.device)
        batch_size = positive_int("batch_size", batch_size)
        seq_len = min(positive_int("seq_len", seq_len), self.max_seq_len)
        if x.dim() == 1:
            if x.numel() < seq_len:
                raise ValueError(f"token_ids: the stream has {x.numel()} tokens, fewer than seq_len {seq_len}")
            per_epoch = max(1, x.numel() // (batch_size * seq_len))
        elif x.dim() == 2:
            if x.shape[1] > self.max_seq_len:
                raise ValueError(f"token_ids: sequences of {x.shape[1]} tokens exceed max_seq_len {self.max_seq_len}")
            per_epoch = max(1, -(-x.shape[0] // batch_size))
        else:
            raise ValueError(f"token_ids: expected a 1-D stream or [N, L] sequences, got shape {tuple(x.shape)}")
        if steps is None:
            steps = per_epoch * (1 if epochs is None else positive_int("epochs", epochs))
        steps = positive_int("steps", steps)
        g = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        other = [p for n, p in self.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.95))

        def lr_at(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        bar = Progress(steps, "fit", enabled=progress)
        self.train()
        perm, pos = None, 0
        try:
            for step in range(steps):
                if x.dim() == 1:
                    start = torch.randint(0, x.numel() - seq_len + 1, (batch_size,), generator=g).to(x.device)
                    batch = x[start[:, None] + torch.arange(seq_len, device=x.device)[None, :]]
                else:
                    if perm is None or pos >= len(perm):
                        perm, pos = torch.randperm(x.shape[0], generator=g).to(x.device), 0
                    batch = x[perm[pos:pos + batch_size]]
                    pos += batch_size
                logits = self.forward(batch)
                loss = F.cross_entropy(logits.reshape(-1, self.vocab_size).float(), batch.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
                opt.step()
                sched.step()
                lv = float(loss.detach())
                bar.update(1, loss=f"{lv:.4f}")
                if callback is not None and callback(self, {"step": step, "iter": step, "loss": lv}):
                    break
        finally:
            bar.close()
            self.eval()
        return self

    # ---- generation through the kernels ----------------------------------------------------------
    def _prompts(self, prompt_ids, lengths):
        """A list of 1-D int64 prompts (BOS not included) from a list, one 1-D tensor, or a padded
        [B, L] tensor with lengths."""
        if isinstance(prompt_ids, torch.Tensor):
            if prompt_ids.dim() == 1:
                if lengths is not None:
                    raise ValueError("lengths: only with a padded [B, L] prompt tensor")
                return [self._check_ids(prompt_ids, "prompt_ids")]
            if prompt_ids.dim() != 2:
                raise ValueError(f"prompt_ids: expected a list of 1-D tensors, one 1-D tensor or a padded [B, L] "
                                 f"tensor with lengths, got shape {tuple(prompt_ids.shape)}")
            if lengths is None:
                lens = [prompt_ids.shape[1]] * prompt_ids.shape[0]
            else:
                if not isinstance(lengths, torch.Tensor):
                    lengths = torch.as_tensor(lengths)
                if lengths.shape != (prompt_ids.shape[0],):
                    raise ValueError(f"lengths: expected shape ({prompt_ids.shape[0]},), got {tuple(lengths.shape)}")
                lens = [int(v) for v in lengths.tolist()]
                if any(v < 0 or v > prompt_ids.shape[1] for v in lens):
                    raise ValueError(f"lengths: each must lie in [0, {prompt_ids.shape[1]}], got {lens}")
            return [self._check_ids(prompt_ids[b, :n], "prompt_ids") for b, n in enumerate(lens)]
        if lengths is not None:
            raise ValueError("lengths: only with a padded [B, L] prompt tensor")
        if not isinstance(prompt_ids, (list, tuple)) or not prompt_ids:
            raise TypeError("prompt_ids: expected a non-empty list of 1-D token tensors, one 1-D tensor or a padded tensor")
        out = []
        for i, p in enumerate(prompt_ids):
            if not isinstance(p, torch.Tensor) or p.dim() != 1:
                raise ValueError(f"prompt_ids[{i}]: expected a 1-D tensor of token ids")
            out.append(self._check_ids(p, f"prompt_ids[{i}]"))
        return out

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, generator=None,
                 paged=True, page_size=16, stop_tokens=None, lengths=None, return_logits=False, backend="auto"):
        """Continues each prompt by up to max_new_tokens tokens through the KV-cache kernels.

        prompt_ids: a list of 1-D token tensors (any lengths, 0 included), one 1-D tensor, or a
        padded [B, L] tensor with `lengths` [B]. Filters as in ge.ops.sample_tokens (temperature 0
        is greedy). stop_tokens: ids that end a sequence (kept as its last token); generation stops
        when every sequence has stopped. paged / page_size: the cache layout. backend: for the
        attention and sampling ops. Returns a list of 1-D int64 tensors, prompt + continuation
        (and, with return_logits, the float32 [B, vocab] logits each step sampled from).
        """
        prompts = self._prompts(prompt_ids, lengths)
        max_new = _scalar("max_new_tokens", max_new_tokens, 0, 10**9, integer=True)
        page_size = _scalar("page_size", page_size, 1, 256, integer=True)
        stops = None
        if stop_tokens is not None:
            stops = torch.as_tensor(list(stop_tokens) if not isinstance(stop_tokens, torch.Tensor) else stop_tokens,
                                    dtype=torch.int64).reshape(-1).to(self.device)
        b = len(prompts)
        dev = self.device
        dtype = self.embed.weight.dtype
        lens = [len(p) + 1 for p in prompts]  # BOS + prompt
        capacity = max(lens) + max_new
        if capacity > self.max_seq_len:
            raise ValueError(f"max_new_tokens: the longest prompt ({max(lens) - 1} tokens + BOS) plus {max_new} new tokens "
                             f"exceed max_seq_len {self.max_seq_len}")
        # the kernels cover the usual head dims; others run the attention on the torch reference
        attn = backend
        if backend == "auto" and self.head_dim not in ops.attention.HEAD_DIMS:
            attn = "torch"
        was_training = self.training
        self.eval()
        cache = _Cache(self.n_layers, b, capacity, self.n_kv_heads, self.head_dim, dtype, dev, paged, page_size)
        cos, sin = self.rope_cos, self.rope_sin
        # prefill: every prompt with its BOS, packed
        bos = torch.tensor([self.bos_id], dtype=torch.int64, device=dev)
        tokens = torch.cat([torch.cat([bos, p.to(dev)]) for p in prompts])
        cu = torch.tensor([0] + lens, dtype=torch.int64).cumsum(0).to(torch.int32).to(dev)
        positions = torch.cat([torch.arange(n, dtype=torch.int32) for n in lens]).to(dev)
        seq_ids = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lens)]).to(dev)
        h = self.embed(tokens)
        for li, blk in enumerate(self.blocks):
            q, k, v = blk.qkv(blk.attn_norm(h))
            q, k = ops.rope_append_kv(q.contiguous(), k.contiguous(), v.contiguous(), cache.k[li], cache.v[li], positions,
                                      cos, sin, seq_ids=seq_ids, block_table=cache.block_table, backend=attn)
            a = ops.prefill_attention(q, k, v.contiguous(), cu, causal=True, backend=attn)
            h = h + blk.wo(a.reshape(a.shape[0], -1))
            h = h + blk.mlp(blk.mlp_norm(h))
        logits = self._head(h[cu[1:].long() - 1])
        seqlens = torch.tensor(lens, dtype=torch.int32, device=dev)
        out = []
        all_logits = []
        finished = torch.zeros(b, dtype=torch.bool, device=dev)
        sample_kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, generator=generator,
                         backend=backend)
        for step in range(max_new):
            if return_logits:
                all_logits.append(logits.float())
            tok = ops.sample_tokens(logits, **sample_kw)
            tok = torch.where(finished, torch.full_like(tok, -1), tok)
            out.append(tok)
            done_now = tok < 0  # a row without a distribution (NaN logits) stops
            if stops is not None:
                done_now |= torch.isin(tok, stops)
            finished = finished | done_now
            if step == max_new - 1 or (stops is not None and bool(finished.all())):
                break
            # decode: the new token at slot seqlens, attending the cache including itself
            h = self.embed(tok.clamp(min=0))
            pos = seqlens
            seqlens = seqlens + 1
            for li, blk in enumerate(self.blocks):
                q, k, v = blk.qkv(blk.attn_norm(h))
                q, k = ops.rope_append_kv(q.contiguous(), k.contiguous(), v.contiguous(), cache.k[li], cache.v[li], pos,
                                          cos, sin, block_table=cache.block_table, backend=attn)
                a = ops.decode_attention(q, cache.k[li], cache.v[li], seqlens, block_table=cache.block_table,
                                         backend=attn)
                h = h + blk.wo(a.reshape(b, -1))
                h = h + blk.mlp(blk.mlp_norm(h))
            logits = self._head(h)
        if was_training:
            self.train()
        new = torch.stack(out, dim=1) if out else torch.zeros(b, 0, dtype=torch.int64, device=dev)
        result = []
        for i, p in enumerate(prompts):
            row = new[i]
            keep = int((row >= 0).sum()) if row.numel() else 0  # -1 marks the steps after a stop
            result.append(torch.cat([p.to(dev), row[:keep]]))
        return (result, all_logits) if return_logits else result

    def sample(self, n, *, generator=None, length=None, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, paged=True):
        """n sequences of `length` tokens (default: max_seq_len - 1) drawn from BOS: [n, length]."""
        n = positive_int("n", n)
        length = self.max_seq_len - 1 if length is None else positive_int("length", length)
        seqs = self.generate([torch.zeros(0, dtype=torch.int64)] * n, length, temperature=temperature, top_k=top_k,
                             top_p=top_p, min_p=min_p, generator=generator, paged=paged)
        return torch.stack(seqs)
