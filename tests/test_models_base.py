"""The model protocol (genengine.models.base): the family registry, saving and loading, and the
errors for truncated, corrupted and foreign files."""

import io
import os
import zipfile

import pytest
import torch
from torch import nn

import genengine as ge
from genengine.models.base import GenerativeModel, ModelFileError, check_data


class _Gauss(GenerativeModel):
    """A diagonal Gaussian: the smallest family that exercises the protocol."""

    likelihood = "exact"

    def __init__(self, dim, *, scale=1.0):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.register_buffer("log_std", torch.full((dim,), float(scale)).log())

    def fit(self, data, *, progress=True, callback=None):
        data = check_data(data, ndim=2, features=self.mean.numel(), dtype=torch.float32)
        with torch.no_grad():
            self.mean.copy_(data.mean(0))
            self.log_std.copy_(data.std(0).log())
        return self

    def sample(self, n, *, generator=None):
        z = torch.randn(n, self.mean.numel(), generator=generator)
        return self.mean.detach() + z * self.log_std.exp()

    def log_prob(self, x):
        return torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(x).sum(-1)


class Wrapped(GenerativeModel):
    likelihood = None

    def __init__(self, net, width=3):
        super().__init__()
        self.net = net
        self.width = width

    def sample(self, n, *, generator=None):
        return self.net(torch.randn(n, self.width, generator=generator))


def test_available_lists_families_with_capabilities():
    fams = ge.models.available()
    assert "DiffusionModel" in fams and fams["DiffusionModel"]["sample"] and fams["DiffusionModel"]["fit"]
    assert "_Gauss" not in fams  # private classes stay out of the registry
    assert fams["Wrapped"]["likelihood"] is None and not fams["Wrapped"]["fit"]


def test_save_load_bit_identical(tmp_path, gen):
    data = torch.randn(101, 5, generator=gen) * 3 + 1
    m = _Gauss(5, scale=2.0).fit(data)
    path = tmp_path / "g.pt"
    m.save(path)
    back = _Gauss.load(path)
    assert back.get_config() == {"dim": 5, "scale": 2.0}
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    assert torch.equal(m.sample(7, generator=torch.Generator().manual_seed(seed)),
                       back.sample(7, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(m.log_prob(data), back.log_prob(data))


def test_networks_are_passed_again_at_load(tmp_path):
    m = Wrapped(nn.Linear(3, 2), width=3)
    m.save(tmp_path / "w.pt")
    with pytest.raises(TypeError, match="net"):
        Wrapped.load(tmp_path / "w.pt")
    back = ge.models.load(tmp_path / "w.pt", net=nn.Linear(3, 2))
    assert isinstance(back, Wrapped) and torch.equal(back.net.weight, m.net.weight)
    with pytest.raises(ModelFileError, match="Wrapped"):
        _Gauss.load(tmp_path / "w.pt")


def test_truncated_corrupted_and_foreign_files(tmp_path):
    m = _Gauss(4)
    path = tmp_path / "g.pt"
    m.save(path)
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="trunc"):
        _Gauss.load(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a genengine model file"):
        _Gauss.load(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError):
        ge.models.load(tmp_path / "text.pt")
    # flip one parameter byte inside the archive: the checksum catches it
    doc = torch.load(io.BytesIO(raw), weights_only=True)
    doc["state_dict"]["mean"] = doc["state_dict"]["mean"] + 1
    torch.save(doc, tmp_path / "tampered.pt")
    with pytest.raises(ModelFileError, match="checksum"):
        _Gauss.load(tmp_path / "tampered.pt")
    with pytest.raises(FileNotFoundError, match="missing"):
        _Gauss.load(tmp_path / "missing.pt")
    assert zipfile.is_zipfile(path) and not any(p.name.startswith("g.pt.tmp") for p in tmp_path.iterdir())
    assert os.path.getsize(path) > 0


def test_check_data_errors():
    with pytest.raises(ValueError, match="x: contains NaN"):
        check_data(torch.tensor([[1.0, float("nan")]]), "x")
    with pytest.raises(ValueError, match="3 features"):
        check_data(torch.zeros(4, 2), "x", features=3)
    with pytest.raises(ValueError, match="at least 2"):
        check_data(torch.zeros(1, 2), "x", min_rows=2)
    with pytest.raises(TypeError, match="x: expected a tensor"):
        check_data(object(), "x")


def test_diffusion_model_save_load_gives_bit_identical_samples(tmp_path, gen):
    # the schedule is a NoiseSchedule object; it is saved as its betas / alphas_cumprod
    x = torch.randn(64, 2, generator=gen)
    sched = ge.diffusion.NoiseSchedule.scaled_linear(200)
    m = ge.models.DiffusionModel(ge.models.MLPDenoiser(2, hidden=16, depth=1), sched).fit(
        x, epochs=2, batch_size=32, progress=False, generator=gen)
    m.save(tmp_path / "d.pt")
    back = ge.models.load(tmp_path / "d.pt", denoiser=ge.models.MLPDenoiser(2, hidden=16, depth=1))
    assert torch.equal(back.schedule.alphas_cumprod, sched.alphas_cumprod) and back.schedule.kind == "scaled_linear"
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    s1 = m.sample(5, steps=4, generator=torch.Generator().manual_seed(seed))
    s2 = back.sample(5, steps=4, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(s1, s2)
    # the default schedule (None) round-trips too
    d = ge.models.DiffusionModel(ge.models.MLPDenoiser(2, hidden=8, depth=1), sample_shape=(2,))
    d.save(tmp_path / "d2.pt")
    d2 = ge.models.load(tmp_path / "d2.pt", denoiser=ge.models.MLPDenoiser(2, hidden=8, depth=1))
    assert torch.equal(d.sample(3, steps=2, generator=torch.Generator().manual_seed(1)),
                       d2.sample(3, steps=2, generator=torch.Generator().manual_seed(1)))
