"""The Gibbs-sampling model families: RBM (exact and AIS partition functions against enumeration,
free energies, CD-k / PCD training that raises the exact likelihood, sampling, inpainting, save/load),
DBN, BoltzmannMachine and EBM (Langevin sampling of a known energy, persistent contrastive training)."""

import itertools
import math

import pytest
import torch
from torch import nn

import genengine as ge


def _states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _random_rbm(gen, nv, nh, scale=1.0, visible="bernoulli"):
    m = ge.models.RBM(nv, nh, visible=visible)
    m.W.data = torch.randn(nv, nh, generator=gen) * scale
    m.vbias.data = torch.randn(nv, generator=gen) * 0.5
    m.hbias.data = torch.randn(nh, generator=gen) * 0.5
    return m


def _brute_logz(m):
    """log sum over v and h of exp(-E(v, h)), by enumerating both layers (Bernoulli visible)."""
    v, h = _states(m.n_visible), _states(m.n_hidden)
    E = -(v @ m.W.double() @ h.t()) - (v @ m.vbias.double()).unsqueeze(1) - (h @ m.hbias.double()).unsqueeze(0)
    return float(torch.logsumexp((-E).reshape(-1), 0))


def test_free_energy_and_exact_log_partition_match_enumeration(gen):
    for nv, nh in ((7, 5), (4, 9)):  # enumerates the hidden, then the visible, layer
        m = _random_rbm(gen, nv, nh)
        lz = m.log_partition()
        assert lz.method == "exact" and lz.stderr == 0.0
        assert abs(lz.value - _brute_logz(m)) < 1e-9
        v = _states(nv)
        h = _states(nh)
        E = -(v @ m.W.double() @ h.t()) - (v @ m.vbias.double()).unsqueeze(1) - (h @ m.hbias.double()).unsqueeze(0)
        assert torch.allclose(m.free_energy(v.float()), -torch.logsumexp(-E, 1), atol=1e-5)
        assert abs(float(torch.logsumexp(m.log_prob(v.float()), 0))) < 1e-5  # a normalised law


def test_gaussian_rbm_log_partition_by_quadrature(gen):
    m = _random_rbm(gen, 2, 3, scale=0.6, visible="gaussian")
    g = torch.linspace(-12, 12, 801, dtype=torch.float64)
    vv = torch.cartesian_prod(g, g)
    dens = torch.exp(-m.free_energy(vv))
    quad = float(torch.log(dens.sum() * (g[1] - g[0]) ** 2))
    assert abs(m.log_partition().value - quad) < 1e-6


def test_ais_estimate_matches_exact_within_its_error(gen):
    m = _random_rbm(gen, 14, 10, scale=0.8)
    exact = m.log_partition("exact").value
    est = m.log_partition("ais", n_chains=300, n_betas=600, generator=gen)
    assert est.method == "ais" and 0 < est.stderr < 0.1
    assert abs(est.value - exact) < 4 * est.stderr + 0.02, (est, exact)


def _logz_by_hidden_enumeration(m, chunk=1 << 17):
    """log Z of a Bernoulli RBM summed over all 2^n_hidden hidden states (visible marginalised in closed
    form), in float64 and in chunks: the reference for models just above the package's enumeration limit."""
    W, b, c = m.W.double(), m.vbias.double(), m.hbias.double()
    bits = torch.arange(m.n_hidden)
    parts = []
    for start in range(0, 2**m.n_hidden, chunk):
        h = ((torch.arange(start, min(start + chunk, 2**m.n_hidden)).unsqueeze(1) >> bits) & 1).double()
        parts.append(torch.logsumexp(h @ c + torch.nn.functional.softplus(h @ W.t() + b).sum(1), 0))
    return float(torch.logsumexp(torch.stack(parts), 0))


def test_log_prob_uses_ais_above_the_enumeration_limit(gen):
    m = _random_rbm(gen, 22, 21, scale=0.05)
    x = (torch.rand(5, 22, generator=gen) < 0.5).float()
    lp = m.log_prob(x, n_betas=300, generator=gen)
    info = m.log_partition_info
    assert info.method == "ais"
    exact = _logz_by_hidden_enumeration(m)
    assert abs(info.value - exact) < 5 * info.stderr + 0.01, (info, exact)
    ref = -m.free_energy(x).double() - exact
    assert torch.allclose(lp.double(), ref, atol=5 * info.stderr + 0.01)


