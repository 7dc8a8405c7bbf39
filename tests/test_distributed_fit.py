"""Fitting across processes: 2 ranks with the gloo backend on this machine, each fitting on its own
(unequal) shard, must end with the model a single process fits on all the data. The ranks run this
file as a script (python tests/test_distributed_fit.py RANK WORLD PORT OUT); the test starts them
with a free port and a timeout, so a hung collective fails the test instead of hanging it."""

import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch

N, D, K = 1200, 4, 3
SPLIT = 700  # rank 0 gets rows [0, 700), rank 1 the rest; class 3 only occurs on rank 0


def data():
    g = torch.Generator().manual_seed(123)
    y = torch.randint(0, 3, (N,), generator=g)
    y[:40] = 3
    mu = torch.randn(4, D, generator=g, dtype=torch.float64) * 3
    x = mu[y] + torch.randn(N, D, generator=g, dtype=torch.float64)
    counts = torch.poisson(torch.rand(N, D, generator=g, dtype=torch.float64) * 3 + y[:, None], generator=g)
    return x, y, counts


def fit_all(x, y, counts, inits):
    import genengine as ge

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["GaussianNB"] = ge.models.GaussianNB().fit(x, y)
        out["MultinomialNB"] = ge.models.MultinomialNB(alpha=0.5).fit(counts, y)
        out["BernoulliNB"] = ge.models.BernoulliNB(binarize=0.5).fit(x, y)
        for ct in ("full", "tied", "diag", "spherical"):
            out[f"gmm_{ct}_given"] = ge.models.GaussianMixture(K, covariance_type=ct, max_iter=15, tol=0.0, **inits[ct]).fit(
                x, progress=False)
        out["gmm_random"] = ge.models.GaussianMixture(K, init_params="random", random_state=5, max_iter=10, tol=0.0).fit(
            x, progress=False)
        out["gmm_kmeans"] = ge.models.GaussianMixture(K, init_params="kmeans", random_state=6, max_iter=10).fit(x, progress=False)
    return out


def inits_for(x):
    import genengine as ge

    res = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ct in ("full", "tied", "diag", "spherical"):
            m = ge.models.GaussianMixture(K, covariance_type=ct, max_iter=1, init_params="k-means++", random_state=0).fit(
                x[:300], progress=False)
            res[ct] = dict(weights_init=m.weights_, means_init=m.means_, precisions_init=m.precisions_)
    return res


def worker(rank, world, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    x, y, counts = data()
    inits = inits_for(x)  # computed on the same rows by each rank before any collective
    sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    models = fit_all(x[sl], y[sl], counts[sl], inits)
    torch.save({k: {"state": m.state_dict(), "n_iter": getattr(m, "n_iter_", None), "lb": getattr(m, "lower_bound_", None)}
                for k, m in models.items()}, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_fit_the_single_process_model(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    procs = [subprocess.Popen([sys.executable, __file__, str(r), "2", str(port), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=180)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the distributed fit did not finish within 180 s (a hung collective?)")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    x, y, counts = data()
    single = fit_all(x, y, counts, inits_for(x))
    for name, m in single.items():
        a, b = r0[name], r1[name]
        for key, v in m.state_dict().items():
            # every rank took the same steps from the same all-reduced sums: identical bits
            assert torch.equal(a["state"][key], b["state"][key]), f"{name}.{key}: ranks disagree"
            if name == "gmm_kmeans":
                continue  # seeded on rank 0's shard: equal across ranks, not to a single process's seeds
            if v.is_floating_point():
                torch.testing.assert_close(a["state"][key], v, rtol=1e-9, atol=1e-12, msg=f"{name}.{key}")
            else:
                assert torch.equal(a["state"][key], v), f"{name}.{key}"
        if name.startswith("gmm") and name != "gmm_kmeans":
            assert a["n_iter"] == m.n_iter_ and abs(a["lb"] - m.lower_bound_) <= 1e-10 * abs(m.lower_bound_)
    assert r0["gmm_kmeans"]["lb"] > single["gmm_kmeans"].lower_bound_ - 0.1  # a comparable optimum
    assert r0["GaussianNB"]["state"]["classes_"].tolist() == [0, 1, 2, 3]  # class 3 was only on rank 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
