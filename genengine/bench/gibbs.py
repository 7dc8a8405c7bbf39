"""Benchmark rows for the Gibbs samplers (genengine.ops.gibbs): RBM block-Gibbs sweeps, Ising
checkerboard sweeps and the Langevin step.

  RBM       v [1000, 784], W [784, 500], float32 (the bar's case) and a tiny [1, 16] x [16, 8] case (the
            per-call overhead). One sweep is two GEMMs, 2 * 2 * B * nv * nh FLOPs: "% mm" is the achieved
            FLOP/s over the suite's float32 matmul rate (the ceiling, measured first). Candidates: each
            genengine kernel backend, float32 and compute_dtype=bfloat16 (steps=10 per call, per sweep),
            "torch-textbook" (torch.bernoulli(torch.sigmoid(v @ W + b)) both ways) and scikit-learn's
            BernoulliRBM.gibbs on the same weights when scikit-learn is installed.
  Ising     int8 [2048, 2048] (10 sweeps per call) and 64 lattices of 64 x 64: spin-flip attempts per ns;
            "torch-textbook" is the vectorised PyTorch checkerboard heat-bath (rolls for the neighbour sums,
            torch.rand, where) on the same int8 lattice.
  Langevin  x, grad float32 [4M]: bytes moved 12 per element (read x and grad, write out); "% copy" against
            a same-bytes copy; "torch-textbook" is x - s / 2 * g + sqrt(s) * torch.randn_like(x).
"""

from __future__ import annotations

import math

import torch

from .. import ops
from .diffusion import backends
from .harness import FOREIGN_POOL_SETTLE_S, Table, interleave, us

COLUMNS = [("op", 9, "<"), ("case", 24, "<"), ("candidate", 22, "<"), ("median us", 10, ">"), ("speedup", 8, ">"),
           ("rate", 16, ">"), ("% ceiling", 9, ">")]


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def rbm_candidates(B, nv, nh, device, names, steps=10):
    g = torch.Generator(device="cpu").manual_seed(0)
    v = (torch.rand(B, nv, generator=g) < 0.5).float().to(device)
    W = (torch.randn(nv, nh, generator=g) * 0.05).to(device)
    vb = (torch.randn(nv, generator=g) * 0.1).to(device)
    hb = (torch.randn(nh, generator=g) * 0.1).to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    res = {}
    for name in names:
        res[f"{name} float32"] = (lambda name=name: ops.rbm_gibbs(v, W, vb, hb, steps=steps, generator=gen, backend=name), steps)
        res[f"{name} bf16"] = (lambda name=name: ops.rbm_gibbs(v, W, vb, hb, steps=steps, generator=gen, backend=name,
                                                               compute_dtype=torch.bfloat16), steps)

    def textbook():
        h = torch.bernoulli(torch.sigmoid(v @ W + hb))
        return torch.bernoulli(torch.sigmoid(h @ W.t() + vb))

    res["torch-textbook"] = (textbook, 1)
    sk = sklearn_rbm(W, vb, hb) if device.type == "cpu" else None
    if sk is not None:
        vn = v.numpy()
        res["sklearn gibbs"] = (lambda: sk.gibbs(vn), 1)
    return res


def sklearn_rbm(W, vb, hb):
    """A fitted-looking sklearn BernoulliRBM holding our weights (components_ is [n_hidden, n_visible]), or None."""
    try:
        import numpy as np
        from sklearn.neural_network import BernoulliRBM
    except ImportError:
        return None
    sk = BernoulliRBM(n_components=W.shape[1], random_state=0)
    sk.components_ = W.t().contiguous().cpu().numpy().astype(np.float32)
    sk.intercept_hidden_ = hb.cpu().numpy().astype(np.float32)
    sk.intercept_visible_ = vb.cpu().numpy().astype(np.float32)
    sk.random_state_ = np.random.RandomState(0)
    return sk


def ising_textbook(s, beta):
    """One vectorised PyTorch checkerboard heat-bath sweep of int8 lattices [L, H, W] (in place)."""
    H, W = s.shape[-2:]
    ii = torch.arange(H, device=s.device).view(H, 1)
    jj = torch.arange(W, device=s.device).view(1, W)
    for c in (0, 1):
        colour = ((ii + jj) % 2) == c
        nb = (s.roll(1, -1) + s.roll(-1, -1) + s.roll(1, -2) + s.roll(-1, -2)).float()
        p = torch.sigmoid(2 * beta * nb)
        new = torch.where(torch.rand(s.shape, device=s.device) < p, 1, -1).to(torch.int8)
        s.copy_(torch.where(colour, new, s))
    return s