def _prototype_data(gen, n=600, nv=12, noise=0.05):
    protos = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6, [1.0, 0.0] * 6])
    idx = torch.randint(0, 3, (n,), generator=gen)
    x = protos[idx]
    flip = torch.rand(n, nv, generator=gen) < noise
    return torch.where(flip, 1 - x, x), protos


@pytest.mark.parametrize("persistent", [False, True])
def test_rbm_fit_raises_exact_likelihood(persistent, gen):
    x, protos = _prototype_data(gen)
    m = ge.models.RBM(12, 6)
    before = float(m.log_prob(x).mean())
    seen = []
    # PCD's persistent chains lag the model: at CD's lr 0.1 about 4% of seeds gained < 2.5 nats in 25 epochs;
    # at 0.05 for 50 epochs the smallest gain over 120 seeds was 3.5
    epochs, lr = (50, 0.05) if persistent else (25, 0.1)
    m.fit(x, epochs=epochs, batch_size=50, lr=lr, k=1, persistent=persistent, n_chains=200, progress=False,
          generator=gen, callback=lambda _m, info: seen.append(info["epoch"]))
    after = float(m.log_prob(x).mean())
    assert seen == list(range(epochs))
    assert after > before + 2.5, (before, after)  # the data's entropy bound is about -3.5
    # samples look like the prototypes
    s = m.sample(300, steps=200, generator=gen)
    dist = torch.cdist(s, protos, p=1).min(1).values
    assert float((dist <= 1).float().mean()) > 0.5  # chance: 1%


def test_rbm_sample_deterministic_inpainting_and_save_load(tmp_path, gen):
    m = _random_rbm(gen, 10, 6)
    a = m.sample(20, steps=5, generator=torch.Generator().manual_seed(3))
    b = m.sample(20, steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (20, 10)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[:4] = True
    vals = torch.tensor([1.0, 0.0, 1.0, 1.0] + [0.0] * 6)
    c = m.sample(20, steps=5, clamp_mask=mask, clamp_values=vals, generator=gen)
    assert torch.equal(c[:, :4], vals[:4].expand(20, 4))
    path = tmp_path / "rbm.pt"
    m.save(path)
    m2 = ge.models.load(path)
    assert isinstance(m2, ge.models.RBM) and torch.equal(m2.W, m.W)
    assert torch.equal(m2.sample(20, steps=5, generator=torch.Generator().manual_seed(3)), a)
    cb_stop = ge.models.RBM(10, 6).fit(a, epochs=5, progress=False, callback=lambda *_: True)
    assert isinstance(cb_stop, ge.models.RBM)


def test_rbm_bad_input(gen):
    m = ge.models.RBM(6, 3)
    with pytest.raises(ValueError, match="features"):
        m.fit(torch.rand(10, 5), progress=False)
    with pytest.raises(ValueError, match="data"):
        m.fit(torch.rand(10, 6) * 3, progress=False)
    with pytest.raises(ValueError, match="visible"):
        ge.models.RBM(6, 3, visible="poisson")
    with pytest.raises(ValueError, match="exact"):
        ge.models.RBM(30, 30).log_partition("exact")
    with pytest.raises(ValueError, match="n_hidden"):
        ge.models.RBM(6, 0)


def test_dbn_greedy_training_and_sampling(gen):
    x, protos = _prototype_data(gen)
    dbn = ge.models.DBN([12, 8, 4])
    w1 = dbn.rbms[1].W.clone()
    infos = []
    dbn.fit(x, epochs=20, batch_size=50, lr=0.1, progress=False, generator=gen, callback=lambda _m, i: infos.append(i))
    assert {i["layer"] for i in infos} == {0, 1}
    assert not torch.equal(dbn.rbms[1].W, w1)  # the second layer was trained on the first's features
    s = dbn.sample(300, steps=200, generator=gen)
    assert s.shape == (300, 12) and set(s.unique().tolist()) <= {0.0, 1.0}
    dist = torch.cdist(s, protos, p=1).min(1).values
    assert float((dist <= 2).float().mean()) > 0.5  # chance: 6%
    with pytest.raises(NotImplementedError, match="tractable"):
        dbn.log_prob(x)


def test_boltzmann_machine_fit_and_exact_log_prob(gen):
    n = 6
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)]
    true = ge.models.BoltzmannMachine(n, edges=edges)
    true.W.data = torch.randn(n, n, generator=gen).triu(1)
    true.W.data = (true.W.data + true.W.data.t()) * true.mask * 1.5
    true.bias.data = torch.randn(n, generator=gen) * 0.5
    states = _states(n).float()
    assert abs(float(torch.logsumexp(true.log_prob(states), 0))) < 1e-6
    # couplings strong enough that the data are >= 0.4 nats from uniform: at the scale drawn, 5% of
    # seeds gave < 0.3, so a fixed "gains 0.3 nats" could not be met even by the true model
    while True:
        lp = true.log_prob(states)
        if math.log(2**n) + float((lp.exp() * lp).sum()) >= 0.4:
            break
        true.W.data *= 1.5
    x = true.sample(3000, sweeps=100, generator=gen)
    m = ge.models.BoltzmannMachine(n, edges=edges)
    before = float(m.log_prob(x).mean())  # the untrained model: uniform
    m.fit(x, epochs=12, batch_size=300, lr=0.2, progress=False, generator=gen)
    after = float(m.log_prob(x).mean())
    best = float(true.log_prob(x).mean())
    # the fit closes >= 80% of the way from uniform to the true model (150 seeds: 90-99%)
    assert after - before >= 0.8 * (best - before), (before, after, best)
    assert torch.equal(m.W, m.W * m.mask)  # couplings only on the edges


