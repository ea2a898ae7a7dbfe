"""Hybrid search of the docs index: FTS5 BM25 and vector nearest neighbours, fused by rank."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import sqlite_vec

from .db import Connection
from .index import EmbeddingMismatch
from .keywords import BM25_WEIGHTS, HEADING_WEIGHTS, KeywordIndex, bm25_sql
from .models import Hit
from .ports import Embedder
from .schema import has_vector_table, migrate, read_meta

Mode = Literal["hybrid", "keyword", "vector"]
MODES: tuple[Mode, ...] = ("keyword", "vector", "hybrid")

# Fusion, chosen on tests/fixtures/retrieval/uv-questions.jsonl (tests/benchmarks/
# bench_retrieval.py): the rank constant of reciprocal rank fusion and each ranking's weight.
RRF_K = 10
KEYWORD_WEIGHT = 1.0  # sections by BM25 over title, heading path and text
HEADING_WEIGHT = 0.7  # sections by BM25 over the title and heading path alone
PAGE_WEIGHT = 1.5  # pages by the BM25 of their two best sections, summed
# Vectors weigh as much as the three keyword orders together.
VECTOR_WEIGHT = KEYWORD_WEIGHT + HEADING_WEIGHT + PAGE_WEIGHT
SECTIONS_PER_PAGE_SCORE = 2
# Sections one page may bring to a result list, so one long page cannot fill it.
PER_PAGE = 2
MMAP_BYTES = 1 << 30

KEYWORD_CANDIDATES = 100

# Words that carry no topic: English function words and the filler of questions asked in
# chat ("how do I get ... to work", "is there a way to ..."). Dropped unless nothing is left.
# fmt: off
STOPWORDS = frozenset((
    "a", "about", "actually", "after", "all", "also", "am", "an", "and", "any", "anyway",
    "are", "as", "at", "be", "been", "but", "by", "can", "cannot", "could", "did", "do",
    "does", "doesn't", "don't", "each", "even", "every", "for", "from", "get", "gets",
    "getting", "give", "gives", "got", "had", "has", "have", "how", "i", "i'm", "if", "in",
    "into", "is", "isn't", "it", "it's", "its", "just", "keep", "keeps", "let", "like",
    "make", "me", "my", "need", "no", "not", "of", "on", "or", "our", "possible", "really",
    "should", "so", "some", "still", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "through", "to", "too", "us", "want", "was", "way",
    "we", "what", "what's", "when", "where", "which", "while", "who", "why", "will", "with",
    "would", "you", "your",
))
# fmt: on

# A command as users type it: `uv pip compile`, `uvx ruff`, `uv python install`.
_COMMAND = re.compile(r"\b(uvx?(?:\s+[a-z][a-z-]*){1,2})\b")
_BACKTICKED = re.compile(r"`([^`]+)`")


def _bare(word: str) -> str:
    return word.strip("?!.,;:()[]{}'\"")


def fts_terms(text: str) -> list[str]:
    """User text as safe FTS5 strings: each word double-quoted, duplicates dropped.

    Quoting keeps FTS5 syntax (quotes, colons, '-', '*', AND/NOT) from reaching the
    parser; a quoted `dry-run` or `UV_CACHE_DIR` becomes a phrase after tokenisation, so
    flags and variables match as exact terms. Commands (`uv pip compile`) and backticked
    code are added as phrases too. Filler words are dropped unless nothing else is left.
    """
    words = [_bare(w.replace('"', "")) for w in text.split()]
    words = [w for w in words if re.search(r"\w", w)]
    meaningful = [w for w in words if w.lower() not in STOPWORDS]
    phrases = [
        _leading_words(match)
        for pattern in (_BACKTICKED, _COMMAND)
        for match in pattern.findall(text.replace('"', ""))
    ]
    phrases = [p for p in phrases if " " in p]
    return list(dict.fromkeys(f'"{w}"' for w in (*(meaningful or words), *phrases)))


def _leading_words(text: str) -> str:
    """The words of a command up to the first filler word: `uvx ruff` of `uvx ruff is`."""
    kept = []
    for word in text.split():
        if _bare(word).lower() in STOPWORDS or not re.search(r"\w", word):
            break
        kept.append(word)
    return " ".join(kept)


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

    The metadata and the embedder check happen here, once. The first query goes to SQLite
    (FTS5 and sqlite-vec's KNN); from the second on, the keyword postings and every vector
    are held in memory, which a run making hundreds of searches pays back at once.
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
        self._paths: dict[int, str] | None = None
        self._term_counts: dict[str, int] = {}
        self._keywords: KeywordIndex | None = None
        self._keyword_queries = 0
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
        return [(chunk_id, score) for chunk_id, score, _ in self._bm25(query, limit=limit)]

    def _bm25(self, query: str, *, limit: int) -> list[tuple[int, float, float]]:
        """Chunk ids, BM25 over all columns and BM25 over title and headings alone.

        FTS5 answers the first query; from the second on, the index's postings are held in
        memory (`KeywordIndex`), which gives the same scores without FTS5 scoring every
        matching row again for each query.
        """
        keywords = self._keyword_index()
        terms = fts_terms(query)
        if keywords is not None:
            scored = dict(zip(terms, keywords.term_scores(terms), strict=True))
            kept = self._informative_terms(terms, lambda term: scored[term].chunks)
            found = keywords.ranking([scored[term] for term in kept], limit=limit)
            ids = keywords.chunk_ids[found.rows].tolist()
            return list(
                zip(ids, found.scores.tolist(), found.heading_scores.tolist(), strict=True)
            )
        terms = self._informative_terms(terms, self._matching_chunks)
        if not terms:
            return []
        rows = self.conn.execute(
            f"select rowid, {bm25_sql(BM25_WEIGHTS)} as rank, {bm25_sql(HEADING_WEIGHTS)} "
            "from chunks_fts where chunks_fts match ? order by rank limit ?",
            (" OR ".join(terms), limit),
        )
        return [(int(row[0]), -float(row[1]), -float(row[2])) for row in rows]

    def _keyword_index(self) -> KeywordIndex | None:
        self._keyword_queries += 1
        if self._keywords is None and self._keyword_queries >= 2:
            ids = np.fromiter(self._chunk_paths(), dtype=np.int64)
            self._keywords = KeywordIndex(self.conn, np.sort(ids))
        return self._keywords

    def _keyword_rankings(self, query: str) -> list[tuple[float, list[int]]]:
        """Three weighted orders from one BM25 query: sections, headings, and pages.

        Sections alone favour a long section that repeats the query's words (a reference
        table, a Dockerfile); the heading order favours the section whose title names the
        topic, and the page order the page that speaks of it in more than one section.
        """
        rows = self._bm25(query, limit=KEYWORD_CANDIDATES)
        sections = [chunk_id for chunk_id, _, _ in rows]
        headings = [
            chunk_id for chunk_id, _, heading in sorted(rows, key=lambda r: (-r[2], -r[1]))
            if heading > 0
        ]
        paths = self._chunk_paths()
        by_page: dict[str, list[tuple[float, int]]] = {}
        for chunk_id, score, _ in rows:
            by_page.setdefault(paths.get(chunk_id, ""), []).append((score, chunk_id))
        page_scores = {
            path: sum(score for score, _ in found[:SECTIONS_PER_PAGE_SCORE])
            for path, found in by_page.items()
        }
        best_first = sorted(by_page, key=lambda path: -page_scores[path])
        pages_order = [by_page[path][0][1] for path in best_first]
        return [
            (KEYWORD_WEIGHT, sections),
            (HEADING_WEIGHT, headings),
            (PAGE_WEIGHT, pages_order),
        ]

    def _informative_terms(self, terms: list[str], count: Callable[[str], int]) -> list[str]:
        """Drop terms found in at least half the chunks, keeping at least the rarest one.

        FTS5's bm25() gives such terms an IDF of 1e-6 (https://sqlite.org/fts5.html, section
        "The bm25() function"), so they barely move the ranking, yet scoring every row they
        match is what makes a keyword search slow on a large index.
        """
        total = self._chunks_total
        if len(terms) < 2 or total < 1000:
            return terms
        counts = {term: count(term) for term in terms}
        kept = [term for term in terms if 2 * counts[term] < total]
        return kept or [min(terms, key=counts.__getitem__)]

    def _matching_chunks(self, term: str) -> int:
        """How many chunks match `term`, counted once per term for the index's lifetime.

        A run's queries share most of their words, and the common words (the costly ones
        to count) most of all.
        """
        if term not in self._term_counts:
            self._term_counts[term] = int(
                self.conn.execute(
                    "select count(*) from chunks_fts where chunks_fts match ?", (term,)
                ).fetchone()[0]
            )
        return self._term_counts[term]

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
        # einsum runs in this thread: BLAS's matrix product would start worker threads that
        # keep spinning after it returns and slow the BM25 and fusion that follow.
        similarities = np.einsum("ij,j->i", vectors.matrix, query)
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

    def search(
        self, query: str, *, k: int = 8, mode: Mode = "hybrid", per_page: int = PER_PAGE
    ) -> list[Hit]:
        """The `k` best sections for `query`, at most `per_page` of them from one page.

        Pages are ranked by fusing the page order of each ranking (BM25, and vectors when
        the index and an embedder allow them) by weighted reciprocal rank; each page brings
        its best sections. A hit's score is its page's fused score: higher is better, and
        sections of one page share it. Without an embedder every mode is keyword search.
        """
        candidates = max(k * 5, 50)
        rankings: list[tuple[float, list[int]]] = []
        vector_mode = self.embedder is not None and mode != "keyword"
        if vector_mode and self.embedder is not None:
            vector = self.embedder.embed([query], task="query")[0]
            nearest = self.vector_ranking(vector, limit=candidates)
            rankings.append((VECTOR_WEIGHT, [i for i, _ in nearest]))
        if not vector_mode or mode == "hybrid":
            rankings.extend(self._keyword_rankings(query))
        return self._hits(self._by_page(rankings, k=k, per_page=per_page))

    def _by_page(
        self, rankings: Sequence[tuple[float, Sequence[int]]], *, k: int, per_page: int
    ) -> list[tuple[int, float]]:
        """Chunk ids of the best pages, each page's best chunks first, with page scores."""
        paths = self._chunk_paths()
        page_scores: dict[str, float] = {}
        chunk_scores: dict[int, float] = {}
        for weight, ranking in rankings:
            page_ranks: dict[str, int] = {}
            for rank, chunk_id in enumerate(ranking, start=1):
                chunk_scores[chunk_id] = chunk_scores.get(chunk_id, 0.0) + weight / (RRF_K + rank)
                path = paths.get(chunk_id)
                if path is not None and path not in page_ranks:
                    page_ranks[path] = len(page_ranks) + 1
                    page_scores[path] = page_scores.get(path, 0.0) + weight / (
                        RRF_K + page_ranks[path]
                    )
        sections: dict[str, list[int]] = {}
        for chunk_id in sorted(chunk_scores, key=lambda i: (-chunk_scores[i], i)):
            if chunk_id in paths:
                sections.setdefault(paths[chunk_id], []).append(chunk_id)
        ordered = sorted(page_scores, key=lambda path: (-page_scores[path], sections[path][0]))
        ranked = [
            (chunk_id, page_scores[path])
            for path in ordered
            for chunk_id in sections[path][: max(per_page, 1)]
        ]
        return ranked[:k]

    def _chunk_paths(self) -> dict[int, str]:
        if self._paths is None:
            self._paths = {
                int(row[0]): str(row[1]) for row in self.conn.execute("select id, path from chunks")
            }
        return self._paths

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
    per_page: int = PER_PAGE,
) -> list[Hit]:
    """One search (see `SearchIndex.search`); a caller making many keeps a `SearchIndex`."""
    return SearchIndex(conn, embedder=embedder).search(query, k=k, mode=mode, per_page=per_page)


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
