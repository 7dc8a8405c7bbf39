"""Whole sampling loops (genengine.diffusion) against the published algorithms and diffusers.

1. Each sampler's full trajectory equals a plain-PyTorch float64 transcription of its paper
   (DDPM: Ho et al. 2020, Alg. 2; DDIM: Song et al. 2021, eq. 12; Euler / Euler ancestral: Karras
   et al. 2022, Alg. 2 and k-diffusion's ancestral step; DPM-Solver++(2M): Lu et al. 2022, Alg. 2)
   run on the sampler's own timesteps with a dummy model, to 1e-5 (relative to the sample's scale)
   in float32, on every CPU backend; the stochastic ones get the same Philox noise.
2. `from_diffusers_config` gives the timesteps and trajectory of the diffusers scheduler with that
   config (its noise replaced by ours through its `randn_tensor`).
3. Guidance batches one model call per step, every prediction type, determinism by seed, a loop
   that never reads tensors back to the host, and bad inputs.
"""

import math

import pytest
import torch
from conftest import CPU_BACKENDS

import genengine as ge
from genengine.diffusion import DDIM, DDPM, DPMSolverPP2M, Euler, EulerAncestral, NoiseSchedule
from genengine.ops import rng
from genengine.reference.diffusion import dynamic_threshold

PREDICTIONS = ["epsilon", "v", "x0"]
SHAPE = (3, 2, 5, 7)


def dummy_model(x, t, cond=None):
    """A smooth, timestep-dependent stand-in for a denoiser (bounded output)."""
    tt = t.to(torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    out = 0.6 * torch.tanh(x) + 0.3 * torch.sin(tt / 150.0) * x.flip(-1).tanh() + 0.05
    if cond is not None:
        out = out + 0.1 * cond.reshape(-1, *([1] * (x.dim() - 1))).to(out.dtype)
    return out


def _noise_source(seed):
    """The noise the samplers draw: one Philox key per noisy step from a generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)

    def noise(shape):
        s, o = rng.draw_key(g, "cpu")
        return ge.ops.philox_normal(math.prod(shape), s, o, backend="torch").reshape(shape).double()

    return noise


def _to_eps_x0_vp(prediction, out, x, a):
    """(eps, x0) from a VP model output at cumulative alpha a."""
    sa, sb = math.sqrt(a), math.sqrt(1 - a)
    if prediction == "epsilon":
        return out, (x - sb * out) / sa
    if prediction == "v":
        return sa * out + sb * x, sa * x - sb * out
    return (x - sa * out) / sb, out


# ----------------------------------------------------------------------------------------------
# float64 transcriptions of the papers, on the sampler's timesteps / sigmas


def ref_ddpm(smp, x_T, model, noise):
    acp = smp.schedule.alphas_cumprod
    ts = smp.timesteps.tolist()
    x = x_T.double()
    for i, t in enumerate(ts):
        a_t = float(acp[t])
        a_prev = float(acp[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        alpha = a_t / a_prev
        beta = 1 - alpha
        out = model(x.float(), torch.full((x.shape[0],), t), None).double()
        eps, _ = _to_eps_x0_vp(smp.prediction, out, x, a_t)
        # Ho et al. Alg. 2: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z
        x = (x - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(alpha)
        if a_prev < 1.0:
            x = x + math.sqrt((1 - a_prev) / (1 - a_t) * beta) * noise(x.shape)
    return x


def ref_ddim(smp, x_T, model, noise, eta):
    acp = smp.schedule.alphas_cumprod
    T, n = smp.schedule.num_train_timesteps, smp.steps
    x = x_T.double()
    for t in smp.timesteps.tolist():
        a_t = float(acp[t])
        prev = t - T // n
        a_prev = float(acp[prev]) if prev >= 0 else 1.0
        out = model(x.float(), torch.full((x.shape[0],), t), None).double()
        eps, x0 = _to_eps_x0_vp(smp.prediction, out, x, a_t)
        # Song et al. eq. 12 with sigma_t(eta) of eq. 16
        s = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - s * s) * eps
        if s > 0:
            x = x + s * noise(x.shape)
    return x


def _denoised(prediction, out, x, sigma):
    """Karras' D(x; sigma) from a model that saw x / sqrt(sigma^2 + 1)."""
    if prediction == "epsilon":
        return x - sigma * out
    if prediction == "v":
        return x / (sigma**2 + 1) - sigma / math.sqrt(sigma**2 + 1) * out
    return out


def ref_euler(smp, x_T, model, noise, ancestral, threshold=None):
    sig = smp.sigmas.double().tolist()
    x = x_T.double() * smp.init_noise_sigma
    for i, t in enumerate(smp.timesteps.tolist()):
        s, sn = sig[i], sig[i + 1]
        out = model((x / math.sqrt(s * s + 1)).float(), torch.full((x.shape[0],), t), None).double()
        x0 = _denoised(smp.prediction, out, x, s)
        if threshold is not None:
            x0 = dynamic_threshold(x0, *threshold)
        d = (x - x0) / s
        if not ancestral:  # Karras Alg. 2 without churn
            x = x + (sn - s) * d
            continue
        up = math.sqrt(sn**2 * (s**2 - sn**2) / s**2)
        down = math.sqrt(sn**2 - up**2)
        x = x + (down - s) * d + up * noise(x.shape)
    return x


def ref_dpmpp_2m(smp, x_T, model, final_first_order=True):
    """Lu et al. 2022 (DPM-Solver++(2M), Alg. 2) in VP space: alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma alpha."""
    sig = smp.sigmas.double().tolist()
    n = smp.steps
    x = x_T.double()  # VP noise
    old_x0, h_last = None, None
    for i, t in enumerate(smp.timesteps.tolist()):
        s, sn = sig[i], sig[i + 1]
        alpha_s, alpha_n = 1 / math.sqrt(1 + s * s), 1 / math.sqrt(1 + sn * sn)
        out = model(x.float(), torch.full((x.shape[0],), t), None).double()
        x0 = _denoised(smp.prediction, out, x / alpha_s, s)
        if sn == 0:
            x = x0
            break
        lam_s, lam_n = -math.log(s), -math.log(sn)
        h = lam_n - lam_s
        if old_x0 is None or (i == n - 1 and final_first_order):
            d = x0
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * old_x0
        x = (sn * alpha_n) / (s * alpha_s) * x - alpha_n * math.expm1(-h) * d
        old_x0, h_last = x0, h
    return x


def _check_close(got, want, tol=1e-5):
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} (scale {scale:.3g})"


