"""genengine's Gaussian mixtures and naive Bayes against scikit-learn, side by side in one run.

    python benchmarks/bench_mixture.py [--quick] [--families mixture,naive_bayes] [--json [FILE]]

Same data and, for the mixtures, the same initialisation (weights_init / means_init / precisions_init
given to both libraries), timed interleaved (genengine.bench.harness.interleave):
  mixture      one EM iteration on 100,000 x 16 float64, 16 components, covariance_type full / diag /
               tied / spherical (genengine: one pass of the fused E-step + statistics kernel and the
               M-step; scikit-learn: its loop body, _e_step then _m_step), and the parity of both fits
               after 10 iterations (max relative difference of means_, covariances_, lower_bound_);
  naive_bayes  GaussianNB fit + predict_proba on 200,000 x 64 float64, 10 classes, and each family's
               predict_proba on the same data, with the largest probability difference.
The rows are genengine.bench.mixture / genengine.bench.naive_bayes (also `python -m genengine.bench
--ops mixture,naive_bayes`); this script adds the one-line summary of the ratios the issue's bar names.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import genengine as ge  # noqa: E402
from genengine.bench import mixture, naive_bayes  # noqa: E402
from genengine.bench.harness import Ceilings, busy_note  # noqa: E402

FAMILIES = {"mixture": mixture.run, "naive_bayes": naive_bayes.run}


class _Ctx:
    def __init__(self, quick):
        self.device = torch.device("cpu")
        self.quick = quick
        self.backends = None
        self.dtypes = None
        self.ceilings = Ceilings(self.device, budget_s=0.1 if quick else 0.5)

    @staticmethod
    def print(*a):
        print(*a, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--families", default="mixture,naive_bayes")
    p.add_argument("--json", nargs="?", const="benchmarks/results/cpu-2core-epyc-2026-12-01-mixture.json")
    args = p.parse_args(argv)
    fams = [f for f in args.families.split(",") if f]
    for f in fams:
        if f not in FAMILIES:
            p.error(f"--families: unknown family {f!r} (expected {', '.join(FAMILIES)})")
    busy, note = busy_note()
    ctx = _Ctx(args.quick)
    ctx.print(f"bench_mixture on cpu, torch {torch.__version__}, {torch.get_num_threads()} threads"
              + (", quick" if args.quick else ""))
    if note:
        ctx.print(note)
    t0 = time.perf_counter()
    results = {f: FAMILIES[f](ctx) for f in fams}
    summary = []
    for row in results.get("mixture", {}).get("rows", []):
        if row["candidate"] == "genengine" and row["speedup_vs_sklearn"]:
            summary.append(f"GMM {row['covariance_type']} EM iteration {row['speedup_vs_sklearn']:.1f}x")
    for row in results.get("naive_bayes", {}).get("rows", []):
        if row["candidate"] == "genengine" and row["op"] == "GaussianNB fit + predict_proba" and row["speedup_vs_sklearn"]:
            summary.append(f"GaussianNB fit+predict_proba {row['speedup_vs_sklearn']:.1f}x")
    if summary:
        ctx.print("vs scikit-learn: " + "; ".join(summary))
    total = time.perf_counter() - t0
    ctx.print(f"total {total:.1f} s")
    if args.json:
        doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "python benchmarks/bench_mixture.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "cpu_busy_before": busy, "machine": ge.info(verbose=False), "results": results, "total_s": total}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        ctx.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
