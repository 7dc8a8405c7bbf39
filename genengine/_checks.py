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
