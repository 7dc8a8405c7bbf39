"""`Sampler.from_diffusers_config` reproduces the diffusers scheduler with the same saved config.

For each config: the timesteps are equal, and the whole trajectory of our loop equals diffusers'
set_timesteps / scale_model_input / step loop on a dummy model. The stochastic schedulers' noise
comes from their module-level `randn_tensor`, replaced here by our Philox stream with the keys our
sampler draws, so those trajectories are compared exactly too.
"""

import math

import pytest
import torch

import genengine as ge
from genengine.diffusion import DDIM, DDPM, DPMSolverPP2M, Euler, EulerAncestral
from genengine.ops import rng

diffusers = pytest.importorskip("diffusers", reason="diffusers is part of the `test` extra")
_NOISY_MODULES = ("scheduling_ddpm", "scheduling_ddim", "scheduling_euler_ancestral_discrete")

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

CASES = [
    ("DDIMScheduler", DDIM, {}),
    ("DDIMScheduler", DDIM, {"clip_sample": False, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("DDIMScheduler", DDIM, {**SD, "clip_sample": False, "timestep_spacing": "linspace", "set_alpha_to_one": False}),
    ("DDIMScheduler", DDIM, {"steps_offset": 1, "thresholding": True, "sample_max_value": 1.5}),
    ("DDPMScheduler", DDPM, {}),
    ("DDPMScheduler", DDPM, {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "timestep_spacing": "trailing",
                             "clip_sample": False}),
    ("DDPMScheduler", DDPM, {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 2.0,
                             "variance_type": "fixed_small_log"}),
    ("EulerDiscreteScheduler", Euler, {}),
    ("EulerDiscreteScheduler", Euler, {**SD, "use_karras_sigmas": True}),
    ("EulerDiscreteScheduler", Euler, {"timestep_spacing": "leading", "steps_offset": 1, "prediction_type": "v_prediction"}),
    ("EulerDiscreteScheduler", Euler, {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
    ("EulerAncestralDiscreteScheduler", EulerAncestral, {}),
    ("EulerAncestralDiscreteScheduler", EulerAncestral, {**SD, "timestep_spacing": "leading", "steps_offset": 1}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {"use_karras_sigmas": True, "timestep_spacing": "leading",
                                                    "steps_offset": 1}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {"final_sigmas_type": "sigma_min", "lower_order_final": False,
                                                    "prediction_type": "v_prediction"}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {"thresholding": True, "prediction_type": "sample",
                                                    "lambda_min_clipped": -5.1}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {"beta_schedule": "squaredcos_cap_v2", "solver_order": 1}),
    ("DPMSolverMultistepScheduler", DPMSolverPP2M, {**SD, "euler_at_final": True, "timestep_spacing": "trailing"}),
]


def dummy_model(x, t, cond=None):
    tt = t.to(torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    return 0.6 * torch.tanh(x) + 0.3 * torch.sin(tt / 150.0) * x.flip(-1).tanh() + 0.05


def _philox_randn(generator):
    def randn_tensor(shape, generator=None, device=None, dtype=None, **kwargs):
        seed, offset = rng.draw_key(_philox_randn.gen, "cpu")
        return ge.ops.philox_normal(math.prod(shape), seed, offset, backend="torch").reshape(shape).to(dtype)

    _philox_randn.gen = generator
    return randn_tensor


def _diffusers_loop(cls_name, config, steps, x_T):
    sched = getattr(diffusers, cls_name).from_config(config)
    sched.set_timesteps(steps)
    x = x_T * sched.init_noise_sigma
    for t in sched.timesteps:
        out = dummy_model(sched.scale_model_input(x, t), t.expand(x.shape[0]))
        x = sched.step(out, t, x).prev_sample
    return sched.timesteps, x


@pytest.mark.parametrize("steps", [7, 20])
@pytest.mark.parametrize("cls_name,cls,config", CASES, ids=[f"{c[0][:-9]}-{i}" for i, c in enumerate(CASES)])
def test_trajectory_matches_diffusers(cls_name, cls, config, steps, monkeypatch):
    import importlib

    for mod in _NOISY_MODULES:
        monkeypatch.setattr(importlib.import_module(f"diffusers.schedulers.{mod}"), "randn_tensor",
                            _philox_randn(torch.Generator().manual_seed(5)))
    x_T = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    t_want, want = _diffusers_loop(cls_name, config, steps, x_T)
    monkeypatch.undo()

    saved = {"_class_name": cls_name, "_diffusers_version": diffusers.__version__, **config}
    smp = cls.from_diffusers_config(saved, steps)
    got = smp.sample(dummy_model, x_T, generator=torch.Generator().manual_seed(5))
    assert torch.equal(smp.timesteps, t_want.to(smp.timesteps.dtype))
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= 2e-6 * scale


def test_config_keys_for_other_schedulers_are_ignored_and_unsupported_ones_rejected():
    cfg = {"_class_name": "PNDMScheduler", "skip_prk_steps": True, "use_karras_sigmas": True, **SD}
    assert DDIM.from_diffusers_config(cfg, 10).timesteps.tolist() == DDIM(ge.diffusion.NoiseSchedule.scaled_linear(), 10,
                                                                           ).timesteps.tolist()
    with pytest.raises(ValueError, match="algorithm_type"):
        DPMSolverPP2M.from_diffusers_config({"algorithm_type": "sde-dpmsolver++"}, 10)
    with pytest.raises(ValueError, match="interpolation_type"):
        Euler.from_diffusers_config({"interpolation_type": "log_linear"}, 10)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        DDIM.from_diffusers_config({"rescale_betas_zero_snr": True}, 10)
    with pytest.raises(ValueError, match="variance_type"):
        DDPM.from_diffusers_config({"variance_type": "learned_range"}, 10)
    with pytest.raises(ValueError, match="beta_schedule"):
        DDIM.from_diffusers_config({"beta_schedule": "sigmoid"}, 10)
    with pytest.raises(TypeError, match="config"):
        DDIM.from_diffusers_config("scheduler_config.json", 10)
    # overrides win over the config, with either spelling of the prediction
    smp = DDIM.from_diffusers_config({"prediction_type": "epsilon"}, 10, prediction_type="v_prediction", eta=0.5)
    assert smp.prediction == "v" and smp.eta == 0.5
    # diffusers' DDIM clips by default; our constructor does not
    assert DDIM.from_diffusers_config({}, 10).clip_x0 == 1.0 and DDIM(ge.diffusion.NoiseSchedule.linear(), 10).clip_x0 is None


@pytest.mark.parametrize("steps,config", [
    (20, {**SD, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}),  # steps >= 15: second-order last step
    (8, {**SD, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "lower_order_final": False}),
])
def test_dpmpp_2m_zero_size_final_step_matches_diffusers(steps, config):
    """The last Karras sigma equals the appended sigma_min: a step with h = 0, the identity in diffusers."""
    x_T = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    t_want, want = _diffusers_loop("DPMSolverMultistepScheduler", config, steps, x_T)
    smp = DPMSolverPP2M.from_diffusers_config({"_class_name": "DPMSolverMultistepScheduler", **config}, steps)
    got = smp.sample(dummy_model, x_T)
    assert torch.equal(smp.timesteps, t_want.to(smp.timesteps.dtype))
    assert torch.isfinite(want).all()
    assert (got - want).abs().max().item() <= 2e-6 * max(1.0, want.abs().max().item())
