"""What a run's conversations ask, as vectors: the mean of their search queries' embeddings.

Retrieval says which docs section a conversation is about; these vectors say whether two
conversations ask the same thing, which guards the joins retrieval alone is least sure of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .models import Verdict
from .propose import search_queries

# Cosine of two conversations' question vectors from which they ask the same thing. On the
# 19 topics of tests/benchmarks/bench_demand.py, two conversations on one topic scored at least
# 0.74 (hashed words) and 0.82 (all-MiniLM-L6-v2); on different topics at most 0.64 and 0.84
# (the cache's location and moving it): a guard, never a reason to join on its own.
SAME_QUESTION = 0.7

# The vectors of queries the run embedded already, None when one of them was not.
Known = Callable[[Sequence[str]], Sequence[Sequence[float]] | None]


class Questions:
    """Question vectors of a run's verdicts, and of the proposals the run made from them."""

    def __init__(self, known: Known) -> None:
        self._known = known  # no request is made here: a run embedded its queries at once
        self._proposals: dict[str, np.ndarray] = {}

    def of(self, verdict: Verdict) -> np.ndarray | None:
        """The unit mean of the verdict's query vectors, None if one was not embedded."""
        found = self._known(search_queries(verdict))
        if not found:
            return None
        vectors = np.asarray(found, dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        mean = vectors.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else None

    def remember(self, fingerprint: str, verdicts: Iterable[Verdict]) -> None:
        """What each conversation behind the run's proposal `fingerprint` asked (added to
        what earlier ones asked, when several groups proposed the same)."""
        vectors = [vector for verdict in verdicts if (vector := self.of(verdict)) is not None]
        if fingerprint in self._proposals:  # a later group's proposal for the same section
            vectors.insert(0, self._proposals[fingerprint])
        if vectors:
            self._proposals[fingerprint] = np.vstack(vectors)

    def asks_like(self, verdict: Verdict, fingerprint: str) -> bool:
        """Whether the verdict's conversation asks what one of the proposal's conversations
        asked; True when either is not known (no vectors: retrieval alone decides)."""
        known = self._proposals.get(fingerprint)
        asked = self.of(verdict) if known is not None else None
        return asked is None or known is None or float((known @ asked).max()) >= SAME_QUESTION
