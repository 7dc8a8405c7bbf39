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
    # a network that does not match the file's is an error, not reshaped to fit (in_features 4, weight 3)
    with pytest.raises(RuntimeError, match="size mismatch for net.weight"):
        ge.models.load(tmp_path / "w.pt", net=nn.Linear(4, 2))


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


class _Counted(_Gauss):
    """_Gauss plus fitted state kept as extra state (the hook older files lack)."""

    def __init__(self, dim):
        super().__init__(dim)
        self.fits_ = 0
        self.chain_ = torch.zeros(3000)  # a tensor in extra state: repr would print only its ends

    def fit(self, data, **kw):
        self.fits_ += 1
        return super().fit(data, **kw)

    def get_extra_state(self):
        return {"fits_": self.fits_, "chain_": self.chain_}

    def set_extra_state(self, state):
        self.fits_ = int(state["fits_"])
        self.chain_ = state["chain_"]


def _rewrite(path, out, edit, *, version=None):
    """A copy of a saved model file with `edit(doc)` applied and its checksum recomputed."""
    from genengine.models import base

    doc = torch.load(path, weights_only=True)
    edit(doc)
    if version == 1:
        doc["version"], doc["digest"] = 1, base._digest(doc["state_dict"])
    else:
        doc["digest"] = base._digest_doc(doc)
    torch.save(doc, out)
    return out


def test_checksum_covers_the_configuration_and_old_files_still_load(tmp_path, gen):
    data = torch.randn(50, 3, generator=gen)
    m = _Gauss(3, scale=2.0).fit(data)
    path = tmp_path / "g.pt"
    m.save(path)
    # a changed hyperparameter with the old (state-only) checksum: caught, not loaded as another model
    doc = torch.load(path, weights_only=True)
    doc["config"]["scale"] = 3.0
    torch.save(doc, tmp_path / "config.pt")
    with pytest.raises(ModelFileError, match="configuration or parameters"):
        _Gauss.load(tmp_path / "config.pt")
    doc = torch.load(path, weights_only=True)
    doc["class"] = "Wrapped"
    torch.save(doc, tmp_path / "class.pt")
    with pytest.raises(ModelFileError, match="checksum"):
        ge.models.load(tmp_path / "class.pt")
    # version 1 files (the checksum over the state dict only) load as before
    v1 = _rewrite(path, tmp_path / "v1.pt", lambda d: None, version=1)
    back = _Gauss.load(v1)
    assert back.get_config() == {"dim": 3, "scale": 2.0} and torch.equal(back.log_prob(data), m.log_prob(data))
    # a file saved before a family kept extra state loads, with the rebuilt default
    c = _Counted(3).fit(data).fit(data)
    c.save(tmp_path / "c.pt")
    assert _Counted.load(tmp_path / "c.pt").fits_ == 2
    old = _rewrite(tmp_path / "c.pt", tmp_path / "c_old.pt", lambda d: d["state_dict"].pop("_extra_state"))
    back = _Counted.load(old)
    assert back.fits_ == 0 and torch.equal(back.mean, c.mean)
    # a changed number in the middle of a tensor inside extra state is caught
    doc = torch.load(tmp_path / "c.pt", weights_only=True)
    doc["state_dict"]["_extra_state"]["chain_"][1500] = 1.0
    torch.save(doc, tmp_path / "c_chain.pt")
    with pytest.raises(ModelFileError, match="checksum"):
        _Counted.load(tmp_path / "c_chain.pt")
    # but a missing parameter is still an error
    bad = _rewrite(tmp_path / "c.pt", tmp_path / "c_bad.pt", lambda d: d["state_dict"].pop("mean"))
    with pytest.raises(RuntimeError, match="mean"):
        _Counted.load(bad)


@pytest.mark.parametrize("family", ["HMM", "PPCA", "FactorAnalysis"])
def test_fit_record_survives_save_load_and_old_state_dicts(family, tmp_path, gen):
    """FitRecord: n_iter_, converged_ and history_ come back from a file; a state dict written before
    they were kept lacks its `_extra_state` key, loads strictly, and leaves no record it did not hold."""
    x = torch.randn(60, 3, generator=gen, dtype=torch.float64) @ torch.randn(3, 3, generator=gen, dtype=torch.float64)
    make = {"HMM": lambda: ge.models.HMM(2, n_iter=5, tol=1e9, random_state=0),
            "PPCA": lambda: ge.models.PPCA(1, tol=1e9), "FactorAnalysis": lambda: ge.models.FactorAnalysis(1, tol=1e9)}
    m = make[family]().fit(x, progress=False)  # a huge tol stops after two iterations, converged
    assert (m.n_iter_, m.converged_, len(m.history_)) == (2, True, 2)
    m.save(tmp_path / "m.pt")
    back = ge.models.load(tmp_path / "m.pt")
    assert (back.n_iter_, back.converged_, back.history_) == (m.n_iter_, m.converged_, m.history_)
    old = {k: v for k, v in m.state_dict().items() if k != "_extra_state"}
    assert len(old) == len(m.state_dict()) - 1
    other = ge.models.load(tmp_path / "m.pt")
    other.load_state_dict(old)
    assert (other.n_iter_, other.converged_, other.history_) == (0, False, [])
    assert torch.equal(other.log_prob(x), m.log_prob(x))


