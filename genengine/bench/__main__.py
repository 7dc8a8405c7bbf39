"""python -m genengine.bench [--ops diffusion ...] [--device cpu|cuda] [--quick] [--json FILE]
                           [--backends cpp,torch,...] [--dtypes float32,...]

Measures this machine's ceilings (copy bandwidth at each row's byte count, float32 matmul rate),
then times every op on every available backend against the plain-PyTorch textbook expression of
the same op, interleaved, and prints one aligned table per op family (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time

import torch

from . import attention, diffusion, flows, generate, gibbs, group_norm, hmm, mixture, naive_bayes, sampling
from .harness import Ceilings, busy_note

OPS = {"diffusion": diffusion.run, "group_norm": group_norm.run, "attention": attention.run, "sampling": sampling.run,
       "flows": flows.run, "generate": generate.run, "gibbs": gibbs.run, "naive_bayes": naive_bayes.run,
       "mixture": mixture.run, "hmm": hmm.run}
# families that include others: `--ops diffusion` also times the denoiser's fused GroupNorm + SiLU
INCLUDES = {"diffusion": ("group_norm",)}


class Context:
    def __init__(self, args):
        self.device = torch.device(args.device)
        self.quick = args.quick
        self.backends = _csv(args.backends)
        self.dtypes = _csv(args.dtypes)
        self.ceilings = Ceilings(self.device, budget_s=0.1 if args.quick else 0.5)

    @staticmethod
    def print(*a):
        print(*a, flush=True)


def _csv(s):
    return [p.strip() for p in s.split(",") if p.strip()] if s else None


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m genengine.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--ops", nargs="+", default=sorted(OPS), metavar="OP",
                   help="op families to time, space- or comma-separated (" + ", ".join(sorted(OPS)) + ")")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="few repeats (a CI smoke run, well under a minute)")
    p.add_argument("--json", metavar="FILE", help="also write the table, ceilings and machine info as JSON")
    p.add_argument("--backends", help="comma-separated genengine backends to time (default: all available); "
                   "the torch-textbook reference is always timed")
    p.add_argument("--dtypes", help="comma-separated dtypes (default: float32; on CUDA also bfloat16)")
    args = p.parse_args(argv)
    args.ops = [o for item in args.ops for o in item.split(",") if o]  # `--ops mixture,naive_bayes` too
    for name in args.ops:
        if name not in OPS:
            p.error(f"--ops: unknown op family {name!r} (expected one of {', '.join(sorted(OPS))})")
    for name in _csv(args.backends) or ():
        if name not in ("torch", "cpp", "triton", "cuda"):
            p.error(f"--backends: unknown backend {name!r} (expected torch, cpp, triton, cuda)")
    for name in _csv(args.dtypes) or ():
        if name not in ("float32", "bfloat16", "float16"):
            p.error(f"--dtypes: unknown dtype {name!r} (expected float32, bfloat16, float16)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    if args.json is not None:  # before the run, not after it: a typo must not cost the whole suite
        from ..cli import output_path_problem

        problem = output_path_problem(args.json)
        if problem:
            p.error(f"--json: {problem}")
    return args


def json_safe(obj):
    """obj with every NaN or infinite float replaced by None: json.dump would write them as NaN/Infinity,
    which strict JSON parsers (JavaScript, jq) reject. A measurement that does not exist is null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    from .. import info

    busy, note = busy_note()
    t0 = time.perf_counter()
    ctx = Context(args)
    machine = info(verbose=False)
    dev = next((d for d in machine["devices"] if d["type"] == ctx.device.type), {})
    ctx.print(f"genengine.bench on {ctx.device.type} ({dev.get('name', '?')}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads{', quick' if args.quick else ''}")
    if note:
        ctx.print(note)
    ctx.ceilings.matmul()
    families = []
    for name in args.ops:
        families += [f for f in (name, *INCLUDES.get(name, ())) if f not in families]
    results = {name: OPS[name](ctx) for name in families}
    total = time.perf_counter() - t0
    ctx.print(f"total {total:.1f} s")
    if args.json:
        doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "python -m genengine.bench " + " ".join(argv), "argv": argv, "device": ctx.device.type,
               "quick": args.quick, "total_s": total, "cpu_busy_before": busy, "machine": machine,
               "ceilings": ctx.ceilings.as_dict(), "results": results}
        with open(args.json, "w") as f:
            json.dump(json_safe(doc), f, indent=1, default=str, allow_nan=False)
        ctx.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
