"""Benchmark rows for decode attention (genengine.ops.decode_attention) against PyTorch's SDPA.

Shapes (B, Hq, Hkv, S, D): (1,32,8,4096,128), (8,32,8,2048,128), (8,32,32,2048,128), float32 on the
CPU; on CUDA the same scaled to S = 32768 in bfloat16. Every sequence is full (length S). Per shape,
interleaved in one run: each available genengine backend on the contiguous cache [B, Hkv, S, D] and
on a paged cache (page size 16, pages in a random order) of the same keys, and
torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True) on the
contiguous cache. Bytes: K and V read once (the floor; q and the output are < 0.1% of it).
"% copy" is a same-bytes copy's time (dst.copy_(src), nbytes/2 read + nbytes/2 written) over the
candidate's, and "% read" a same-bytes read-only stream's (buf.amax() over nbytes, the ceiling of a
kernel that only reads), timed interleaved with the candidate. "vs SDPA" is SDPA's median over the
candidate's; "paged/contig" the paged median over the contiguous one of the same backend.
Cold: in a model each layer's cache is read once per step and evicted by the other layers' before
the next, so every call here (and every copy and read it is measured against) takes the next of
`cold_sets` input sets, together at least 4x the last-level cache. Without this, the 32 MiB of
(1,32,8,4096,128) sat in this CPU's 32 MiB L3 and its same-bytes copy ran from L3 at ~2x the DRAM
rate the kernel streams at. A tiny row (B=1, Hq=8, Hkv=2, S=64, D=64), warm, shows the per-call
overhead, with rope_append_kv for one decode token beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from .diffusion import backends
from .harness import COLD_CACHE_MULTIPLE, Table, cold_sets, each_set, interleave, last_level_cache_bytes, us

COPY = "copy (same bytes)"
READ = "read (same bytes)"
PAGE = 16
COLUMNS = [("case", 26, "<"), ("layout", 6, "<"), ("candidate", 14, "<"), ("median us", 10, ">"), ("GB/s", 6, ">"),
           ("% copy", 6, ">"), ("% read", 6, ">"), ("vs SDPA", 7, ">"), ("paged/contig", 12, ">")]


def cases(device, dtypes=None):
    """[((B, Hq, Hkv, S, D), dtype)]."""
    if device.type == "cuda":
        dt = torch.bfloat16
        shapes = [(1, 32, 8, 32768, 128), (8, 32, 8, 32768, 128), (8, 32, 32, 32768, 128)]
    else:
        dt = torch.float32
        shapes = [(1, 32, 8, 4096, 128), (8, 32, 8, 2048, 128), (8, 32, 32, 2048, 128)]
    if dtypes:
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtypes[0]]
    return [(s, dt) for s in shapes]


def paged_copy(x, page_size, perm):
    """The keys of contiguous x [B, Hkv, S, D] in a paged cache [P, page_size, Hkv, D]: page j of
    sequence b is physical page perm[b * S / page_size + j]."""
    B, H, S, D = x.shape
    pps = S // page_size
    xp = torch.empty((B * pps, page_size, H, D), dtype=x.dtype, device=x.device)
    xp[perm] = x.view(B, H, pps, page_size, D).permute(0, 2, 3, 1, 4).reshape(B * pps, page_size, H, D)
    return xp


def inputs(shape, dtype, device, seed=0):
    """(q, k, v, lengths, paged k, paged v, block table): full sequences, pages in a random order."""
    B, Hq, Hkv, S, D = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn((B, Hq, D), generator=g).to(dtype).to(device)
    k = torch.randn((B, Hkv, S, D), generator=g).to(dtype).to(device)
    v = torch.randn((B, Hkv, S, D), generator=g).to(dtype).to(device)
    L = torch.full((B,), S, dtype=torch.int32, device=device)
    perm = torch.randperm(B * (S // PAGE), generator=g).to(device)
    bt = perm.view(B, -1).to(torch.int32)
    return q, k, v, L, paged_copy(k, PAGE, perm), paged_copy(v, PAGE, perm), bt


def candidates(shape, dtype, device, names, sets=1):
    """{(label, layout): callable}; sets > 1: every call takes the next of that many input sets (one
    counter for all candidates, so no call reads the set the previous call just read)."""
    each = each_set([inputs(shape, dtype, device, seed=i) for i in range(sets)])

    res = {}
    for name in names:
        if name == "torch":  # the Python reference loops over sequences: not a contender
            continue
        res[(name, "contig")] = each(lambda q, k, v, L, kp, vp, bt, name=name:
                                     ops.decode_attention(q, k, v, L, backend=name))
        res[(name, "paged")] = each(lambda q, k, v, L, kp, vp, bt, name=name:
                                    ops.decode_attention(q, kp, vp, L, block_table=bt, backend=name))
    res[("torch SDPA", "contig")] = each(lambda q, k, v, L, kp, vp, bt:
                                         F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True))
    return res


def _shape(s):
    return "(" + ",".join(map(str, s)) + ")"


def _tiny(ctx, names, table, rows):
    device = ctx.device
    shape = (1, 8, 2, 64, 64)
    q, k, v, L, kp, vp, bt = inputs(shape, torch.float32, device)
    cos, sin = ops.rope_tables(128, 64, device=device)
    qt, kt = torch.randn(1, 8, 64, device=device), torch.randn(1, 2, 64, device=device)
    pos = torch.tensor([63], dtype=torch.int32, device=device)
    cands = {}
    for name in names:
        if name == "torch":
            continue
        cands[f"{name} decode"] = lambda name=name: ops.decode_attention(q, k, v, L, backend=name)
        if name != "cuda":
            cands[f"{name} rope+append"] = lambda name=name: ops.rope_append_kv(qt, kt, kt, k, v, pos, cos, sin,
                                                                                  backend=name)
    q4 = q[:, :, None]
    cands["torch SDPA"] = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)
    stats = interleave(cands, device, 0.3 if ctx.quick else 2.0, min_samples=5 if ctx.quick else 50)
    base = stats["torch SDPA"].median
    for label, st in stats.items():
        rows.append({"op": "decode_attention tiny (per-call overhead)", "shape": list(shape), "dtype": "float32",
                     "layout": "contig", "backend": label, "device": device.type, **st.as_dict(),
                     "speedup_vs_sdpa": base / st.median})
        ctx.print(table.line([f"tiny {_shape(shape)}", "contig", label, us(st.median), "", "", "",
                              f"{base / st.median:.2f}x", ""]))


def run(ctx):
    """Times every (shape, layout, backend); prints the table; returns the JSON-ready rows."""
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    for line in skipped:
        ctx.print(line)
    table = Table(COLUMNS)
    ctx.print("decode attention (one query token per sequence, full caches; bytes = K + V read once; cold: each row's"
              f" calls and ceilings rotate through enough input sets to fill {COLD_CACHE_MULTIPLE}x the"
              f" {last_level_cache_bytes(device) / 2**20:.0f} MiB last-level cache)")
    ctx.print(table.header())
    rows = []
    for shape, dtype in cases(device, ctx.dtypes):
        B, Hq, Hkv, S, D = shape
        nbytes = 2 * B * Hkv * S * D * dtype.itemsize
        budget = 0.5 if quick else 4.0
        sets = cold_sets(nbytes, device)
        group = candidates(shape, dtype, device, names, sets)
        stats = interleave(group, device, budget, min_samples=3 if quick else 8)
        copy_fn = ctx.ceilings.copy_callable(nbytes, dtype, sets)
        read_fn = ctx.ceilings.read_callable(nbytes, dtype, sets)
        pct, pct_read = {}, {}
        for key, fn in group.items():
            pst = interleave({key: fn, COPY: copy_fn, READ: read_fn}, device, budget * 0.75,
                             min_samples=3 if quick else 6)
            pct[key] = 100 * pst[COPY].median / pst[key].median
            pct_read[key] = 100 * pst[READ].median / pst[key].median
        base = stats[("torch SDPA", "contig")].median
        for (label, layout), st in stats.items():
            bw = nbytes / st.median
            contig = stats.get((label, "contig"))
            ratio = st.median / contig.median if layout == "paged" and contig else None
            row = {"op": "decode_attention", "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                   "layout": layout if layout == "contig" else f"paged{PAGE}", "backend": label, "device": device.type,
                   **st.as_dict(), "bytes_read": nbytes, "input_sets": sets, "GB_per_s": bw / 1e9,
                   "pct_of_copy": pct[(label, layout)],
                   "pct_of_read": pct_read[(label, layout)], "speedup_vs_sdpa": base / st.median, "paged_over_contig": ratio}
            rows.append(row)
            ctx.print(table.line([f"{_shape(shape)} {row['dtype']}", layout, label, us(st.median), f"{bw / 1e9:.1f}",
                                  f"{pct[(label, layout)]:.0f}%", f"{pct_read[(label, layout)]:.0f}%",
                                  f"{base / st.median:.2f}x",
                                  f"{ratio:.3f}" if ratio else ""]))
    _tiny(ctx, names, table, rows)
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
