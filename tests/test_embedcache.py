"""The docs-embedding cache: what a dry run embeds is not paid for again, chat is never kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import harness
from doubles import HashEmbedder
from pythia.config import parse_config
from pythia.embedcache import KEEP_DAYS, CachedEmbedder

FIXTURES = Path(__file__).parent / "fixtures"


def test_docs_texts_are_embedded_once_and_queries_are_never_stored(tmp_path: Path) -> None:
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, tmp_path / "embeddings.sqlite")
    first = cache.embed(["# Proxy\nSet HTTPS_PROXY.", "# Cache\nIt moved."], task="document")
    again = CachedEmbedder(inner, tmp_path / "embeddings.sqlite")  # the next run
    second = again.embed(["# Cache\nIt moved.", "# New\nA new page."], task="document")
    assert inner.calls == [
        ["# Proxy\nSet HTTPS_PROXY.", "# Cache\nIt moved."],
        ["# New\nA new page."],
    ]
    assert (again.cached, again.computed) == (1, 1)
    # float32 on disk, as the index keeps them
    assert max(abs(a - b) for a, b in zip(second[0], first[1], strict=True)) < 1e-6

    again.embed(["how do I set a proxy behind the corporate firewall?"], task="query")
    conn = sqlite3.connect(tmp_path / "embeddings.sqlite")
    assert conn.execute("select count(*) from vectors").fetchone() == (3,)  # no query
    stored = b"".join(row[0].encode() + row[1] for row in conn.execute("select * from vectors"))
    assert b"proxy" not in stored.lower() and b"corporate" not in stored  # hashes and floats


def test_another_model_or_size_does_not_reuse_vectors(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    CachedEmbedder(HashEmbedder(), path).embed(["# A\ntext"], task="document")
    other = CachedEmbedder(HashEmbedder(dimensions=32), path)
    other.embed(["# A\ntext"], task="document")
    assert (other.cached, other.computed) == (0, 1)


def test_vectors_no_chunk_asked_for_in_months_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    CachedEmbedder(HashEmbedder(), path, today=100).embed(["# Old\npage"], task="document")
    later = CachedEmbedder(HashEmbedder(), path, today=100 + KEEP_DAYS + 1)
    later.embed(["# Current\npage"], task="document")
    assert later.prune() == 1
    assert CachedEmbedder(HashEmbedder(), path, today=100 + KEEP_DAYS + 1).prune() == 0


def test_an_index_built_in_a_dry_run_costs_nothing_the_next_time(tmp_path: Path) -> None:
    """A dry run keeps no index, but the cache file keeps what it paid for."""
    config = parse_config({"docs": {"root": "docs"}})
    space = harness.workspace(FIXTURES / "sample-docs", config)
    inner = HashEmbedder()
    dry = CachedEmbedder(inner, tmp_path / "cache/embeddings.sqlite")
    harness.index_docs(space, tmp_path / "dry-index.sqlite", dry)  # thrown away after
    paid = inner.texts_embedded
    assert paid == dry.computed > 0
    real = CachedEmbedder(inner, tmp_path / "cache/embeddings.sqlite")
    harness.index_docs(space, tmp_path / "real-index.sqlite", real)  # a fresh index
    assert inner.texts_embedded == paid and real.cached == paid and real.computed == 0
