"""Picking the best of many scored items without sorting them all."""

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
