"""Picking the best of many scored items without sorting them all, and the distinct ones."""

from __future__ import annotations

import numpy as np


def largest_first(values: np.ndarray, limit: int) -> np.ndarray:
    """Positions of the `limit` largest values, largest first, equal values in position order.

    A partition finds the cut in linear time; only the values that reach it are sorted.
    """
    if limit < 1:
        return np.zeros(0, dtype=np.intp)
    if len(values) > limit:
        cut = np.partition(values, len(values) - limit)[len(values) - limit]
        candidates = np.flatnonzero(values >= cut)
    else:
        candidates = np.arange(len(values))
    return candidates[np.lexsort((candidates, -values[candidates]))[:limit]]


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: np.unique without its Python overhead, which counts
    when a search makes a hundred small numpy calls."""
    ordered = np.sort(values)
    found: np.ndarray = ordered[run_starts(ordered)]
    return found


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins in `ordered`."""
    starts = np.empty(len(ordered), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts
