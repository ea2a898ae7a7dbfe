"""Keeping the docs index up to date: re-chunk the files that changed, embed only new content."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_vec

from . import db
from .changed_files import Scope, find_candidates
from .chunking import CHUNKER_VERSION, chunk_markdown, embedding_text
from .db import Connection
from .models import Chunk
from .ports import Embedder, embedding_id
from .schema import (
    atomic,
    drop_vectors,
    ensure_vector_table,
    has_vector_table,
    has_vectors,
    migrate,
    read_meta,
    set_meta,
)

# has_vectors is re-exported for callers that still reach it as `index.has_vectors`.
__all__ = [
    "EMBED_BATCH",
    "DocsRootMissing",
    "EmbeddingMismatch",
    "IndexStats",
    "Progress",
    "has_vectors",
    "update_index",
]

EMBED_BATCH = 256  # texts per Embedder.embed call; the embedder splits further per request
Progress = Callable[[str], None]


class DocsRootMissing(Exception):
    """The docs folder to index does not exist."""


class EmbeddingMismatch(Exception):
    """The index's vectors come from a different embedding model than the one given."""


@dataclass(frozen=True)
class IndexStats:
    """What one `update_index` did."""

    files_changed: int
    chunks_total: int
    chunks_embedded: int
    chunks_reused: int
    chunks_deleted: int
    seconds: float


@dataclass
class _Tally:
    files_changed: int = 0
    embedded: int = 0
    reused: int = 0
    deleted: int = 0


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _embedded_hashes(conn: Connection, hashes: Iterable[str]) -> set[str]:
    found: set[str] = set()
    batch = list(set(hashes))
    for start in range(0, len(batch), 500):
        part = batch[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"select content_hash from embeddings where content_hash in ({marks})", part
        )
        found.update(row[0] for row in rows)
    return found


def _replace_file(
    conn: Connection, path: str, chunks: Sequence[Chunk], *, sha: str, dirty: bool, tally: _Tally
) -> set[str]:
    """Swap one file's chunks; returns the content hashes that left the file."""
    old = Counter(
        row[0] for row in conn.execute("select content_hash from chunks where path = ?", (path,))
    )
    new = Counter(chunk.content_hash for chunk in chunks)
    conn.execute("delete from chunks where path = ?", (path,))
    conn.executemany(
        "insert into chunks (path, ordinal, title, heading, anchor, text, content_hash) "
        "values (?, ?, ?, ?, ?, ?, ?)",
        [(c.path, c.ordinal, c.title, c.heading, c.anchor, c.text, c.content_hash) for c in chunks],
    )
    conn.execute(
        "insert into files (path, sha256, dirty) values (?, ?, ?) on conflict (path) "
        "do update set sha256 = excluded.sha256, dirty = excluded.dirty",
        (path, sha, int(dirty)),
    )
    tally.deleted += sum((old - new).values())
    embedded = _embedded_hashes(conn, new)
    tally.reused += sum(count for h, count in new.items() if h in embedded)
    return set(old - new)


def _forget_file(conn: Connection, path: str, tally: _Tally) -> set[str]:
    hashes = {
        row[0] for row in conn.execute("select content_hash from chunks where path = ?", (path,))
    }
    tally.deleted += conn.execute("delete from chunks where path = ?", (path,)).rowcount
    conn.execute("delete from files where path = ?", (path,))
    return hashes


def _collect_garbage(conn: Connection, hashes: Iterable[str]) -> None:
    """Drop the vectors of content hashes no chunk uses any more."""
    orphans = [
        (row[0],)
        for h in hashes
        for row in conn.execute(
            "select id from embeddings where content_hash = ? and not exists "
            "(select 1 from chunks where content_hash = ?)",
            (h, h),
        )
    ]
    if not orphans:
        return
    conn.executemany("delete from embeddings where id = ?", orphans)
    if has_vector_table(conn):
        conn.executemany("delete from chunk_vectors where rowid = ?", orphans)


def _embed_missing(
    conn: Connection, embedder: Embedder, *, progress: Progress | None, tally: _Tally
) -> None:
    """Embed every chunk whose content hash has no vector yet, one batch per transaction.

    Each batch commits on its own so vectors already paid for survive an interruption;
    the next update finds the rest missing and embeds only those.
    """
    rows = conn.execute(
        "select content_hash, heading, text, title from chunks where content_hash not in "
        "(select content_hash from embeddings) group by content_hash order by min(id)"
    ).fetchall()
    for start in range(0, len(rows), EMBED_BATCH):
        batch = rows[start : start + EMBED_BATCH]
        if progress:
            progress(f"embedding chunks {start + 1}-{start + len(batch)} of {len(rows)}")
        texts = [embedding_text(heading=row[1], text=row[2], title=row[3]) for row in batch]
        vectors = embedder.embed(texts, task="document")
        with atomic(conn):
            for row, vector in zip(batch, vectors, strict=True):
                cursor = conn.execute("insert into embeddings (content_hash) values (?)", (row[0],))
                conn.execute(
                    "insert into chunk_vectors (rowid, embedding) values (?, ?)",
                    (cursor.lastrowid, sqlite_vec.serialize_float32(vector)),
                )
        tally.embedded += len(batch)


