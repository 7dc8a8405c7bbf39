"""ge.models.DiffusionModel, UNet, MLPDenoiser and ge.data: the trained model generates the data.

The statistical tests train small MLP denoisers on the ring of 8 Gaussians (CPU, a few seconds each,
fixed seeds so a failure reproduces) and compare 2000 samples with fresh data: the energy distance
must be far below that of an untrained model and of plain noise, every mode must be populated and
the samples must sit on the ring. Shapes: points (N, 2); images (B, C, H, W); audio (B, C, L);
video (B, C, T, H, W).
"""

import math
import sys

import pytest
import torch

import genengine as ge
from genengine import data
from genengine.models import DiffusionModel, MLPDenoiser, UNet

RING_N = 4000


def energy_distance(a, b):
    """2 E|a - b| - E|a - a'| - E|b - b'| (zero iff the distributions agree)."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def mode_fractions(x, modes=8):
    nearest = torch.cdist(x, data.ring_centres(modes)).argmin(dim=1)
    return torch.bincount(nearest, minlength=modes).float() / x.shape[0]


def off_ring_fraction(x, radius=2.0, tol=0.3):
    return float(((x.norm(dim=1) - radius).abs() > tol).float().mean())


def _fit_ring(num_classes=None, seed=0, epochs=100):
    g = torch.Generator().manual_seed(seed)
    x, y = data.ring_of_gaussians(RING_N, generator=g)
    torch.manual_seed(seed)  # the denoiser's initial weights
    model = DiffusionModel(MLPDenoiser(2, num_classes=num_classes))
    return model.fit(x, labels=y if num_classes else None, epochs=epochs, batch_size=256, lr=2e-3, generator=g,
                     progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # these models are tiny (a (256, 128) matmul per layer): a second thread buys nothing, and when
    # the two cores are shared with other jobs, spinning OpenMP threads make a step ~10x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ring_model():
    return _fit_ring()


@pytest.fixture(scope="module")
def cond_ring_model():
    return _fit_ring(num_classes=8, seed=1)


# ------------------------------------------------------------------------------------------------
# the proof that it generates


@pytest.mark.parametrize("sampler,steps", [("ddim", 50), ("dpmpp_2m", 25)])
def test_trained_model_generates_the_ring(ring_model, sampler, steps):
    g = torch.Generator().manual_seed(123)
    fresh, _ = data.ring_of_gaussians(2000, generator=g)
    samples = ring_model.sample(2000, sampler=sampler, steps=steps, generator=g)
    assert samples.shape == (2000, 2) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all()

    torch.manual_seed(7)
    untrained = DiffusionModel(MLPDenoiser(2), sample_shape=(2,))
    d_trained = energy_distance(samples, fresh)
    d_untrained = energy_distance(untrained.sample(2000, sampler=sampler, steps=steps, generator=g), fresh)
    d_noise = energy_distance(torch.randn(2000, 2, generator=g), fresh)
    d_data = energy_distance(data.ring_of_gaussians(2000, generator=g)[0], fresh)  # sampling noise of the statistic
    threshold = 0.03
    assert d_trained < threshold, (d_trained, d_untrained, d_noise, d_data)
    assert d_untrained > 3 * threshold and d_noise > 3 * threshold, (d_trained, d_untrained, d_noise)

    fractions = mode_fractions(samples)
    assert fractions.min() >= 0.05, fractions  # every mode (1/8 = 12.5% each) is generated
    assert off_ring_fraction(samples) < 0.05
    assert off_ring_fraction(fresh) < 0.01  # the criterion itself holds for the data


def test_trained_model_loss_decreased(ring_model):
    assert len(ring_model.history) == 100
    assert ring_model.history[-1] < 0.6 * ring_model.history[0]


def test_guidance_lands_in_the_requested_mode(cond_ring_model):
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 3, 6]).repeat_interleave(200)
    samples = cond_ring_model.sample(600, sampler="ddim", steps=30, cond=labels, guidance_scale=3.0, generator=g)
    nearest = torch.cdist(samples, data.ring_centres()).argmin(dim=1)
    assert (nearest == labels).float().mean() > 0.95
    # guidance weight 0 keeps only the unconditional (null class) branch: the label no longer decides
    free = cond_ring_model.sample(600, sampler="ddim", steps=30, cond=labels, guidance_scale=0.0, generator=g)
    assert (torch.cdist(free, data.ring_centres()).argmin(dim=1) == labels).float().mean() < 0.3
    # a single int label, and the unconditional (null class) branch still covers the ring
    one = cond_ring_model.sample(100, sampler="euler", steps=30, cond=2, guidance_scale=2.0, generator=g)
    assert (torch.cdist(one, data.ring_centres()).argmin(dim=1) == 2).float().mean() > 0.95
    free = cond_ring_model.sample(2000, steps=30, generator=g)
    assert mode_fractions(free).min() >= 0.05


# ------------------------------------------------------------------------------------------------
# training targets (an oracle denoiser: the data is one point c, so the exact prediction is known)


class _Oracle(torch.nn.Module):
    def __init__(self, c, abar, prediction):
        super().__init__()
        self.register_buffer("c", c)
        self.abar, self.prediction = abar, prediction
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        a = self.abar[t.long()].reshape(-1, 1).float()
        eps = (x - a.sqrt() * self.c) / (1 - a).sqrt()
        if self.prediction == "epsilon":
            out = eps
        elif self.prediction == "v":
            out = a.sqrt() * eps - (1 - a).sqrt() * self.c
        else:
            out = self.c.expand_as(x)
        return out + 0 * self.dummy


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_training_target_and_sampling_match_the_prediction_type(prediction, gen):
    sched = ge.diffusion.NoiseSchedule.linear(1000)
    c = torch.tensor([0.7, -1.3])
    model = DiffusionModel(_Oracle(c, sched.alphas_cumprod, prediction), sched, prediction=prediction)
    batch = c.expand(64, 2).clone()
    assert float(model.loss(batch, generator=gen).detach()) < 1e-6
    wrong = DiffusionModel(_Oracle(c, sched.alphas_cumprod, "x0" if prediction != "x0" else "v"), sched, prediction=prediction)
    assert float(wrong.loss(batch, generator=gen).detach()) > 1e-2
    model.fit(batch, epochs=1, batch_size=64, generator=gen, progress=False, ema=None)
    samples = model.sample(16, sampler="ddim", steps=10, generator=gen)
    torch.testing.assert_close(samples, c.expand(16, 2), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------------
# UNet


@pytest.mark.parametrize("dims,shape", [(1, (2, 3, 16)), (2, (2, 3, 8, 12)), (3, (2, 2, 4, 8, 8))])
@pytest.mark.parametrize("num_classes", [None, 4])
def test_unet_forward_backward_shapes(dims, shape, num_classes):
    torch.manual_seed(0)
    net = UNet(shape[1], out_channels=5, base_channels=8, channel_mults=(1, 2), num_groups=4, num_classes=num_classes,
               dims=dims)
    x = torch.randn(shape, requires_grad=True)
    cond = torch.tensor([1, 4]) if num_classes else None  # 4 = the null class
    out = net(x, torch.tensor([0, 999]), cond)
    assert out.shape == (shape[0], 5, *shape[2:])
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # a scalar float t broadcasts like a (B,) tensor of it
    with torch.no_grad():
        torch.testing.assert_close(net(x, 17.5, cond), net(x, torch.full((shape[0],), 17.5), cond))
    if num_classes:  # the class embedding changes the output (once the zero-initialised convs have trained)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(std=0.2)
            assert not torch.allclose(net(x, 3, torch.tensor([0, 0])), net(x, 3, torch.tensor([1, 1])))


def test_unet_bad_inputs():
    net = UNet(3, base_channels=8, channel_mults=(1, 2, 2), num_groups=4)
    with pytest.raises(ValueError, match="x: spatial sizes"):
        net(torch.randn(1, 3, 10, 16), 0)
    with pytest.raises(ValueError, match="x: expected 3 channels"):
        net(torch.randn(1, 4, 16, 16), 0)
    with pytest.raises(ValueError, match=r"x: this UNet \(dims=2\)"):
        net(torch.randn(1, 3, 16), 0)
    with pytest.raises(ValueError, match="t: expected a scalar or shape"):
        net(torch.randn(2, 3, 16, 16), torch.zeros(3))
    with pytest.raises(ValueError, match="cond: this denoiser was built without num_classes"):
        net(torch.randn(1, 3, 16, 16), 0, torch.tensor([1]))
    cnet = UNet(3, base_channels=8, num_groups=4, num_classes=3)
    with pytest.raises(ValueError, match=r"cond: class labels must lie in \[0, 3\]"):
        cnet(torch.randn(1, 3, 8, 8), 0, torch.tensor([4]))
    with pytest.raises(TypeError, match="cond: expected integer class labels"):
        cnet(torch.randn(1, 3, 8, 8), 0, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="num_groups: 8 must divide"):
        UNet(3, base_channels=12)
    with pytest.raises(ValueError, match="dims"):
        UNet(3, dims=4)
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(3, channel_mults=())
    with pytest.raises(ValueError, match="in_channels"):
        UNet(0)


def test_unet_diffusion_model_fits_and_samples_images(gen):
    torch.manual_seed(0)
    images = torch.rand(8, 1, 8, 8, generator=gen) * 2 - 1
    labels = torch.arange(8) % 2
    model = DiffusionModel(UNet(1, base_channels=8, num_groups=4, num_classes=2), prediction="v")
    model.fit(images, labels=labels, epochs=1, batch_size=4, generator=gen, progress=False)
    assert model.sample_shape == (1, 8, 8) and len(model.history) == 1 and math.isfinite(model.history[0])
    for kw in ({}, {"cond": torch.tensor([0, 1]), "guidance_scale": 2.0}):
        out = model.sample(2, steps=3, generator=gen, **kw)
        assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_unet_audio_from_a_dataloader(gen):
    audio = torch.randn(6, 2, 16, generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(audio), batch_size=3)
    model = DiffusionModel(UNet(2, base_channels=8, num_groups=4, dims=1))
    model.fit(loader, epochs=2, generator=gen, progress=False)
    assert model.sample_shape == (2, 16) and len(model.history) == 2
    out = model.sample(3, sampler="euler_ancestral", steps=3, generator=gen)
    assert out.shape == (3, 2, 16) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# state dict round trip


def test_state_dict_round_trip_gives_identical_samples(ring_model):
    state = ring_model.state_dict()
    assert "ema_steps" in state and "betas" in state and "_sample_shape" in state
    assert any(k.startswith("ema_denoiser.") for k in state)
    fresh = DiffusionModel(MLPDenoiser(2))  # new random weights, no sample shape yet
    before = fresh.ema_denoiser.fc_out.weight.clone()
    fresh.load_state_dict(state)
    assert fresh.sample_shape == (2,)
    assert not torch.equal(before, fresh.ema_denoiser.fc_out.weight)
    for sampler in ("ddim", "ddpm"):
        a = ring_model.sample(64, sampler=sampler, steps=20, generator=torch.Generator().manual_seed(9))
        b = fresh.sample(64, sampler=sampler, steps=20, generator=torch.Generator().manual_seed(9))
        assert torch.equal(a, b)
    untrained = DiffusionModel(MLPDenoiser(2), sample_shape=(2,))
    c = untrained.sample(64, steps=20, generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(a, c)


def test_state_dict_with_another_schedule_is_rejected(ring_model):
    other = DiffusionModel(MLPDenoiser(2), ge.diffusion.NoiseSchedule.cosine(1000))
    with pytest.raises(ValueError, match="schedule"):
        other.load_state_dict(ring_model.state_dict())
    shaped = DiffusionModel(MLPDenoiser(2), sample_shape=(3,))
    with pytest.raises(ValueError, match="sample_shape"):
        shaped.load_state_dict(ring_model.state_dict())


# ------------------------------------------------------------------------------------------------
# fit options and bad input


def test_fit_options(gen):
    x, y = data.two_moons(64, generator=gen)
    model = DiffusionModel(MLPDenoiser(2, hidden=16, depth=1, num_classes=2))
    seen = []
    model.fit([(x[:32], y[:32]), (x[32:], y[32:])], epochs=5, progress=False, generator=gen,
              callback=lambda m, info: seen.append((info["epoch"], info["loss"])) or info["epoch"] == 2)
    assert [e for e, _ in seen] == [0, 1, 2] and model.history == [loss for _, loss in seen]
    assert int(model.ema_steps) == 6
    model.fit(x, labels=y, epochs=1, batch_size=64, ema=None, progress=False)
    assert int(model.ema_steps) == 0  # trained without EMA: sampling uses the raw weights
    assert len(model.history) == 4


def test_fit_progress_bar(capsys, monkeypatch, gen):
    x, _ = data.two_moons(32, generator=gen)
    model = DiffusionModel(MLPDenoiser(2, hidden=16, depth=1))
    model.fit(x, epochs=2, batch_size=16, progress=False)
    assert capsys.readouterr().err == ""
    model.fit(x, epochs=2, batch_size=16, progress=True)
    assert "fit" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # without tqdm: the plain stderr line
    model.fit(x, epochs=2, batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert "fit: 4/4" in err and "loss=" in err


def test_bad_inputs(ring_model, cond_ring_model, gen):
    x, y = data.ring_of_gaussians(32, generator=gen)
    with pytest.raises(ValueError, match=r"data: samples of shape \(3,\)"):
        ring_model.fit(torch.randn(32, 3), epochs=1, progress=False)
    with pytest.raises(ValueError, match="data: expected a batch of shape"):
        DiffusionModel(MLPDenoiser(2)).fit(torch.randn(32), epochs=1, progress=False)
    with pytest.raises(TypeError, match="data: expected floating-point"):
        DiffusionModel(MLPDenoiser(2)).fit(torch.ones(32, 2, dtype=torch.long), epochs=1, progress=False)
    with pytest.raises(ValueError, match="data: epoch 1 yielded no batches"):
        DiffusionModel(MLPDenoiser(2)).fit(iter([x]), epochs=2, progress=False)
    with pytest.raises(TypeError, match="data: each batch"):
        DiffusionModel(MLPDenoiser(2)).fit([(x, y, y)], epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels: this model is unconditional"):
        DiffusionModel(MLPDenoiser(2)).fit(x, labels=y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels: this model is class-conditional"):
        DiffusionModel(MLPDenoiser(2, num_classes=8)).fit(x, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"labels: expected class labels in \[0, 4\)"):
        DiffusionModel(MLPDenoiser(2, num_classes=4)).fit(x, labels=y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        DiffusionModel(MLPDenoiser(2)).fit(x, epochs=0)
    with pytest.raises(ValueError, match="ema"):
        DiffusionModel(MLPDenoiser(2)).fit(x, ema=1.0)
    for n in (0, -3):
        with pytest.raises(ValueError, match="n: expected a positive int"):
            ring_model.sample(n)
    with pytest.raises(TypeError, match="n: expected an int"):
        ring_model.sample(2.5)
    with pytest.raises(ValueError, match="sampler: expected one of"):
        ring_model.sample(4, sampler="heun")
    with pytest.raises(ValueError, match="guidance_scale: classifier-free guidance needs a class-conditional model"):
        ring_model.sample(4, guidance_scale=3.0)
    with pytest.raises(ValueError, match="cond: this model is unconditional"):
        ring_model.sample(4, cond=1)
    with pytest.raises(ValueError, match="guidance_scale: guidance needs cond"):
        cond_ring_model.sample(4, guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"cond: expected class labels in \[0, 8\)"):
        cond_ring_model.sample(4, cond=8)
    with pytest.raises(ValueError, match=r"cond: expected a class label or shape \(4,\)"):
        cond_ring_model.sample(4, cond=torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="sample shape is unknown"):
        DiffusionModel(MLPDenoiser(2)).sample(4)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionModel(MLPDenoiser(2), prediction="score")
    with pytest.raises(ValueError, match="num_classes: 3 does not match"):
        DiffusionModel(MLPDenoiser(2, num_classes=4), num_classes=3)
    with pytest.raises(ValueError, match="num_classes: 3 does not match the denoiser's num_classes None"):
        DiffusionModel(MLPDenoiser(2), num_classes=3)
    with pytest.raises(TypeError, match="denoiser"):
        DiffusionModel(lambda x, t, c: x)
    with pytest.raises(ValueError, match="x: expected shape"):
        MLPDenoiser(2)(torch.randn(4, 3), 0)


# ------------------------------------------------------------------------------------------------
# toy data


@pytest.mark.parametrize("make", [data.ring_of_gaussians, data.two_moons, data.checkerboard])
def test_toy_data_is_deterministic_and_typed(make):
    x1, y1 = make(500, generator=torch.Generator().manual_seed(3))
    x2, y2 = make(500, generator=torch.Generator().manual_seed(3))
    x3, _ = make(500, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (500, 2) and x1.dtype == torch.float32 and y1.shape == (500,) and y1.dtype == torch.int64
    with pytest.raises(ValueError, match="n: expected a positive int"):
        make(0)
    with pytest.raises(TypeError, match="generator"):
        make(5, generator=3)


def test_toy_data_geometry(gen):
    x, y = data.ring_of_gaussians(4000, modes=5, radius=3.0, std=0.1, generator=gen)
    centres = data.ring_centres(5, 3.0)
    assert (torch.cdist(x, centres).argmin(dim=1) == y).all()
    torch.testing.assert_close((x - centres[y]).std(dim=0), torch.full((2,), 0.1), atol=0.01, rtol=0)
    assert (torch.bincount(y, minlength=5).float() / 4000 - 0.2).abs().max() < 0.04

    x, y = data.two_moons(1001, noise=0.0, generator=gen)
    assert torch.bincount(y).tolist() == [501, 500]
    torch.testing.assert_close(x[y == 0].norm(dim=1), torch.ones(501))
    torch.testing.assert_close((x[y == 1] - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(500))
    assert (x[y == 0, 1] >= 0).all() and (x[y == 1, 1] <= 0.5).all()

    x, y = data.checkerboard(4000, generator=gen)
    cell = torch.floor(x + 2).long()
    assert ((x >= -2) & (x <= 2)).all() and ((cell.sum(dim=1) % 2) == 0).all()
    assert torch.unique(y).tolist() == list(range(8))
    with pytest.raises(ValueError, match="std"):
        data.ring_of_gaussians(5, std=-1.0)
    with pytest.raises(ValueError, match="modes"):
        data.ring_of_gaussians(5, modes=0)


# ------------------------------------------------------------------------------------------------
# non-finite data, and the loss history through save/load


def _tiny_model():
    return DiffusionModel(MLPDenoiser(2, hidden=16, depth=1))


def test_non_finite_data_raises_before_any_weight_changes(gen):
    model = _tiny_model().fit(torch.randn(16, 2, generator=gen), epochs=1, progress=False, generator=gen)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    x = torch.randn(16, 2, generator=gen)
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match="data: contains NaN or infinite values"):
        model.fit(x, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"data: contains NaN or infinite values \(batch 0 of epoch 0\)"):
        model.fit([x], epochs=1, progress=False)
    # finite in float64 but inf in the float32 that training uses
    with pytest.raises(ValueError, match="data: contains NaN or infinite values .*float32"):
        model.fit(torch.full((16, 2), 1e300, dtype=torch.float64), epochs=1, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert len(model.history) == 1
    with pytest.raises(ValueError, match="data: contains NaN"):
        _tiny_model().fit(torch.full((4, 2), float("inf")), epochs=1, progress=False)


def test_history_survives_save_and_load(tmp_path, monkeypatch, gen):
    model = _tiny_model().fit(torch.randn(16, 2, generator=gen), epochs=2, progress=False, generator=gen)
    assert len(model.history) == 2
    model.save(tmp_path / "model.pt")
    again = DiffusionModel.load(tmp_path / "model.pt", denoiser=MLPDenoiser(2, hidden=16, depth=1))
    assert again.history == model.history and again.sample_shape == (2,)
    fresh = _tiny_model()
    fresh.load_state_dict(model.state_dict())
    assert fresh.history == model.history
    # a file from before the history was saved (no extra state in its state dict) still loads
    monkeypatch.setattr(DiffusionModel, "get_extra_state", torch.nn.Module.get_extra_state)
    assert not any(k.endswith("_extra_state") for k in model.state_dict())
    model.save(tmp_path / "old.pt")
    monkeypatch.undo()
    old = DiffusionModel.load(tmp_path / "old.pt", denoiser=MLPDenoiser(2, hidden=16, depth=1))
    assert old.history == [] and old.sample_shape == (2,)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(old.sample(4, steps=3, generator=g), model.sample(4, steps=3, generator=torch.Generator().manual_seed(1)))
