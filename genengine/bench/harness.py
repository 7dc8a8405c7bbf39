"""Timing and ceilings for the benchmark suite.

Timing: `interleave(candidates, ...)` times several callables round-robin (each round runs every
candidate in turn, starting from a rotating position), so the drift of a noisy shared machine hits
all of them alike. Each candidate is warmed up first; per round it gets roughly the same wall time
(fast calls run many times, slow ones once). Statistics are over individual samples: median (the
number reported), min and p90 (kept in the JSON).
  * CPU: one sample = one call, timed with perf_counter_ns (the call is synchronous).
  * CUDA, throughput (default): one sample = a batch of back-to-back calls between two CUDA events,
    divided by the batch size: device time per call, or host time where the host cannot keep up.
  * CUDA, latency=True: one sample = synchronize, call, synchronize on the host clock: the whole
    Python-to-result time of one call.

Ceilings: copy bandwidth (a preallocated dst.copy_(src), bytes = read + write) measured at the byte
count of each row, since caches make it depend on size, cached per (bytes, dtype); and the float32
matmul rate (FLOP/s).

Cold inputs: a row whose real use never finds its bytes in cache (decode attention: each layer's KV
cache is evicted by the other layers' before the next step reads it) rotates through
`cold_sets(nbytes)` copies of its inputs, one shared counter for every candidate of the row, and
times its ceilings with the same number of rotating buffers (`copy_callable(..., sets=n)`).
"""

from __future__ import annotations

import gc
import glob
import itertools
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class Stats:
    median: float  # seconds per call
    min: float
    p90: float
    n: int  # samples

    @classmethod
    def of(cls, samples):
        s = sorted(samples)
        return cls(statistics.median(s), s[0], s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))], len(s))

    def as_dict(self):
        return {k + ("_s" if k != "n" else "_samples"): v for k, v in asdict(self).items()}

    def per(self, units):
        """The same statistics per 1/units of a call: per sweep, when one call runs `units` sweeps."""
        return Stats(self.median / units, self.min / units, self.p90 / units, self.n)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall(fn, device):
    sync(device)
    t0 = time.perf_counter_ns()
    fn()
    sync(device)
    return (time.perf_counter_ns() - t0) * 1e-9


# OpenBLAS (numpy, scikit-learn, hmmlearn) keeps its worker threads spinning for 2^28 cycles (~0.1 s)
# after each call; on 2 cores they halve the speed of whatever runs next. Interleaving against those
# libraries pauses this long after each block of calls, untimed.
FOREIGN_POOL_SETTLE_S = 0.15


def interleave(candidates, device, budget_s, *, min_samples=5, warmup_s=None, latency=False, settle_s=0.0):
    """{name: Stats} for {name: zero-argument callable}, timed round-robin for about budget_s seconds of
    timed work. settle_s: an untimed pause after each candidate's block of calls, so that one library's
    spinning thread pool does not slow the next candidate (FOREIGN_POOL_SETTLE_S for OpenBLAS)."""
    device = torch.device(device)
    names = list(candidates)
    fns = [candidates[k] for k in names]
    warmup_s = budget_s * 0.08 if warmup_s is None else warmup_s
    est = []
    for fn in fns:  # warm-up: at least 2 calls and warmup_s; the estimate is the median after the first
        times, t_end = [], time.perf_counter() + warmup_s
        while len(times) < 2 or (time.perf_counter() < t_end and len(times) < 1000):
            times.append(_wall(fn, device))
        est.append(max(statistics.median(times[1:]), 1e-7))
    cuda_batch = device.type == "cuda" and not latency
    # with a settle pause, blocks of ~20 ms: a pause per block of a tiny op's few calls once made
    # the rounds, and so the untimed sleeps, run for minutes (8 of the gibbs bench's 9 at 1x16)
    slot = min(max(max(est), 2e-3 if cuda_batch else 2e-4, 20e-3 if settle_s > 0 else 0.0), 20e-3)
    reps = [max(1, int(slot / e)) for e in est]
    samples = [[] for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t_start, rnd, slept = time.perf_counter(), 0, 0.0
        while True:
            order = [(rnd + i) % len(fns) for i in range(len(fns))]
            if cuda_batch:
                events = []
                for i in order:
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    for _ in range(reps[i]):
                        fns[i]()
                    b.record()
                    events.append((i, a, b))
                torch.cuda.synchronize(device)
                for i, a, b in events:
                    samples[i].append(a.elapsed_time(b) * 1e-3 / reps[i])
            else:
                for i in order:
                    fn, out = fns[i], samples[i]
                    for _ in range(reps[i]):
                        if latency and device.type == "cuda":
                            out.append(_wall(fn, device))
                        else:
                            t0 = time.perf_counter_ns()
                            fn()
                            out.append((time.perf_counter_ns() - t0) * 1e-9)
                    if settle_s > 0:
                        time.sleep(settle_s)
                        slept += settle_s
            rnd += 1
            elapsed = time.perf_counter() - t_start - slept
            fewest = min(len(s) for s in samples)
            if (elapsed >= budget_s and fewest >= min_samples) or (elapsed >= 3 * budget_s and fewest >= 3):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: Stats.of(s) for k, s in zip(names, samples)}


