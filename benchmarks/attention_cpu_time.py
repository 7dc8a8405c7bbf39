"""Decode attention on one thread, timed in CPU time (time.thread_time, best of 3): the "one thread,
CPU time" rows of benchmarks/NOTES.md. On an oversubscribed VM this is immune to time slicing (not to
other processes' memory traffic), where wall-clock medians swing run to run.

    python benchmarks/attention_cpu_time.py

Candidates per shape: genengine cpp (contiguous, and paged with page 16), SDPA with enable_gqa, and a
same-bytes copy (nbytes / 2 read + nbytes / 2 written, as the suite's ceiling).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import genengine as ge  # noqa: E402
from genengine.bench.attention import inputs  # noqa: E402

SHAPES = [(1, 32, 8, 4096, 128), (8, 32, 8, 2048, 128), (8, 32, 32, 2048, 128)]


def cpu_time(fn, n):
    fn()
    best = []
    for _ in range(3):
        t0 = time.thread_time_ns()
        for _ in range(n):
            fn()
        best.append((time.thread_time_ns() - t0) / n * 1e-9)
    return min(best)


def measure(shape):
    q, k, v, L, kp, vp, bt = inputs(shape, torch.float32, "cpu")
    q4 = q[:, :, None]
    nbytes = 2 * k.numel() * 4
    src = torch.ones(nbytes // 8)
    dst = torch.empty_like(src)
    n = 3 if shape[0] == 1 else 2
    return {"cpp": cpu_time(lambda: ge.ops.decode_attention(q, k, v, L), n),
            "cpp paged": cpu_time(lambda: ge.ops.decode_attention(q, kp, vp, L, block_table=bt), n),
            "sdpa": cpu_time(lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True), n),
            "copy": cpu_time(lambda: dst.copy_(src), n)}


def main():
    torch.set_num_threads(1)
    ge._backends.load_cpp().set_num_threads(1)
    for shape in SHAPES:
        r = measure(shape)
        cells = "  ".join(f"{name} {t * 1e3:.2f} ms ({r['copy'] / t * 100:.0f}% copy)" for name, t in r.items())
        print(shape, cells, f"| vs sdpa {r['sdpa'] / r['cpp']:.2f}x, paged/contig {r['cpp paged'] / r['cpp']:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
