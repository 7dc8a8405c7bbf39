"""Benchmark rows for whole-model generation: TransformerLM.generate against a plain PyTorch loop.

What a user of the LM family sees end to end: the time of `generate` (greedy; per layer and step
rope_append_kv + decode_attention, then sample_tokens; a prompt goes through rope_append_kv +
prefill_attention first) with the contiguous and the paged cache, against `torch_generate` below,
the KV-cache loop most PyTorch code writes with the same weights (a preallocated cache written by
index, rotary by slicing, SDPA with enable_gqa over the filled prefix, causal over the prompt,
argmax).

Model: random weights (timing does not depend on training), vocab 256, d_model 256, 2 layers,
4 query / 2 kv heads (head dim 64), float32. Cases: batch 1 from BOS (per-step overhead: ~30 op
calls per token), batch 8 from BOS over 768 tokens (the cache grows to 8 x 2 layers x 2 heads x 768
x 64 x 8 bytes = 12.6 MB), and batch 4 with 768-token prompts then 128 tokens (the prefill's
attention, and decode over long contexts). tokens/s counts new tokens over the whole call.
"% floor": `floor_seconds` (the first forward at the matmul rate, then every step's weights and
K, V read once at copy bandwidth) over the candidate's time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.transformer import _rotate
from .harness import Table, interleave

COLUMNS = [("case", 30, "<"), ("candidate", 22, "<"), ("median ms", 10, ">"), ("tokens/s", 9, ">"),
           ("vs torch", 8, ">"), ("% floor", 7, ">")]
MODEL = dict(vocab_size=256, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=1024)


@torch.no_grad()
def torch_generate(lm, batch, max_new_tokens, prompt=None):
    """Greedy continuation of BOS (+ prompt [batch, P], equal lengths) in plain PyTorch:
    [batch, max_new_tokens] int64 new tokens."""
    dev, dtype = lm.device, lm.embed.weight.dtype
    bos = torch.full((batch, 1), lm.bos_id, dtype=torch.int64, device=dev)
    seq = bos if prompt is None else torch.cat([bos, prompt.to(dev)], dim=1)
    cap = seq.shape[1] + max_new_tokens
    ck = [torch.zeros(batch, lm.n_kv_heads, cap, lm.head_dim, dtype=dtype, device=dev) for _ in lm.blocks]
    cv = [torch.zeros_like(c) for c in ck]
    h = lm.embed(seq)  # [B, T, d]: the prompt's T tokens first, then one a step
    pos, out = 0, []
    for _ in range(max_new_tokens):
        t = h.shape[1]
        cos, sin = lm.rope_cos[pos:pos + t], lm.rope_sin[pos:pos + t]
        for li, blk in enumerate(lm.blocks):
            q, k, v = blk.qkv(blk.attn_norm(h))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            ck[li][:, :, pos:pos + t] = k.transpose(1, 2)
            cv[li][:, :, pos:pos + t] = v.transpose(1, 2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), ck[li][:, :, :pos + t], cv[li][:, :, :pos + t],
                                               is_causal=t > 1, enable_gqa=True)  # t > 1 only at pos 0
            h = h + blk.wo(a.transpose(1, 2).reshape(batch, t, -1))
            h = h + blk.mlp(blk.mlp_norm(h))
        tok = lm._head(h[:, -1]).argmax(-1)
        out.append(tok)
        pos += t
        h = lm.embed(tok)[:, None]
    return torch.stack(out, dim=1)


def cases(quick):
    """[(label, batch, prompt length, new tokens)]."""
    c = [("B=1, 256 tokens from BOS", 1, 0, 256), ("B=8, 768 tokens from BOS", 8, 0, 768),
         ("B=4, prompt 768 + 128 tokens", 4, 768, 128)]
    return [("B=1, 32 tokens from BOS", 1, 0, 32)] if quick else c


def floor_seconds(lm, batch, prompt_len, new_tokens, ceilings):
    """The generation's floor: the first forward over BOS + prompt at the matmul rate (or its weight
    read, if longer), then each later step reading every weight and the K and V of its context once
    at copy bandwidth (measured at one step's byte count)."""
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    per_key = 2 * lm.n_layers * batch * lm.n_kv_heads * lm.head_dim * lm.embed.weight.element_size()
    t = 1 + prompt_len
    dense = sum(p.numel() for n, p in lm.named_parameters() if n.startswith("blocks.")) + lm.embed.weight.numel()
    flops = 2 * batch * t * dense + 2 * batch * lm.n_layers * lm.n_heads * lm.head_dim * t * (t + 1)  # QK^T + PV, causal
    _, _, rate = ceilings.matmul()
    steps = [weights + per_key * (t + j) for j in range(1, new_tokens)]
    per_step = sum(steps) // len(steps) if steps else weights
    _, bw = ceilings.copy(2 * per_step)  # a copy of 2x the bytes reads them once
    return max(flops / rate, weights / bw) + sum(steps) / bw


def run(ctx):
    from ..models import TransformerLM

    device, quick = ctx.device, ctx.quick
    torch.manual_seed(0)
    lm = TransformerLM(**MODEL).to(device).eval()
    table = Table(COLUMNS)
    ctx.print("TransformerLM.generate, greedy (d_model 256, 2 layers, 4/2 heads, head dim 64, float32): "
              "new tokens per second against a plain PyTorch KV-cache loop")
    ctx.print(table.header())
    rows = []
    for label, b, plen, n in cases(quick):
        g = torch.Generator().manual_seed(1)
        prompt = torch.randint(0, MODEL["vocab_size"], (b, plen), generator=g) if plen else None
        prompts = list(prompt) if plen else [torch.zeros(0, dtype=torch.int64)] * b
        group = {
            "genengine contiguous": lambda prompts=prompts, n=n: lm.generate(prompts, n, temperature=0.0, paged=False),
            "genengine paged16": lambda prompts=prompts, n=n: lm.generate(prompts, n, temperature=0.0, paged=True),
            "torch loop (SDPA)": lambda b=b, n=n, prompt=prompt: torch_generate(lm, b, n, prompt),
        }
        stats = interleave(group, device, 0.5 if quick else 6.0, min_samples=3 if quick else 5)
        floor_s = floor_seconds(lm, b, plen, n, ctx.ceilings)
        base = stats["torch loop (SDPA)"].median
        for name, st in stats.items():
            tps = b * n / st.median
            rows.append({"op": "TransformerLM.generate", "case": label, "batch": b, "prompt_len": plen, "new_tokens": n,
                         "model": MODEL, "candidate": name, "device": device.type, **st.as_dict(), "tokens_per_s": tps,
                         "speedup_vs_torch": base / st.median, "floor_s": floor_s,
                         "pct_of_floor": 100 * floor_s / st.median})
            ctx.print(table.line([label, name, f"{st.median * 1e3:.1f}", f"{tps:.0f}", f"{base / st.median:.2f}x",
                                  f"{100 * floor_s / st.median:.0f}%"]))
    ctx.print("")
    return {"rows": rows}

