"""BM25 of the docs index held in memory for a run: FTS5's own bm25() scores, from its index.

FTS5 scores every row a query matches, each time. A run making hundreds of searches reads the
index's postings once instead (per token: the chunks holding it and its share of their BM25
scores), and sums each query's terms with numpy. The arithmetic is bm25()'s own, operation for
operation, so scores, and the rankings made from them, are the ones FTS5 gives
(tests/test_keywords.py checks this against FTS5).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .db import Connection, connect
from .topk import distinct, largest_first

# bm25() column weights (title, heading path, text): a match in the page title or a heading
# says more than one in the body. The heading order weighs the title and headings alone.
BM25_WEIGHTS = (4.0, 4.0, 1.0)
HEADING_WEIGHTS = (1.0, 1.0, 0.0)

# bm25()'s constants and its floor for the IDF of a term in over half the rows
# (fts5Bm25Function in sqlite/ext/fts5/fts5_aux.c; https://sqlite.org/fts5.html, "The bm25()
# function").
K1 = 1.2
B = 0.75
MIN_IDF = 1e-6

FTS_TABLE = "chunks_fts"
_INSTANCES = "pythia_fts_instances"
_TOKENIZE = re.compile(r"tokenize\s*=\s*'((?:[^']|'')*)'", re.IGNORECASE)
# Postings are read in batches of about this many term occurrences, to bound the memory
# the text of one batch takes.
_BATCH = 1 << 21
_COLUMN_BITS = 2  # an occurrence's column, packed below its chunk id


def bm25_sql(weights: Sequence[float]) -> str:
    """The bm25() call over the chunks table with these column weights."""
    return f"bm25({FTS_TABLE}, {', '.join(repr(float(w)) for w in weights)})"


@dataclass(frozen=True)
class TermScores:
    """One query term's share of each matching chunk's two BM25 scores.

    `rows` are positions in the index's ascending chunk ids; `weighted` is the term's
    contribution to bm25() with BM25_WEIGHTS, and `heading` (at `heading_rows`) with
    HEADING_WEIGHTS, where it is above zero.
    """

    rows: np.ndarray
    weighted: np.ndarray
    heading_rows: np.ndarray
    heading: np.ndarray

    @property
    def chunks(self) -> int:
        """How many chunks the term matches."""
        return len(self.rows)


@dataclass(frozen=True)
class Bm25Ranking:
    """Chunk rows (positions in the ascending chunk ids), best first, with their BM25 by
    BM25_WEIGHTS and by HEADING_WEIGHTS (higher is better)."""

    rows: np.ndarray
    scores: np.ndarray
    heading_scores: np.ndarray


_NO_RANKING = Bm25Ranking(rows=np.zeros(0, np.intp), scores=np.zeros(0), heading_scores=np.zeros(0))

_NO_MATCH = TermScores(
    rows=np.zeros(0, np.intp),
    weighted=np.zeros(0),
    heading_rows=np.zeros(0, np.intp),
    heading=np.zeros(0),
)


class Tokenizer:
    """Text split into tokens as the index's FTS5 table splits it, by asking FTS5 itself.

    A private in-memory database holds one contentless FTS5 table with the same tokenizer;
    tokens are read back through an fts5vocab table (https://sqlite.org/fts5.html#the_fts5vocab
    _virtual_table_module). Porter stemming and Unicode folding are FTS5's, so nothing is
    re-implemented.
    """

    def __init__(self, tokenize: str) -> None:
        self._conn = connect(":memory:")
        self._conn.isolation_level = None
        # Closed with its owner (never left to the garbage collector's warning).
        weakref.finalize(self, self._conn.close)
        self._conn.execute(
            "create virtual table texts using fts5(text, content = '', tokenize = "
            f"'{tokenize.replace(chr(39), chr(39) * 2)}')"
        )
        self._conn.execute("create virtual table text_tokens using fts5vocab(texts, instance)")
        self._known: dict[str, tuple[str, ...]] = {}

    def tokens(self, texts: Iterable[str]) -> list[tuple[str, ...]]:
        """Each text's tokens, in order; repeated texts are split once per tokenizer."""
        texts = list(texts)
        new = list(dict.fromkeys(text for text in texts if text not in self._known))
        if new:
            self._conn.executemany(
                "insert into texts (rowid, text) values (?, ?)", enumerate(new, start=1)
            )
            found: dict[int, list[tuple[int, str]]] = {}
            for doc, offset, term in self._conn.execute(
                "select doc, offset, term from text_tokens"
            ):
                found.setdefault(int(doc), []).append((int(offset), str(term)))
            self._conn.execute("insert into texts (texts) values ('delete-all')")
            for number, text in enumerate(new, start=1):
                self._known[text] = tuple(term for _, term in sorted(found.get(number, [])))
        return [self._known[text] for text in texts]


