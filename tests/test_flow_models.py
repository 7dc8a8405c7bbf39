"""The flow families (ge.models.RealNVP, Glow, NeuralSplineFlow, MAF) and their layers: inverse undoes
forward, every log-determinant equals slogdet of the brute-force autograd Jacobian (whole flows,
D <= 16, in float64 through the fused kernels), sampling is reproducible, state round-trips, the
conditional variants use their context, and a neural spline flow learns two moons."""

import math

import pytest
import torch

import genengine as ge
from genengine.models import flow_layers as L


def _perturb(model, gen, scale=0.1):
    """Random parameters (the conditioners start at zero, i.e. as the identity)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _families(context=0):
    return {
        "RealNVP": lambda: ge.models.RealNVP(4, layers=4, hidden=16, context_features=context),
        "NSF-coupling": lambda: ge.models.NeuralSplineFlow(3, layers=3, hidden=16, bins=5, context_features=context),
        "NSF-autoregressive": lambda: ge.models.NeuralSplineFlow(4, layers=2, hidden=16, bins=6, autoregressive=True,
                                                                 context_features=context),
        "MAF": lambda: ge.models.MAF(5, layers=3, hidden=16, context_features=context),
        "Glow": lambda: ge.models.Glow((1, 4, 4), levels=2, steps=2, hidden=8, context_features=context),
    }


def _data(model, n, gen, dtype=torch.float32):
    shape = model._event_shape()
    return torch.randn(n, *shape, generator=gen, dtype=dtype)


@pytest.mark.parametrize("name", list(_families()))
def test_inverse_undoes_forward_and_logdets_cancel(name, gen):
    model = _families()[name]()
    x = _data(model, 33, gen)
    _perturb(model, gen)
    model.eval()
    with torch.no_grad():
        z, ld = model(x)
        x2, ld2 = model.inverse(z)
    assert z.shape[0] == 33 and ld.shape == (33,)
    torch.testing.assert_close(x2, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ld2, -ld, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(_families()))
def test_logdet_is_slogdet_of_the_jacobian(name, gen):
    """Whole flows in float64 (the cpp kernels' float64 path): log|det dz/dx| from the layers equals
    slogdet of the Jacobian that autograd builds through the fused backward kernels."""
    model = _families()[name]().double()
    x = _data(model, 3, gen, torch.float64)
    _perturb(model, gen, 0.2)
    model.eval()
    _, ld = model(x)
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: model(v)[0].reshape(-1), xi).reshape(-1, xi.numel())
        assert jac.shape[0] <= 16
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(logabs, ld[i], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(_families()))
def test_sampling_is_reproducible_and_state_round_trips(name, gen, tmp_path):
    model = _perturb(_families()[name](), gen)
    model.eval()
    a = model.sample(7, generator=torch.Generator().manual_seed(3))
    b = model.sample(7, generator=torch.Generator().manual_seed(3))
    c = model.sample(7, generator=torch.Generator().manual_seed(4))
    assert a.shape == (7, *model._event_shape())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(model.log_prob(a)).all()
    model.save(tmp_path / "flow.pt")
    again = ge.models.load(tmp_path / "flow.pt")
    assert type(again) is type(model)
    x = _data(model, 5, gen)
    with torch.no_grad():
        assert torch.equal(again.log_prob(x), model.log_prob(x))
    assert torch.equal(again.sample(7, generator=torch.Generator().manual_seed(3)), a)
    fresh = _families()[name]()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.log_prob(x), model.log_prob(x))


@pytest.mark.parametrize("name", list(_families(2)))
def test_conditional_variants_use_the_context(name, gen):
    model = _perturb(_families(2)[name](), gen, 0.15)
    model.eval()
    x = _data(model, 6, gen)
    c0, c1 = torch.zeros(6, 2), torch.ones(6, 2)
    with torch.no_grad():
        assert not torch.allclose(model.log_prob(x, c0), model.log_prob(x, c1))
        z, _ = model(x, c1)
        x2, _ = model.inverse(z, c1)
    torch.testing.assert_close(x2, x, rtol=1e-3, atol=1e-3)
    s = model.sample(4, context=torch.ones(2), generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, *model._event_shape())
    with pytest.raises(ValueError, match="context"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="context"):
        model.log_prob(x, torch.zeros(6, 3))
    assert type(model).conditional


def test_bad_inputs():
    with pytest.raises(ValueError, match="x"):
        ge.models.RealNVP(4).log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="context"):
        ge.models.MAF(3).log_prob(torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="shape"):
        ge.models.Glow((1, 6, 6), levels=2)
    with pytest.raises(ValueError, match="features"):
        ge.models.RealNVP(1)
    with pytest.raises(ValueError, match="n"):
        ge.models.MAF(3).sample(0)


def test_actnorm_data_dependent_init_and_invconv_cache(gen):
    x = torch.randn(500, 3, generator=gen) * torch.tensor([2.0, 0.5, 3.0]) + torch.tensor([1.0, -2.0, 0.0])
    act = L.ActNorm(3)
    y, ld = act(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, correction=0), torch.ones(3), atol=1e-4, rtol=0)
    assert bool(act.initialized)
    torch.testing.assert_close(ld, torch.full((500,), float(act.log_scale.detach().sum())))
    act2 = L.ActNorm(3)
    act2.load_state_dict(act.state_dict())
    assert torch.equal(act2(x)[0], y)  # the init state travels with the state dict

    conv = L.InvConv1x1(4, generator=gen)
    with torch.no_grad():
        w1, _ = conv._weights(True)
        w2, _ = conv._weights(True)
        assert w1 is w2  # cached while the parameters are unchanged
        torch.testing.assert_close(torch.linalg.slogdet(w1)[1], conv.log_s.sum())
    opt = torch.optim.SGD(conv.parameters(), lr=0.01)
    v = torch.randn(8, 4, generator=gen)
    conv(v)[0].square().sum().backward()
    opt.step()
    with torch.no_grad():
        w3, w3_inv = conv._weights(True)
        assert w3 is not w1 and not torch.equal(w3, w1)  # an optimiser step invalidates the cache
        torch.testing.assert_close(w3 @ w3_inv, torch.eye(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.linalg.slogdet(w3)[1], conv.log_s.sum(), atol=1e-5, rtol=0)


def test_made_is_autoregressive(gen):
    made = _perturb(L.MADE(5, 3, hidden=12, context_features=2), gen, 0.5)
    x = torch.randn(1, 5, generator=gen, requires_grad=True)
    out = made(x, torch.randn(1, 2, generator=gen))
    for i in range(5):
        (g,) = torch.autograd.grad(out[0, i].sum(), x, retain_graph=True)
        assert torch.all(g[0, i:] == 0), i  # output i never sees x_i or later


def test_neural_spline_flow_learns_two_moons():
    """Fits in well under a minute on the CPU; its held-out log-likelihood beats a fitted
    full-covariance Gaussian by a clear margin."""
    # small matmuls gain nothing from threads, and on a loaded shared machine their barriers cost ms
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit_two_moons()
    finally:
        torch.set_num_threads(threads)


def _fit_two_moons():
    g = torch.Generator().manual_seed(0)
    x, _ = ge.data.two_moons(3000, noise=0.05, generator=g)
    test, _ = ge.data.two_moons(2000, noise=0.05, generator=g)
    mean, std = x.mean(0), x.std(0)
    xs, ts = (x - mean) / std, (test - mean) / std
    torch.manual_seed(0)
    flow = ge.models.NeuralSplineFlow(2, layers=4, hidden=64, bins=8, tail_bound=4.0)
    losses = []
    flow.fit(xs, epochs=30, batch_size=256, lr=3e-3, progress=False,
             callback=lambda m, info: losses.append(info["loss"]))
    assert losses[-1] < losses[0]
    with torch.no_grad():
        flow_ll = float(flow.log_prob(ts).mean())
    gauss = torch.distributions.MultivariateNormal(xs.mean(0), covariance_matrix=torch.cov(xs.T))
    gauss_ll = float(gauss.log_prob(ts).mean())
    assert flow_ll > gauss_ll + 0.5, (flow_ll, gauss_ll)
    samples = flow.sample(2000, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(samples).all()
    assert math.isfinite(flow_ll)


@pytest.mark.parametrize("layer", ["maf", "spline"])
@pytest.mark.parametrize("context", [0, 3])
def test_autoregressive_inverse_equals_recomputing_every_pass(layer, context, gen):
    """The degree-ordered inverse (each hidden unit computed once) gives what the textbook inverse gives:
    D passes, each recomputing the whole MADE from the x filled so far, over odd sizes and hidden widths
    smaller than, equal to and larger than D - 1 (units of some degrees missing or repeated)."""
    from genengine.models import flow_layers as fl

    d = int(torch.randint(2, 9, (), generator=gen))
    for hidden in (max(1, d - 2), d - 1, 3 * d + 1):
        torch.manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
        mod = fl.MAFLayer(d, hidden, context) if layer == "maf" else fl.AutoregressiveSpline(d, hidden, context, bins=5)
        mod = mod.double()  # float64: the two orders of summation agree to rounding, not to float32's 1e-4
        for p in mod.parameters():
            p.data = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5
        n = 17
        y = torch.randn(n, d, generator=gen, dtype=torch.float64)
        ctx = torch.randn(n, context, generator=gen, dtype=torch.float64) if context else None
        with torch.no_grad():
            x, logdet = mod.inverse(y, ctx)
            xr = torch.zeros_like(y)
            for i in range(d):
                params = mod.made(xr, ctx)
                xi, _ = mod._transform(y[:, i:i + 1], params[:, i:i + 1], True)
                xr[:, i] = xi[:, 0]
            _, ldr = mod._transform(y, mod.made(xr, ctx), True)
            torch.testing.assert_close(x, xr, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(logdet, ldr, rtol=1e-9, atol=1e-9)
            y2, _ = mod(x, ctx)
            torch.testing.assert_close(y2, y, rtol=1e-8, atol=1e-8)


def test_sample_temperature_scales_the_latent(gen):
    model = _perturb(ge.models.RealNVP(4, layers=2, hidden=8), gen)
    model.eval()
    seed = int(torch.randint(0, 2**31, (), generator=gen))
    z = ge.ops.philox_normal(6 * 4, *ge.ops.draw_key(torch.Generator().manual_seed(seed)), device="cpu").view(6, 4)
    for t in (0.0, 0.7, 1.0):
        got = model.sample(6, generator=torch.Generator().manual_seed(seed), temperature=t)
        with torch.no_grad():
            want = model.inverse(z * t)[0]
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)


def test_maf_sampling_follows_parameter_changes_and_dtype_moves(gen):
    """MADE.ordered caches the relabelled weights: an optimiser step, an in-place edit and .double()
    must all reach the next sample."""
    model = _perturb(ge.models.MAF(3, layers=2, hidden=8), gen)
    model.eval()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = model.sample(4, generator=g())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    b = model.sample(4, generator=g())
    assert not torch.equal(a, b)
    z = ge.ops.philox_normal(12, *ge.ops.draw_key(g()), device="cpu").view(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(b)[0], z, rtol=1e-4, atol=1e-4)
    model.double()
    c = model.sample(4, generator=g())
    assert c.dtype == torch.float64
    torch.testing.assert_close(c, b.double(), rtol=1e-4, atol=1e-4)


# ---- input checks: empty batches, dtypes, non-finite values, Glow's flattened latent ----------------

@pytest.mark.parametrize("name", list(_families()))
def test_an_empty_batch_gives_empty_results(name):
    model = _families()[name]()
    empty = torch.zeros(0, *model._event_shape())
    with torch.no_grad():
        assert model.log_prob(empty).shape == (0,)
        z, logdet = model(empty)
        x, logdet_inv = model.inverse(z)
    assert logdet.shape == logdet_inv.shape == (0,) and x.shape == empty.shape


@pytest.mark.parametrize("name", list(_families()))
def test_inputs_are_converted_to_the_model_dtype(name, gen):
    model = _perturb(_families()[name](), gen)
    model.eval()
    x = _data(model, 5, gen, torch.float64)
    with torch.no_grad():
        from_float64 = model.log_prob(x)
        assert from_float64.dtype == torch.float32
        assert torch.equal(from_float64, model.log_prob(x.float()))
        model.double()
        # a list is built in the model's dtype, not rounded through float32 on the way
        assert torch.equal(model.log_prob(x.tolist()), model.log_prob(x))
    # converting complex values to the model's dtype would drop their imaginary part
    for complex_x in (x.to(torch.complex128), x.numpy().astype(complex)):
        with pytest.raises(TypeError, match="x: expected real values"):
            model.log_prob(complex_x)


@pytest.mark.parametrize("name", ["MAF", "NSF-autoregressive", "RealNVP"])
def test_a_float64_conditional_flow_takes_float64_context(name, gen):
    model = _perturb(_families(2)[name]().double(), gen)
    model.eval()
    x = _data(model, 4, gen, torch.float64)
    context = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z, _ = model(x, context)
        back, _ = model.inverse(z, context)
    assert z.dtype == back.dtype == torch.float64
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    assert model.log_prob(x, context).dtype == torch.float64
    assert model.sample(3, context=context[0], generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    with pytest.raises(TypeError, match="context: expected real values"):
        model.log_prob(x, context.to(torch.complex128))


@pytest.mark.parametrize("name", list(_families()))
def test_non_finite_inputs_raise_before_anything_changes(name, gen):
    model = _families()[name]()
    x = _data(model, 8, gen)
    nan_x = x.clone()
    nan_x.view(8, -1)[3, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for call in (model.log_prob, model.forward):
        with pytest.raises(ValueError, match="x: contains NaN or infinite values"):
            call(nan_x)
    with pytest.raises(ValueError, match="z: contains NaN"):
        model.inverse(nan_x)
    with pytest.raises(ValueError, match="data: contains NaN"):
        model.fit(nan_x, epochs=1, progress=False)
    # float64 values that a float32 model cannot hold would become inf there
    with pytest.raises(ValueError, match="x: contains NaN or infinite values .*float64"):
        model.log_prob(torch.full_like(x, 1e300, dtype=torch.float64))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    conditional = _families(2)[name]()
    with pytest.raises(ValueError, match="context: contains NaN"):
        conditional.log_prob(x, torch.full((8, 2), float("inf")))


def test_glow_inverse_checks_the_size_of_a_flattened_latent(gen):
    glow = ge.models.Glow((1, 4, 4), levels=1, steps=1, hidden=8)
    with pytest.raises(ValueError, match=r"z: expected shape \(N, 16\)"):
        glow.inverse(torch.randn(2, 15, generator=gen))
    z = torch.randn(2, 16, generator=gen)
    with torch.no_grad():
        from_list, _ = glow.inverse(z.tolist())
        flat, _ = glow.inverse(z)
    assert flat.shape == (2, 1, 4, 4) and torch.equal(from_list, flat)
