"""Benchmark rows for naive Bayes (genengine.models.GaussianNB / BernoulliNB / MultinomialNB) against
scikit-learn, side by side on the same data in one run.

Cases (float64): GaussianNB fit + predict_proba on 200,000 x 64 with 10 classes (the issue's bar),
and the predict_proba alone of each family on the same x (Bernoulli binarises x at 0; multinomial
on rounded |x| counts). Candidates, timed interleaved: "genengine" (backend auto: the fused C++
kernel on the CPU), "torch-textbook" (the plain float64 PyTorch transcription of the formulas,
genengine.reference.naive_bayes, with a torch index_add_ fit) and "scikit-learn" when installed.
"MB x" is the size of x; "% copy" is a same-bytes copy's time over the candidate's (reading x once
is the floor of a fused predict). "max |dp|" is the largest probability difference from scikit-learn.
"""

from __future__ import annotations

import torch

from ..models import naive_bayes as nbm
from ..reference import naive_bayes as ref
from .harness import FOREIGN_POOL_SETTLE_S, Table, interleave

COLUMNS = [("case", 34, "<"), ("shape", 16, "<"), ("candidate", 15, "<"), ("median ms", 9, ">"),
           ("vs sklearn", 10, ">"), ("MB x", 6, ">"), ("% copy", 6, ">"), ("max |dp|", 8, ">")]


def _sklearn():
    try:
        from sklearn import naive_bayes
    except ImportError:
        return None
    return naive_bayes


def _data(n, f, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, f, generator=g, dtype=torch.float64)
    x = centres[y] + torch.randn(n, f, generator=g, dtype=torch.float64) * (0.5 + torch.rand(f, generator=g, dtype=torch.float64))
    return x, y


def _textbook_gaussian_fit(x, y, c):
    cnt = torch.zeros(c, dtype=torch.float64).index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
    mu = torch.zeros(c, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / cnt[:, None]
    var = torch.zeros(c, x.shape[1], dtype=torch.float64).index_add_(0, y, (x - mu[y]) ** 2) / cnt[:, None]
    return mu, var + 1e-9 * x.var(0, correction=0).max(), torch.log(cnt / cnt.sum())


def cases(quick):
    n = 20000 if quick else 200000
    return [("GaussianNB fit + predict_proba", n, 64, 10), ("GaussianNB predict_proba", n, 64, 10),
            ("BernoulliNB predict_proba", n, 64, 10), ("MultinomialNB predict_proba", n, 64, 10)]


def _candidates(case, x, y, c, sk):
    res, probs = {}, {}
    if case.startswith("GaussianNB"):
        fitted = nbm.GaussianNB().fit(x, y)
        mu, var, lp = _textbook_gaussian_fit(x, y, c)
        if "fit" in case:
            res["genengine"] = lambda: nbm.GaussianNB().fit(x, y).predict_proba(x)
            res["torch-textbook"] = lambda: ref.normalize(ref.gaussian_jll(x, *_textbook_gaussian_fit(x, y, c)), "posterior")
        else:
            res["genengine"] = lambda: fitted.predict_proba(x)
            res["torch-textbook"] = lambda: ref.normalize(ref.gaussian_jll(x, mu, var, lp), "posterior")
        probs["genengine"] = fitted.predict_proba(x)
        if sk is not None:
            xn, yn = x.numpy(), y.numpy()
            s = sk.GaussianNB().fit(xn, yn)
            res["scikit-learn"] = (lambda: sk.GaussianNB().fit(xn, yn).predict_proba(xn)) if "fit" in case else (
                lambda: s.predict_proba(xn))
            probs["scikit-learn"] = torch.from_numpy(s.predict_proba(xn))
        return res, probs
    if case.startswith("Bernoulli"):
        m = nbm.BernoulliNB().fit(x, y)
        res["genengine"] = lambda: m.predict_proba(x)
        res["torch-textbook"] = lambda: ref.normalize(ref.bernoulli_jll(x, m.feature_log_prob_, m.class_log_prior_, 0.0),
                                                      "posterior")
        probs["genengine"] = m.predict_proba(x)
        if sk is not None:
            xn = x.numpy()
            s = sk.BernoulliNB().fit(xn, y.numpy())
            res["scikit-learn"] = lambda: s.predict_proba(xn)
            probs["scikit-learn"] = torch.from_numpy(s.predict_proba(xn))
        return res, probs
    xc = x.abs().round()
    m = nbm.MultinomialNB().fit(xc, y)
    res["genengine"] = lambda: m.predict_proba(xc)
    res["torch-textbook"] = lambda: ref.normalize(ref.multinomial_jll(xc, m.feature_log_prob_, m.class_log_prior_), "posterior")
    probs["genengine"] = m.predict_proba(xc)
    if sk is not None:
        xn = xc.numpy()
        s = sk.MultinomialNB().fit(xn, y.numpy())
        res["scikit-learn"] = lambda: s.predict_proba(xn)
        probs["scikit-learn"] = torch.from_numpy(s.predict_proba(xn))
    return res, probs


def run(ctx):
    if ctx.device.type != "cpu":
        ctx.print("naive_bayes: the scikit-learn comparison runs on the CPU; skipped on " + ctx.device.type)
        return {"rows": [], "skipped": ["naive_bayes runs on cpu only"]}
    sk = _sklearn()
    skipped = [] if sk is not None else ["scikit-learn is not installed (pip install scikit-learn): its rows are skipped"]
    for line in skipped:
        ctx.print(line)
    table = Table(COLUMNS)
    ctx.print("naive Bayes vs scikit-learn (float64, same data)")
    ctx.print(table.header())
    rows = []
    for case, n, f, c in cases(ctx.quick):
        x, y = _data(n, f, c)
        group, probs = _candidates(case, x, y, c, sk)
        budget = 1.0 if ctx.quick else 6.0
        stats = interleave(group, ctx.device, budget, min_samples=3 if ctx.quick else 5,
                           settle_s=FOREIGN_POOL_SETTLE_S if sk is not None else 0.0)
        nbytes = x.numel() * x.element_size()
        copy = interleave({"copy": ctx.ceilings.copy_callable(nbytes, torch.float64)}, ctx.device, 0.2, min_samples=3)["copy"]
        base = stats["scikit-learn"].median if "scikit-learn" in stats else None
        dp = float((probs["genengine"] - probs["scikit-learn"]).abs().max()) if "scikit-learn" in probs else None
        for label, st in stats.items():
            row = {"op": case, "shape": [n, f], "classes": c, "dtype": "float64", "candidate": label, "device": "cpu",
                   **st.as_dict(), "speedup_vs_sklearn": (base / st.median) if base else None, "bytes_x": nbytes,
                   "pct_of_copy": 100 * copy.median / st.median, "max_abs_prob_diff_vs_sklearn": dp}
            rows.append(row)
            ctx.print(table.line([case, f"({n},{f}) C={c}", label, f"{st.median * 1e3:.2f}",
                                  f"{base / st.median:.1f}x" if base else "-", f"{nbytes / 1e6:.0f}",
                                  f"{row['pct_of_copy']:.0f}%", f"{dp:.1e}" if dp is not None and label == "genengine" else ""]))
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
