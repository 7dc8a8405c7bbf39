"""Does a genengine CPU step slow down when it runs right after a parallel torch op, and vice versa?

Two thread pools in one process (torch's OpenMP threads and a private pool) spin after their work
and compete for the cores; genengine runs its loops on torch's own OpenMP runtime to avoid that.
This script times both configurations, each in a fresh process:

    python benchmarks/bench_threading.py
"""

import os
import subprocess
import sys

CHILD = """
import time, torch, genengine as ge
from genengine import _C
x, e, u = (torch.randn(16, 4, 128, 128) for _ in range(3))
src = torch.randn(1 << 18); dst = torch.empty_like(src)   # 1 MB: torch runs it in parallel, it stays cached
step = lambda: ge.ops.ddim_step(x, e, 0.3, 0.35, uncond=u, guidance_scale=7.5, out=x)
torch_op = lambda: dst.copy_(src)

def median_us(fn, before=None, n=400):
    ts = []
    for _ in range(n):
        if before:
            before()
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1e6

for fn, before in ((step, None), (step, torch_op), (torch_op, None), (torch_op, step)):
    median_us(fn, before, 50)  # warm up
print("|".join(f"{median_us(fn, before):.1f}" for fn, before in
               ((step, None), (step, torch_op), (torch_op, None), (torch_op, step))), _C.threading().split(" (")[0])
"""


def main():
    print(f"{'threads':40s} {'step':>8s} {'step after torch op':>20s} {'torch op':>9s} {'torch op after step':>20s}  (us)")
    for pool in ("", "own"):
        env = dict(os.environ, GENENGINE_THREADPOOL=pool)
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True).stdout
        times, name = out.strip().split(" ", 1)
        a, b, c, d = times.split("|")
        print(f"{name:40s} {a:>8s} {b:>20s} {c:>9s} {d:>20s}")


if __name__ == "__main__":
    main()