SCHEDULES = {
    "linear": NoiseSchedule.linear(),
    "scaled_linear": NoiseSchedule.scaled_linear(),
    "cosine": NoiseSchedule.cosine(),
}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddpm_matches_ho_et_al(backend, prediction, gen):
    steps = 9 if backend == "triton" else 23
    smp = DDPM(SCHEDULES["linear"], steps, prediction=prediction, backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    seed = int(torch.randint(2**31, (), generator=gen))
    got = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(seed))
    _check_close(got, ref_ddpm(smp, x_T, dummy_model, _noise_source(seed)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_song_et_al(backend, prediction, eta, gen):
    steps = 8 if backend == "triton" else 25
    smp = DDIM(SCHEDULES["scaled_linear"], steps, prediction=prediction, eta=eta, timestep_spacing="trailing",
               backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    got = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(3))
    _check_close(got, ref_ddim(smp, x_T, dummy_model, _noise_source(3), eta))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("karras", [False, True])
def test_euler_matches_karras_et_al(backend, prediction, karras, gen):
    steps = 7 if backend == "triton" else 30
    smp = Euler(SCHEDULES["scaled_linear"], steps, prediction=prediction, use_karras_sigmas=karras, backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    _check_close(smp.sample(dummy_model, x_T), ref_euler(smp, x_T, dummy_model, None, ancestral=False))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_euler_ancestral_matches_karras_et_al(backend, prediction, spacing, gen):
    steps = 7 if backend == "triton" else 30
    smp = EulerAncestral(SCHEDULES["linear"], steps, prediction=prediction, timestep_spacing=spacing, steps_offset=1,
                         backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    got = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(11))
    _check_close(got, ref_euler(smp, x_T, dummy_model, _noise_source(11), ancestral=True))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps,karras,final", [(20, False, "zero"), (10, True, "zero"), (16, False, "sigma_min")])
def test_dpmpp_2m_matches_lu_et_al(backend, prediction, steps, karras, final, gen):
    if backend == "triton":
        steps = min(steps, 6)
    smp = DPMSolverPP2M(SCHEDULES["cosine" if karras else "scaled_linear"], steps, prediction=prediction,
                        use_karras_sigmas=karras, final_sigmas_type=final, backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    final_first_order = final == "zero" or steps < 15
    want = ref_dpmpp_2m(smp, x_T, dummy_model, final_first_order)
    _check_close(smp.sample(dummy_model, x_T), want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dynamic_thresholding_in_sigma_space(backend, gen):
    """Imagen's dynamic thresholding on the Euler ancestral x0 (diffusers has it only for DDPM, DDIM
    and DPM-Solver++, compared in test_samplers_diffusers.py)."""
    steps = 5 if backend == "triton" else 20
    smp = EulerAncestral(SCHEDULES["linear"], steps, prediction="x0", thresholding=True, dynamic_thresholding_ratio=0.9,
                         sample_max_value=1.3, backend=backend)
    x_T = torch.randn(SHAPE, generator=gen)
    wide = lambda x, t, c: 3.0 * dummy_model(x, t, c)  # noqa: E731  (x0 predictions beyond the threshold)
    got = smp.sample(wide, x_T, generator=torch.Generator().manual_seed(4))
    _check_close(got, ref_euler(smp, x_T, wide, _noise_source(4), ancestral=True, threshold=(0.9, 1.3)))
    assert got.abs().max() <= 1.0 + 1e-5  # the last step lands on the thresholded x0, which lies in [-1, 1]


def test_dpmpp_2m_lower_order_final_toggles_the_last_step(gen):
    x_T = torch.randn(SHAPE, generator=gen)
    kw = dict(final_sigmas_type="sigma_min")
    a = DPMSolverPP2M(SCHEDULES["linear"], 10, lower_order_final=True, **kw).sample(dummy_model, x_T)
    b = DPMSolverPP2M(SCHEDULES["linear"], 10, lower_order_final=False, **kw).sample(dummy_model, x_T)
    smp = DPMSolverPP2M(SCHEDULES["linear"], 10, lower_order_final=False, **kw)
    _check_close(b, ref_dpmpp_2m(smp, x_T, dummy_model, final_first_order=False))
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------
# guidance, clipping, determinism, sync-freedom


class Recorder:
    def __init__(self, fn=dummy_model):
        self.fn, self.calls = fn, []

    def __call__(self, x, t, cond):
        self.calls.append((tuple(x.shape), t.clone(), None if cond is None else cond.clone()))
        return self.fn(x, t, cond)


@pytest.mark.parametrize("cls", [DDIM, Euler, DPMSolverPP2M])
def test_guidance_is_one_batched_model_call_per_step(cls, gen):
    smp = cls(SCHEDULES["scaled_linear"], 6)
    x_T = torch.randn(SHAPE, generator=gen)
    cond, uncond = torch.randn(3, generator=gen), torch.zeros(3)
    rec = Recorder()
    got = smp.sample(rec, x_T, guidance_scale=4.5, cond=cond, uncond=uncond)
    assert len(rec.calls) == 6
    assert all(shape == (6,) + SHAPE[1:] for shape, _, _ in rec.calls)
    assert torch.equal(rec.calls[0][2], torch.cat([uncond, cond]))

    # the same loop with the guided prediction formed by hand and no guidance in the sampler
    def guided(x, t, _):
        u, c = dummy_model(x, t, uncond), dummy_model(x, t, cond)
        return u + 4.5 * (c - u)

    _check_close(got, smp.sample(guided, x_T).double(), tol=2e-6)


def test_per_sample_guidance_weights(gen):
    smp = DDIM(SCHEDULES["linear"], 5)
    x_T = torch.randn(SHAPE, generator=gen)
    cond, uncond = torch.randn(3, generator=gen), torch.zeros(3)
    w = torch.tensor([1.0, 3.0, 7.5])
    got = smp.sample(dummy_model, x_T, guidance_scale=w, cond=cond, uncond=uncond)
    for b in range(3):
        one = smp.sample(dummy_model, x_T[b:b + 1], guidance_scale=float(w[b]), cond=cond[b:b + 1], uncond=uncond[b:b + 1])
        _check_close(got[b:b + 1], one.double(), tol=2e-6)


def test_clip_sample_clamps_x0(gen):
    x_T = torch.randn(SHAPE, generator=gen)
    big = lambda x, t, c: 5.0 * torch.ones_like(x)  # noqa: E731  (x0 prediction far outside [-1, 1])
    out = DDIM(SCHEDULES["linear"], 10, prediction="x0", clip_sample=True, clip_sample_range=1.5).sample(big, x_T)
    assert torch.allclose(out, torch.full_like(out, 1.5), atol=1e-5)
    out = DDIM(SCHEDULES["linear"], 10, prediction="x0").sample(big, x_T)
    assert torch.allclose(out, torch.full_like(out, 5.0), atol=1e-4)


@pytest.mark.parametrize("cls", [DDPM, EulerAncestral, DDIM])
def test_determinism_by_seed(cls, gen):
    kw = {"eta": 1.0} if cls is DDIM else {}
    smp = cls(SCHEDULES["linear"], 8, **kw)
    x_T = torch.randn(SHAPE, generator=gen)
    a = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(1))
    b = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(1))
    c = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(ge.diffusion.SAMPLERS))
def test_loop_never_reads_tensors_back(name, gen, monkeypatch):
    """The loop must not synchronise: no .item(), .tolist(), bool() or float() of a tensor inside it."""
    smp = ge.diffusion.SAMPLERS[name](SCHEDULES["linear"], 6)
    x_T = torch.randn(SHAPE, generator=gen)
    cond, uncond = torch.randn(3, generator=gen), torch.zeros(3)
    g = torch.Generator().manual_seed(0)

    def forbidden(*a, **k):
        raise AssertionError("the sampling loop read a tensor back to the host")

    for attr in ("item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    out = smp.sample(dummy_model, x_T, guidance_scale=2.0, cond=cond, uncond=uncond, generator=g)
    monkeypatch.undo()
    assert out.shape == x_T.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", ["ddpm", "euler_ancestral", "ddim"])
def test_key_table_loop_equals_the_generator_loop(name, backend, gen):
    """What a CUDA graph replays: the noise keys read from a device table, written before the
    replay from the generator, give the eager loop's result and leave the generator in its state."""
    kw = {"eta": 0.8} if name == "ddim" else {}
    smp = ge.diffusion.SAMPLERS[name](SCHEDULES["linear"], 5 if backend == "triton" else 9, backend=backend, **kw)
    x_T = torch.randn(SHAPE, generator=gen)
    cond, uncond = torch.randn(3, generator=gen), torch.zeros(3)
    eager_gen, table_gen = torch.Generator().manual_seed(21), torch.Generator().manual_seed(21)
    eager = smp.sample(dummy_model, x_T, guidance_scale=2.5, cond=cond, uncond=uncond, generator=eager_gen)
    keys = smp._key_table(table_gen, x_T.device)
    replayed = smp._loop(dummy_model, x_T * smp._init_scale, 2.5, torch.cat([uncond, cond]), None, keys, False)
    assert torch.equal(replayed, eager)
    assert torch.equal(eager_gen.get_state(), table_gen.get_state())


def test_progress_bar_goes_to_stderr(capsys):
    DDIM(SCHEDULES["linear"], 4).sample(dummy_model, torch.zeros(1, 3), progress=True)
    assert "4" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# schedules and timesteps


def test_schedules_match_their_definitions():
    lin = NoiseSchedule.linear(1000, 1e-4, 0.02)
    assert torch.allclose(lin.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(lin.alphas_cumprod, torch.cumprod(1 - lin.betas, 0), rtol=1e-5)
    sl = NoiseSchedule.scaled_linear(1000, 0.00085, 0.012)
    assert torch.allclose(sl.betas.sqrt(), torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64), atol=1e-7)
    cos = NoiseSchedule.cosine(1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(float(cos.alphas_cumprod[499]) - f(500) / f(0)) < 1e-5
    assert float(cos.betas.max()) <= 0.999 + 1e-7
    fb = NoiseSchedule.from_betas([0.1, 0.2, 0.3])
    assert torch.allclose(fb.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))
    assert torch.allclose(fb.sigmas, ((1 - fb.alphas_cumprod) / fb.alphas_cumprod).sqrt())


@pytest.mark.parametrize("spacing,offset,want", [
    ("leading", 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
    ("trailing", 0, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", 0, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
])
def test_timestep_spacing(spacing, offset, want):
    assert DDIM(SCHEDULES["linear"], 10, timestep_spacing=spacing, steps_offset=offset).timesteps.tolist() == want


def test_sigma_samplers_start_from_the_right_noise_level():
    e = Euler(SCHEDULES["linear"], 10)
    assert math.isclose(e.init_noise_sigma, float(e.sigmas[0]), rel_tol=1e-6)
    e = Euler(SCHEDULES["linear"], 10, timestep_spacing="leading")
    assert math.isclose(e.init_noise_sigma, math.sqrt(float(e.sigmas[0]) ** 2 + 1), rel_tol=1e-6)
    assert float(e.sigmas[-1]) == 0.0
    k = Euler(SCHEDULES["scaled_linear"], 12, use_karras_sigmas=True)
    s = k.sigmas[:-1].double()
    inv = s ** (1 / 7)
    assert torch.allclose(inv[1:] - inv[:-1], (inv[1] - inv[0]).expand(11), rtol=1e-3)  # evenly spaced in sigma^(1/rho)


# ----------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs(gen):
    s = SCHEDULES["linear"]
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="steps"):
        DDIM(s, 1001)
    with pytest.raises(ValueError, match="steps"):
        DDIM(s, 0)
    with pytest.raises(ValueError, match="timestep_spacing"):
        Euler(s, 10, timestep_spacing="uniform")
    with pytest.raises(ValueError, match="prediction"):
        DDIM(s, 10, prediction="score")
    with pytest.raises(TypeError, match="schedule"):
        DDIM([0.1, 0.2], 10)
    with pytest.raises(ValueError, match="steps_offset"):
        DDIM(s, 10, steps_offset=200)
    with pytest.raises(ValueError, match="model"):
        DDIM(s, 4).sample(lambda x, t, c: x[:1], x)
    with pytest.raises(ValueError, match="guidance_scale"):
        DDIM(s, 4).sample(dummy_model, x, guidance_scale=-1.0, cond=torch.ones(2), uncond=torch.zeros(2))
    with pytest.raises(ValueError, match="uncond"):
        DDIM(s, 4).sample(dummy_model, x, guidance_scale=3.0, cond=torch.ones(2))
    with pytest.raises(ValueError, match="cond"):
        DDIM(s, 4).sample(dummy_model, x, guidance_scale=3.0, cond=torch.ones(3), uncond=torch.zeros(3))
    with pytest.raises(TypeError, match="model"):
        DDIM(s, 4).sample("unet", x)
    with pytest.raises(TypeError, match="x_T"):
        DDIM(s, 4).sample(dummy_model, [1.0, 2.0])
    with pytest.raises(ValueError, match="cuda_graph"):
        DDIM(s, 4).sample(dummy_model, x, cuda_graph=True)
    with pytest.raises(ValueError, match="eta"):
        DDIM(s, 4, eta=-0.5)
    with pytest.raises(ValueError, match="solver_order"):
        DPMSolverPP2M(s, 4, solver_order=3)
    with pytest.raises(ValueError, match="final_sigmas_type"):
        Euler(s, 4, final_sigmas_type="one")
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule.linear(1000, -0.1, 0.02)
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule.from_betas([0.1, 1.5])


# ----------------------------------------------------------------------------------------------
# CUDA: no host synchronisation, and whole-loop CUDA graphs (run with `pytest -m gpu`)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("name", sorted(ge.diffusion.SAMPLERS))
def test_cuda_loop_does_not_synchronise(name, backend):
    smp = ge.diffusion.SAMPLERS[name](SCHEDULES["scaled_linear"], 12, backend=backend)
    x_T = torch.randn(2, 4, 16, 16, device="cuda")
    cond, uncond = torch.randn(2, device="cuda"), torch.zeros(2, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    kw = dict(guidance_scale=3.0, cond=cond, uncond=uncond, generator=g)
    smp.sample(dummy_model, x_T, **kw)  # first call: uploads the timesteps once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = smp.sample(dummy_model, x_T, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("name", sorted(ge.diffusion.SAMPLERS))
def test_cuda_graph_replays_the_eager_loop(name, backend):
    smp = ge.diffusion.SAMPLERS[name](SCHEDULES["scaled_linear"], 10, backend=backend)
    cond, uncond = torch.randn(2, device="cuda"), torch.zeros(2, device="cuda")
    for seed in (0, 1):  # the first call captures, the second replays with new noise and inputs
        x_T = torch.randn(2, 4, 16, 16, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed))
        kw = dict(guidance_scale=3.0, cond=cond, uncond=uncond)
        eager = smp.sample(dummy_model, x_T, generator=torch.Generator(device="cuda").manual_seed(7 + seed), **kw)
        graphed = smp.sample(dummy_model, x_T, generator=torch.Generator(device="cuda").manual_seed(7 + seed),
                             cuda_graph=True, **kw)
        torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
    assert len(smp._graphs) == 1


@pytest.mark.gpu
def test_cuda_graph_with_a_unet():
    unet = ge.models.UNet(4, base_channels=32, num_classes=3).cuda().eval()
    smp = DDIM(SCHEDULES["scaled_linear"], 20)
    x_T = torch.randn(2, 4, 16, 16, device="cuda")
    cond, uncond = torch.tensor([0, 2], device="cuda"), torch.full((2,), 3, device="cuda")
    with torch.no_grad():
        eager = smp.sample(unet, x_T, guidance_scale=2.0, cond=cond, uncond=uncond)
        graphed = smp.sample(unet, x_T, guidance_scale=2.0, cond=cond, uncond=uncond, cuda_graph=True)
    assert smp._graphs, "the UNet loop should be capturable"
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dpmpp_2m_karras_ending_at_sigma_min_takes_a_zero_size_final_step(backend, gen):
    """Karras sigmas end at sigma_min, which final_sigmas_type="sigma_min" appends again: the last step has
    h = 0 and must leave x as it is, whether it is planned first or second order."""
    s = NoiseSchedule.scaled_linear()
    kw = dict(use_karras_sigmas=True, final_sigmas_type="sigma_min", backend=backend)
    second = DPMSolverPP2M(s, 8, lower_order_final=False, **kw)
    first = DPMSolverPP2M(s, 8, lower_order_final=True, **kw)
    assert second.sigmas[-1] == second.sigmas[-2]
    assert second._steps[-1].coefs()[2:] == [1.0, 0.0, 0.0, 0.0, 0.0]  # x_next = x
    x_T = torch.randn(SHAPE, generator=gen)
    got = second.sample(dummy_model, x_T)
    assert torch.isfinite(got).all()
    assert torch.equal(got, first.sample(dummy_model, x_T))
    assert torch.isfinite(DPMSolverPP2M(s, 25, **kw).sample(dummy_model, x_T)).all()  # steps >= 15: second order


def test_dpmpp_2m_repeated_timesteps_are_refused_naming_steps():
    s = NoiseSchedule.linear(50)
    for spacing in ("linspace", "leading"):  # steps == T repeats a timestep
        with pytest.raises(ValueError, match="^steps: 50 "):
            DPMSolverPP2M(s, 50, timestep_spacing=spacing)
    # first order has no history to divide by: the repeated timestep is a zero-size step
    out = DPMSolverPP2M(s, 50, solver_order=1).sample(dummy_model, torch.randn(SHAPE))
    assert torch.isfinite(out).all()
    DPMSolverPP2M(s, 49)  # distinct timesteps still build


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_guidance_tensor_must_be_finite(bad):
    s = SCHEDULES["linear"]
    x, c = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="guidance_scale: expected finite"):
        DDIM(s, 3).sample(dummy_model, x, guidance_scale=torch.tensor([bad, 1.0]), cond=c, uncond=c)


@pytest.mark.parametrize("cls", [Euler, EulerAncestral, DPMSolverPP2M])
def test_karras_sigma_min_must_be_below_sigma_max(cls):
    s = NoiseSchedule.scaled_linear()
    with pytest.raises(ValueError, match="sigma_min, sigma_max"):
        cls(s, 5, use_karras_sigmas=True, sigma_min=20.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min, sigma_max"):  # above the schedule's own sigma_max (~14.6)
        cls(s, 5, use_karras_sigmas=True, sigma_min=20.0)
    cls(s, 5, use_karras_sigmas=True, sigma_min=0.5, sigma_max=20.0)


def test_schedule_alphas_cumprod_must_stay_inside_zero_one():
    with pytest.raises(ValueError, match="^betas: alphas_cumprod rounds to 1"):  # float32: 1 - 1e-9 == 1
        NoiseSchedule.from_betas(torch.full((5,), 1e-9))
    with pytest.raises(ValueError, match="^num_train_timesteps.*underflows to 0"):
        NoiseSchedule.linear(30000)
    with pytest.raises(ValueError, match="^betas: alphas_cumprod underflows"):
        NoiseSchedule.from_betas([0.5] * 2000)
    assert NoiseSchedule.from_betas(torch.full((5,), 1e-9, dtype=torch.float64)).sigmas.min() > 0


def test_add_noise_checks_t():
    s = NoiseSchedule.linear(10)
    x0, noise = torch.ones(1, 2), torch.zeros(1, 2)
    for t in (-1, 10):  # -1 would silently index the last timestep, 10 past the end
        with pytest.raises(ValueError, match=r"^t: expected timesteps in 0\.\.9"):
            s.add_noise(x0, noise, torch.tensor([t]))
    with pytest.raises(TypeError, match="^t:"):
        s.add_noise(x0, noise, torch.tensor([0.5]))
    got = s.add_noise(x0, noise, torch.tensor([9], dtype=torch.int32))
    assert torch.allclose(got, torch.full((1, 2), float(s.alphas_cumprod[9]) ** 0.5))
