"""Benchmark rows for fused GroupNorm + SiLU (genengine.ops.group_norm_silu), the denoiser's norm.

Shapes: x (N, C, H, W) with 32 groups and affine weight/bias, contiguous or channels-last. Per case
the candidates are timed interleaved: each available genengine backend (forward: the eager no-grad
call, and with a preallocated `out=`; forward+backward: the autograd call plus torch.autograd.grad to x, weight and bias) and
"torch-textbook", F.silu(F.group_norm(x)) with the same autograd. Bytes moved: forward reads x and
writes y; forward+backward also reads dy and x again and writes dx (the floor of a fused kernel).
"% copy" is a preallocated same-bytes copy's time over the candidate's, timed interleaved in pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from .diffusion import backends
from .harness import Table, interleave, us

GROUPS = 32
COPY = "copy (same bytes)"
COLUMNS = [("op", 23, "<"), ("shape", 16, "<"), ("dtype", 8, "<"), ("layout", 6, "<"), ("backend", 14, "<"),
           ("median us", 9, ">"), ("speedup", 7, ">"), ("MB moved", 8, ">"), ("GB/s", 6, ">"), ("% copy", 6, ">")]


def cases(device, dtypes=None):
    """[(shape, dtype, channels_last)]."""
    default = [((8, 320, 64, 64), torch.float32, False), ((8, 320, 64, 64), torch.float32, True)]
    if device.type == "cuda":
        default += [((2, 320, 128, 128), torch.bfloat16, False), ((2, 320, 128, 128), torch.bfloat16, True)]
    if dtypes:
        default = [c for c in default if str(c[1]).replace("torch.", "") in dtypes] or default[:1]
    return default


def _inputs(shape, dtype, channels_last, device):
    x = torch.randn(shape, device=device).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(shape[1], device=device)
    b = torch.randn(shape[1], device=device)
    return x, w, b


def candidates(shape, dtype, channels_last, device, names, backward):
    x, w, b = _inputs(shape, dtype, channels_last, device)
    if dtype != torch.float32:
        w, b = w.to(dtype), b.to(dtype)  # F.group_norm wants the input's dtype
    res = {}
    if not backward:
        y = torch.empty_like(x)  # keeps x's layout
        for name in names:
            res[name] = lambda name=name: _no_grad(lambda: ops.group_norm_silu(x, GROUPS, w, b, backend=name))
            if name != "torch":
                res[name + " out="] = lambda name=name: _no_grad(
                    lambda: ops.group_norm_silu(x, GROUPS, w, b, out=y, backend=name))
        res["torch-textbook"] = lambda: _no_grad(lambda: F.silu(F.group_norm(x, GROUPS, w, b)))
        return res
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, w, b))
    dy = torch.randn_like(x)

    def step(fn):
        return lambda: torch.autograd.grad(fn(), (xg, wg, bg), dy)

    for name in names:
        res[name] = step(lambda name=name: ops.group_norm_silu(xg, GROUPS, wg, bg, backend=name))
    res["torch-textbook"] = step(lambda: F.silu(F.group_norm(xg, GROUPS, wg, bg)))
    return res


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def _shape(s):
    return "(" + ",".join(map(str, s)) + ")"


def run(ctx):
    """Times every (case, direction, backend); prints the table; returns the JSON-ready rows."""
    device, quick = ctx.device, ctx.quick
    names, skipped = backends(device, ctx.backends)
    for line in skipped:
        ctx.print(line)
    todo = [(c, bw) for c in cases(device, ctx.dtypes) for bw in (False, True)]
    table = Table(COLUMNS)
    ctx.print("fused GroupNorm + SiLU (32 groups, affine)")
    ctx.print(table.header())
    rows = []
    for (shape, dtype, cl), backward in todo:
        numel = torch.Size(shape).numel()
        nbytes = (5 if backward else 2) * numel * dtype.itemsize
        budget = 0.3 if quick else 3.0
        group = candidates(shape, dtype, cl, device, names, backward)
        stats = interleave(group, device, budget, min_samples=3 if quick else 8)
        copy_fn = ctx.ceilings.copy_callable(nbytes, dtype)
        pct = {}
        for label, fn in group.items():  # each against the copy, in pairs, so both see the same machine state
            pst = interleave({label: fn, COPY: copy_fn}, device, budget / 3, min_samples=3 if quick else 6)
            pct[label] = 100 * pst[COPY].median / pst[label].median
        base = stats["torch-textbook"].median
        op = "group_norm_silu fwd+bwd" if backward else "group_norm_silu fwd"
        layout = "cl" if cl else "nchw"
        for label, st in stats.items():
            bw = nbytes / st.median
            row = {"op": op, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "layout": layout,
                   "backend": label, "device": device.type, **st.as_dict(), "speedup_vs_textbook": base / st.median,
                   "bytes_moved": nbytes, "GB_per_s": bw / 1e9, "pct_of_copy": pct[label]}
            rows.append(row)
            ctx.print(table.line([op, _shape(shape), row["dtype"], layout, label, us(st.median),
                                  f"{base / st.median:.2f}x", f"{nbytes / 1e6:.2f}", f"{bw / 1e9:.1f}",
                                  f"{pct[label]:.0f}%"]))
    ctx.print("")
    return {"rows": rows, "skipped": skipped}