def fts_tokenizer(conn: Connection) -> str:
    """The `tokenize` option the chunks' FTS5 table was created with."""
    sql = conn.execute("select sql from sqlite_master where name = ?", (FTS_TABLE,)).fetchone()[0]
    found = _TOKENIZE.search(sql)
    return found.group(1).replace("''", "'") if found else "unicode61"


class KeywordIndex:
    """The FTS5 index's postings, in memory: per token, the chunks holding it and its share
    of their two BM25 scores.

    Built once per run from the fts5vocab instance table. Terms that are phrases (several
    tokens, as `dry-run` or `uv pip compile` become) are scored by FTS5 on first use, since
    positions are not kept, and kept for the rest of the run.
    """

    def __init__(self, conn: Connection, chunk_ids: np.ndarray) -> None:
        self.conn = conn
        self.chunk_ids = chunk_ids
        self._tokenizer = Tokenizer(fts_tokenizer(conn))
        columns = [str(row[1]) for row in conn.execute(f"pragma table_info({FTS_TABLE})")]
        self._postings = _scored(_read_postings(conn, columns, chunk_ids), len(chunk_ids))
        # Every term met in the run, scored: a run's queries share most of their words.
        self._terms: dict[str, TermScores] = {}

    def term_scores(self, terms: Sequence[str]) -> list[TermScores]:
        """Each FTS5 term's scores (`"word"`, as `search.fts_terms` writes them)."""
        new = [term for term in terms if term not in self._terms]
        for term, tokens in zip(new, self._tokenizer.tokens(t[1:-1] for t in new), strict=True):
            if len(tokens) == 1:
                self._terms[term] = self._postings.term(tokens[0])
            else:
                self._terms[term] = self._phrase(term) if tokens else _NO_MATCH
        return [self._terms[term] for term in terms]

    def _phrase(self, term: str) -> TermScores:
        found = self.conn.execute(
            f"select rowid, {bm25_sql(BM25_WEIGHTS)}, {bm25_sql(HEADING_WEIGHTS)} "
            f"from {FTS_TABLE} where {FTS_TABLE} match ? order by rowid",
            (term,),
        ).fetchall()
        if not found:
            return _NO_MATCH
        table = np.array([tuple(row) for row in found], dtype=np.float64)
        rows = np.searchsorted(self.chunk_ids, table[:, 0].astype(np.int64))
        # bm25() returns minus the score, so that ascending order is best first.
        weighted, heading = -table[:, 1], -table[:, 2]
        in_headings = heading > 0
        return TermScores(
            rows=rows,
            weighted=weighted,
            heading_rows=rows[in_headings],
            heading=heading[in_headings],
        )

    def ranking(self, scores: Sequence[TermScores], *, limit: int) -> Bm25Ranking:
        """The `limit` best chunks for the OR of the terms scored by `scores` (in query order),
        ordered as FTS5's `order by bm25() limit` orders them.

        Each row's terms are added in query order, as bm25() adds its phrases (bincount adds
        each bin's weights in input order), so sums are bit for bit FTS5's; equal scores keep
        the order of chunk ids, as FTS5's sorter does. One bincount over every term's postings
        costs a few numpy calls, where adding term by term into a buffer cost four a term.
        """
        if limit < 1 or not scores:
            return _NO_RANKING
        at, values = _joined(scores, "rows", "weighted")
        if not len(at):
            return _NO_RANKING
        weighted = np.bincount(at, weights=values)
        # Only rows some term holds: most rows match nothing, and scanning them all (or
        # partitioning among their zeros) cost more than the sums.
        matched = distinct(at)
        top = matched[largest_first(weighted[matched], limit)]
        at, values = _joined(scores, "heading_rows", "heading")
        heading = np.bincount(at, weights=values, minlength=len(weighted))
        return Bm25Ranking(rows=top, scores=weighted[top], heading_scores=heading[top])