def test_corrupted_zip_trailer_is_a_model_file_error(tmp_path):
    _Gauss(4).save(tmp_path / "g.pt")
    raw = bytearray((tmp_path / "g.pt").read_bytes())
    loc = raw.rfind(b"PK\x06\x07")  # the zip64 end-of-central-directory locator torch writes
    assert loc > 0
    raw[loc + 4] ^= 0x01  # zipfile.is_zipfile raises on this instead of answering False
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        ge.models.load(tmp_path / "bad.pt")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_load_keeps_the_saved_dtype(tmp_path, dtype, gen):
    m = _Gauss(5).fit(torch.randn(40, 5, generator=gen)).to(dtype)
    with torch.no_grad():
        m.mean.add_(torch.randn(5, generator=gen, dtype=torch.float64).to(dtype) * 1e-3)
    m.save(tmp_path / "g.pt")
    back = _Gauss.load(tmp_path / "g.pt")
    assert back.mean.dtype == dtype and back.log_std.dtype == dtype
    assert torch.equal(back.mean, m.mean) and torch.equal(back.log_std, m.log_std)
    flow = ge.models.RealNVP(2, layers=2, hidden=8).to(dtype)
    flow.save(tmp_path / "f.pt")
    fb = ge.models.load(tmp_path / "f.pt")
    for (k, a), (_, b) in zip(flow.state_dict().items(), fb.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    if dtype == torch.float64:
        x = torch.randn(6, 2, generator=gen, dtype=dtype)
        assert torch.equal(fb.log_prob(x), flow.log_prob(x))


def test_fitted_state_dict_loads_into_a_fresh_model(gen):
    x = torch.randn(120, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (120,), generator=gen)
    for make, fit in [(lambda: ge.models.GaussianNB(), lambda m: m.fit(x, y)),
                      (lambda: ge.models.GaussianMixture(2, random_state=0), lambda m: m.fit(x, progress=False)),
                      (lambda: ge.models.PPCA(1), lambda m: m.fit(x, progress=False))]:
        fitted = fit(make())
        fresh = make()
        fresh.load_state_dict(fitted.state_dict())
        assert torch.equal(fresh.log_prob(x), fitted.log_prob(x)), type(fitted).__name__
    # a buffer that is not an unfitted placeholder keeps torch's size check
    with pytest.raises(RuntimeError, match="size mismatch"):
        _Gauss(3).load_state_dict(_Gauss(4).state_dict())


def test_failed_save_leaves_no_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="path"):
        _Gauss(3).save(tmp_path / "dir.pt")
    m = _Gauss(3)
    m.save(tmp_path / "g.pt")
    before = (tmp_path / "g.pt").read_bytes()

    def failing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _Gauss(3, scale=5.0).save(tmp_path / "g.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.pt", "g.pt"]
    assert (tmp_path / "g.pt").read_bytes() == before


def test_check_data_errors():
    with pytest.raises(ValueError, match="x: contains NaN"):
        check_data(torch.tensor([[1.0, float("nan")]]), "x")
    with pytest.raises(ValueError, match="3 features"):
        check_data(torch.zeros(4, 2), "x", features=3)
    with pytest.raises(ValueError, match="at least 2"):
        check_data(torch.zeros(1, 2), "x", min_rows=2)
    with pytest.raises(TypeError, match="x: expected a tensor"):
        check_data(object(), "x")
    with pytest.raises(TypeError, match="x: expected real values"):
        check_data(torch.ones(3, 2, dtype=torch.complex64), "x", dtype=torch.float32)
    import numpy as np

    with pytest.raises(TypeError, match="x: expected real values"):
        check_data(np.ones((3, 2)) * (1 + 2j), "x", dtype=torch.float32)
    assert check_data([[0.1, 0.2]], "x", dtype=torch.float64).tolist() == [[0.1, 0.2]]  # float64 digits kept


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
        assert k == k2 and (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b), k  # extra state: plain data
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
