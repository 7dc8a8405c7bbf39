"""The fused steps reproduce the diffusers schedulers' `step()` (the library users port from).

Whole trajectories with a fixed analytic "model", in float64 on the torch backend (to ~1e-7: diffusers
keeps its alphas in float32) and float32 on the cpp backend. Stochastic schedulers draw their noise with torch.randn from
a generator; the reference formulas get that same noise, which pins our specification to theirs.
"""

import math

import pytest
import torch

import genengine as ge
from genengine.reference import diffusion as R

diffusers = pytest.importorskip("diffusers", reason="diffusers is part of the `test` extra")

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SHAPE = (2, 3, 8, 6)


def model(x_in, t):
    """A smooth, timestep-dependent stand-in for a denoiser."""
    return 0.4 * x_in + 0.1 * torch.sin(3 * x_in) + 0.001 * float(t)


def _x_T(dtype):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


# diffusers keeps alphas_cumprod in float32 and takes its square roots there: ~1e-7 relative
CONFIGS = [("torch", torch.float64, 1e-6), ("cpp", torch.float32, 2e-4)]


@pytest.mark.parametrize("backend,dtype,tol", CONFIGS)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_trajectory(backend, dtype, tol, prediction, clip):
    sched = diffusers.DDIMScheduler(**SD, prediction_type=prediction, clip_sample=clip, set_alpha_to_one=False,
                                    steps_offset=1)
    sched.set_timesteps(12)
    x_ref = x = _x_T(dtype)
    step = sched.config.num_train_timesteps // sched.num_inference_steps
    for t in sched.timesteps:
        a_t = float(sched.alphas_cumprod[t])
        prev_t = int(t) - step
        a_prev = float(sched.alphas_cumprod[prev_t]) if prev_t >= 0 else float(sched.final_alpha_cumprod)
        x_ref = sched.step(model(x_ref, t), t, x_ref).prev_sample
        x = ge.ops.ddim_step(x, model(x, t), a_t, a_prev, prediction=prediction, clip_x0=1.0 if clip else None,
                             backend=backend)
        assert (x.double() - x_ref.double()).abs().max().item() <= tol * (1 + x_ref.abs().max().item()), int(t)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_with_noise(eta):
    sched = diffusers.DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(10)
    x = _x_T(torch.float64)
    t = sched.timesteps[3]
    a_t, a_prev = float(sched.alphas_cumprod[t]), float(sched.alphas_cumprod[int(t) - 100])
    noise = torch.randn(SHAPE, dtype=torch.float64)
    want = sched.step(model(x, t), t, x, eta=eta, variance_noise=noise).prev_sample
    got = R.ddim_step(x, model(x, t), a_t, a_prev, eta=eta, noise=noise)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_steps(variance_type, prediction):
    sched = diffusers.DDPMScheduler(**SD, prediction_type=prediction, clip_sample=True,
                                    variance_type=variance_type)
    sched.set_timesteps(1000)
    x = _x_T(torch.float64)
    for t in (999, 500, 37, 1, 0):
        a_t = float(sched.alphas_cumprod[t])
        a_prev = float(sched.alphas_cumprod[t - 1]) if t > 0 else 1.0
        want = sched.step(model(x, t), t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        got = R.ddpm_step(x, model(x, t), a_t, a_prev, prediction=prediction, clip_x0=1.0,
                          variance_type=variance_type, noise=noise)
        # near t = 0, 1 - alpha_bar in diffusers' float32 cancels: ~1e-5 there
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), t
        # our op with its own noise: equal in mean (noise-free part), same noise level
        mean = R.ddpm_step(x, model(x, t), a_t, a_prev, prediction=prediction, clip_x0=1.0, variance_type=variance_type)
        ours = ge.ops.ddpm_step(x.float(), model(x, t).float(), a_t, a_prev, prediction=prediction, clip_x0=1.0,
                                variance_type=variance_type, generator=torch.Generator().manual_seed(1), backend="cpp")
        spread = (ours.double() - mean).std().item()
        theirs = (want - mean).std().item()
        assert abs(spread - theirs) <= 0.1 * theirs + 1e-5, (t, spread, theirs)


def _sigma_trajectory(sched_cls, op, backend, dtype, tol, prediction, **kw):
    sched = sched_cls(**SD, prediction_type=prediction, **kw)
    sched.set_timesteps(15)
    x_ref = _x_T(dtype) * sched.init_noise_sigma
    x = x_ref.clone()
    sigmas = [float(s) for s in sched.sigmas]
    for i, t in enumerate(sched.timesteps):
        x_ref = sched.step(model(sched.scale_model_input(x_ref, t), t), t, x_ref).prev_sample
        x = op(x, model(x / math.sqrt(sigmas[i] ** 2 + 1), t), sigmas[i], sigmas[i + 1], prediction=prediction,
               backend=backend)
        assert (x.double() - x_ref.double()).abs().max().item() <= tol * (1 + x_ref.abs().max().item()), i


@pytest.mark.parametrize("backend,dtype,tol", CONFIGS)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_trajectory(backend, dtype, tol, prediction):
    _sigma_trajectory(diffusers.EulerDiscreteScheduler, ge.ops.euler_step, backend, dtype, tol, prediction)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_ancestral_step_with_their_noise(prediction):
    sched = diffusers.EulerAncestralDiscreteScheduler(**SD, prediction_type=prediction)
    sched.set_timesteps(15)
    sigmas = [float(s) for s in sched.sigmas]
    x = _x_T(torch.float64) * 5
    for i, t in enumerate(sched.timesteps[:4]):
        m = model(sched.scale_model_input(x, t), t)
        want = sched.step(m, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        pred = "v" if prediction == "v_prediction" else prediction
        got = R.euler_ancestral_step(x, m, sigmas[i], sigmas[i + 1], prediction=pred, noise=noise)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6), i
        x = want


@pytest.mark.parametrize("backend,dtype,tol", CONFIGS)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpmpp_2m_trajectory(backend, dtype, tol, prediction):
    """diffusers' DPMSolverMultistepScheduler works on VP samples x / sqrt(sigma^2 + 1): compare in that space."""
    sched = diffusers.DPMSolverMultistepScheduler(**SD, prediction_type=prediction, algorithm_type="dpmsolver++",
                                                  solver_order=2, final_sigmas_type="zero")
    sched.set_timesteps(15)
    sigmas = [float(s) for s in sched.sigmas]
    x_vp = _x_T(dtype)
    x = x_vp * math.sqrt(sigmas[0] ** 2 + 1)
    prev_x0 = sigma_prev = None
    for i, t in enumerate(sched.timesteps):
        x_vp = sched.step(model(x_vp, t), t, x_vp).prev_sample
        x, x0 = ge.ops.dpmpp_2m_step(x, model(x / math.sqrt(sigmas[i] ** 2 + 1), t), sigmas[i], sigmas[i + 1],
                                     prev_x0=prev_x0, sigma_prev=sigma_prev, prediction=prediction, backend=backend)
        prev_x0, sigma_prev = x0, sigmas[i]
        mine = x.double() / math.sqrt(sigmas[i + 1] ** 2 + 1)
        assert (mine - x_vp.double()).abs().max().item() <= tol * (1 + x_vp.abs().max().item()), i
