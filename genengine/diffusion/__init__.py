"""genengine.diffusion: noise schedules and whole sampling loops on the fused step ops.

    import genengine as ge
    schedule = ge.diffusion.NoiseSchedule.scaled_linear(1000, 0.00085, 0.012)
    sampler = ge.diffusion.DPMSolverPP2M(schedule, steps=25, use_karras_sigmas=True)
    # or: ge.diffusion.DPMSolverPP2M.from_diffusers_config(json.load(f), steps=25)
    x0 = sampler.sample(model, torch.randn(B, 4, 64, 64), guidance_scale=7.5, cond=c, uncond=u)
"""

from .samplers import DDIM, DDPM, SAMPLERS, DPMSolverPP2M, Euler, EulerAncestral, Sampler
from .schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "Sampler", "DDPM", "DDIM", "Euler", "EulerAncestral", "DPMSolverPP2M", "SAMPLERS"]