class _Quadratic(nn.Module):
    """E(x) = (x - mu)^T P (x - mu) / 2 with P = L L^T (learnable)."""

    def __init__(self, d):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(d))
        self.L = nn.Parameter(torch.eye(d))

    def forward(self, x):
        z = (x - self.mu) @ self.L
        return 0.5 * (z * z).sum(-1)


def test_ebm_langevin_sampling_of_a_known_energy(gen):
    net = _Quadratic(2)
    net.mu.data = torch.tensor([1.0, -1.0])
    net.L.data = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    ebm = ge.models.EBM(net, sample_shape=(2,), buffer_size=0)
    # 400 steps of 0.01 time each leave e^(-0.95 * 4) = 2% of the start offset along the slow mode: 900
    x = ebm.sample(8000, steps=900, step_size=0.02, init="noise", generator=gen)
    P = net.L.data @ net.L.data.t()
    assert torch.allclose(x.mean(0), net.mu.data, atol=0.05)
    assert torch.allclose(torch.cov(x.t()), torch.linalg.inv(P), atol=0.06)
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(NotImplementedError, match="partition"):
        ebm.log_prob(x)


def test_ebm_fit_by_persistent_contrastive_divergence(gen):
    target = torch.tensor([1.5, -0.5])
    data = target + 0.5 * torch.randn(2000, 2, generator=gen)
    ebm = ge.models.EBM(_Quadratic(2), init_range=(-3.0, 3.0), buffer_size=2000)
    ebm.fit(data, epochs=8, batch_size=250, lr=0.08, steps=15, step_size=0.05, alpha=0.0, progress=False, generator=gen)
    assert torch.allclose(ebm.energy_net.mu.data, target, atol=0.25)
    s = ebm.sample(2000, steps=100, step_size=0.02, generator=gen)
    assert torch.allclose(s.mean(0), target, atol=0.2)
    assert abs(float(s.std(0).mean()) - 0.5) < 0.15
    assert len(ebm._buffer) == 2000  # the replay buffer holds the persistent chains
    assert math.isfinite(ebm.energy(s).detach().mean().item())


