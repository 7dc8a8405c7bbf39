"""Benchmark rows for the fused diffusion sampler steps (genengine.ops.diffusion).

Every step runs with classifier-free guidance (uncond given, guidance_scale 7.5). Per (op, shape,
dtype) the candidates are timed interleaved: each available genengine backend's allocating call,
the fused backends' `out=` call, and "torch-textbook", the plain PyTorch expression of the same step
op by op in the latent dtype (genengine.reference.diffusion with dtype=x.dtype; stochastic steps
draw `torch.randn_like(x)` inside the timed call). The genengine "torch" backend (the op's own
PyTorch path, with the Philox stream computed in PyTorch) gets the allocating call only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import _backends, ops
from ..reference import diffusion as ref
from . import loop
from .harness import Table, interleave, us

GUIDANCE = 7.5
SMALL, TINY = (1, 4, 128, 128), (1, 4, 8, 8)
FUSED = ("cpp", "triton", "cuda")
COPY = "copy (same bytes)"


@dataclass
class Spec:
    name: str
    op: object
    textbook: object
    scalars: tuple
    kw: dict = field(default_factory=dict)
    stochastic: bool = False
    prev: bool = False  # reads prev_x0
    writes: int = 1  # out (and x0)

    def reads(self):
        return 3 + self.prev  # x, model_out, uncond [, prev_x0]


# mid-sampling scalars (Stable Diffusion's scaled_linear schedule is around here halfway through)
SPECS = [
    Spec("ddpm", ops.ddpm_step, ref.ddpm_step, (0.30, 0.35), stochastic=True),
    Spec("ddim eta=0", ops.ddim_step, ref.ddim_step, (0.30, 0.35), {"eta": 0.0}),
    Spec("ddim eta=1", ops.ddim_step, ref.ddim_step, (0.30, 0.35), {"eta": 1.0}, stochastic=True),
    Spec("euler", ops.euler_step, ref.euler_step, (2.0, 1.6)),
    Spec("euler_ancestral", ops.euler_ancestral_step, ref.euler_ancestral_step, (2.0, 1.6), stochastic=True),
    Spec("dpmpp_2m", ops.dpmpp_2m_step, ref.dpmpp_2m_step, (2.0, 1.6), {"sigma_prev": 2.5}, prev=True, writes=2),
]


def cases(device, dtypes=None):
    """[(shape, dtype)]: the default cases for the device, filtered by dtypes (names)."""
    default = [(SMALL, torch.float32), ((16, 4, 128, 128), torch.float32)]
    if device.type == "cuda":
        default += [((2, 16, 64, 64), torch.bfloat16), ((16, 4, 128, 128), torch.bfloat16)]
    if not dtypes:
        return default
    out = []
    for name in dtypes:
        dt = getattr(torch, name)
        mine = [c for c in default if c[1] == dt]
        out += mine or [(shape, dt) for shape, d in default if d == torch.float32]
    return out


def backends(device, wanted=None):
    """(genengine backends to time, [one-line reasons for the ones skipped])."""
    run, skipped = [], []
    for b in ("cpp", "triton", "cuda", "torch"):
        if wanted is not None and b not in wanted:
            continue
        reason = _backends.unavailable_reason(b, device.type)
        if reason is None and b == "triton" and device.type == "cpu" and wanted is None:
            reason = "on CPU tensors triton runs in the interpreter only (name it in --backends to time it anyway)"
        (skipped.append(f"skipped backend {b} on {device.type}: {reason}") if reason else run.append(b))
    return run, skipped


def candidates(spec, shape, dtype, device, names):
    """{label: callable} for one (op, shape, dtype): genengine backends (+ out=) and torch-textbook."""
    g = torch.Generator(device=device).manual_seed(0)
    x, cond, uncond = (torch.randn(shape, device=device).to(dtype) for _ in range(3))
    out = torch.empty_like(x)
    kw = dict(spec.kw, uncond=uncond, guidance_scale=GUIDANCE)
    if spec.prev:
        kw["prev_x0"] = torch.randn_like(x)
    opkw = dict(kw, generator=g) if spec.stochastic else dict(kw)
    a, b = spec.scalars
    res = {}
    x_inplace = x.clone()  # the in-place row updates its own copy of x step after step
    if spec.prev:
        opkw["x0_out"] = torch.empty_like(x)  # preallocated like out (dpmpp_2m also returns x0)
    alloc_kw = {k: v for k, v in opkw.items() if k != "x0_out"}  # the allocating call allocates all
    for name in names:
        res[name] = lambda name=name: spec.op(x, cond, a, b, backend=name, **alloc_kw)
        if name in FUSED:
            res[name + " out="] = lambda name=name: spec.op(x, cond, a, b, backend=name, out=out, **opkw)
            res[name + " in-place"] = lambda name=name: spec.op(x_inplace, cond, a, b, backend=name, out=x_inplace,
                                                               **opkw)
    if spec.stochastic:
        res["torch-textbook"] = lambda: spec.textbook(x, cond, a, b, noise=torch.randn_like(x), dtype=x.dtype, **kw)
    else:
        res["torch-textbook"] = lambda: spec.textbook(x, cond, a, b, dtype=x.dtype, **kw)
    return res


COLUMNS = [("op", 15, "<"), ("shape", 14, "<"), ("dtype", 8, "<"), ("backend", 14, "<"), ("median us", 9, ">"),
           ("speedup", 7, ">"), ("MB moved", 8, ">"), ("GB/s", 6, ">"), ("% copy", 6, ">"), ("Gdraw/s", 7, ">")]


def _shape(s):
    return "(" + ",".join(map(str, s)) + ")"


def run(ctx):
    """Times every (op, case, backend); prints the table row by row; returns the JSON-ready results."""
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    for line in skipped:
        ctx.print(line)
    todo = [(spec, shape, dtype) for spec in SPECS for shape, dtype in cases(device, ctx.dtypes)]
    for spec, shape, dtype in todo:  # ceilings first, at every byte count the rows will need
        numel = torch.Size(shape).numel()
        ctx.ceilings.copy((spec.reads() + spec.writes) * numel * dtype.itemsize, dtype)
    ctx.print(ctx.ceilings.format() + "\n")

    table = Table(COLUMNS)
    ctx.print(table.header())
    rows, small, overhead_dtype = [], {}, cases(device, ctx.dtypes)[0][1]
    for spec, shape, dtype in todo:
        numel = torch.Size(shape).numel()
        nbytes = (spec.reads() + spec.writes) * numel * dtype.itemsize
        budget = (0.25 if quick else 3.5) * (1 if numel <= 65536 else 2.5)
        group = candidates(spec, shape, dtype, device, names)
        stats = interleave(group, device, budget, min_samples=3 if quick else 8)
        # % of copy: the preallocated calls against the same-bytes copy, interleaved with nothing
        # else, so both run in steady state (the allocating and textbook candidates above fault in
        # and zero fresh pages every call, which evicts everyone's data from the cache)
        pair = {k: v for k, v in group.items() if k.endswith(("out=", "in-place"))}
        pct_of_copy = {}
        if pair:
            pair[COPY] = ctx.ceilings.copy_callable(nbytes, dtype)
            pst = interleave(pair, device, budget / 2, min_samples=3 if quick else 8)
            copy_time = pst.pop(COPY).median
            pct_of_copy = {k: 100 * copy_time / v.median for k, v in pst.items()}
        copy_bw = nbytes / copy_time if pair else ctx.ceilings.copy(nbytes, dtype)[1]
        base = stats["torch-textbook"].median
        for label, st in stats.items():
            bw = nbytes / st.median
            pct = pct_of_copy.get(label)
            row = {"op": spec.name, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                   "backend": label, "device": device.type, **st.as_dict(), "speedup_vs_textbook": base / st.median,
                   "bytes_moved": nbytes, "GB_per_s": bw / 1e9, "copy_GB_per_s_at_bytes": copy_bw / 1e9,
                   "pct_of_copy": pct, "gaussian_draws_per_s": numel / st.median if spec.stochastic else None}
            rows.append(row)
            ctx.print(table.line([spec.name, _shape(shape), row["dtype"], label, us(st.median),
                                  f"{base / st.median:.2f}x", f"{nbytes / 1e6:.2f}", f"{bw / 1e9:.1f}",
                                  "-" if pct is None else f"{pct:.0f}%",
                                  f"{numel / st.median / 1e9:.3f}" if spec.stochastic else "-"]))
            if shape == SMALL and dtype == overhead_dtype and " " not in label:
                small[(spec.name, label)] = st
        ctx.print("")
    overhead = call_overhead(ctx, names, small)
    return {"rows": rows, "call_overhead": overhead, "loops": loop.run(ctx, names), "skipped": skipped}


def call_overhead(ctx, names, small):
    """Whole Python-to-result time of the allocating call at SMALL (the main table's median on CPU)
    and at a tiny latent, where it is nearly all overhead. On CUDA both are timed synchronously."""
    device, dtype = ctx.device, cases(ctx.device, ctx.dtypes)[0][1]
    table = Table([("op", 15, "<"), ("backend", 14, "<"), (f"us {_shape(SMALL)}", 18, ">"),
                   (f"us {_shape(TINY)}", 14, ">")])
    ctx.print(f"call overhead: the whole allocating call, Python to result ({str(dtype).replace('torch.', '')}"
              f"{', synchronized' if device.type == 'cuda' else ''})")
    ctx.print(table.header())
    out = []
    for spec in SPECS:
        keep = lambda c: {k: v for k, v in c.items() if " " not in k}  # noqa: E731 (allocating calls only)
        budget = 0.1 if ctx.quick else 0.8
        tiny = interleave(keep(candidates(spec, TINY, dtype, device, names)), device, budget, latency=True)
        if device.type == "cuda" or not all((spec.name, k) in small for k in tiny):
            small = {**small, **{(spec.name, k): v for k, v in interleave(
                keep(candidates(spec, SMALL, dtype, device, names)), device, budget, latency=True).items()}}
        for label, st in tiny.items():
            s = small[(spec.name, label)]
            ctx.print(table.line([spec.name, label, us(s.median), us(st.median)]))
            out.append({"op": spec.name, "backend": label, "dtype": str(dtype).replace("torch.", ""),
                        "small_shape": list(SMALL), "small_median_s": s.median, "tiny_shape": list(TINY),
                        "tiny": st.as_dict()})
    ctx.print("")
    return out
