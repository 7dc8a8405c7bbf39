"""Benchmark rows for the flow transforms (genengine.ops.rq_spline, affine_coupling).

rq_spline: x (N, D) float32 with K = 8 bins, widths / heights (N, D, K) and interior derivatives
(N, D, K - 1), sliced out of one (N, D, 3K - 1) tensor as a network would produce them. Candidates:
each available genengine backend and "torch-reference" (genengine.reference.flows.rq_spline run in
float32: the plain PyTorch spline with gathers, as flow libraries write it). Directions: forward
with log-determinant (no grad), and forward + backward (autograd to x and the three parameter
tensors from y.sum() + logabsdet.sum()). affine_coupling: x, shift, log_scale (N, D) against the
plain expression `x * exp(log_scale) + shift` with `log_scale.sum(-1)`, forward and forward +
backward. Bytes moved: what a fused kernel must read and write once (the floor); "% copy" is a
same-bytes copy's time over the candidate's, timed in pairs. The spline is bound by its ~20
exponentials and logarithms per element, not by bytes, so its "% copy" stays well below 100%.
"""

from __future__ import annotations

import torch

from .. import ops
from ..reference import flows as ref
from .diffusion import backends
from .harness import Table, interleave, us

K = 8
COPY = "copy (same bytes)"
COLUMNS = [("op", 24, "<"), ("shape", 12, "<"), ("backend", 16, "<"), ("median us", 10, ">"), ("speedup", 8, ">"),
           ("MB moved", 8, ">"), ("GB/s", 6, ">"), ("% copy", 6, ">")]


def spline_inputs(n, d, k=K, device="cpu", seed=0, requires_grad=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.rand(n, d, generator=g) * 7 - 3.5).to(device)  # both tails too
    p = torch.randn(n, d, 3 * k - 1, generator=g).to(device)
    if requires_grad:
        x.requires_grad_()
        p.requires_grad_()
    return x, p


def split(p, k=K):
    return p[..., :k], p[..., k:2 * k], p[..., 2 * k:]


def spline_candidates(n, d, device, names, backward):
    x, p = spline_inputs(n, d, device=device, requires_grad=backward)
    fns = {name: (lambda name=name: ops.rq_spline(x, *split(p), backend=name)) for name in names if name != "torch"}
    fns["torch-reference"] = lambda: ref.rq_spline(x, *split(p), dtype=torch.float32)
    if not backward:
        return {k: (lambda f=f: _no_grad(f)) for k, f in fns.items()}

    def step(f):
        def run():
            y, lad = f()
            return torch.autograd.grad(y.sum() + lad.sum(), (x, p))
        return run

    return {k: step(f) for k, f in fns.items()}


def affine_candidates(n, d, device, names, backward):
    g = torch.Generator(device="cpu").manual_seed(0)
    x, t, s = (torch.randn(n, d, generator=g).to(device) for _ in range(3))
    if backward:
        for v in (x, t, s):
            v.requires_grad_()
    fns = {name: (lambda name=name: ops.affine_coupling(x, t, s, backend=name)) for name in names if name != "torch"}
    fns["torch-textbook"] = lambda: (x * torch.exp(s) + t, s.sum(-1))
    if not backward:
        return {k: (lambda f=f: _no_grad(f)) for k, f in fns.items()}
    gy = torch.randn(n, d, generator=g).to(device)
    gl = torch.randn(n, generator=g).to(device)

    def step(f):
        def run():
            y, ld = f()
            return torch.autograd.grad((y, ld), (x, t, s), (gy, gl))
        return run

    return {k: step(f) for k, f in fns.items()}


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def cases(device, quick):
    n = 16384 if quick else 65536
    if device.type == "cuda":
        return [("rq_spline", (1 << 20, 16)), ("affine_coupling", (1 << 20, 64))]
    return [("rq_spline", (n, 16)), ("affine_coupling", (n, 64)), ("rq_spline", (1, 16))]


def _bytes(op, shape, backward):
    n = shape[0] * shape[1]
    if op == "rq_spline":
        # forward: x and 3K - 1 parameters in, y and logabsdet out; backward also: dy, dlad in, dx and dparams out
        per = (1 + 3 * K - 1 + 2) + ((2 + 1 + 3 * K - 1) if backward else 0)
    else:
        # forward: x, shift, log_scale in, y out (+ one logdet per row); backward: dy in, dx, dshift, dlog_scale out
        per = 4 + (4 if backward else 0)
    return n * per * 4


def run(ctx):
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    for line in skipped:
        ctx.print(line)
    table = Table(COLUMNS)
    ctx.print(f"flow transforms (rq_spline K={K}, interior derivatives; affine_coupling with its log-det row sum)")
    ctx.print(table.header())
    rows = []
    for (op, shape), backward in [(c, bw) for c in cases(device, quick) for bw in (False, True)]:
        make = spline_candidates if op == "rq_spline" else affine_candidates
        group = make(*shape, device, names, backward)
        base_name = "torch-reference" if op == "rq_spline" else "torch-textbook"
        nbytes = _bytes(op, shape, backward)
        tiny = shape[0] * shape[1] < 4096
        budget = 0.3 if quick else 2.0
        stats = interleave(group, device, budget, min_samples=3 if quick else 8, latency=tiny)
        pct = {}
        copy_fn = ctx.ceilings.copy_callable(nbytes, torch.float32)
        for label, fn in group.items():
            if tiny:
                pct[label] = None  # not measured: a copy this small times the call overhead only
                continue
            pst = interleave({label: fn, COPY: copy_fn}, device, budget / 3, min_samples=3 if quick else 5)
            pct[label] = 100 * pst[COPY].median / pst[label].median
        base = stats[base_name].median
        name = f"{op} {'fwd+bwd' if backward else 'fwd+logdet'}"
        for label, st in stats.items():
            bw = nbytes / st.median
            row = {"op": name, "shape": list(shape), "dtype": "float32", "backend": label, "device": device.type,
                   **st.as_dict(), "speedup_vs_reference": base / st.median, "bytes_moved": nbytes,
                   "GB_per_s": bw / 1e9, "pct_of_copy": pct[label]}
            rows.append(row)
            ctx.print(table.line([name, "(" + ",".join(map(str, shape)) + ")", label, us(st.median),
                                  f"{base / st.median:.2f}x", f"{nbytes / 1e6:.2f}", f"{bw / 1e9:.1f}",
                                  "-" if tiny else f"{pct[label]:.0f}%"]))
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