def test_ebm_save_load_keeps_fitted_sample_shape_and_replay_buffer(tmp_path, gen):
    ebm = ge.models.EBM(_Quadratic(2), buffer_size=50)  # sample_shape left to fit()
    ebm.fit(torch.randn(40, 2, generator=gen), epochs=1, batch_size=20, steps=2, progress=False, generator=gen)
    path = tmp_path / "ebm.pt"
    ebm.save(path)
    net = _Quadratic(2)
    loaded = ge.models.EBM.load(path, energy_net=net)
    assert loaded.sample_shape == (2,)
    assert len(loaded._buffer) == len(ebm._buffer) == 40
    assert torch.equal(torch.stack(list(loaded._buffer)), torch.stack(list(ebm._buffer)))
    # drawn from the replay buffer, the loaded model's samples are the original's
    a = ebm.sample(6, steps=2, replay_buffer=False, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(6, steps=2, replay_buffer=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_ebm_rejects_negative_steps_and_keeps_frozen_parameters_frozen():
    net = nn.Sequential(nn.Linear(2, 4), nn.SiLU(), nn.Linear(4, 1))
    net[0].weight.requires_grad_(False)  # the user freezes one tensor
    ebm = ge.models.EBM(net, sample_shape=(2,), buffer_size=0)
    for call in (lambda: ebm.sample(3, steps=-5), lambda: ebm.langevin(torch.zeros(3, 2), steps=-1),
                 lambda: ebm.fit(torch.zeros(4, 2), steps=-2, progress=False)):
        with pytest.raises(ValueError, match="steps"):
            call()
    assert ebm.sample(3, steps=0, init=torch.ones(3, 2)).eq(1).all()  # no step: the start itself
    ebm.sample(3, steps=2)
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]


def test_boltzmann_machine_is_defined_by_its_masked_couplings(gen):
    edges = [(0, 1), (1, 2)]
    bm = ge.models.BoltzmannMachine(3, edges=edges)
    masked = ge.models.BoltzmannMachine(3, edges=edges)
    full = torch.randn(3, 3, generator=gen)
    full = (full + full.t()).fill_diagonal_(0.0)  # entries off the edge set, e.g. from load_state_dict
    bm.W.data.copy_(full)
    masked.W.data.copy_(full * masked.mask)
    bias = torch.randn(3, generator=gen)
    bm.bias.data.copy_(bias)  # copies: one shared tensor would carry bm's fit into masked's start
    masked.bias.data.copy_(bias)
    states = _states(3).float()
    assert torch.equal(bm.log_prob(states), masked.log_prob(states))
    assert torch.equal(bm.energy(states), masked.energy(states))
    a = bm.sample(50, sweeps=3, generator=torch.Generator().manual_seed(2))
    b = masked.sample(50, sweeps=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    data = (torch.rand(40, 3, generator=gen) < 0.5).float()
    bm.fit(data, epochs=2, batch_size=20, n_chains=10, progress=False, generator=torch.Generator().manual_seed(4))
    masked.fit(data, epochs=2, batch_size=20, n_chains=10, progress=False, generator=torch.Generator().manual_seed(4))
    assert torch.equal(bm.W * bm.mask, masked.W)


def test_log_prob_of_binary_units_rejects_non_binary_states():
    bm = ge.models.BoltzmannMachine(3, edges=[(0, 1)])
    rbm = ge.models.RBM(3, 2)
    for model in (bm, rbm):
        for x in ([[0.5, 0.5, 0.5]], [[2.0, -1.0, 3.0]]):
            with pytest.raises(ValueError, match="x"):
                model.log_prob(torch.tensor(x))
        assert model.log_prob(torch.tensor([[0.0, 1.0, 1.0]])).item() < 0
    # Gaussian visible units take any real value: a density, not a mass
    assert torch.isfinite(ge.models.RBM(3, 2, visible="gaussian").log_prob(torch.tensor([[0.5, -2.0, 3.0]]))).all()


def test_boltzmann_machine_sample_checks_init():
    bm = ge.models.BoltzmannMachine(3)
    with pytest.raises(ValueError, match="init"):
        bm.sample(2, init=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="init"):
        bm.sample(2, init=torch.full((2, 3), 0.5))
    init = torch.ones(4, 3)
    out = bm.sample(4, sweeps=2, init=init, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3) and torch.equal(init, torch.ones(4, 3))  # the caller's tensor is untouched


def test_boltzmann_machine_save_load_keeps_the_persistent_chains(tmp_path, gen):
    data = (torch.rand(60, 4, generator=gen) < 0.5).float()
    bm = ge.models.BoltzmannMachine(4).fit(data, epochs=1, batch_size=30, n_chains=16, progress=False, generator=gen)
    path = tmp_path / "bm.pt"
    bm.save(path)
    loaded = ge.models.load(path)
    assert torch.equal(loaded._chain, bm._chain)
    # training resumes from the same chains: the same updates
    for m in (bm, loaded):
        m.fit(data, epochs=1, batch_size=30, n_chains=16, progress=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loaded.W, bm.W) and torch.equal(loaded.bias, bm.bias)
