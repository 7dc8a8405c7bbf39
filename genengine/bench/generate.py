"""Benchmark rows for whole-model generation: TransformerLM.generate against a plain PyTorch loop.

What a user of the LM family sees end to end: tokens per second of `generate` (greedy, from BOS
alone, so the time is the decode steps: per layer rope_append_kv + decode_attention, then
sample_tokens) with the contiguous and the paged cache, against `torch_generate` below, the KV-cache
loop most PyTorch code writes with the same weights (a preallocated cache written by index, rotary
by slicing, SDPA with enable_gqa over the filled prefix, argmax).

Model: random weights (timing does not depend on training), vocab 256, d_model 256, 2 layers,
4 query / 2 kv heads (head dim 64), float32. Cases: batch 1 (per-step overhead: ~30 op calls per
token) and batch 8 over 768 tokens (the cache grows to 8 x 2 layers x 2 heads x 768 x 64 x 8 bytes
= 12.6 MB). "% floor": the time to read every weight and each step's K and V once at copy
bandwidth (measured at that byte count), summed over the steps, over the candidate's time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .harness import Table, interleave

COLUMNS = [("case", 30, "<"), ("candidate", 22, "<"), ("median ms", 10, ">"), ("tokens/s", 9, ">"),
           ("vs torch", 8, ">"), ("% floor", 7, ">")]
MODEL = dict(vocab_size=256, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=1024)


def _rotate_at(x, cos, sin):
    """Half-split rotary of x [B, T, H, D] with cos, sin [T, D / 2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


@torch.no_grad()
def torch_generate(lm, batch, max_new_tokens):
    """Greedy continuation of BOS for `batch` sequences in plain PyTorch: [batch, max_new_tokens] int64."""
    dev, dtype = lm.device, lm.embed.weight.dtype
    cap = 1 + max_new_tokens
    ck = [torch.zeros(batch, lm.n_kv_heads, cap, lm.head_dim, dtype=dtype, device=dev) for _ in lm.blocks]
    cv = [torch.zeros_like(c) for c in ck]
    tok = torch.full((batch,), lm.bos_id, dtype=torch.int64, device=dev)
    out = []
    for pos in range(max_new_tokens):
        h = lm.embed(tok)[:, None]  # [B, 1, d]
        cos, sin = lm.rope_cos[pos:pos + 1], lm.rope_sin[pos:pos + 1]
        for li, blk in enumerate(lm.blocks):
            q, k, v = blk.qkv(blk.attn_norm(h))
            q, k = _rotate_at(q, cos, sin), _rotate_at(k, cos, sin)
            ck[li][:, :, pos] = k[:, 0]
            cv[li][:, :, pos] = v[:, 0]
            a = F.scaled_dot_product_attention(q.transpose(1, 2), ck[li][:, :, :pos + 1], cv[li][:, :, :pos + 1],
                                               enable_gqa=True)
            h = h + blk.wo(a.transpose(1, 2).reshape(batch, 1, -1))
            h = h + blk.mlp(blk.mlp_norm(h))
        tok = lm._head(h[:, 0]).argmax(-1)
        out.append(tok)
    return torch.stack(out, dim=1)


def cases(quick):
    """[(label, batch, new tokens)]."""
    c = [("B=1, 256 tokens from BOS", 1, 256), ("B=8, 768 tokens from BOS", 8, 768)]
    return [("B=1, 32 tokens from BOS", 1, 32)] if quick else c


def floor_bytes(lm, batch, new_tokens):
    """(bytes read over the whole generation, bytes of one average step): every weight once per step,
    plus each step's K and V (context 1 .. new_tokens)."""
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    per_key = 2 * lm.n_layers * batch * lm.n_kv_heads * lm.head_dim * lm.embed.weight.element_size()
    total = new_tokens * weights + per_key * new_tokens * (new_tokens + 1) // 2
    return total, total // new_tokens


def run(ctx):
    from ..models import TransformerLM

    device, quick = ctx.device, ctx.quick
    torch.manual_seed(0)
    lm = TransformerLM(**MODEL).to(device).eval()
    table = Table(COLUMNS)
    ctx.print("TransformerLM.generate, greedy from BOS (d_model 256, 2 layers, 4/2 heads, head dim 64, float32): "
              "tokens per second against a plain PyTorch KV-cache loop")
    ctx.print(table.header())
    rows = []
    bos = torch.zeros(0, dtype=torch.int64)
    for label, b, n in cases(quick):
        prompts = [bos] * b
        group = {
            "genengine contiguous": lambda prompts=prompts, n=n: lm.generate(prompts, n, temperature=0.0, paged=False),
            "genengine paged16": lambda prompts=prompts, n=n: lm.generate(prompts, n, temperature=0.0, paged=True),
            "torch loop (SDPA)": lambda b=b, n=n: torch_generate(lm, b, n),
        }
        stats = interleave(group, device, 0.5 if quick else 6.0, min_samples=3 if quick else 5)
        total, per_step = floor_bytes(lm, b, n)
        _, bw = ctx.ceilings.copy(2 * per_step)  # a copy of 2x the bytes reads them once
        floor_s = total / bw
        base = stats["torch loop (SDPA)"].median
        for name, st in stats.items():
            tps = b * n / st.median
            rows.append({"op": "TransformerLM.generate", "case": label, "batch": b, "new_tokens": n, "model": MODEL,
                         "candidate": name, "device": device.type, **st.as_dict(), "tokens_per_s": tps,
                         "speedup_vs_torch": base / st.median, "bytes_read": total, "pct_of_floor": 100 * floor_s / st.median})
            ctx.print(table.line([label, name, f"{st.median * 1e3:.1f}", f"{tps:.0f}", f"{base / st.median:.2f}x",
                                  f"{100 * floor_s / st.median:.0f}%"]))
    ctx.print("")
    return {"rows": rows}