def _scope_key(include: Sequence[str], exclude: Sequence[str]) -> str:
    return json.dumps({"include": list(include), "exclude": list(exclude)})


def update_index(
    conn_or_path: Connection | Path | str,
    *,
    docs_root: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    embedder: Embedder | None,
    full: bool = False,
    config_hash: str = "",
    progress: Progress | None = None,
) -> IndexStats:
    """Bring the index in line with the docs under `docs_root`, re-chunking only what changed.

    A new embedding model or dimension (or `full`) drops every vector; a new chunker
    version re-chunks every file. Otherwise only files changed since the recorded commit
    (per git, or per content hash outside git) are re-chunked, and only chunks whose
    content hash has no vector yet are embedded. Without an embedder the index stays
    BM25-only and any vectors it has are kept.
    """
    started = time.perf_counter()
    if not Path(docs_root).is_dir():
        # Indexing a missing folder would look like every page was deleted.
        raise DocsRootMissing(
            f"docs folder {docs_root} does not exist; set docs.root in .github/pythia.yml "
            "(or, on the command line, pass --docs)"
        )
    with _connection(conn_or_path) as conn:
        migrate(conn)
        tally = _Tally()
        _update(
            conn,
            docs_root=Path(docs_root),
            include=include,
            exclude=exclude,
            embedder=embedder,
            full=full,
            config_hash=config_hash,
            progress=progress,
            tally=tally,
        )
        total = conn.execute("select count(*) from chunks").fetchone()[0]
    return IndexStats(
        files_changed=tally.files_changed,
        chunks_total=int(total),
        chunks_embedded=tally.embedded,
        chunks_reused=tally.reused,
        chunks_deleted=tally.deleted,
        seconds=round(time.perf_counter() - started, 3),
    )


@contextmanager
def _connection(conn_or_path: Connection | Path | str) -> Iterator[Connection]:
    """The connection given, or one opened on the path given and closed afterwards."""
    if not isinstance(conn_or_path, (Path, str)):
        yield conn_or_path
        return
    conn = db.connect(conn_or_path)
    try:
        yield conn
    finally:
        conn.close()


def _update(
    conn: Connection,
    *,
    docs_root: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    embedder: Embedder | None,
    full: bool,
    config_hash: str,
    progress: Progress | None,
    tally: _Tally,
) -> None:
    meta = read_meta(conn)
    model_changed = embedder is not None and (
        meta.get("embedding_model", ""),
        meta.get("dimensions", "0"),
    ) != (embedding_id(embedder), str(embedder.dimensions))
    rechunk_all = full or model_changed or meta.get("chunker_version") != CHUNKER_VERSION
    scope_changed = meta.get("config_hash", "") != config_hash or meta.get("scope") != _scope_key(
        include, exclude
    )
    known = {row[0]: row[1] for row in conn.execute("select path, sha256 from files")}
    dirty_before = {row[0] for row in conn.execute("select path from files where dirty = 1")}
    candidates = find_candidates(
        docs_root,
        recorded="" if rechunk_all or scope_changed else meta.get("docs_commit", ""),
        known=known,
        dirty_before=dirty_before,
    )
    scope = Scope.of(include, exclude)
    if progress:
        progress(f"checking {len(candidates.paths)} candidate files")

    removed_hashes: set[str] = set()
    with atomic(conn):
        if full or model_changed:
            drop_vectors(conn)
        if embedder is not None:
            ensure_vector_table(conn, embedder.dimensions)
            set_meta(
                conn, embedding_model=embedding_id(embedder), dimensions=str(embedder.dimensions)
            )
        for path in sorted(candidates.paths):
            file = docs_root / path
            if path not in scope or not file.is_file():
                if path in known:
                    removed_hashes |= _forget_file(conn, path, tally)
                    tally.files_changed += 1
                continue
            sha = _file_sha(file)
            if sha == known.get(path) and not rechunk_all:
                if (path in candidates.dirty) != (path in dirty_before):
                    conn.execute(
                        "update files set dirty = ? where path = ?",
                        (int(path in candidates.dirty), path),
                    )
                continue
            chunks = chunk_markdown(_read_text(file), path=path)
            removed_hashes |= _replace_file(
                conn, path, chunks, sha=sha, dirty=path in candidates.dirty, tally=tally
            )
            tally.files_changed += 1
        _collect_garbage(conn, removed_hashes)
        set_meta(
            conn,
            chunks=str(conn.execute("select count(*) from chunks").fetchone()[0]),
            chunker_version=CHUNKER_VERSION,
            docs_commit=candidates.commit,
            config_hash=config_hash,
            scope=_scope_key(include, exclude),
        )
    if progress:
        progress(f"re-chunked {tally.files_changed} changed files")
    if embedder is not None:
        _embed_missing(conn, embedder, progress=progress, tally=tally)
