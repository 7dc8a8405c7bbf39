"""Benchmark rows for whole sampling loops (genengine.diffusion) against the diffusers schedulers.

The model is trivial (it returns its input), so a row is the loop's own cost: per step the model
input (scaling in sigma space, the [x; x] stack with guidance), the timestep, and the update. Each
genengine sampler is built once (its timesteps and coefficients are precomputed) and its
`sample()` is timed; "diffusers" is the loop users write with the matching scheduler
(set_timesteps, then scale_model_input / step per timestep), timed interleaved with ours.

The floor is the bytes the fused step must move: each step reads x and the model output (twice
the batch with guidance) and writes x; "% copy" is the ideal time of those bytes at the measured
copy bandwidth over the measured time.
"""

from __future__ import annotations

import torch

from .. import diffusion
from .harness import Table, interleave, us

STEPS = 50
SHAPE = (1, 4, 128, 128)
GUIDANCE = 7.5

# (label, our sampler class, constructor kwargs, diffusers scheduler name, its config, guided)
SAMPLERS = [
    ("ddpm", diffusion.DDPM, {}, "DDPMScheduler", {"clip_sample": False}, False),
    ("ddim", diffusion.DDIM, {}, "DDIMScheduler", {"clip_sample": False}, False),
    ("ddim cfg", diffusion.DDIM, {}, "DDIMScheduler", {"clip_sample": False}, True),
    ("euler", diffusion.Euler, {}, "EulerDiscreteScheduler", {}, False),
    ("euler_ancestral", diffusion.EulerAncestral, {}, "EulerAncestralDiscreteScheduler", {}, False),
    ("dpmpp_2m", diffusion.DPMSolverPP2M, {}, "DPMSolverMultistepScheduler", {}, False),
]
SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def identity_model(x, t, cond=None):
    return x


def _diffusers_loop(sched, x_T, guided, cond, generator):
    def run():
        sched.set_timesteps(STEPS)
        x = x_T * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            if guided:
                inp = torch.cat([inp, inp])
                out = identity_model(inp, t, cond)
                u, c = out.chunk(2)
                out = u + GUIDANCE * (c - u)
            else:
                out = identity_model(inp, t)
            x = sched.step(out, t, x, generator=generator).prev_sample
        return x

    return run


def candidates(device, names):
    """{(sampler label, candidate): callable}."""
    try:
        import diffusers
    except ImportError:
        diffusers = None
    x_T = torch.randn(SHAPE, device=device)
    cond, uncond = torch.ones(SHAPE[0], device=device), torch.zeros(SHAPE[0], device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    groups = {}
    for label, cls, kw, dname, dcfg, guided in SAMPLERS:
        group = {}
        g = {"guidance_scale": GUIDANCE, "cond": cond, "uncond": uncond} if guided else {}
        for name in names:
            smp = cls.from_diffusers_config({**SD, **dcfg}, STEPS, backend=name, **kw)
            group[f"genengine {name}"] = lambda smp=smp, g=g: smp.sample(identity_model, x_T, generator=gen, **g)
        if diffusers is not None:
            sched = getattr(diffusers, dname).from_config({**SD, **dcfg})
            group["diffusers"] = _diffusers_loop(sched, x_T, guided, torch.cat([uncond, cond]), gen)
        groups[label] = (group, guided)
    return groups, diffusers is not None


COLUMNS = [("loop (50 steps)", 16, "<"), ("candidate", 18, "<"), ("median ms", 9, ">"), ("us/step", 8, ">"),
           ("vs diffusers", 12, ">"), ("% copy", 6, ">")]


def run(ctx, names):
    """Times each sampler's 50-step loop; prints the table; returns the JSON-ready rows."""
    device = ctx.device
    names = [n for n in names if n != "torch"] or names
    groups, have_diffusers = candidates(device, names)
    if not have_diffusers:
        ctx.print("diffusers is not installed: the loop rows have no diffusers baseline (pip install '.[bench]')")
    numel = torch.Size(SHAPE).numel()
    table = Table(COLUMNS)
    ctx.print(f"whole sampling loops, identity model, {STEPS} steps at {SHAPE} float32 (loop overhead only)")
    ctx.print(table.header())
    rows = []
    for label, (group, guided) in groups.items():
        stats = interleave(group, device, 0.6 if ctx.quick else 6.0, min_samples=3 if ctx.quick else 10)
        step_bytes = (2 + (2 if guided else 1)) * numel * 4  # read x and model out (2B with guidance), write x
        _, copy_bw = ctx.ceilings.copy(step_bytes, torch.float32)
        floor = STEPS * step_bytes / copy_bw
        base = stats["diffusers"].median if "diffusers" in stats else None
        for cand, st in stats.items():
            speed = base / st.median if base else None
            rows.append({"loop": label, "candidate": cand, "shape": list(SHAPE), "steps": STEPS, "device": device.type,
                         **st.as_dict(), "speedup_vs_diffusers": speed, "floor_s": floor,
                         "pct_of_copy": 100 * floor / st.median})
            ctx.print(table.line([label, cand, f"{st.median * 1e3:.3f}", us(st.median / STEPS),
                                  "-" if speed is None else f"{speed:.1f}x", f"{100 * floor / st.median:.0f}%"]))
        ctx.print("")
    return rows
