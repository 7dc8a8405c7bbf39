"""Benchmark rows for fused token sampling (genengine.ops.sample_tokens) against a sort-based sampler.

Cases: logits [B, V] float32 (randn * 2.5, the spread of a trained LM's logits), with the filters
each row names. Candidates, timed interleaved: every available genengine backend (the torch row is
the sorting reference specification, not a fast path) and "torch-sort", the sampler most PyTorch
code writes (what Hugging Face's warpers do): divide by the temperature, sort the vocabulary,
softmax, cumulative sum, mask, softmax again, torch.multinomial. Reported: median time, tokens per
second (B / time), speedup over torch-sort, and "% copy": a same-bytes copy's time over the
candidate's, where the bytes are one read of the logits (B * V * 4): the fraction of one pass over
the logits at copy bandwidth (the fused kernels make a few passes, mostly from cache).
"""

from __future__ import annotations

import torch

from .. import ops
from .diffusion import backends
from .harness import Table, interleave, us

COPY = "copy (same bytes)"
COLUMNS = [("case", 30, "<"), ("backend", 10, "<"), ("median us", 9, ">"), ("tokens/s", 10, ">"),
           ("vs sort", 7, ">"), ("MB read", 7, ">"), ("% copy", 6, ">")]


def sort_sampler(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, generator=None):
    """The sort-based PyTorch sampler the bench compares against (same filters, same order)."""
    z = logits.float() / temperature
    zs, idx = torch.sort(z, dim=-1, descending=True)
    if top_k > 0:
        zs[:, top_k:] = float("-inf")
    p = torch.softmax(zs, dim=-1)
    if top_p < 1.0:
        c = torch.cumsum(p, dim=-1)
        zs = zs.masked_fill(c - p > top_p, float("-inf"))  # keep up to the first token that reaches top_p
        p = torch.softmax(zs, dim=-1)
    if min_p > 0.0:
        p = p.masked_fill(p < min_p * p[:, :1], 0.0)
    choice = torch.multinomial(p, 1, generator=generator)
    return idx.gather(-1, choice).squeeze(-1)


def cases(device, quick):
    """[(label, B, V, filters)]; the first is the issue's bar (top-p 0.9, 128k vocabulary, batch 8)."""
    v = 128_256
    c = [("top_p=0.9 B=8 V=128k", 8, v, dict(top_p=0.9)),
         ("top_p=0.9 B=1 V=128k", 1, v, dict(top_p=0.9)),
         ("top_k=50 top_p=0.95 T=0.7 B=8", 8, v, dict(top_k=50, top_p=0.95, temperature=0.7)),
         ("min_p=0.05 B=8 V=128k", 8, v, dict(min_p=0.05)),
         ("plain T=1 B=8 V=128k", 8, v, dict()),
         ("top_p=0.9 B=1 V=256 (overhead)", 1, 256, dict(top_p=0.9))]
    if device.type == "cuda":
        c.insert(1, ("top_p=0.9 B=64 V=128k", 64, v, dict(top_p=0.9)))
    return c[:2] if quick else c


def run(ctx):
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    for line in skipped:
        ctx.print(line)
    table = Table(COLUMNS)
    ctx.print("fused token sampling (float32 logits): tokens per second against a sort-based sampler")
    ctx.print(table.header())
    rows = []
    for label, b, v, filt in cases(device, quick):
        g = torch.Generator(device=device).manual_seed(0)
        x = (torch.randn(b, v, generator=g, device=device) * 2.5)
        group = {}
        for name in names:
            group[name] = lambda name=name, x=x, g=g, filt=filt: ops.sample_tokens(x, **filt, generator=g, backend=name)
        group["torch-sort"] = lambda x=x, g=g, filt=filt: sort_sampler(x, generator=g, **filt)
        budget = 0.3 if quick else 2.0
        stats = interleave(group, device, budget, min_samples=3 if quick else 8)
        nbytes = 2 * b * v * 4  # the copy moves b*v*4 read + b*v*4 written; "% copy" compares one read
        copy_fn = ctx.ceilings.copy_callable(nbytes)
        pct = {}
        for name, fn in group.items():
            pst = interleave({name: fn, COPY: copy_fn}, device, budget / 3, min_samples=3)
            pct[name] = 100 * pst[COPY].median / pst[name].median
        base = stats["torch-sort"].median
        for name, st in stats.items():
            row = {"op": "sample_tokens", "case": label, "batch": b, "vocab": v, "filters": filt, "backend": name,
                   "device": device.type, **st.as_dict(), "tokens_per_s": b / st.median,
                   "speedup_vs_sort": base / st.median, "bytes_read": b * v * 4, "pct_of_copy": pct[name]}
            rows.append(row)
            ctx.print(table.line([label, name, us(st.median), f"{b / st.median:.0f}", f"{base / st.median:.2f}x",
                                  f"{b * v * 4 / 1e6:.2f}", f"{pct[name]:.0f}%"]))
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
