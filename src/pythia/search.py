"""Hybrid search of the docs index: FTS5 BM25 and vector nearest neighbours, fused by rank."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import sqlite_vec

from .db import Connection
from .index import EmbeddingMismatch
from .models import Hit
from .ports import Embedder
from .schema import has_vector_table, migrate, read_meta

Mode = Literal["hybrid", "keyword", "vector"]
MODES: tuple[Mode, ...] = ("keyword", "vector", "hybrid")

RRF_K = 60
MMAP_BYTES = 1 << 30

# Column weights for bm25(): a match in a heading says more than one in the body.
BM25_WEIGHTS = (2.0, 4.0, 1.0)

# fmt: off
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for",
    "from", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of",
    "on", "or", "so", "that", "the", "their", "then", "there", "these", "this", "to", "was",
    "what", "when", "where", "which", "who", "why", "will", "with", "you", "your",
))
# fmt: on


def fts_terms(text: str) -> list[str]:
    """User text as safe FTS5 strings: each word double-quoted, duplicates dropped.

    Quoting keeps FTS5 syntax (quotes, colons, '-', '*', AND/NOT) from reaching the
    parser; a quoted `dry-run` becomes the phrase "dry run" after tokenisation.
    Common English words are dropped unless nothing else is left.
    """
    words = [w.replace('"', "") for w in text.split()]
    words = [w for w in words if re.search(r"\w", w)]
    meaningful = [w for w in words if w.lower().strip("?!.,;:") not in STOPWORDS]
    return list(dict.fromkeys(f'"{w}"' for w in (meaningful or words)))


def fts_query(text: str) -> str:
    """User text as a safe FTS5 query: its terms joined by OR."""
    return " OR ".join(fts_terms(text))


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = RRF_K, weights: Sequence[float] = ()
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: each id scores the sum of weight / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for number, ranking in enumerate(rankings):
        weight = weights[number] if number < len(weights) else 1.0
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


@dataclass(frozen=True)
class _Vectors:
    """Every vector of the index in one matrix, and the chunks each row stands for."""

    matrix: np.ndarray
    chunks: tuple[tuple[int, ...], ...]  # per row, the ids of the chunks sharing that vector


class SearchIndex:
    """One index opened for many searches: what repeats per query is read once.

    The metadata and the embedder check happen here, once. Vector search goes through
    sqlite-vec's KNN for the first query; from the second on, every vector is held in
    memory and scanned with numpy, which a run making hundreds of searches pays back at once.
    """

    def __init__(self, conn: Connection, *, embedder: Embedder | None = None) -> None:
        migrate(conn)
        self.conn = conn
        meta = read_meta(conn)
        self._chunks_total = int(meta.get("chunks", "0"))
        self._has_vectors = has_vector_table(conn) and bool(
            conn.execute("select exists (select 1 from embeddings)").fetchone()[0]
        )
        if embedder is not None and self._has_vectors:
            recorded = (meta.get("embedding_model"), meta.get("dimensions"))
            if recorded != (embedder.model, str(embedder.dimensions)):
                raise EmbeddingMismatch(
                    f"the index was built with {recorded[0]} ({recorded[1]} dimensions), "
                    f"not {embedder.model} ({embedder.dimensions}); run `pythia index` "
                    "to rebuild it"
                )
        self.embedder = embedder if self._has_vectors else None
        self._vectors: _Vectors | None = None
        self._vector_queries = 0
        # A KNN query reads every vector through SQLite's pager; memory-mapped I/O spares
        # the copy into the page cache (https://sqlite.org/mmap.html).
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}")

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this index and embedder allow: keyword always, vectors when both exist."""
        return MODES if self.embedder is not None else ("keyword",)

    # --- the two rankings ----------------------------------------------------------------

    def keyword_ranking(self, query: str, *, limit: int) -> list[tuple[int, float]]:
        """Chunk ids and BM25 relevance (higher is better), best first."""
        terms = self._informative_terms(fts_terms(query))
        if not terms:
            return []
        rows = self.conn.execute(
            "select rowid, bm25(chunks_fts, ?, ?, ?) as rank from chunks_fts "
            "where chunks_fts match ? order by rank limit ?",
            (*BM25_WEIGHTS, " OR ".join(terms), limit),
        )
        return [(int(row[0]), -float(row[1])) for row in rows]

    def _informative_terms(self, terms: list[str]) -> list[str]:
        """Drop terms found in at least half the chunks, keeping at least the rarest one.

        FTS5's bm25() gives such terms an IDF of 1e-6 (https://sqlite.org/fts5.html, section
        "The bm25() function"), so they barely move the ranking, yet scoring every row they
        match is what makes a keyword search slow on a large index.
        """
        total = self._chunks_total
        if len(terms) < 2 or total < 1000:
            return terms
        counts = {
            term: self.conn.execute(
                "select count(*) from chunks_fts where chunks_fts match ?", (term,)
            ).fetchone()[0]
            for term in terms
        }
        kept = [term for term in terms if 2 * counts[term] < total]
        return kept or [min(terms, key=counts.__getitem__)]

    def vector_ranking(
        self, vector: Sequence[float], *, limit: int
    ) -> list[tuple[int, float]]:
        """Chunk ids and cosine similarity, nearest first (chunks sharing a vector all listed)."""
        if not self._has_vectors:
            return []
        self._vector_queries += 1
        if self._vectors is None and self._vector_queries < 2:
            return self._knn(vector, limit=limit)
        vectors = self._load_vectors()
        query = np.asarray(vector, dtype=np.float32)
        similarities = vectors.matrix @ query
        if limit < len(similarities):
            top = np.argpartition(-similarities, limit - 1)[:limit]
        else:
            top = np.arange(len(similarities))
        ordered = top[np.argsort(-similarities[top], kind="stable")]
        ranked = [
            (chunk_id, float(similarities[row]))
            for row in ordered.tolist()
            for chunk_id in vectors.chunks[row]
        ]
        return ranked[:limit]

    def _knn(self, vector: Sequence[float], *, limit: int) -> list[tuple[int, float]]:
        # The KNN stands alone in a CTE so vec0 receives its `match` and `k` constraints as-is.
        rows = self.conn.execute(
            "with nearest as (select rowid, distance from chunk_vectors "
            "where embedding match ? and k = ?) "
            "select c.id, nearest.distance from nearest "
            "join embeddings e on e.id = nearest.rowid "
            "join chunks c on c.content_hash = e.content_hash "
            "order by nearest.distance, c.id",
            (sqlite_vec.serialize_float32(list(vector)), limit),
        ).fetchall()
        return [(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in rows][:limit]

    def _load_vectors(self) -> _Vectors:
        if self._vectors is None:
            owners: dict[int, list[int]] = {}
            for embedding_id, chunk_id in self.conn.execute(
                "select e.id, c.id from embeddings e "
                "join chunks c on c.content_hash = e.content_hash order by c.id"
            ):
                owners.setdefault(int(embedding_id), []).append(int(chunk_id))
            rows = self.conn.execute("select rowid, embedding from chunk_vectors").fetchall()
            rows = [row for row in rows if int(row[0]) in owners]
            blob = b"".join(bytes(row[1]) for row in rows)
            matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)
            chunks = tuple(tuple(owners[int(row[0])]) for row in rows)
            self._vectors = _Vectors(matrix=matrix, chunks=chunks)
        return self._vectors

    # --- searching -----------------------------------------------------------------------

    def search(self, query: str, *, k: int = 8, mode: Mode = "hybrid") -> list[Hit]:
        """The `k` best sections for `query`: hybrid (RRF of BM25 and KNN) when vectors exist.

        Scores are BM25 relevance in keyword mode, cosine similarity in vector mode and
        fused RRF scores in hybrid mode; higher is better either way. Without an embedder
        every mode is keyword search.
        """
        candidates = max(k * 5, 50)
        if self.embedder is None or mode == "keyword":
            return self._hits(self.keyword_ranking(query, limit=candidates)[:k])
        vector = self.embedder.embed([query], task="query")[0]
        nearest = self.vector_ranking(vector, limit=candidates)
        if mode == "vector":
            return self._hits(nearest[:k])
        keyword = self.keyword_ranking(query, limit=candidates)
        fused = reciprocal_rank_fusion([[i for i, _ in keyword], [i for i, _ in nearest]])
        return self._hits(fused[:k])

    def _hits(self, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        ids = [chunk_id for chunk_id, _ in ranked]
        marks = ",".join("?" * len(ids))
        rows = {
            row[0]: row
            for row in self.conn.execute(
                f"select id, path, heading, anchor, text from chunks where id in ({marks})", ids
            )
        }
        return [
            Hit(
                path=rows[i][1], heading=rows[i][2], anchor=rows[i][3], score=score,
                text=rows[i][4],
            )
            for i, score in ranked
            if i in rows
        ]


def pages(hits: Iterable[Hit]) -> list[str]:
    """The distinct pages of `hits`, in order of their best hit."""
    return list(dict.fromkeys(hit.path for hit in hits))


def search(
    conn: Connection,
    query: str,
    *,
    k: int = 8,
    embedder: Embedder | None = None,
    mode: Mode = "hybrid",
) -> list[Hit]:
    """One search (see `SearchIndex.search`); a caller making many keeps a `SearchIndex`."""
    return SearchIndex(conn, embedder=embedder).search(query, k=k, mode=mode)


def bm25_ranking(conn: Connection, query: str, *, limit: int) -> list[tuple[int, float]]:
    """Chunk ids and BM25 relevance (higher is better), best first."""
    return SearchIndex(conn).keyword_ranking(query, limit=limit)


def vector_ranking(
    conn: Connection, vector: Sequence[float], *, limit: int
) -> list[tuple[int, float]]:
    """Chunk ids and cosine similarity, nearest first, through sqlite-vec's KNN."""
    if not has_vector_table(conn):
        return []
    return SearchIndex(conn)._knn(vector, limit=limit)
