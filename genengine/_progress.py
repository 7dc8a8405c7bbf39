"""Progress bars for long loops (sampling, fitting): tqdm when it is installed, else one stderr
line rewritten in place; silent when disabled.

    bar = Progress(total, "fit", enabled=progress); bar.update(1, loss=f"{loss:.4f}"); bar.close()
    for i in progress_bar(range(n), total=n, desc="ddim", enabled=progress): ...

Drawing never reads device memory, so a bar costs no host synchronisation.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total, desc, enabled=True):
        self.enabled, self.total, self.desc, self.n, self._bar = enabled, total, desc, 0, None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True)

    def update(self, n=1, **postfix):
        if not self.enabled:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last < 0.2 and self.n != self.total:  # rewriting a terminal line costs more than a step
            return
        self._last = now
        of = f"/{self.total}" if self.total else ""
        extra = "".join(f"  {k}={v}" for k, v in postfix.items())
        sys.stderr.write(f"\r{self.desc}: {self.n}{of}{extra}")
        sys.stderr.flush()

    def close(self):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def progress_bar(iterable, *, total=None, desc="", enabled=True):
    """Yields from `iterable`, advancing a Progress per item (the iterable itself when disabled)."""
    if not enabled:
        return iterable
    return _iterate(iterable, Progress(total, desc, enabled))


def _iterate(iterable, bar):
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
