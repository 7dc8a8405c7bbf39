"""Compiles genengine's Triton kernels for an H100 (sm_90) without a GPU: catches code that the
CPU interpreter accepts but the GPU compiler rejects. Run by tests/test_triton_gpu_compile.py in a
subprocess, because TRITON_INTERPRET (set for the CPU tests) makes @triton.jit build interpreted
functions that cannot be compiled. Prints one line per kernel variant and exits 1 on a failure."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import diffusion, group_norm, rng, threshold


def step_types(dt):
    def types(n):
        if n in ("gps_ptr", "thr_ptr"):
            return "*fp32"
        if n == "key_ptr":
            return "*i64"
        if n.endswith("_ptr"):
            return f"*{dt}"
        if n in ("n", "inner"):
            return "i64"
        if n in ("seed_lo", "seed_hi", "off_lo", "off_hi"):
            return "i32"
        return "fp32"
    return types


FLAGS = ("HAS_UNCOND", "PER_SAMPLE_GUIDANCE", "HAS_PREV", "HAS_NOISE", "WRITE_X0", "CLIP", "INNER_I32", "THRESH",
         "KEY_PTR", "WRITE_DUP")
for dt, on in itertools.product(("fp32", "bf16", "fp16"), (False, True)):
    flags = dict.fromkeys(FLAGS, on)
    flags["INNER_I32"] = True
    flags["NEED_SAMPLE"] = flags["PER_SAMPLE_GUIDANCE"] or flags["THRESH"]
    flags["BLOCK"] = diffusion.STEP_BLOCK
    compile_variant(f"sampler_step {dt} flags={'all' if on else 'none'}", diffusion._sampler_step_kernel, step_types(dt), flags)

HIST_TYPES = {"gps_ptr": "*fp32", "state_ptr": "*i64", "hist_ptr": "*i32", "inner": "i64"}
SCAN_TYPES = {"state_ptr": "*i64", "hist_ptr": "*i32", "thr_ptr": "*fp32", "rank0": "i64", "rank1": "i64"}
for dt, pass_ in itertools.product(("fp32", "bf16"), (0, 1, 2)):
    compile_variant(f"threshold histogram {dt} pass {pass_}", threshold._hist_kernel,
                    lambda n, dt=dt: HIST_TYPES.get(n, f"*{dt}" if n.endswith("_ptr") else "fp32"),
                    {"PASS": pass_, "HAS_UNCOND": True, "PER_SAMPLE_GUIDANCE": pass_ == 1, "BLOCK": threshold.SELECT_BLOCK})
for pass_ in (0, 1, 2):
    compile_variant(f"threshold scan pass {pass_}", threshold._scan_kernel, lambda n: SCAN_TYPES.get(n, "fp32"), {"PASS": pass_})

for kind in (0, 1, 2):  # Philox words, uniforms, normals
    compile_variant(f"philox_fill kind {kind}", rng._philox_fill_kernel,
                    lambda n, kind=kind: ("*i32" if kind == 0 else "*fp32") if n == "out_ptr" else ("i64" if n == "n" else "i32"),
                    {"KIND": kind, "BLOCK": rng.FILL_BLOCK})

# GroupNorm+SiLU at the H100 benchmark shape (2,320,128,128), 32 groups, both layouts, on 132 SMs
for dt, cl in itertools.product(("fp32", "bf16"), (False, True)):
    n, c, sp, g = 2, 320, 128 * 128, 32
    gpb, gblocks, s_chunk, splits = group_norm.plan(n, c, sp, g, cl, 132)
    bc, bs = group_norm._tiles(c // g, gpb, s_chunk, cl)
    p2 = group_norm._next_pow2
    geometry = {"CL": cl, "BIG": False, "BC": bc, "BS": bs}
    affine = {"HAS_W": True, "HAS_B": True}

    def gn_types(name, dt=dt):
        if name in ("part_ptr", "pc_ptr", "pg_ptr", "mean_ptr", "rstd_ptr", "w_ptr", "b_ptr", "dw_ptr", "db_ptr"):
            return "*fp32"
        if name.endswith("_ptr"):
            return f"*{dt}"
        return "fp32" if name == "eps" else "i32"

    br = max(1, min(p2(n * splits), max(1, 4096 // bc)))
    for fn, extra in ((group_norm._gn_stats_kernel, {"GB": p2(gpb)}),
                      (group_norm._gn_norm_kernel, {**affine, "SB": p2(splits)}),
                      (group_norm._gn_bwd_reduce_kernel, {**affine, "GB": p2(gpb)}),
                      (group_norm._gn_bwd_dx_kernel, {**affine, "WANT_DW": True, "WANT_DB": True, "SB": p2(splits), "BR": br})):
        compile_variant(f"{fn.fn.__name__} {dt} {'channels-last' if cl else 'nchw'}", fn, gn_types, {**geometry, **extra})

finish()
