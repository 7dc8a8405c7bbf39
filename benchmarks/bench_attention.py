"""genengine's decode attention side by side with PyTorch's attention for one decode step.

    python benchmarks/bench_attention.py [--device cpu|cuda] [--quick] [--json [FILE]]

Shapes (B, Hq, Hkv, S, D) as the issue's bar: (1,32,8,4096,128), (8,32,8,2048,128), (8,32,32,2048,128)
float32 on the CPU; on CUDA the same with S = 32768 in bfloat16. All sequences full. Candidates, timed
interleaved in one run (genengine.bench.harness.interleave):
  genengine      ge.ops.decode_attention(q, k, v, lengths)                  contiguous [B, Hkv, S, D]
  genengine pg   the same keys in a paged cache (page 16, random page order) with its block table
  SDPA gqa       F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)
  SDPA repeat    SDPA after k, v.repeat_interleave(Hq // Hkv, dim=1) (what older code does)
  flex           torch.nn.attention.flex_attention (compiled, enable_gqa) where it is available (CUDA)
"% copy": a same-bytes dst.copy_(src) over the candidate (bytes = K and V read once). Cold: every
call, the copy's too, takes the next of enough input sets to fill 4x the last-level cache
(genengine.bench.harness.cold_sets), as a model's layers evict each other's caches.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import genengine as ge  # noqa: E402
from genengine.bench.attention import cases, inputs  # noqa: E402
from genengine.bench.harness import Ceilings, Table, busy_note, cold_sets, each_set, interleave, us  # noqa: E402

COPY = "copy"


def _flex(device):
    if device.type != "cuda":
        return None
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except Exception:
        return None
    return torch.compile(flex_attention)


def _candidates(shape, dtype, device, flex, sets):
    """Every call takes the next of `sets` input sets (one counter for all: cold, see harness)."""
    B, Hq, Hkv, S, D = shape
    G = Hq // Hkv
    each = each_set([inputs(shape, dtype, device, seed=i) for i in range(sets)])

    cands = {
        "genengine": each(lambda q, k, v, L, kp, vp, bt: ge.ops.decode_attention(q, k, v, L)),
        "genengine pg": each(lambda q, k, v, L, kp, vp, bt: ge.ops.decode_attention(q, kp, vp, L, block_table=bt)),
        "SDPA gqa": each(lambda q, k, v, L, kp, vp, bt:
                         F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)),
        "SDPA repeat": each(lambda q, k, v, L, kp, vp, bt: F.scaled_dot_product_attention(
            q[:, :, None], k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))),
    }
    if flex is not None:
        cands["flex"] = each(lambda q, k, v, L, kp, vp, bt: flex(q[:, :, None], k, v, enable_gqa=True))
    return cands


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", nargs="?", const="", metavar="FILE")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    busy, note = busy_note()
    print(f"decode attention on {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if note:
        print(note)
    flex = _flex(device)
    ceil = Ceilings(device)
    table = Table([("shape", 24, "<"), ("candidate", 13, "<"), ("median us", 10, ">"), ("GB/s", 7, ">"),
                   ("% copy", 6, ">"), ("vs SDPA gqa", 11, ">")])
    print(table.header())
    rows = []
    for shape, dtype in cases(device):
        B, Hq, Hkv, S, D = shape
        nbytes = 2 * B * Hkv * S * D * dtype.itemsize
        sets = cold_sets(nbytes, device)
        cands = _candidates(shape, dtype, device, flex, sets)
        cands[COPY] = ceil.copy_callable(nbytes, dtype, sets)
        stats = interleave(cands, device, 0.5 if args.quick else 5.0, min_samples=3 if args.quick else 10)
        base = stats["SDPA gqa"].median
        for label, st in stats.items():
            pct = 100 * stats[COPY].median / st.median
            rows.append({"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "candidate": label,
                         **st.as_dict(), "input_sets": sets, "GB_per_s": nbytes / st.median / 1e9, "pct_of_copy": pct,
                         "speedup_vs_sdpa_gqa": base / st.median})
            print(table.line([f"{tuple(shape)}", label, us(st.median), f"{nbytes / st.median / 1e9:.1f}", f"{pct:.0f}%",
                              f"{base / st.median:.2f}x"]))
    if args.json is not None:
        path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"{device.type}-attention-{datetime.date.today()}.json")
        with open(path, "w") as f:
            json.dump({"command": "python benchmarks/bench_attention.py " + " ".join(argv or sys.argv[1:]),
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "cpu_busy_before": busy, "rows": rows, "info": ge.info(verbose=False)}, f, indent=1, default=str)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
