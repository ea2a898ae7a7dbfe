"""The in-memory keyword index gives FTS5's own BM25 scores and order, query for query."""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pythia import db, index, schema
from pythia import search as hybrid
from pythia.keywords import BM25_WEIGHTS, HEADING_WEIGHTS, KeywordIndex, Tokenizer, bm25_sql
from pythia.search import SearchIndex, fts_terms

SAMPLE = Path(__file__).parent / "fixtures" / "sample-docs" / "docs"


def fts5_ranking(conn: Any, terms: Sequence[str], limit: int) -> list[tuple[int, float, float]]:
    """The reference: FTS5 scoring the OR of `terms` itself."""
    rows = conn.execute(
        f"select rowid, {bm25_sql(BM25_WEIGHTS)} as rank, {bm25_sql(HEADING_WEIGHTS)} "
        "from chunks_fts where chunks_fts match ? order by rank limit ?",
        (" OR ".join(terms), limit),
    )
    return [(int(row[0]), -float(row[1]), -float(row[2])) for row in rows]


def keyword_index(conn: Any) -> KeywordIndex:
    ids = [row[0] for row in conn.execute("select id from chunks order by id")]
    return KeywordIndex(conn, np.array(ids, dtype=np.int64))


def ranked(keywords: KeywordIndex, terms: Sequence[str], limit: int) -> list[Any]:
    found = keywords.ranking(keywords.term_scores(terms), limit=limit)
    ids = keywords.chunk_ids[found.rows].tolist()
    return list(zip(ids, found.scores.tolist(), found.heading_scores.tolist(), strict=True))


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[Any]:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    conn = db.connect(tmp_path / "index.sqlite")
    index.update_index(conn, docs_root=docs, include=["**/*.md"], exclude=[], embedder=None)
    yield conn
    conn.close()


def sample_queries(conn: Any) -> list[str]:
    """Every word of the sample docs alone, and in runs of three, plus code and odd text."""
    text = " ".join(
        " ".join(row) for row in conn.execute("select title, heading, text from chunks")
    )
    words = sorted(set(re.findall(r"[\w-]+", text)))
    rng = random.Random(4)
    runs = [" ".join(rng.sample(words, 3)) for _ in range(200)]
    odd = [
        "kestrel run --dry-run",
        "`kestrel run --dry-run` KESTREL_CACHE_DIR",
        "how do I get the cache to work",
        "the of and",
        "Café naïve RÉSUMÉ",
        "running runs ran",
        "zebrafish",
        "cache _ run",
        "_ task",
    ]
    return words + runs + odd


def test_scores_and_order_are_fts5s_for_every_word_of_the_docs(sample: Any) -> None:
    keywords = keyword_index(sample)

    for query in sample_queries(sample):
        terms = fts_terms(query)
        if not terms:  # FTS5 is never asked an empty query
            continue
        for limit in (1, 5, 100):
            assert ranked(keywords, terms, limit) == fts5_ranking(sample, terms, limit), query


def test_equal_scores_keep_fts5s_order_at_the_cut(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "index.sqlite")
    schema.migrate(conn)
    rng = random.Random(2)
    rows = [
        ("a.md", n, "Same", "Same > twin", "twin", "ferry boat ferry " + "pad " * (n % 3), "h")
        for n in range(40)
    ]
    others = [rng.choice(["ferry", "boat lake"]) for _ in range(9)]
    rows += [("b.md", n, "Other", "Other", "", text, "h") for n, text in enumerate(others)]
    rng.shuffle(rows)
    conn.executemany(
        "insert into chunks (path, ordinal, title, heading, anchor, text, content_hash) "
        "values (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    keywords = keyword_index(conn)

    for query in ("ferry", "boat ferry", "same twin", "lake pad"):
        terms = fts_terms(query)
        full = fts5_ranking(conn, terms, 100)
        assert len({score for _, score, _ in full}) < len(full)  # ties, cut at every limit
        for limit in range(1, len(full) + 2):
            assert ranked(keywords, terms, limit) == fts5_ranking(conn, terms, limit)
    conn.close()


def test_tokens_are_fts5s() -> None:
    tokenizer = Tokenizer("porter unicode61")

    assert tokenizer.tokens(["Running", "Café", "UV_CACHE_DIR", "--dry-run", "?!", "Running"]) == [
        ("run",),
        ("cafe",),
        ("uv", "cach", "dir"),
        ("dry", "run"),
        (),
        ("run",),
    ]


def test_a_run_of_searches_ranks_as_one_shot_searches(sample: Any) -> None:
    run = SearchIndex(sample)
    queries = sample_queries(sample)[::7]

    for query in queries:
        for per_page in (1, 2):
            assert run.search(query, k=8, per_page=per_page) == hybrid.search(
                sample, query, k=8, per_page=per_page
            ), query
        assert run.keyword_ranking(query, limit=50) == hybrid.bm25_ranking(sample, query, limit=50)


def test_common_words_are_dropped_alike_in_memory(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "index.sqlite")
    schema.migrate(conn)
    rng = random.Random(3)
    common, rare = ["cache", "run", "task"], [f"word{n}" for n in range(300)]
    conn.executemany(
        "insert into chunks (path, ordinal, title, heading, anchor, text, content_hash) "
        "values (?, ?, ?, ?, ?, ?, ?)",
        [
            (f"p{n // 10}.md", n, f"Page {n // 10}", "Section", "", text, "h")
            for n in range(1200)
            for text in [" ".join(rng.sample(common, 2) + rng.sample(rare, 5))]
        ],
    )
    schema.set_meta(conn, chunks="1200")
    run = SearchIndex(conn)
    run.search("warm up")

    for query in ("cache run", "cache word7", "task run word12 word99", "run"):
        assert run.keyword_ranking(query, limit=100) == hybrid.bm25_ranking(conn, query, limit=100)
    conn.close()
