"""A progress bar for long loops (sampling, fitting): tqdm when it is installed, else a plain one.

    for i in progress_bar(range(n), enabled=progress, desc="sampling"): ...

Printing never reads device memory, so a bar costs no host synchronisation.
"""

from __future__ import annotations

import sys
import time


def progress_bar(iterable, *, total=None, desc="", enabled=True):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainBar(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, leave=False)


class _PlainBar:
    """Redraws one stderr line at most ten times a second."""

    def __init__(self, iterable, total, desc):
        self.iterable, self.desc = iterable, desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)

    def __iter__(self):
        start = last = time.perf_counter()
        done = 0
        for item in self.iterable:
            yield item
            done += 1
            now = time.perf_counter()
            if now - last > 0.1 or done == self.total:
                last = now
                of = f"/{self.total}" if self.total else ""
                sys.stderr.write(f"\r{self.desc} {done}{of} [{now - start:.1f}s]")
                sys.stderr.flush()
        sys.stderr.write("\n")
