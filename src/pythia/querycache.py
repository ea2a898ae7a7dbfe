"""Query embeddings for one run: asked for together in as few calls as the API allows, once each."""

from __future__ import annotations

from collections.abc import Sequence

from .ports import Embedder, EmbedTask


class QueryCache:
    """An Embedder that remembers the vectors of search queries for the length of a run.

    `warm` embeds every query a run is about to search in one `embed` call (the adapter splits
    it into requests of at most 100 texts); each search then finds its vector here instead of
    sending a request of one. Documents pass straight through: the index keeps their vectors.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model = inner.model
        self.provider: str = getattr(inner, "provider", "gemini")
        self.dimensions = inner.dimensions
        self._vectors: dict[str, list[float]] = {}

    def warm(self, queries: Sequence[str]) -> None:
        self.embed(queries, task="query")

    def known(self, texts: Sequence[str]) -> list[list[float]] | None:
        """The vectors of queries already embedded this run, or None (no request is made)."""
        if any(text not in self._vectors for text in texts):
            return None
        return [self._vectors[text] for text in texts]

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        if task != "query":
            return self.inner.embed(texts, task=task)
        missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing, task="query"), strict=True):
                self._vectors[text] = vector
        return [self._vectors[text] for text in texts]
