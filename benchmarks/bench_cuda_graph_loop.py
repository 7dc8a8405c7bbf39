"""A 50-step guided DDIM / DPM-Solver++ loop with a small UNet on CUDA: eager vs one captured CUDA graph.

    python benchmarks/bench_cuda_graph_loop.py [--json FILE] [--batch 2] [--size 32] [--steps 50]

Needs a CUDA GPU (exits with a message otherwise). Each row is the median wall time of a whole
`sampler.sample(...)` call, synchronised, with the eager and graphed calls interleaved; the graphed
call includes copying the inputs into the graph's static buffers and the output clone. The first
graphed call (capture) is excluded and reported separately. A successful capture proves the loop
has no host synchronisation (capturing fails on one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import genengine as ge


def _timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_cuda_graph_loop: needs a CUDA GPU (torch sees none)")
    dev = torch.device("cuda")
    unet = ge.models.UNet(4, base_channels=64, channel_mults=(1, 2), num_classes=10).to(dev).eval()
    schedule = ge.diffusion.NoiseSchedule.scaled_linear()
    x_T = torch.randn(args.batch, 4, args.size, args.size, device=dev)
    cond = torch.arange(args.batch, device=dev) % 10
    uncond = torch.full_like(cond, 10)
    rows = []
    with torch.no_grad():
        for name in ("ddim", "dpmpp_2m", "euler_ancestral"):
            smp = ge.diffusion.SAMPLERS[name](schedule, args.steps)
            kw = dict(guidance_scale=5.0, cond=cond, uncond=uncond)

            def eager(smp=smp, kw=kw):
                return smp.sample(unet, x_T, generator=torch.Generator(device=dev).manual_seed(0), **kw)

            def graphed(smp=smp, kw=kw):
                return smp.sample(unet, x_T, generator=torch.Generator(device=dev).manual_seed(0), cuda_graph=True, **kw)

            eager()
            capture_s = _timed(graphed)
            captured = bool(smp._graphs)
            diff = (eager() - graphed()).abs().max().item()
            te, tg = [], []
            for _ in range(args.rounds):
                te.append(_timed(eager))
                tg.append(_timed(graphed))
            me, mg = statistics.median(te), statistics.median(tg)
            row = {"sampler": name, "steps": args.steps, "shape": list(x_T.shape), "guided": True,
                   "eager_s": me, "graph_s": mg, "speedup": me / mg, "capture_s": capture_s, "captured": captured,
                   "max_abs_diff_eager_vs_graph": diff, "device": torch.cuda.get_device_name(dev)}
            rows.append(row)
            print(f"{name:16s} eager {me * 1e3:8.2f} ms   graph {mg * 1e3:8.2f} ms   {me / mg:5.2f}x   "
                  f"capture {capture_s * 1e3:.0f} ms  captured={captured}  max|diff|={diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python benchmarks/bench_cuda_graph_loop.py " + " ".join(argv or sys.argv[1:]),
                       "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
