"""Benchmark rows for the HMM recursions (genengine.ops.hmm_forward, hmm_posteriors, hmm_viterbi).

Shapes: log_emissions (B, T, S) float64 with every sequence T steps long; on the CPU B = T = 1000,
S = 16 for the forward pass (the issue's bar) and B = 200 for the others; the reference
("torch-textbook": genengine.reference.hmm, log space with logsumexp, one batched step per time
step) is timed on B = 40 (it loops over T in Python: minutes per call at B = 1000) and its time scaled
up to the row's B. Per
row: median time, speedup over the reference, and the arithmetic rate against the float32 matmul
ceiling: a step costs 2 S^2 flops for the S x S transition product (forward), 6 S^2 for
forward-backward (forward, backward product, outer product for xi) and 2 S^2 compares/adds for
Viterbi; the bytes of log_emissions read (B T S x 8) over the row's time are shown as GB/s.
"""

from __future__ import annotations

import torch

from .. import ops
from ..reference import hmm as ref
from .diffusion import backends
from .harness import Table, interleave

COLUMNS = [("op", 15, "<"), ("B x T x S", 16, "<"), ("backend", 14, "<"), ("median ms", 10, ">"), ("speedup", 8, ">"),
           ("GFLOP/s", 8, ">"), ("% matmul", 8, ">"), ("GB/s", 6, ">")]
FLOPS_PER_STEP = {"hmm_forward": 2, "hmm_posteriors": 6, "hmm_viterbi": 2}


def _inputs(b, t, s, device):
    g = torch.Generator().manual_seed(0)
    le = (torch.randn(b, t, s, generator=g, dtype=torch.float64) * 3).to(device)
    ls = torch.log_softmax(torch.randn(s, generator=g, dtype=torch.float64), 0).to(device)
    lt = torch.log_softmax(torch.randn(s, s, generator=g, dtype=torch.float64), 1).to(device)
    return le, ls, lt


def run(ctx):
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    names = [n for n in names if n != "torch"]  # the reference is the torch-textbook row
    for line in skipped:
        ctx.print(line)
    table = Table(COLUMNS)
    ctx.print("HMM recursions (float64, all sequences full length)")
    ctx.print(table.header())
    _, _, mm_rate = ctx.ceilings.matmul()
    t_len, s = (200, 16) if quick else (1000, 16)
    ref_b = 10 if quick else 40
    small = 50 if quick else 200
    cases = [("hmm_forward", 100 if quick else 1000), ("hmm_posteriors", small), ("hmm_viterbi", small)]
    rows = []
    for op, b in cases:
        le, ls, lt = _inputs(b, t_len, s, device)
        fn = getattr(ops, op)
        group = {n: (lambda n=n, fn=fn, le=le, ls=ls, lt=lt: fn(le, ls, lt, backend=n)) for n in names}
        stats = interleave(group, device, 0.5 if quick else 4.0, min_samples=3)
        rle = le[:ref_b]
        reff = {"hmm_forward": ref.forward, "hmm_posteriors": ref.posteriors, "hmm_viterbi": ref.viterbi}[op]
        textbook = {"torch-textbook": lambda reff=reff, rle=rle, ls=ls, lt=lt: reff(rle, ls, lt)}
        rst = interleave(textbook, device, 0.5 if quick else 3.0, min_samples=2)
        base = rst["torch-textbook"].median * (b / ref_b)
        stats["torch-textbook" + (f" (B={ref_b}, x{b // ref_b})" if b != ref_b else "")] = rst["torch-textbook"]
        flops = FLOPS_PER_STEP[op] * s * s * b * t_len
        nbytes = le.numel() * le.element_size()
        for label, st in stats.items():
            secs = st.median * (b / ref_b if label.startswith("torch-textbook") else 1)
            rate = flops / secs
            row = {"op": op, "shape": [b, t_len, s], "dtype": "float64", "backend": label, "device": device.type,
                   **st.as_dict(), "scaled_median_s": secs, "speedup_vs_textbook": base / secs,
                   "GFLOP_per_s": rate / 1e9, "pct_of_matmul": 100 * rate / mm_rate, "GB_per_s": nbytes / secs / 1e9}
            rows.append(row)
            ctx.print(table.line([op, f"{b}x{t_len}x{s}", label[:14], f"{secs * 1e3:.1f}",
                                  f"{base / secs:.1f}x", f"{rate / 1e9:.2f}", f"{100 * rate / mm_rate:.1f}%",
                                  f"{nbytes / secs / 1e9:.2f}"]))
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