def _joined(scores: Sequence[TermScores], rows: str, values: str) -> tuple[np.ndarray, np.ndarray]:
    """The terms' rows and values end to end, in query order."""
    if len(scores) == 1:
        return getattr(scores[0], rows), getattr(scores[0], values)
    return (
        np.concatenate([getattr(term, rows) for term in scores]),
        np.concatenate([getattr(term, values) for term in scores]),
    )


@dataclass(frozen=True)
class _Postings:
    """Per token (numbered), its chunk rows and a value per row, in CSR form: token n's are
    at [starts[n]:starts[n + 1]]. Read as weighted frequencies, then replaced by the token's
    share of the two BM25 scores."""

    tokens: dict[str, int]
    starts: np.ndarray
    rows: np.ndarray
    weighted: np.ndarray  # by BM25_WEIGHTS
    heading_starts: np.ndarray
    heading_rows: np.ndarray  # the rows where the value by HEADING_WEIGHTS is above zero
    heading: np.ndarray
    lengths: np.ndarray  # tokens per chunk row, all columns

    def term(self, token: str) -> TermScores:
        number = self.tokens.get(token)
        if number is None:
            return _NO_MATCH
        start, stop = self.starts[number : number + 2]
        head_start, head_stop = self.heading_starts[number : number + 2]
        return TermScores(
            rows=self.rows[start:stop],
            weighted=self.weighted[start:stop],
            heading_rows=self.heading_rows[head_start:head_stop],
            heading=self.heading[head_start:head_stop],
        )


def _idf(ratio: float) -> float:
    idf = math.log(ratio)
    return idf if idf > 0.0 else MIN_IDF


def _scored(postings: _Postings, rows: int) -> _Postings:
    """The postings with each frequency replaced by its share of bm25(), computed as
    fts5Bm25Function computes it: idf * (f * (k1 + 1)) / (f + k1 * (1 - b + b * D / avgdl))."""
    average = float(postings.lengths.sum()) / rows if rows else 1.0
    length_norm = K1 * (1 - B + B * postings.lengths.astype(np.float64) / average)
    matching = np.diff(postings.starts)
    # math.log is the C library's log, as bm25()'s is; numpy's may differ in the last bit.
    ratios = ((rows - matching + 0.5) / (matching + 0.5)).tolist()
    idf = np.array([_idf(ratio) for ratio in ratios])

    def share(starts: np.ndarray, at: np.ndarray, frequency: np.ndarray) -> np.ndarray:
        token_idf = np.repeat(idf, np.diff(starts))
        frequency = frequency.astype(np.float64)
        scored: np.ndarray = token_idf * (
            (frequency * (K1 + 1.0)) / (frequency + length_norm[at])
        )
        return scored

    return _Postings(
        tokens=postings.tokens,
        starts=postings.starts,
        rows=postings.rows,
        weighted=share(postings.starts, postings.rows, postings.weighted),
        heading_starts=postings.heading_starts,
        heading_rows=postings.heading_rows,
        heading=share(postings.heading_starts, postings.heading_rows, postings.heading),
        lengths=postings.lengths,
    )


