"""The index's vectors held in memory for a run, and the nearest of them to a query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .db import Connection
from .topk import largest_first

QUERY_BLOCK = 64  # queries per matrix product: 64 x 50,000 similarities are 12.8 MB


@dataclass(frozen=True)
class VectorMatrix:
    """Every vector of the index in one matrix, and the chunk rows each vector stands for.

    The matrix is stored a dimension per row (dimensions x vectors, `of` turns one with a
    vector per row): BLAS then scans it with its matrix-vector kernel for that layout, which
    was 1.25-1.3x faster here than the one for a vector per row, at 10k and 50k vectors of
    768 dimensions, on one core and on two (tests/benchmarks/bench_search.py prints both).
    """

    by_dimension: np.ndarray  # dimensions x vectors, C order
    owners: tuple[tuple[int, ...], ...]  # per vector, the chunk rows sharing it

    @classmethod
    def of(cls, matrix: np.ndarray, owners: tuple[tuple[int, ...], ...]) -> VectorMatrix:
        """From a matrix with a vector per row."""
        return cls(by_dimension=np.ascontiguousarray(matrix.T), owners=owners)

    @classmethod
    def load(cls, conn: Connection, chunk_ids: np.ndarray) -> VectorMatrix:
        """Read the vec0 table once; `chunk_ids` (ascending) number the chunk rows."""
        owners: dict[int, list[int]] = {}
        for embedding_id, chunk_id in conn.execute(
            "select e.id, c.id from embeddings e "
            "join chunks c on c.content_hash = e.content_hash order by c.id"
        ):
            owners.setdefault(int(embedding_id), []).append(int(chunk_id))
        rows = conn.execute("select rowid, embedding from chunk_vectors").fetchall()
        # In the order of their first chunk, so that equal similarities rank as the KNN
        # query ranks them, by chunk id.
        rows = sorted(
            (row for row in rows if int(row[0]) in owners), key=lambda row: owners[int(row[0])][0]
        )
        blob = b"".join(bytes(row[1]) for row in rows)
        matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)
        chunk_rows = {int(i): n for n, i in enumerate(chunk_ids.tolist())}
        return cls.of(
            matrix, tuple(tuple(chunk_rows[i] for i in owners[int(row[0])]) for row in rows)
        )

    def nearest(self, query: Sequence[float], *, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The `limit` chunk rows nearest to `query` by cosine similarity, nearest first, and
        their similarities; chunks sharing a vector are all listed, in row order, and equal
        similarities keep the order of the matrix (of chunk ids).

        One BLAS matrix-vector product, over every core. Its threads keep spinning a while
        after it returns, which slows the keyword ranking and fusion that follow, yet hybrid
        search was faster with it than with einsum on one thread or split over two by hand
        (tests/benchmarks/bench_search.py, two cores).
        """
        return self._nearest(np.asarray(query, dtype=np.float32) @ self.by_dimension, limit)

    def nearest_each(
        self, queries: Sequence[Sequence[float]], *, limit: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`nearest` for each query, from one matrix product per block of queries: the
        vectors are read once a block instead of once a query."""
        found: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), QUERY_BLOCK):
            block = np.asarray(queries[start : start + QUERY_BLOCK], dtype=np.float32)
            found.extend(self._nearest(row, limit) for row in block @ self.by_dimension)
        return found

    def _nearest(self, similarities: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        nearest = largest_first(similarities, limit)
        if self._sole_owners is not None:  # no two chunks share a vector: no list to build
            return self._sole_owners[nearest], similarities[nearest].astype(np.float64)
        pairs = [(owner, row) for row in nearest.tolist() for owner in self.owners[row]][:limit]
        rows = np.array([owner for owner, _ in pairs], dtype=np.intp)
        return rows, similarities[[row for _, row in pairs]].astype(np.float64)

    @cached_property
    def _sole_owners(self) -> np.ndarray | None:
        """Per matrix row, its one chunk row, when every vector stands for one chunk."""
        if any(len(owners) != 1 for owners in self.owners):
            return None
        return np.array([owner for (owner,) in self.owners], dtype=np.intp)
