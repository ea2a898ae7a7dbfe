"""The in-memory vectors: nearest first, equal similarities in chunk order."""

from __future__ import annotations

from typing import Any

import numpy as np

from pythia import vectors as vectors_module
from pythia.vectors import VectorMatrix


def test_nearest_vectors_tie_in_chunk_order_and_list_every_owner() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    matrix = base[[0, 1, 2, 1, 3, 4, 5, 2]]  # rows 1 and 3, 2 and 7 hold equal vectors
    owners = ((0,), (1, 9), (2,), (3,), (4,), (5,), (6,), (7, 8))
    vectors = VectorMatrix.of(matrix, owners)
    query = base[1] + 0.5 * base[2]

    rows, similarities = vectors.nearest(query.tolist(), limit=6)

    exact = matrix.astype(np.float64) @ query.astype(np.float64)
    expected = [
        (owner, float(exact[row]))
        for row in sorted(range(len(matrix)), key=lambda r: (-exact[r], r))
        for owner in owners[row]
    ][:6]
    assert rows.tolist() == [owner for owner, _ in expected]
    assert np.allclose(similarities, [value for _, value in expected], rtol=1e-6)
    assert rows.tolist()[:3] == [1, 9, 3]


def test_nearest_vectors_of_one_chunk_each_as_when_listed_one_by_one() -> None:
    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((40, 8)).astype(np.float32)
    matrix[7] = matrix[3]  # a tie, in chunk order
    owners = tuple((row,) for row in rng.permutation(40).tolist())
    query = matrix[3] + 0.1 * matrix[5]

    rows, similarities = VectorMatrix.of(matrix, owners).nearest(query.tolist(), limit=9)

    exact = matrix.astype(np.float64) @ query.astype(np.float64)
    expected = [
        (owners[row][0], float(exact[row]))
        for row in sorted(range(len(matrix)), key=lambda r: (-exact[r], r))
    ][:9]
    assert rows.tolist() == [owner for owner, _ in expected]
    assert np.allclose(similarities, [value for _, value in expected], rtol=1e-6)


def test_nearest_for_many_queries_together_as_for_each_alone(monkeypatch: Any) -> None:
    monkeypatch.setattr(vectors_module, "QUERY_BLOCK", 4)  # three blocks, the last short
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((50, 16)).astype(np.float32)
    owners = tuple((row,) for row in range(50))
    vectors = VectorMatrix.of(matrix, owners)
    queries = rng.standard_normal((10, 16)).tolist()

    together = vectors.nearest_each(queries, limit=7)

    assert len(together) == len(queries)
    for query, (rows, similarities) in zip(queries, together, strict=True):
        alone_rows, alone_similarities = vectors.nearest(query, limit=7)
        assert rows.tolist() == alone_rows.tolist()
        assert np.allclose(similarities, alone_similarities, rtol=1e-5)