def _read_postings(conn: Connection, columns: list[str], chunk_ids: np.ndarray) -> _Postings:
    """Every token occurrence of the FTS5 index, read once and summed per token and chunk.

    One pass over an fts5vocab instance table, one row per token with its occurrences packed
    as `chunk id * 4 + column` in a string numpy parses: millions of occurrences would cost
    seconds as Python rows.
    """
    if len(columns) > 1 << _COLUMN_BITS:
        raise ValueError(f"{FTS_TABLE} has more than {1 << _COLUMN_BITS} columns")
    # Most occurrences are in the last column (the text), so it is tested first.
    column_number = " ".join(
        f"when '{name}' then {i}" for i, name in reversed(list(enumerate(columns)))
    )
    row_of = np.full(int(chunk_ids.max(initial=0)) + 1, len(chunk_ids), dtype=np.intp)
    row_of[chunk_ids] = np.arange(len(chunk_ids))
    summed = _Summer(
        row_of=row_of,
        rows=len(chunk_ids),
        weights=np.array(BM25_WEIGHTS[: len(columns)], dtype=np.float32),
        heading_weights=np.array(HEADING_WEIGHTS[: len(columns)], dtype=np.float32),
    )
    conn.execute(
        f"create virtual table if not exists temp.{_INSTANCES} "
        f"using fts5vocab(main, {FTS_TABLE}, instance)"
    )
    try:
        cursor = conn.execute(
            f"select term, count(*), group_concat((doc << {_COLUMN_BITS}) + "
            f"case col {column_number} end) from temp.{_INSTANCES} group by term"
        )
        tokens: dict[str, int] = {}
        parts = [summed([])]
        for batch in _batches(cursor):
            for name, _, _ in batch:
                tokens[name] = len(tokens)
            parts.append(summed(batch))
    finally:
        conn.execute(f"drop table if exists temp.{_INSTANCES}")

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    return _Postings(
        tokens=tokens,
        starts=np.concatenate([[0], np.cumsum(joined("pairs"))]),
        rows=joined("rows"),
        weighted=joined("weighted"),
        heading_starts=np.concatenate([[0], np.cumsum(joined("heading_pairs"))]),
        heading_rows=joined("heading_rows"),
        heading=joined("heading"),
        lengths=np.sum([part.lengths for part in parts], axis=0),
    )


def _batches(cursor: Iterable[Any]) -> Iterator[list[tuple[str, int, str]]]:
    """The instance rows (term, occurrences, packed) in batches of about _BATCH occurrences."""
    batch: list[tuple[str, int, str]] = []
    size = 0
    for term, count, packed in cursor:
        batch.append((str(term), int(count), str(packed)))
        size += int(count)
        if size >= _BATCH:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class _Batch:
    """Some tokens' occurrences summed per (token, chunk row)."""

    pairs: np.ndarray  # pairs per token
    rows: np.ndarray
    weighted: np.ndarray
    heading_pairs: np.ndarray
    heading_rows: np.ndarray
    heading: np.ndarray
    lengths: np.ndarray  # occurrences per chunk row


@dataclass(frozen=True)
class _Summer:
    """Sums a batch of tokens' packed occurrences per (token, chunk row)."""

    row_of: np.ndarray  # chunk id -> row
    rows: int
    weights: np.ndarray  # per column
    heading_weights: np.ndarray

    def __call__(self, batch: list[tuple[str, int, str]]) -> _Batch:
        text = ",".join(packed for _, _, packed in batch)
        packed = np.fromstring(text, dtype=np.int64, sep=",") if text else np.zeros(0, np.int64)
        counts = np.array([count for _, count, _ in batch], dtype=np.intp)
        token_starts = np.cumsum(counts) - counts
        descending = np.diff(packed) < 0
        descending[token_starts[1:] - 1] = False  # a new token starts over
        if descending.any():  # fts5vocab lists each token's occurrences sorted; if not, sort
            order = np.lexsort((packed, np.repeat(np.arange(len(batch)), counts)))
            packed = packed[order]
        rows = self.row_of[packed >> _COLUMN_BITS]
        column = packed & ((1 << _COLUMN_BITS) - 1)
        first = np.ones(len(packed), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        first[token_starts] = True
        starts = np.flatnonzero(first)
        pairs = np.add.reduceat(first, token_starts) if len(starts) else counts
        pair_rows = rows[starts]
        weighted = np.add.reduceat(self.weights[column], starts) if len(starts) else column
        heading = np.add.reduceat(self.heading_weights[column], starts) if len(starts) else column
        in_headings = heading > 0
        pair_token = np.repeat(np.arange(len(batch)), pairs)
        return _Batch(
            pairs=pairs,
            rows=pair_rows.astype(np.int32),
            weighted=weighted.astype(np.float32),
            heading_pairs=np.bincount(pair_token[in_headings], minlength=len(batch)),
            heading_rows=pair_rows[in_headings].astype(np.int32),
            heading=heading[in_headings].astype(np.float32),
            lengths=np.bincount(rows, minlength=self.rows)[: self.rows],
        )
