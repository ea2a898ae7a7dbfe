"""Hybrid search of the docs index: FTS5 BM25 and sqlite-vec KNN fused by reciprocal rank."""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlite_vec

from .db import Connection
from .index import EmbeddingMismatch
from .models import Hit
from .ports import Embedder
from .schema import has_vector_table, has_vectors, read_meta

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


def _informative_terms(conn: Connection, terms: list[str]) -> list[str]:
    """Drop terms found in at least half the chunks, keeping at least the rarest one.

    FTS5's bm25() gives such terms an IDF of 1e-6 (https://sqlite.org/fts5.html, section
    "The bm25() function"), so they barely move the ranking, yet scoring every row they
    match is what makes a keyword search slow on a large index.
    """
    total = int(read_meta(conn).get("chunks", "0"))
    if len(terms) < 2 or total < 1000:
        return terms
    counts = {
        term: conn.execute(
            "select count(*) from chunks_fts where chunks_fts match ?", (term,)
        ).fetchone()[0]
        for term in terms
    }
    kept = [term for term in terms if 2 * counts[term] < total]
    return kept or [min(terms, key=counts.__getitem__)]


def bm25_ranking(conn: Connection, query: str, *, limit: int) -> list[tuple[int, float]]:
    """Chunk ids and BM25 relevance (higher is better), best first."""
    terms = _informative_terms(conn, fts_terms(query))
    if not terms:
        return []
    rows = conn.execute(
        "select rowid, bm25(chunks_fts, ?, ?, ?) as rank from chunks_fts "
        "where chunks_fts match ? order by rank limit ?",
        (*BM25_WEIGHTS, " OR ".join(terms), limit),
    )
    return [(int(row[0]), -float(row[1])) for row in rows]


def vector_ranking(
    conn: Connection, vector: Sequence[float], *, limit: int
) -> list[tuple[int, float]]:
    """Chunk ids and cosine similarity, nearest first (chunks sharing a vector all listed)."""
    if not has_vector_table(conn):
        return []
    # The KNN stands alone in a CTE so vec0 receives its `match` and `k` constraints as-is.
    rows = conn.execute(
        "with nearest as (select rowid, distance from chunk_vectors "
        "where embedding match ? and k = ?) "
        "select e.content_hash, nearest.distance from nearest "
        "join embeddings e on e.id = nearest.rowid order by nearest.distance",
        (sqlite_vec.serialize_float32(list(vector)), limit),
    ).fetchall()
    ranked: list[tuple[int, float]] = []
    for content_hash, distance in rows:
        for (chunk_id,) in conn.execute(
            "select id from chunks where content_hash = ? order by id", (content_hash,)
        ):
            ranked.append((int(chunk_id), 1.0 - float(distance)))
    return ranked[:limit]


def _map_memory(conn: Connection) -> None:
    # A KNN query reads every vector through SQLite's pager; memory-mapped I/O spares the
    # copy into the page cache (https://sqlite.org/mmap.html): about 20% off at 50k chunks.
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = RRF_K
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: each id scores the sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def search(
    conn: Connection, query: str, *, k: int = 8, embedder: Embedder | None = None
) -> list[Hit]:
    """The `k` best sections for `query`: hybrid (RRF of BM25 and KNN) when vectors exist.

    Scores are BM25 relevance in keyword-only mode and fused RRF scores in hybrid mode;
    either way, higher is better.
    """
    _map_memory(conn)
    candidates = max(k * 5, 50)
    keyword = bm25_ranking(conn, query, limit=candidates)
    if embedder is None or not has_vectors(conn):
        return _hits(conn, keyword[:k])
    meta = read_meta(conn)
    if meta.get("embedding_model") != embedder.model or meta.get("dimensions") != str(
        embedder.dimensions
    ):
        raise EmbeddingMismatch(
            f"the index was built with {meta.get('embedding_model')} "
            f"({meta.get('dimensions')} dimensions), not {embedder.model} "
            f"({embedder.dimensions}); run `pythia index` to rebuild it"
        )
    vector = embedder.embed([query], task="query")[0]
    nearest = vector_ranking(conn, vector, limit=candidates)
    fused = reciprocal_rank_fusion([[i for i, _ in keyword], [i for i, _ in nearest]])
    return _hits(conn, fused[:k])


def _hits(conn: Connection, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
    if not ranked:
        return []
    ids = [chunk_id for chunk_id, _ in ranked]
    marks = ",".join("?" * len(ids))
    rows = {
        row[0]: row
        for row in conn.execute(
            f"select id, path, heading, anchor, text from chunks where id in ({marks})", ids
        )
    }
    return [
        Hit(path=rows[i][1], heading=rows[i][2], anchor=rows[i][3], score=score, text=rows[i][4])
        for i, score in ranked
        if i in rows
    ]