# rotated inputs add up to at least this many times the last-level cache: then no call finds what
# it reads still cached (Zen 4, 32 MiB L3, amax over rotated 32 MiB buffers: 2 to 16 of them alike,
# 0.85-0.9x one 512 MB buffer's rate; a single one 1.5x it, from L3)
COLD_CACHE_MULTIPLE = 4


def last_level_cache_bytes(device):
    """The last-level cache's size: the GPU's L2, or the CPU's largest cache in sysfs (32 MiB if
    none is listed)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size)
    sizes = []
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(index) as f:
                text = f.read().strip()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes) if sizes else 32 << 20


def cold_sets(nbytes, device, cap=16):
    """How many copies of a row's nbytes of inputs to rotate through so that none is still cached
    when its turn comes again (COLD_CACHE_MULTIPLE x the last-level cache, at most cap)."""
    want = COLD_CACHE_MULTIPLE * last_level_cache_bytes(device)
    return int(min(cap, max(1, -(-want // max(1, int(nbytes))))))


def rotating(fns):
    """One zero-argument callable that calls fns[0], fns[1], ... in turn."""
    if len(fns) == 1:
        return fns[0]
    turn = itertools.count()
    return lambda: fns[next(turn) % len(fns)]()


def each_set(data):
    """A wrapper: each(fn) is a zero-argument callable that calls fn(*data[i]) with the next i of
    one counter shared by everything wrapped from the same each_set(data), so consecutive calls of
    different candidates never read the same input set."""
    turn = itertools.count()
    return lambda fn: (lambda: fn(*data[next(turn) % len(data)]))


class Ceilings:
    """This machine's copy bandwidth (per byte count) and matmul rate, measured on first use and cached."""

    def __init__(self, device, budget_s=0.5):
        self.device = torch.device(device)
        self.budget_s = budget_s
        self._copy = {}
        self._matmul = None

    def copy_callable(self, nbytes, dtype=torch.float32, sets=1):
        """A zero-argument dst.copy_(src) moving nbytes in all (nbytes/2 read, nbytes/2 written);
        sets > 1: through that many (src, dst) pairs in turn (cold, see cold_sets)."""
        esize = torch.empty((), dtype=dtype).element_size()
        if nbytes % (2 * esize):
            dtype, esize = torch.uint8, 1
        n = max(1, nbytes // (2 * esize))
        fns = []
        for _ in range(sets):
            src = torch.ones(n, dtype=dtype, device=self.device)
            dst = torch.zeros_like(src)
            fns.append(lambda src=src, dst=dst: dst.copy_(src))
        return rotating(fns)

    def read_callable(self, nbytes, dtype=torch.float32, sets=1):
        """A zero-argument buf.amax() over nbytes: a same-bytes read-only stream, the ceiling of a kernel
        that reads its bytes and writes next to nothing (a copy's writes can outrun reads alone);
        sets > 1: through that many buffers in turn."""
        esize = torch.empty((), dtype=dtype).element_size()
        if nbytes % esize:
            dtype, esize = torch.uint8, 1
        bufs = [torch.ones(max(1, nbytes // esize), dtype=dtype, device=self.device) for _ in range(sets)]
        return rotating([lambda buf=buf: buf.amax() for buf in bufs])

    def copy(self, nbytes, dtype=torch.float32):
        """(Stats, bytes/s) of dst.copy_(src) moving nbytes in all (nbytes/2 read, nbytes/2 written)."""
        key = (int(nbytes), dtype)
        if key not in self._copy:
            st = interleave({"copy": self.copy_callable(nbytes, dtype)}, self.device, self.budget_s)["copy"]
            self._copy[key] = (st, nbytes / st.median)
        return self._copy[key]

    def matmul(self):
        """(n, Stats, FLOP/s) of a float32 n x n x n matmul (n = 1024 on CPU, 8192 on CUDA) into a preallocated out."""
        if self._matmul is None:
            n = 8192 if self.device.type == "cuda" else 1024
            a, b = (torch.randn(n, n, device=self.device) for _ in range(2))
            c = torch.empty(n, n, device=self.device)
            st = interleave({"mm": lambda: torch.mm(a, b, out=c)}, self.device, max(self.budget_s, 0.3) * 3)["mm"]
            self._matmul = (n, st, 2.0 * n**3 / st.median)
        return self._matmul

    def as_dict(self):
        d = {"copy": [{"bytes": b, "dtype": str(dt).replace("torch.", ""), "GB_per_s": bw / 1e9, **st.as_dict()}
                      for (b, dt), (st, bw) in sorted(self._copy.items(), key=lambda kv: kv[0][0])]}
        if self._matmul is not None:
            n, st, rate = self._matmul
            d["matmul_float32"] = {"n": n, "GFLOP_per_s": rate / 1e9, **st.as_dict()}
            if self.device.type == "cuda":
                d["matmul_float32"]["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        return d

    def format(self):
        lines = [f"ceilings on {self.device.type}:"]
        if self._matmul is not None:
            n, st, rate = self._matmul
            lines.append(f"  matmul float32 {n}^3: {rate / 1e9:9.1f} GFLOP/s  (median {st.median * 1e3:.2f} ms)")
        for (b, dt), (st, bw) in sorted(self._copy.items(), key=lambda kv: kv[0][0]):
            lines.append(f"  copy {b / 1e6:8.2f} MB ({str(dt).replace('torch.', '')}): {bw / 1e9:7.1f} GB/s"
                         f"  (median {st.median * 1e6:.1f} us)")
        return "\n".join(lines)


class Table:
    """A fixed-width text table that prints row by row (so a long run shows progress)."""

    def __init__(self, columns):
        self.columns = columns  # [(header, width, "<" or ">")]

    def line(self, values):
        return "  ".join(f"{str(v):{a}{w}}" for v, (_, w, a) in zip(values, self.columns)).rstrip()

    def header(self):
        return self.line([h for h, _, _ in self.columns]) + "\n" + self.line(["-" * w for _, w, _ in self.columns])


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    return v[3] + v[4], sum(v[:8])  # idle + iowait, total


def busy_note(window_s=0.5):
    """(fraction of the CPUs busy with other work just before the run, a warning line or None).
    Other processes skew timings, most of all torch's multi-threaded ops, which wait for their
    slowest thread at every op."""
    try:
        i0, t0 = _cpu_times()
        time.sleep(window_s)
        i1, t1 = _cpu_times()
        busy = 1.0 - (i1 - i0) / max(t1 - t0, 1)
    except (OSError, ValueError, IndexError):  # not Linux
        return None, None
    if busy < 0.2:
        return busy, None
    return busy, (f"note: {100 * busy:.0f}% of the {os.cpu_count()} CPUs were busy with other processes just before "
                  "this run: timings will be noisier than usual (multi-threaded torch ops most of all)")


def us(seconds):
    v = seconds * 1e6
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"
