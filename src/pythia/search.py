"""Hybrid search of the docs index: FTS5 BM25 and vector nearest neighbours, fused by rank."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import sqlite_vec

from . import fusion
from .db import Connection
from .index import EmbeddingMismatch
from .keywords import BM25_WEIGHTS, HEADING_WEIGHTS, Bm25Ranking, KeywordIndex, bm25_sql
from .models import Hit
from .ports import Embedder, embedding_id
from .schema import has_vector_table, migrate, read_meta
from .vectors import VectorMatrix

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


@dataclass(frozen=True)
class _Chunks:
    """Every chunk's id (ascending) and page, read once per run. Searching works on rows,
    positions in `ids`, so rankings are arrays that numpy can fuse."""

    ids: np.ndarray
    pages: np.ndarray  # per row, its page's number (pages numbered as first met)

    @classmethod
    def load(cls, conn: Connection) -> _Chunks:
        ids: list[int] = []
        pages: list[int] = []
        numbers: dict[str, int] = {}
        for chunk_id, path in conn.execute("select id, path from chunks order by id"):
            ids.append(int(chunk_id))
            pages.append(numbers.setdefault(str(path), len(numbers)))
        return cls(np.array(ids, dtype=np.int64), np.array(pages, dtype=np.intp))

    def rows(self, chunk_ids: Sequence[int]) -> np.ndarray:
        return np.searchsorted(self.ids, np.asarray(chunk_ids, dtype=np.int64))


@dataclass(frozen=True)
class _Sections:
    """Every chunk's page, heading, anchor and text by row, to make hits without a query.

    Read with the keyword postings and vectors, for a run's many searches: an `id in (...)`
    query per search cost more than fusing the rankings. Texts are kept as one UTF-8 string
    of bytes (at 50k chunks about 60 MB, a third of the vectors), not as a Python object each.
    """

    places: list[tuple[str, str, str]]  # per row: path, heading, anchor
    texts: bytearray
    ends: list[int]  # per row, where its text ends in `texts`

    @classmethod
    def load(cls, conn: Connection) -> _Sections:
        places: list[tuple[str, str, str]] = []
        texts = bytearray()
        ends: list[int] = []
        paths: dict[str, str] = {}
        for path, heading, anchor, text in conn.execute(
            "select path, heading, anchor, text from chunks order by id"
        ):
            places.append((paths.setdefault(str(path), str(path)), str(heading), str(anchor)))
            texts += str(text).encode()
            ends.append(len(texts))
        return cls(places=places, texts=texts, ends=ends)

    def hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        found = []
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            path, heading, anchor = self.places[row]
            start = self.ends[row - 1] if row else 0
            text = self.texts[start : self.ends[row]].decode()
            found.append(Hit(path=path, heading=heading, anchor=anchor, score=score, text=text))
        return found


_NO_BM25 = Bm25Ranking(rows=fusion.NO_ROWS, scores=np.zeros(0), heading_scores=np.zeros(0))


class SearchIndex:
    """One index opened for many searches: what repeats per query is read once.

    The metadata and the embedder check happen here, once. The first query goes to SQLite
    (FTS5 and sqlite-vec's KNN); from the second on, the keyword postings, every vector and
    every section's text are held in memory, which a run making hundreds of searches pays
    back at once.
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
            if recorded != (embedding_id(embedder), str(embedder.dimensions)):
                raise EmbeddingMismatch(
                    f"the index was built with {recorded[0]} ({recorded[1]} dimensions), "
                    f"not {embedding_id(embedder)} ({embedder.dimensions}); run `pythia index` "
                    "to rebuild it"
                )
        self.embedder = embedder if self._has_vectors else None
        self._chunk_table: _Chunks | None = None
        self._vectors: VectorMatrix | None = None
        self._keywords: KeywordIndex | None = None
        self._term_counts: dict[str, int] = {}
        self._sections: _Sections | None = None
        self._prepared: dict[str, tuple[int, np.ndarray]] = {}  # query -> limit, vector rows
        self._keyword_queries = 0
        self._vector_queries = 0
        self._searches = 0
        # A KNN query reads every vector through SQLite's pager; memory-mapped I/O spares
        # the copy into the page cache (https://sqlite.org/mmap.html).
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}")

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this index and embedder allow: keyword always, vectors when both exist."""
        return MODES if self.embedder is not None else ("keyword",)

    def _chunks(self) -> _Chunks:
        if self._chunk_table is None:
            self._chunk_table = _Chunks.load(self.conn)
        return self._chunk_table

    # --- the two rankings ----------------------------------------------------------------

    def keyword_ranking(self, query: str, *, limit: int) -> list[tuple[int, float]]:
        """Chunk ids and BM25 relevance (higher is better), best first."""
        found = self._bm25(query, limit=limit)
        ids = self._chunks().ids[found.rows].tolist()
        return list(zip(ids, found.scores.tolist(), strict=True))

    def _bm25(self, query: str, *, limit: int) -> Bm25Ranking:
        """Chunk rows, BM25 over all columns and BM25 over title and headings alone.

        FTS5 answers the first query; from the second on, the index's postings are held in
        memory (`KeywordIndex`), which gives the same scores without FTS5 scoring every
        matching row again for each query.
        """
        keywords = self._keyword_index()
        terms = fts_terms(query)
        if keywords is not None:
            scored = dict(zip(terms, keywords.term_scores(terms), strict=True))
            kept = self._informative_terms(terms, lambda term: scored[term].chunks)
            return keywords.ranking([scored[term] for term in kept], limit=limit)
        terms = self._informative_terms(terms, self._matching_chunks)
        if not terms:
            return _NO_BM25
        rows = self.conn.execute(
            f"select rowid, {bm25_sql(BM25_WEIGHTS)} as rank, {bm25_sql(HEADING_WEIGHTS)} "
            "from chunks_fts where chunks_fts match ? order by rank limit ?",
            (" OR ".join(terms), limit),
        ).fetchall()
        return Bm25Ranking(
            rows=self._chunks().rows([int(row[0]) for row in rows]),
            scores=np.array([-float(row[1]) for row in rows]),
            heading_scores=np.array([-float(row[2]) for row in rows]),
        )

    def _keyword_index(self) -> KeywordIndex | None:
        self._keyword_queries += 1
        if self._keywords is None and self._keyword_queries >= 2:
            self._keywords = KeywordIndex(self.conn, self._chunks().ids)
        return self._keywords

    def _keyword_rankings(self, query: str) -> list[tuple[float, np.ndarray]]:
        """Three weighted orders of chunk rows from one BM25 ranking: sections, headings, pages.

        Sections alone favour a long section that repeats the query's words (a reference
        table, a Dockerfile); the heading order favours the section whose title names the
        topic, and the page order the page that speaks of it in more than one section.
        """
        found = self._bm25(query, limit=KEYWORD_CANDIDATES)
        sections, headings, pages = fusion.keyword_orders(
            found, self._chunks().pages, sections_per_page=SECTIONS_PER_PAGE_SCORE
        )
        return [(KEYWORD_WEIGHT, sections), (HEADING_WEIGHT, headings), (PAGE_WEIGHT, pages)]

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

    def vector_ranking(self, vector: Sequence[float], *, limit: int) -> list[tuple[int, float]]:
        """Chunk ids and cosine similarity, nearest first (chunks sharing a vector all listed)."""
        rows, similarities = self._nearest(vector, limit=limit)
        ids = self._chunks().ids[rows].tolist()
        return list(zip(ids, similarities.tolist(), strict=True))

    def _nearest(self, vector: Sequence[float], *, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk rows nearest to `vector`, nearest first, and their cosine similarity."""
        if not self._has_vectors:
            return fusion.NO_ROWS, np.zeros(0)
        self._vector_queries += 1
        if self._vectors is None and self._vector_queries < 2:
            found = self._knn(vector, limit=limit)
            rows = self._chunks().rows([chunk_id for chunk_id, _ in found])
            return rows, np.array([similarity for _, similarity in found])
        return self._matrix().nearest(vector, limit=limit)

    def _matrix(self) -> VectorMatrix:
        """Every vector in memory, read from the index on first use."""
        if self._vectors is None:
            self._vectors = VectorMatrix.load(self.conn, self._chunks().ids)
        return self._vectors

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

    def prepare(self, queries: Sequence[str], *, k: int = 8) -> None:
        """The vector rankings of queries about to be searched with `k`, computed together:
        one matrix product a block of queries reads every vector once for the block, where a
        search of its own reads them all for one query. Only for several queries (the
        vectors then load at once), and only with an embedder."""
        fresh = [query for query in dict.fromkeys(queries) if query not in self._prepared]
        if self.embedder is None or len(fresh) < 2:
            return
        vectors = self.embedder.embed(fresh, task="query")
        limit = _vector_limit(k)
        for query, (rows, _) in zip(
            fresh, self._matrix().nearest_each(vectors, limit=limit), strict=True
        ):
            self._prepared[query] = (limit, rows)

    def _vector_rows(self, query: str, *, limit: int) -> np.ndarray:
        prepared = self._prepared.get(query)
        if prepared is not None and prepared[0] >= limit:
            return prepared[1][:limit]
        if self.embedder is None:
            return fusion.NO_ROWS
        vector = self.embedder.embed([query], task="query")[0]
        rows, _ = self._nearest(vector, limit=limit)
        return rows

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
        self._searches += 1
        rankings: list[tuple[float, np.ndarray]] = []
        vector_mode = self.embedder is not None and mode != "keyword"
        if vector_mode:
            rankings.append((VECTOR_WEIGHT, self._vector_rows(query, limit=_vector_limit(k))))
        if not vector_mode or mode == "hybrid":
            rankings.extend(self._keyword_rankings(query))
        found = fusion.by_page(rankings, self._chunks().pages, rrf_k=RRF_K, k=k, per_page=per_page)
        return self._hits(*found)

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        if not len(rows):
            return []
        if self._sections is None and self._searches >= 2:
            self._sections = _Sections.load(self.conn)
        if self._sections is not None:
            return self._sections.hits(rows, scores)
        ids = self._chunks().ids[rows].tolist()
        marks = ",".join("?" * len(ids))
        found = {
            row[0]: row
            for row in self.conn.execute(
                f"select id, path, heading, anchor, text from chunks where id in ({marks})", ids
            )
        }
        return [
            Hit(
                path=found[i][1],
                heading=found[i][2],
                anchor=found[i][3],
                score=score,
                text=found[i][4],
            )
            for i, score in zip(ids, scores.tolist(), strict=True)
            if i in found
        ]


def _vector_limit(k: int) -> int:
    """How many nearest chunks a search of `k` results fuses."""
    return max(k * 5, 50)


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
