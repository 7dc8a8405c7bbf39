"""genengine's RBM block-Gibbs sweep against scikit-learn's BernoulliRBM.gibbs, on the same weights.

    python benchmarks/bench_gibbs.py [--batch 1000] [--visible 784] [--hidden 500] [--budget 6] [--json FILE]

One sweep v -> h -> v of an RBM with 784 visible and 500 hidden units, batch 1000 (the issue's case),
all timed interleaved in one run (genengine.bench.harness.interleave):
  sklearn float32   BernoulliRBM.gibbs(v) with components_ / intercepts float32 (numpy's BLAS)
  sklearn float64   the same in float64 (what a BernoulliRBM fitted on float64 data holds)
  torch-textbook    h = bernoulli(sigmoid(v @ W + c)); v = bernoulli(sigmoid(h @ W^T + b))
  torch rand < p    the fastest plain-PyTorch sweep: addmm, in-place sigmoid, rand(p.shape) < p
  genengine f32     ge.ops.rbm_gibbs(v, W, b, c, steps=10) / 10   (torch's GEMM + the fused C++ epilogue)
  genengine bf16    the same with compute_dtype=torch.bfloat16
  genengine 1 step  ge.ops.rbm_gibbs(..., steps=1): one sweep per call, its per-call cost included
The float32 matmul rate of the suite (1024^3) is measured first: "% mm" is the sweep's 4 B nv nh FLOPs
per second over it. Before timing, the script checks that sklearn and genengine hold the same model:
sklearn's transform(v) (= p(h | v)) equals genengine's hidden probabilities.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import genengine as ge  # noqa: E402
from genengine.bench.gibbs import sklearn_rbm  # noqa: E402
from genengine.bench.harness import FOREIGN_POOL_SETTLE_S, Ceilings, busy_note, interleave  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--visible", type=int, default=784)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--budget", type=float, default=6.0, help="seconds of interleaved timing")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    busy, note = busy_note()
    if note:
        print(note)
    B, nv, nh = a.batch, a.visible, a.hidden
    g = torch.Generator().manual_seed(0)
    v = (torch.rand(B, nv, generator=g) < 0.5).float()
    W = torch.randn(nv, nh, generator=g) * 0.05
    vb = torch.randn(nv, generator=g) * 0.1
    hb = torch.randn(nh, generator=g) * 0.1
    sk32 = sklearn_rbm(W, vb, hb)
    if sk32 is None:
        sys.exit("scikit-learn is not installed (pip install torch==2.13.0 scikit-learn, or the `bench` extra)")
    sk64 = sklearn_rbm(W, vb, hb)
    sk64.components_ = sk64.components_.astype(np.float64)
    sk64.intercept_hidden_ = sk64.intercept_hidden_.astype(np.float64)
    sk64.intercept_visible_ = sk64.intercept_visible_.astype(np.float64)
    v32, v64 = v.numpy(), v.numpy().astype(np.float64)
    ph = ge.ops.rbm_gibbs(v, W, vb, hb, generator=g, return_probs=True, steps=1)
    same = float(np.abs(sk32.transform(v32) - torch.sigmoid(v @ W + hb).numpy()).max())
    _, _, _, ph_last = ph
    print(f"same model: max |sklearn transform(v) - genengine p(h|v)| = {same:.2e}; genengine's kernel probs agree to "
          f"{float((ph_last - torch.sigmoid(v @ W + hb)).abs().max()):.2e}")
    ceil = Ceilings("cpu")
    _, _, mm_rate = ceil.matmul()
    gen = torch.Generator().manual_seed(1)

    def textbook():
        h = torch.bernoulli(torch.sigmoid(v @ W + hb))
        return torch.bernoulli(torch.sigmoid(h @ W.t() + vb))

    def plain_rand():  # the fastest plain-PyTorch sweep found: addmm, sigmoid_ in place, rand < p
        p = torch.addmm(hb, v, W).sigmoid_()
        h = (torch.rand(p.shape, generator=gen) < p).float()
        p = torch.addmm(vb, h, W.t()).sigmoid_()
        return (torch.rand(p.shape, generator=gen) < p).float()

    cands = {
        "sklearn float32": (lambda: sk32.gibbs(v32), 1),
        "sklearn float64": (lambda: sk64.gibbs(v64), 1),
        "torch-textbook": (textbook, 1),
        "torch rand < p": (plain_rand, 1),
        "genengine f32": (lambda: ge.ops.rbm_gibbs(v, W, vb, hb, steps=10, generator=gen), 10),
        "genengine bf16": (lambda: ge.ops.rbm_gibbs(v, W, vb, hb, steps=10, generator=gen, compute_dtype=torch.bfloat16), 10),
        "genengine 1 step": (lambda: ge.ops.rbm_gibbs(v, W, vb, hb, steps=1, generator=gen), 1),
    }
    stats = interleave({k: f for k, (f, _) in cands.items()}, "cpu", a.budget, min_samples=6,
                       settle_s=FOREIGN_POOL_SETTLE_S)
    flops = 4.0 * B * nv * nh
    per = {k: stats[k].median / cands[k][1] for k in cands}
    print(f"RBM sweep, batch {B}, {nv} visible, {nh} hidden, {torch.get_num_threads()} threads; "
          f"matmul float32 1024^3: {mm_rate / 1e9:.1f} GFLOP/s")
    print(f"{'candidate':18s} {'ms/sweep':>9s} {'vs sklearn f32':>15s} {'vs sklearn f64':>15s} {'vs textbook':>12s} "
          f"{'GFLOP/s':>8s} {'% mm':>6s}")
    rows = []
    for k, sec in per.items():
        r = {"candidate": k, "sweep_s": sec, "speedup_vs_sklearn_f32": per["sklearn float32"] / sec,
             "speedup_vs_sklearn_f64": per["sklearn float64"] / sec, "speedup_vs_textbook": per["torch-textbook"] / sec,
             "GFLOP_per_s": flops / sec / 1e9, "pct_of_matmul": 100 * flops / sec / mm_rate, **stats[k].as_dict()}
        rows.append(r)
        print(f"{k:18s} {sec * 1e3:9.2f} {r['speedup_vs_sklearn_f32']:14.2f}x {r['speedup_vs_sklearn_f64']:14.2f}x "
              f"{r['speedup_vs_textbook']:11.2f}x {r['GFLOP_per_s']:8.1f} {r['pct_of_matmul']:5.0f}%")
    if a.json:
        doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "python benchmarks/bench_gibbs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "cpu_busy_before": busy, "shape": {"batch": B, "visible": nv, "hidden": nh},
               "matmul_float32_GFLOP_per_s": mm_rate / 1e9, "same_model_max_abs_diff": same, "rows": rows,
               "machine": ge.info(verbose=False)}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
