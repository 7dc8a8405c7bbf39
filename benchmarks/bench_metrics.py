"""genengine.metrics.frechet_distance against the two routes the common FID packages take, from the
same float64 statistics:

    python benchmarks/bench_metrics.py [--dims 2048] [--rounds 3] [--json FILE]

  scipy sqrtm:  covmean = scipy.linalg.sqrtm(S1 @ S2) (real part if it comes back complex), as in
                pytorch-fid / clean-fid; d = |mu1-mu2|^2 + Tr S1 + Tr S2 - 2 Tr covmean
  torchmetrics: torchmetrics.image.fid._compute_fid (eigvals of the non-symmetric S1 @ S2, sqrt,
                real part) on torch float64 tensors
  genengine:    Cholesky of S1, eigvalsh(L^T S2 L) (see genengine/metrics.py)

Case "well-conditioned": S = cov of 3 D samples of features with per-dimension scales in [0.1, 1]
(condition number ~1e3). Case "rank-deficient": S from 1000 samples at D dimensions (D > 1000: half
the eigenvalues are exactly 0 up to rounding), where sqrtm's square root of the non-symmetric
product goes complex and the eigvals route takes square roots of negative rounding noise. Case
"dead features": the well-conditioned statistics with D/8 features that never vary (zero rows and
columns in both covariances, as ReLU features that never fire give), where S1 S2 is exactly singular.

Each call takes seconds, so the three run round-robin `rounds` times (the order rotates) and the
median per candidate is quoted, with the ratios of the medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402

import genengine as ge  # noqa: E402

try:
    from torchmetrics.image.fid import _compute_fid
except ImportError:  # pragma: no cover
    sys.exit("bench_metrics needs torchmetrics: pip install torch==2.13.0 torchmetrics (the bench extra)")


def sqrtm_route(mu1, s1, mu2, s2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1.dot(s2))
    was_complex = bool(np.iscomplexobj(covmean))
    max_imag = float(np.abs(covmean.imag).max()) if was_complex else 0.0
    finite = bool(np.isfinite(covmean).all())
    covmean = covmean.real
    diff = mu1 - mu2
    value = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return value, {"complex": was_complex, "max_imag": max_imag, "finite_sqrtm": finite}


def torchmetrics_route(mu1, s1, mu2, s2):
    return float(_compute_fid(mu1, s1, mu2, s2)), {}


def torchmetrics_note(mu1, s1, mu2, s2):
    """(untimed) how far from real the square roots of eig(S1 S2) went."""
    c = torch.linalg.eigvals(s1 @ s2).sqrt()
    return {"max_imag_of_sqrt_eigs": float(c.imag.abs().max())}


def genengine_route(mu1, s1, mu2, s2):
    return ge.metrics.frechet_distance(mu1, s1, mu2, s2), {}


def make_stats(d, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if scale:
        x = x * torch.linspace(0.1, 1.0, d, dtype=torch.float64)[torch.randperm(d, generator=g)]
    x = x + torch.randn(d, generator=g, dtype=torch.float64) * 0.1
    st = ge.metrics.FeatureStats().update(x)
    return st.mean, st.cov


def run_case(name, d, n1, n2, rounds, out, dead=0):
    mu1, s1 = make_stats(d, n1, 1, True)
    mu2, s2 = make_stats(d, n2, 2, True)
    if dead:  # features that never fire (e.g. after a ReLU): zero rows and columns in both covariances
        s1[:dead], s1[:, :dead], s2[:dead], s2[:, :dead] = 0, 0, 0, 0
    cands = {
        "scipy sqrtm": (sqrtm_route, (mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())),
        "torchmetrics": (torchmetrics_route, (mu1, s1, mu2, s2)),
        "genengine": (genengine_route, (mu1, s1, mu2, s2)),
    }
    names = list(cands)
    times = {k: [] for k in names}
    values, notes = {}, {}
    for r in range(rounds):
        for i in range(len(names)):
            k = names[(r + i) % len(names)]
            fn, args = cands[k]
            t0 = time.perf_counter()
            v, note = fn(*args)
            times[k].append(time.perf_counter() - t0)
            values[k], notes[k] = v, note
        print(f"  {name} round {r + 1}/{rounds}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in names), flush=True)
    notes["torchmetrics"] = torchmetrics_note(mu1, s1, mu2, s2)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = values["scipy sqrtm"]
    print(f"{name} (D={d}, n={n1}/{n2}):")
    for k in names:
        rel = abs(values[k] - ref) / abs(ref) if ref else float("nan")
        print(f"  {k:13s} median {med[k]:7.3f} s (min {min(times[k]):.3f})  value {values[k]!r:24s} "
              f"rel. diff vs sqrtm {rel:.2e}  {notes[k] or ''}")
    print(f"  genengine speedup: {med['scipy sqrtm'] / med['genengine']:.1f}x vs scipy sqrtm, "
          f"{med['torchmetrics'] / med['genengine']:.1f}x vs torchmetrics")
    out.append({"case": name, "dims": d, "samples": [n1, n2], "rounds": rounds,
                "median_s": med, "all_s": times, "values": values, "notes": notes,
                "speedup_vs_sqrtm": med["scipy sqrtm"] / med["genengine"],
                "speedup_vs_torchmetrics": med["torchmetrics"] / med["genengine"]})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rank-deficient-samples", type=int, default=1000)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    import torchmetrics

    print(f"bench_metrics: torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"scipy {scipy.__version__}, torchmetrics {torchmetrics.__version__}", flush=True)
    rows = []
    run_case("well-conditioned", args.dims, 3 * args.dims, 3 * args.dims + 17, args.rounds, rows)
    run_case("rank-deficient", args.dims, args.rank_deficient_samples, args.rank_deficient_samples, 1, rows)
    run_case("dead features", args.dims, 3 * args.dims, 3 * args.dims, 1, rows, dead=args.dims // 8)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "command": "python benchmarks/bench_metrics.py " + " ".join(argv or sys.argv[1:]),
                       "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                                    "torchmetrics": torchmetrics.__version__}, "threads": torch.get_num_threads(),
                       "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
