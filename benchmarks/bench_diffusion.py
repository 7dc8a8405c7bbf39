"""genengine's fused sampler step against the diffusers scheduler's `step()`.

    python benchmarks/bench_diffusion.py [--device cpu|cuda|all] [--quick] [--json [FILE]]

For each sampler with a diffusers counterpart, one step in the middle of a 50-step schedule (Stable
Diffusion's scaled_linear betas), with classifier-free guidance at 7.5 on a stacked [uncond; cond]
model output, as a pipeline has it:
  diffusers:  u, c = model_out.chunk(2); p = u + 7.5 * (c - u); scheduler.step(p, t, x, return_dict=False)[0]
  genengine:  ge.ops.<sampler>_step(x, model_out, <the same scalars>, guidance_scale=7.5)   (backend="auto")
The two are timed interleaved in one run (genengine.bench.harness.interleave). diffusers schedulers
count their steps, so the counters are reset before every call (step_index, and for DPM-Solver++ the
stored previous model output, which keeps every timed call a second-order step).

"max |diff|" checks that the scalars are the equivalent ones, for the deterministic samplers (DDIM
eta=0, Euler); the stochastic ones draw different noise, and diffusers' DPM-Solver++ steps VP samples
where genengine's works in sigma space (equality is tested in tests/, here only the time counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

import genengine as ge  # noqa: E402
from genengine import _backends  # noqa: E402
from genengine.bench.harness import Table, busy_note, interleave, us  # noqa: E402

W, STEPS, K = 7.5, 50, 25  # guidance scale, schedule length, the step index timed
SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SAMPLERS = ("DDPM", "DDIM eta=0", "DDIM eta=1", "Euler", "EulerAncestral", "DPM++ 2M")
SHAPES = ((1, 4, 128, 128), (16, 4, 128, 128))


def pair(name, x, model_out, device):
    """(diffusers call, genengine call, deterministic?) for one sampler on latents x."""
    g = torch.Generator(device=device).manual_seed(0)

    def guided():
        u, c = model_out.chunk(2)
        return u + W * (c - u)

    if name == "DDPM":
        s = DDPMScheduler(**SD, clip_sample=False)
        s.set_timesteps(STEPS, device=device)
        t = s.timesteps[K]
        a_t, a_prev = float(s.alphas_cumprod[t]), float(s.alphas_cumprod[s.timesteps[K + 1]])
        return (lambda: s.step(guided(), t, x, generator=g, return_dict=False)[0],
                lambda: ge.ops.ddpm_step(x, model_out, a_t, a_prev, guidance_scale=W, generator=g), False)
    if name.startswith("DDIM"):
        eta = float(name[-1])
        s = DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False)
        s.set_timesteps(STEPS, device=device)
        t = s.timesteps[K]
        prev = int(t) - SD["num_train_timesteps"] // STEPS  # what DDIMScheduler.step computes
        a_t = float(s.alphas_cumprod[t])
        a_prev = float(s.alphas_cumprod[prev]) if prev >= 0 else float(s.final_alpha_cumprod)
        return (lambda: s.step(guided(), t, x, eta=eta, generator=g, return_dict=False)[0],
                lambda: ge.ops.ddim_step(x, model_out, a_t, a_prev, eta=eta, guidance_scale=W, generator=g), eta == 0)
    if name.startswith("Euler"):
        ancestral = name == "EulerAncestral"
        s = (EulerAncestralDiscreteScheduler if ancestral else EulerDiscreteScheduler)(**SD)
        s.set_timesteps(STEPS, device=device)
        s.is_scale_input_called = True  # a pipeline calls scale_model_input on the UNet input: not part of step
        t, sigma, sigma_next = s.timesteps[K], float(s.sigmas[K]), float(s.sigmas[K + 1])
        extra = {"generator": g} if ancestral else {}

        def d():
            s._step_index = K
            return s.step(guided(), t, x, return_dict=False, **extra)[0]

        op = ge.ops.euler_ancestral_step if ancestral else ge.ops.euler_step
        return d, lambda: op(x, model_out, sigma, sigma_next, guidance_scale=W, **extra), not ancestral
    if name == "DPM++ 2M":
        s = DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2)
        s.set_timesteps(STEPS, device=device)
        t = s.timesteps[K]
        sp, sg, sn = (float(s.sigmas[i]) for i in (K - 1, K, K + 1))
        prev_x0 = torch.randn_like(x)  # the previous step's converted model output (x0 prediction)

        def d():
            s._step_index, s.lower_order_nums = K, 1
            s.model_outputs[-1] = prev_x0  # step() shifts it to [-2] and appends this step's x0
            return s.step(guided(), t, x, return_dict=False)[0]

        return d, lambda: ge.ops.dpmpp_2m_step(x, model_out, sg, sn, prev_x0=prev_x0, sigma_prev=sp,
                                               guidance_scale=W)[0], False
    raise ValueError(name)


def main(argv=None):
    p = argparse.ArgumentParser(description="genengine fused sampler steps vs diffusers scheduler.step()")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all", help="all: cpu, and cuda if present")
    p.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    p.add_argument("--json", nargs="?", const="", metavar="FILE",
                   help="write the results as JSON to FILE (default: benchmarks/results/bench_diffusion-DEVICE-DATE.json)")
    args = p.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        p.error("--device cuda: torch sees no CUDA device")
    import diffusers

    busy, note = busy_note()
    if note:
        print(note)
    t0 = time.perf_counter()
    table = Table([("sampler", 14, "<"), ("shape", 14, "<"), ("device", 6, "<"), ("diffusers us", 12, ">"),
                   ("genengine us", 12, ">"), ("speedup", 7, ">"), ("max |diff|", 10, ">")])
    rows = []
    for dev in map(torch.device, devices):
        backend = _backends.resolve("auto", dev.type)
        print(f"diffusers {diffusers.__version__} vs genengine (backend {backend}) on {dev.type}, float32, "
              f"guidance {W}, step {K} of {STEPS}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        print(table.header(), flush=True)
        for name in SAMPLERS:
            for shape in SHAPES:
                x = torch.randn(shape, device=dev)
                model_out = torch.randn((2 * shape[0],) + shape[1:], device=dev)
                d, g, deterministic = pair(name, x, model_out, dev)
                diff = float((d().float() - g().float()).abs().max()) if deterministic else None
                big = shape[0] > 1
                st = interleave({"diffusers": d, "genengine": g}, dev, (0.3 if args.quick else 2.0) * (2 if big else 1),
                                min_samples=3 if args.quick else 8)
                sd, sg = st["diffusers"], st["genengine"]
                rows.append({"sampler": name, "shape": list(shape), "device": dev.type, "dtype": "float32",
                             "genengine_backend": backend, "diffusers": sd.as_dict(), "genengine": sg.as_dict(),
                             "speedup": sd.median / sg.median, "max_abs_diff": diff})
                print(table.line([name, "(" + ",".join(map(str, shape)) + ")", dev.type, us(sd.median), us(sg.median),
                                  f"{sd.median / sg.median:.2f}x", "-" if diff is None else f"{diff:.1e}"]), flush=True)
        print(flush=True)
    total = time.perf_counter() - t0
    print(f"total {total:.1f} s")
    if args.json is not None:
        path = args.json or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results",
            f"bench_diffusion-{'-'.join(devices)}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "total_s": total,
               "cpu_busy_before": busy,
               "diffusers": diffusers.__version__, "machine": ge.info(verbose=False), "rows": rows}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
