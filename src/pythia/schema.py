"""The index database's schema: numbered migrations, transactions, and its metadata."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .db import Connection

# Numbered migrations; `pragma user_version` records how many have run. The vec0 table is
# not here: its dimension comes from the embedder (see `ensure_vector_table`).
MIGRATIONS: tuple[str, ...] = (
    """
    create table meta (key text primary key, value text not null);
    create table files (
        path text primary key,
        sha256 text not null,
        dirty integer not null default 0
    );
    create table chunks (
        id integer primary key,
        path text not null,
        ordinal integer not null,
        title text not null,
        heading text not null,
        anchor text not null,
        text text not null,
        content_hash text not null,
        unique (path, ordinal)
    );
    create index chunks_by_hash on chunks (content_hash);
    create table embeddings (id integer primary key, content_hash text not null unique);
    create virtual table chunks_fts using fts5(
        title, heading, text, content='chunks', content_rowid='id',
        tokenize='porter unicode61'
    );
    create trigger chunks_fts_insert after insert on chunks begin
        insert into chunks_fts (rowid, title, heading, text)
        values (new.id, new.title, new.heading, new.text);
    end;
    create trigger chunks_fts_delete after delete on chunks begin
        insert into chunks_fts (chunks_fts, rowid, title, heading, text)
        values ('delete', old.id, old.title, old.heading, old.text);
    end;
    """,
    # Updates re-chunk by delete and insert today; this keeps FTS5 right if a row is updated.
    """
    create trigger chunks_fts_update after update on chunks begin
        insert into chunks_fts (chunks_fts, rowid, title, heading, text)
        values ('delete', old.id, old.title, old.heading, old.text);
        insert into chunks_fts (rowid, title, heading, text)
        values (new.id, new.title, new.heading, new.text);
    end;
    """,
)


@dataclass(frozen=True)
class IndexInfo:
    """The index's recorded metadata and size."""

    embedding_model: str
    dimensions: int
    chunker_version: str
    docs_commit: str
    config_hash: str
    chunks: int
    vectors: int


@contextmanager
def atomic(conn: Connection) -> Iterator[None]:
    """One explicit transaction (DDL included), committed on success, rolled back on error."""
    if conn.in_transaction:
        yield
        return
    saved = conn.isolation_level
    conn.isolation_level = None  # autocommit mode, so our own BEGIN governs DDL too
    try:
        conn.execute("begin immediate")
        try:
            yield
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")
    finally:
        conn.isolation_level = saved


def migrate(conn: Connection) -> None:
    """Bring the schema up to the latest migration."""
    version = int(conn.execute("pragma user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        with atomic(conn):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"pragma user_version = {number}")


def _statements(script: str) -> list[str]:
    # executescript would commit our transaction; split on ';' at line ends, keeping
    # trigger bodies (whose inner statements end with ';' too) whole.
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        inside_trigger = joined.lower().startswith("create trigger") and not joined.endswith("end;")
        if joined.endswith(";") and not inside_trigger:
            statements.append(joined)
            current = []
    return statements


def read_meta(conn: Connection) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute("select key, value from meta")}


def set_meta(conn: Connection, **values: str) -> None:
    conn.executemany(
        "insert into meta (key, value) values (?, ?) "
        "on conflict (key) do update set value = excluded.value",
        list(values.items()),
    )


def has_vector_table(conn: Connection) -> bool:
    row = conn.execute(
        "select 1 from sqlite_master where type = 'table' and name = 'chunk_vectors'"
    ).fetchone()
    return row is not None


def ensure_vector_table(conn: Connection, dimensions: int) -> None:
    if not has_vector_table(conn):
        conn.execute(
            "create virtual table chunk_vectors using vec0("
            f"embedding float[{int(dimensions)}] distance_metric=cosine)"
        )


def drop_vectors(conn: Connection) -> None:
    conn.execute("drop table if exists chunk_vectors")
    conn.execute("delete from embeddings")
    set_meta(conn, embedding_model="", dimensions="0")


def index_info(conn: Connection) -> IndexInfo:
    """The recorded model, dimensions, chunker version, commit, and the counts."""
    migrate(conn)
    meta = read_meta(conn)
    chunks = conn.execute("select count(*) from chunks").fetchone()[0]
    vectors = conn.execute("select count(*) from embeddings").fetchone()[0]
    return IndexInfo(
        embedding_model=meta.get("embedding_model", ""),
        dimensions=int(meta.get("dimensions", "0")),
        chunker_version=meta.get("chunker_version", ""),
        docs_commit=meta.get("docs_commit", ""),
        config_hash=meta.get("config_hash", ""),
        chunks=int(chunks),
        vectors=int(vectors),
    )


def has_vectors(conn: Connection) -> bool:
    """Whether vector (hybrid) search is possible: the index holds at least one embedding."""
    migrate(conn)
    return bool(conn.execute("select exists (select 1 from embeddings)").fetchone()[0])
