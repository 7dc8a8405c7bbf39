"""Benchmark rows for Gaussian mixtures (genengine.models.GaussianMixture, genengine.ops.gmm_e_step)
against scikit-learn's GaussianMixture, side by side on the same data and the same initialisation.

Case (the issue's bar): 100,000 x 16 float64, 16 components, covariance_type "full" and "diag" (and
"tied", "spherical"). Data: 16 Gaussian clusters with random means (scale 3) and random full
covariances (the same for every candidate). Initialisation: k-means++ seeds' hard assignment, given
to both libraries as weights_init / means_init / precisions_init.

Rows:
  "EM iteration": one iteration of the EM loop, the E-step with the statistics and the M-step
      (genengine: GaussianMixture._iterate; scikit-learn: its loop body, _e_step then _m_step),
      timed interleaved on models already initialised;
  "parity": both fitted for ITERS iterations from the same initialisation (tol=0): the largest
      relative differences of means_, covariances_, precisions_cholesky_, weights_ and lower_bound_.
"GFLOP/s" counts the kernel's useful work: full: (D (D + 1) / 2 for x^T U + D (D + 1) / 2 for the second
moments) multiply-adds per (row, component); diag / spherical: 3 D; tied: D (D + 1) / 2 per row + 2 D
per (row, component), and is set against this machine's measured float64-equivalent matmul rate.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..models import mixture as mxm
from .harness import FOREIGN_POOL_SETTLE_S, Table, interleave

COLUMNS = [("case", 26, "<"), ("cov", 9, "<"), ("candidate", 13, "<"), ("median ms", 9, ">"), ("vs sklearn", 10, ">"),
           ("GFLOP/s", 7, ">"), ("parity (max rel diff)", 40, "<")]
ITERS = 10


def _sklearn():
    try:
        from sklearn import mixture
    except ImportError:
        return None
    return mixture


def data(n, d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, d, generator=g, dtype=torch.float64) * 3
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    chol = torch.linalg.cholesky(a @ a.transpose(1, 2) + 0.3 * torch.eye(d, dtype=torch.float64))
    lab = torch.randint(0, k, (n,), generator=g)
    x = mu[lab] + torch.einsum("nij,nj->ni", chol[lab], torch.randn(n, d, generator=g, dtype=torch.float64))
    return x


def _init(x, k, ct, seed=0):
    """(weights, means, precisions) of the k-means++ seeds' hard assignment (genengine's init)."""
    m = mxm.GaussianMixture(k, covariance_type=ct, init_params="k-means++", random_state=seed, max_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(x, progress=False)
    return m.weights_ / m.weights_.sum(), m.means_, m.precisions_


def _flops(n, d, k, ct):
    tri = d * (d + 1) / 2
    per = {"full": 2 * tri * k, "diag": 3 * d * k, "spherical": 3 * d * k, "tied": tri + 2 * d * k}[ct]
    return 2 * n * per


def run(ctx, cov_types=("full", "diag", "tied", "spherical")):
    if ctx.device.type != "cpu":
        ctx.print("mixture: the scikit-learn comparison runs on the CPU; skipped on " + ctx.device.type)
        return {"rows": [], "skipped": ["mixture runs on cpu only"]}
    sk = _sklearn()
    skipped = [] if sk is not None else ["scikit-learn is not installed (pip install scikit-learn): its rows are skipped"]
    for line in skipped:
        ctx.print(line)
    n, d, k = (10000, 16, 16) if ctx.quick else (100000, 16, 16)
    x = data(n, d, k)
    rate = ctx.ceilings.matmul()[2]  # float32 FLOP/s
    table = Table(COLUMNS)
    ctx.print(f"Gaussian mixture EM vs scikit-learn ({n} x {d} float64, {k} components, same initialisation)")
    ctx.print(table.header())
    rows = []
    xn = x.numpy()
    for ct in cov_types:
        w0, m0, p0 = _init(x, k, ct)
        inits = dict(weights_init=w0, means_init=m0, precisions_init=p0)
        ours = mxm.GaussianMixture(k, covariance_type=ct, max_iter=ITERS, tol=0.0, **inits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours.fit(x, progress=False)
        parity = None
        group = {}
        shift = x.mean(0)
        xtx = (x - shift).T @ (x - shift) if ct == "tied" else None
        it = mxm.GaussianMixture(k, covariance_type=ct, **inits)
        it._initialize(x, shift, float(n), xtx, 0)
        it._iterate(x, shift, float(n), xtx)
        group["genengine"] = lambda it=it, shift=shift, xtx=xtx: it._iterate(x, shift, float(n), xtx)
        if sk is not None:
            sinit = {kk: v.numpy() for kk, v in inits.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = sk.GaussianMixture(k, covariance_type=ct, max_iter=ITERS, tol=0.0, init_params="random_from_data",
                                         random_state=0, **sinit).fit(xn)
                s_it = sk.GaussianMixture(k, covariance_type=ct, max_iter=1, tol=0.0, init_params="random_from_data",
                                          random_state=0, **sinit).fit(xn)

            def sk_iter(s_it=s_it):
                _, log_resp = s_it._e_step(xn)
                s_it._m_step(xn, log_resp)

            group["scikit-learn"] = sk_iter

            def rel(a, b):
                b = torch.as_tensor(b)
                return float((a - b).abs().max() / b.abs().max())

            parity = {"means": rel(ours.means_, ref.means_), "covariances": rel(ours.covariances_, ref.covariances_),
                      "precisions_cholesky": rel(ours.precisions_cholesky_, ref.precisions_cholesky_),
                      "weights": rel(ours.weights_, ref.weights_),
                      "lower_bound": abs(ours.lower_bound_ - ref.lower_bound_) / abs(ref.lower_bound_),
                      "n_iter": (ours.n_iter_, int(ref.n_iter_))}
        stats = interleave(group, ctx.device, 1.0 if ctx.quick else 8.0, min_samples=3 if ctx.quick else 6,
                           settle_s=FOREIGN_POOL_SETTLE_S if "scikit-learn" in group else 0.0)
        base = stats["scikit-learn"].median if "scikit-learn" in stats else None
        flops = _flops(n, d, k, ct)
        for label, st in stats.items():
            gf = flops / st.median / 1e9 if label == "genengine" else None
            row = {"op": "GaussianMixture EM iteration", "shape": [n, d], "components": k, "covariance_type": ct,
                   "dtype": "float64", "candidate": label, "device": "cpu", **st.as_dict(),
                   "speedup_vs_sklearn": base / st.median if base else None, "gflops": gf,
                   "pct_of_f64_matmul_rate": 100 * gf * 1e9 / (rate / 2) if gf else None, "parity": parity}
            rows.append(row)
            par = ""
            if parity and label == "genengine":
                par = (f"mu {parity['means']:.0e} cov {parity['covariances']:.0e} lb {parity['lower_bound']:.0e} "
                       f"it {parity['n_iter'][0]}/{parity['n_iter'][1]}")
            ctx.print(table.line([f"EM iteration ({n}x{d}) K={k}", ct, label, f"{st.median * 1e3:.2f}",
                                  f"{base / st.median:.1f}x" if base else "-", f"{gf:.1f}" if gf else "", par]))
    ctx.print(f"(matmul ceiling measured by the harness: {rate / 1e9:.1f} GFLOP/s float32; float64 peaks at half)")
    ctx.print("")
    return {"rows": rows, "skipped": skipped, "iters_for_parity": ITERS}
