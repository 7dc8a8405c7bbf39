"""genengine's fused rational-quadratic spline and affine coupling against nflows and zuko.

    python benchmarks/bench_flows.py [--quick] [--json [FILE]] [--n 65536] [--d 16]

Same inputs for everyone, timed interleaved in one run (genengine.bench.harness.interleave):
x (N, D) float32 uniform on [-3.5, 3.5] (both tails), K = 8 bins, widths / heights (N, D, K) and
interior derivatives (N, D, K - 1) sliced out of one (N, D, 3K - 1) tensor, tail bound 3:
  genengine:  ge.ops.rq_spline(x, w, h, d)                                    (backend="auto": cpp)
  nflows:     unconstrained_rational_quadratic_spline(x, w, h, d, tails="linear", tail_bound=3.0)
  zuko:       MonotonicRQSTransform(w, h, d, bound=3.0).call_and_ladj(x)
              (zuko's parameterisation differs in detail: softclipped inputs, exp derivatives, no
              minimum sizes; the same shapes and the same work per element)
forward returns (y, log|dy/dx|); forward+backward is torch.autograd.grad(y.sum() + lad.sum(), (x, params)).
Affine coupling at (N, 64): ge.ops.affine_coupling(x, t, s) vs `x * exp(s) + t, s.sum(-1)`, forward
and forward + backward (to x, t and s). "max |diff|" checks genengine against nflows (same formulas).
MAF sampling, one layer (D 16 and 64, hidden 64 and 256, 1000 rows): MAFLayer.inverse
(ge.ops.made_affine_inverse) against the textbook inverse (D passes, each recomputing the whole MADE
from the x filled so far: what genengine did before) and nflows' MaskedAffineAutoregressiveTransform
inverse (also D passes, its own MADE of the same sizes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import genengine as ge  # noqa: E402
from genengine.bench.flows import K, spline_inputs, split  # noqa: E402
from genengine.bench.harness import Table, busy_note, interleave, us  # noqa: E402
from genengine.reference import flows as ref  # noqa: E402

try:
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline as nflows_rqs
except ImportError:  # pragma: no cover
    nflows_rqs = None
try:
    from zuko.transforms import MonotonicRQSTransform
except ImportError:  # pragma: no cover
    MonotonicRQSTransform = None

B = 3.0


def spline_group(n, d, backward):
    x, p = spline_inputs(n, d, requires_grad=backward)
    calls = {"genengine": lambda: ge.ops.rq_spline(x, *split(p), tail_bound=B),
             "torch-reference": lambda: ref.rq_spline(x, *split(p), tail_bound=B, dtype=torch.float32)}
    if nflows_rqs is not None:
        calls["nflows"] = lambda: nflows_rqs(x, *split(p), tails="linear", tail_bound=B)
    if MonotonicRQSTransform is not None:
        calls["zuko"] = lambda: MonotonicRQSTransform(*split(p), bound=B).call_and_ladj(x)
    if not backward:
        return {k: (lambda f=f: _no_grad(f)) for k, f in calls.items()}, (x, p)

    def step(f):
        return lambda: torch.autograd.grad(sum(t.sum() for t in f()), (x, p))

    return {k: step(f) for k, f in calls.items()}, (x, p)


def affine_group(n, d, backward):
    g = torch.Generator().manual_seed(0)
    x, t, s = (torch.randn(n, d, generator=g) for _ in range(3))
    if backward:
        for v in (x, t, s):
            v.requires_grad_()
    calls = {"genengine": lambda: ge.ops.affine_coupling(x, t, s),
             "torch-textbook": lambda: (x * torch.exp(s) + t, s.sum(-1))}
    if not backward:
        return {k: (lambda f=f: _no_grad(f)) for k, f in calls.items()}
    gy, gl = torch.randn(n, d, generator=g), torch.randn(n, generator=g)
    return {k: (lambda f=f: torch.autograd.grad(f(), (x, t, s), (gy, gl))) for k, f in calls.items()}


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def maf_group(n, d, hidden):
    from genengine.models import flow_layers as fl

    torch.manual_seed(0)
    layer = fl.MAFLayer(d, hidden)
    for prm in layer.parameters():
        prm.data.normal_(0, 0.3)
    y = torch.randn(n, d)

    def textbook():
        x = torch.zeros_like(y)
        for i in range(d):
            prm = layer.made(x)
            x[:, i] = layer._transform(y[:, i:i + 1], prm[:, i:i + 1], True)[0][:, 0]
        return x

    group = {"genengine": lambda: layer.inverse(y), "torch-textbook": textbook}
    try:
        from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform

        t = MaskedAffineAutoregressiveTransform(features=d, hidden_features=hidden)
        group["nflows"] = lambda: t.inverse(y)
    except ImportError:  # pragma: no cover
        pass
    return {k: (lambda f=f: _no_grad(f)) for k, f in group.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description="genengine flow kernels vs nflows / zuko")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--json", nargs="?", const="", metavar="FILE")
    args = ap.parse_args(argv)
    budget = 1.0 if args.quick else 6.0
    cols = [("case", 34, "<"), ("candidate", 16, "<"), ("median ms", 10, ">"), ("vs genengine", 12, ">")]
    table = Table(cols)
    cmd = "python benchmarks/bench_flows.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {cmd}\n# {datetime.datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(busy_note())
    x, p = spline_inputs(args.n, args.d)
    if nflows_rqs is not None:
        with torch.no_grad():
            a = ge.ops.rq_spline(x, *split(p), tail_bound=B)
            b = nflows_rqs(x, *split(p), tails="linear", tail_bound=B)
        print(f"max |diff| genengine vs nflows: y {float((a[0] - b[0]).abs().max()):.2e}, "
              f"logabsdet {float((a[1] - b[1]).abs().max()):.2e}")
    print(table.header())
    rows = []
    cases = [(f"rq_spline fwd+logdet ({args.n},{args.d}) K={K}", lambda: spline_group(args.n, args.d, False)[0]),
             (f"rq_spline fwd+bwd ({args.n},{args.d}) K={K}", lambda: spline_group(args.n, args.d, True)[0]),
             (f"affine_coupling fwd ({args.n},64)", lambda: affine_group(args.n, 64, False)),
             (f"affine_coupling fwd+bwd ({args.n},64)", lambda: affine_group(args.n, 64, True))]
    for d, h in ((16, 64), (64, 256)):
        cases.append((f"MAF layer sample (1000,{d}) hidden {h}", lambda d=d, h=h: maf_group(1000, d, h)))
    for label, make in cases:
        group = make()
        stats = interleave(group, torch.device("cpu"), budget, min_samples=3 if args.quick else 10)
        base = stats["genengine"].median
        for name, st in stats.items():
            rows.append({"case": label, "candidate": name, **st.as_dict(), "ratio_vs_genengine": st.median / base})
            print(table.line([label, name, f"{st.median * 1e3:.2f}", f"{st.median / base:.1f}x"]))
        peers = [stats[k].median for k in ("nflows", "zuko") if k in stats]
        if peers:
            print(f"  -> genengine is {min(peers) / base:.1f}x faster than the faster of nflows/zuko")
        elif "torch-textbook" in stats:
            print(f"  -> genengine is {stats['torch-textbook'].median / base:.2f}x faster than the plain expression")
    if args.json is not None:
        path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"bench_flows-cpu-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump({"command": cmd, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
                       "us": {r["case"] + " / " + r["candidate"]: us(r["median_s"]) for r in rows}}, f, indent=1)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