def ising_candidates(L, H, W, device, names, sweeps):
    g = torch.Generator(device="cpu").manual_seed(0)
    base = (torch.randint(0, 2, (L, H, W), generator=g) * 2 - 1).to(torch.int8).to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    res = {}
    for name in names:
        s = base.clone()
        res[name] = (lambda s=s, name=name: ops.ising_sweep(s, 0.44, sweeps=sweeps, generator=gen, inplace=True,
                                                             backend=name), sweeps)
    st = base.clone()
    res["torch-textbook"] = (lambda: ising_textbook(st, 0.44), 1)
    return res


def langevin_candidates(n, device, names):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, generator=g).to(device)
    gr = torch.randn(n, generator=g).to(device)
    out = torch.empty_like(x)
    gen = torch.Generator(device="cpu").manual_seed(1)
    res = {}
    for name in names:
        res[name] = lambda name=name: ops.langevin_step(x, gr, 0.01, generator=gen, backend=name)
        res[name + " out="] = lambda name=name: ops.langevin_step(x, gr, 0.01, generator=gen, out=out, backend=name)
    res["torch-textbook"] = lambda: x - 0.005 * gr + math.sqrt(0.01) * torch.randn_like(x)
    return res


def run(ctx):
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    names = [n for n in names if n != "torch"]  # the torch backend is the Philox reference: the textbook rows stand for it
    for line in skipped:
        ctx.print(line)
    budget = 0.3 if quick else 3.0
    _, _, mm_rate = ctx.ceilings.matmul()
    table = Table(COLUMNS)
    ctx.print("Gibbs sampling (RBM sweeps, Ising checkerboard, Langevin)")
    ctx.print(table.header())
    rows = []

    def emit(op, case, label, sec, base, rate, rate_s, pct, extra):
        # sec and extra's median_s/min_s/p90_s are per sweep (per step for langevin), as the table prints
        row = {"op": op, "case": case, "candidate": label, "device": device.type, "median_s": sec,
               "speedup_vs_textbook": base / sec, "rate": rate, "pct_of_ceiling": pct, **extra}
        rows.append(row)
        ctx.print(table.line([op, case, label, us(sec), f"{base / sec:.2f}x", rate_s, f"{pct:.0f}%" if pct else ""]))

    for B, nv, nh in ((1000, 784, 500), (1, 16, 8)):
        group = rbm_candidates(B, nv, nh, device, names, steps=10 if B > 1 else 1)
        settle = FOREIGN_POOL_SETTLE_S if "sklearn gibbs" in group else 0.0
        stats = interleave({k: f for k, (f, _) in group.items()}, device, budget, min_samples=3 if quick else 6,
                           settle_s=settle)
        flops = 4.0 * B * nv * nh
        per = {k: stats[k].median / group[k][1] for k in group}
        base = per["torch-textbook"]
        for k, sec in per.items():
            rate = flops / sec
            emit("rbm", f"{B}x{nv} W {nv}x{nh}", k, sec, base, 1.0 / sec, f"{1 / sec:,.0f} sweeps/s",
                 100 * rate / mm_rate, {"sweep_s": sec, "GFLOP_per_s": rate / 1e9, "sweeps_per_call": group[k][1],
                                        **stats[k].per(group[k][1]).as_dict()})
    for L, H, W, sw in ((1, 2048, 2048, 10), (64, 64, 64, 20)):
        group = ising_candidates(L, H, W, device, names, sw)
        stats = interleave({k: f for k, (f, _) in group.items()}, device, budget, min_samples=3 if quick else 6)
        per = {k: stats[k].median / group[k][1] for k in group}
        base = per["torch-textbook"]
        for k, sec in per.items():
            fpn = L * H * W / sec / 1e9
            emit("ising", f"{L}x{H}x{W} int8", k, sec, base, fpn, f"{fpn:.3f} flips/ns", None,
                 {"sweep_s": sec, "flips_per_ns": fpn, "sweeps_per_call": group[k][1],
                  **stats[k].per(group[k][1]).as_dict()})
    n = 1 << 22
    group = langevin_candidates(n, device, names)
    stats = interleave(group, device, budget, min_samples=3 if quick else 6)
    nbytes = 12 * n
    copy_fn = ctx.ceilings.copy_callable(nbytes)
    base = stats["torch-textbook"].median
    for k, st in stats.items():
        pst = interleave({k: group[k], "copy": copy_fn}, device, budget / 3, min_samples=3)
        pct = 100 * pst["copy"].median / pst[k].median
        bw = nbytes / st.median
        emit("langevin", f"{n} float32", k, st.median, base, bw / 1e9, f"{bw / 1e9:.1f} GB/s", pct,
             {"bytes_moved": nbytes, **st.as_dict()})
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
