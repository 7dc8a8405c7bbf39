"""Argument checks shared across the package: each names the argument in its error."""

from __future__ import annotations

import numbers


def positive_int(name, v):
    """v as an int > 0: TypeError for a non-integer (bools included), ValueError for v <= 0."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return int(v)


def to_float(name, v):
    """float(v) for a real number v: TypeError naming `name` where float() refuses v, ValueError for an
    int past float's range (10**400: float() raises OverflowError, which names nothing)."""
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"{name}: expected a finite number, got an int too large for a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}") from None


def byte_span(t):
    """[first, last) bytes of memory a tensor's elements can touch (strides are never negative in torch):
    what out-of-place kernels compare to refuse an output that partly overlaps an input."""
    if t.numel() == 0:
        return 0, 0
    start = t.data_ptr()
    return start, start + (sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1) * t.element_size()
