"""genengine's HMM against hmmlearn, side by side, same parameters, same data, one run.

    python benchmarks/bench_hmm.py [--quick] [--json FILE]

A 16-state Gaussian HMM (diag covariances, 4 features; random parameters) generates 1,000
sequences of 1,000 steps. Checked first: both libraries' log-likelihoods of every sequence agree
to 1e-6 relative (hmmlearn's score on the concatenated layout against genengine's log_prob on the
padded batch). Then timed, interleaved:
  forward       the forward recursion given log emissions (B, T, S): genengine.ops.hmm_forward on
                the padded batch against hmmlearn's own C++ loop (`_hmmc.forward_log`, what
                `score` runs per sequence with implementation="log", its default; and
                `_hmmc.forward_scaling` on exp'd emissions, implementation="scaling")
  score         the whole `score(X, lengths)` (emission densities + forward) of both models
  posteriors    the E-step of Baum-Welch (forward + backward + expected transitions), 200 sequences
  viterbi       decoding, 200 sequences
genengine runs on the machine's threads (one sequence per thread) and on one thread (hmmlearn is
single-threaded); both ratios are reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import numpy as np
import torch

import genengine as ge
from genengine.bench.harness import FOREIGN_POOL_SETTLE_S, busy_note, interleave


def _model(s, d, gen):
    m = ge.models.HMM(s, covariance_type="diag")
    t = torch.rand(s, s, generator=gen, dtype=torch.float64) + 4 * torch.eye(s, dtype=torch.float64)
    m.startprob_ = torch.full((s,), 1.0 / s, dtype=torch.float64)
    m.transmat_ = t / t.sum(1, keepdim=True)
    m.means_ = torch.randn(s, d, generator=gen, dtype=torch.float64) * 2
    m.covars_ = 0.5 + torch.rand(s, d, generator=gen, dtype=torch.float64)
    return m


def _set_threads(n):
    torch.set_num_threads(n)
    ge._backends.load_cpp().set_num_threads(n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    try:
        from hmmlearn import _hmmc
        from hmmlearn import hmm as hl
    except ImportError:
        sys.exit("hmmlearn is not installed: pip install torch==2.13.0 hmmlearn (the bench extra)")
    import hmmlearn

    busy, note = busy_note()
    threads = torch.get_num_threads()
    b, t, s, d = (100, 200, 16, 4) if args.quick else (1000, 1000, 16, 4)
    sub = max(1, b // 5)
    budget = 1.0 if args.quick else 12.0
    out = {"command": "python benchmarks/bench_hmm.py " + " ".join(argv or sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "shape": {"sequences": b, "steps": t, "states": s, "features": d}, "threads": threads,
           "versions": {"torch": torch.__version__, "hmmlearn": hmmlearn.__version__, "genengine": ge.__version__},
           "cpu_busy_before": busy, "rows": []}
    print(f"bench_hmm: {b} sequences x {t} steps, {s} states, {d} features (diag), float64; torch {torch.__version__}, "
          f"hmmlearn {hmmlearn.__version__}, {threads} threads")
    if note:
        print(note)
    gen = torch.Generator().manual_seed(0)
    ours = _model(s, d, gen)
    x = ours.sample(b, length=t, generator=gen)  # (B, T, d)
    X, lengths = x.reshape(-1, d).numpy(), [t] * b
    ref = hl.GaussianHMM(s, covariance_type="diag", implementation="log")
    ref.startprob_, ref.transmat_, ref.means_ = ours.startprob_.numpy(), ours.transmat_.numpy(), ours.means_.numpy()
    ref.covars_ = ours._covars.numpy()
    ref_scaling = hl.GaussianHMM(s, covariance_type="diag", implementation="scaling")
    ref_scaling.startprob_, ref_scaling.transmat_, ref_scaling.means_ = ref.startprob_, ref.transmat_, ref.means_
    ref_scaling.covars_ = ref._covars_

    # ---- same log-likelihoods ----
    le = ours._log_emissions(torch.from_numpy(X)).view(b, t, s).contiguous()
    ls, lt = (v.contiguous() for v in ours._logs())
    ll_ours = ge.ops.hmm_forward(le, ls, lt).numpy()
    sp, tp = ref.startprob_, ref.transmat_
    ll_ref = np.array([_hmmc.forward_log(sp, tp, le[i].numpy())[0] for i in range(b)])
    frame = ref._compute_log_likelihood(X[:t])  # hmmlearn's own emission densities
    emis_err = float(np.abs(frame - le[0].numpy()).max() / np.abs(frame).max())
    rel = float(np.max(np.abs(ll_ours - ll_ref) / np.abs(ll_ref)))
    score_ref, score_ours = ref.score(X, lengths), ours.score(X, lengths)
    score_rel = abs(score_ref - score_ours) / abs(score_ref)
    ok = rel < 1e-6 and score_rel < 1e-6
    print(f"log-likelihood agreement: max per-sequence relative difference {rel:.2e}; total score {score_ours:.6f} vs "
          f"hmmlearn {score_ref:.6f} (relative {score_rel:.2e}); emission densities {emis_err:.1e}  -> "
          f"{'OK' if ok else 'MISMATCH'} (bar: 1e-6)")
    out["agreement"] = {"max_rel_per_sequence": rel, "score_rel": score_rel, "score_ours": score_ours,
                        "score_hmmlearn": score_ref, "emission_rel": emis_err, "ok": ok}

    def ge_threads(fn, n):
        def run():
            _set_threads(n)
            try:
                return fn()
            finally:
                _set_threads(threads)
        return run

    def hl_forward():
        for i in range(b):
            _hmmc.forward_log(sp, tp, le_np[i])

    def hl_forward_scaling():
        for i in range(b):
            _hmmc.forward_scaling(sp, tp, np.exp(le_np[i]))

    le_np = le.numpy()

    def hl_posteriors():  # what hmmlearn's fit runs per sequence (implementation="log")
        ltp = np.log(tp)
        for i in range(sub):
            _, fwd = _hmmc.forward_log(sp, tp, le_np[i])
            bwd = _hmmc.backward_log(sp, tp, le_np[i])
            _hmmc.compute_log_xi_sum(fwd, ltp, bwd, le_np[i])

    def hl_viterbi():
        for i in range(sub):
            _hmmc.viterbi(sp, tp, le_np[i])

    le_sub = le[:sub].contiguous()
    groups = {
        "forward": {"hmmlearn forward_log": hl_forward, "hmmlearn forward_scaling": hl_forward_scaling,
                    f"genengine cpp ({threads} thr)": lambda: ge.ops.hmm_forward(le, ls, lt),
                    "genengine cpp (1 thr)": ge_threads(lambda: ge.ops.hmm_forward(le, ls, lt), 1)},
        "score": {"hmmlearn score (log)": lambda: ref.score(X, lengths),
                  "hmmlearn score (scaling)": lambda: ref_scaling.score(X, lengths),
                  f"genengine score ({threads} thr)": lambda: ours.score(x),
                  "genengine score (1 thr)": ge_threads(lambda: ours.score(x), 1)},
        "posteriors": {"hmmlearn fwd+bwd+xi (log)": hl_posteriors,
                       f"genengine cpp ({threads} thr)": lambda: ge.ops.hmm_posteriors(le_sub, ls, lt),
                       "genengine cpp (1 thr)": ge_threads(lambda: ge.ops.hmm_posteriors(le_sub, ls, lt), 1)},
        "viterbi": {"hmmlearn viterbi": hl_viterbi,
                    f"genengine cpp ({threads} thr)": lambda: ge.ops.hmm_viterbi(le_sub, ls, lt),
                    "genengine cpp (1 thr)": ge_threads(lambda: ge.ops.hmm_viterbi(le_sub, ls, lt), 1)},
    }
    print(f"\n{'what':11s} {'candidate':28s} {'median ms':>10s} {'vs hmmlearn (log)':>18s}")
    for what, cands in groups.items():
        seqs = b if what in ("forward", "score") else sub
        t0 = time.perf_counter()
        stats = interleave(cands, torch.device("cpu"), budget, min_samples=3, warmup_s=0.0,
                           settle_s=FOREIGN_POOL_SETTLE_S)
        base = next(iter(stats.values())).median
        for label, st in stats.items():
            print(f"{what:11s} {label:28s} {st.median * 1e3:10.1f} {base / st.median:17.1f}x")
            out["rows"].append({"what": what, "sequences": seqs, "candidate": label, **st.as_dict(),
                                "speedup_vs_hmmlearn_log": base / st.median})
        print(f"{'':11s} ({seqs} sequences x {t} steps; {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
