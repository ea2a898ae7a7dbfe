"""The docs index: its SQLite schema, incremental updates, and hybrid (BM25 + vector) search."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
import sqlite_vec

from . import db
from .chunking import CHUNKER_VERSION, chunk_markdown, embedding_text
from .db import Connection
from .globs import glob_regex
from .models import Chunk
from .ports import Embedder

EMBED_BATCH = 256  # texts per Embedder.embed call; the embedder splits further per request
Progress = Callable[[str], None]

# Numbered migrations; `pragma user_version` records how many have run. The vec0 table is
# not here: its dimension comes from the embedder (see `_ensure_vector_table`).
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


# ---------------------------------------------------------------- schema and metadata


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


def _set_meta(conn: Connection, **values: str) -> None:
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


def _ensure_vector_table(conn: Connection, dimensions: int) -> None:
    if not has_vector_table(conn):
        conn.execute(
            "create virtual table chunk_vectors using vec0("
            f"embedding float[{int(dimensions)}] distance_metric=cosine)"
        )


def _drop_vectors(conn: Connection) -> None:
    conn.execute("drop table if exists chunk_vectors")
    conn.execute("delete from embeddings")
    _set_meta(conn, embedding_model="", dimensions="0")


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


# ---------------------------------------------------------------- which files


@dataclass(frozen=True)
class Scope:
    """Which paths (POSIX, relative to the docs root) belong in the index."""

    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, include: Sequence[str], exclude: Sequence[str]) -> Scope:
        return cls(tuple(map(glob_regex, include)), tuple(map(glob_regex, exclude)))

    def __contains__(self, path: object) -> bool:
        return (
            isinstance(path, str)
            and any(p.match(path) for p in self.include)
            and not any(p.match(path) for p in self.exclude)
        )


@dataclass(frozen=True)
class _Candidates:
    """Paths that may have changed, and which of them differ from the commit (dirty)."""

    paths: frozenset[str]
    dirty: frozenset[str]
    commit: str


def _open_repo(docs_root: Path) -> git.Repo | None:
    try:
        repo = git.Repo(docs_root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return repo if repo.working_tree_dir else None


def _git_paths(repo: git.Repo, *args: str, docs_rel: str) -> set[str]:
    # -z: paths are NUL-separated and never quoted (core.quotePath would escape non-ASCII).
    output = repo.git.execute(["git", *args, "-z", "--", docs_rel], strip_newline_in_stdout=False)
    prefix = "" if docs_rel == "." else docs_rel.rstrip("/") + "/"
    return {p[len(prefix) :] for p in str(output).split("\0") if p and p.startswith(prefix)}


def _head(repo: git.Repo) -> str:
    try:
        return str(repo.head.commit.hexsha)
    except ValueError:  # a repository without commits
        return ""


def _has_commit(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"])
    except git.GitCommandError:
        return False
    return True


def _git_candidates(
    repo: git.Repo, docs_root: Path, *, recorded: str, known: Iterable[str], dirty_before: set[str]
) -> _Candidates:
    """Changed paths from git: commits since `recorded`, the working tree, untracked files.

    `--no-renames` matters: with rename detection (git's default since 2.9) `--name-only`
    lists only a renamed file's new name, and the old one would keep stale chunks.
    """
    top = Path(str(repo.working_tree_dir)).resolve()
    docs_rel = docs_root.resolve().relative_to(top).as_posix()
    head = _head(repo)
    untracked = _git_paths(repo, "ls-files", "--others", "--exclude-standard", docs_rel=docs_rel)
    dirty = set(untracked)
    if head:
        dirty |= _git_paths(repo, "diff", "--name-only", "--no-renames", "HEAD", docs_rel=docs_rel)
    if recorded and head and _has_commit(repo, recorded):
        committed = _git_paths(
            repo, "diff", "--name-only", "--no-renames", f"{recorded}..{head}", docs_rel=docs_rel
        )
        paths = committed | dirty | dirty_before
    else:
        tracked = _git_paths(repo, "ls-files", "--cached", docs_rel=docs_rel)
        paths = tracked | untracked | set(known)
    return _Candidates(frozenset(paths), frozenset(dirty), head)


def _walk(docs_root: Path) -> set[str]:
    found: set[str] = set()
    for folder, dirs, files in os.walk(docs_root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        base = Path(folder).relative_to(docs_root)
        found.update((base / name).as_posix() for name in files)
    return found


# ---------------------------------------------------------------- updating


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
        "select content_hash, heading, text from chunks where content_hash not in "
        "(select content_hash from embeddings) group by content_hash order by min(id)"
    ).fetchall()
    for start in range(0, len(rows), EMBED_BATCH):
        batch = rows[start : start + EMBED_BATCH]
        if progress:
            progress(f"embedding chunks {start + 1}-{start + len(batch)} of {len(rows)}")
        texts = [embedding_text(heading=row[1], text=row[2]) for row in batch]
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
            "or pass --docs"
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
    ) != (embedder.model, str(embedder.dimensions))
    rechunk_all = full or model_changed or meta.get("chunker_version") != CHUNKER_VERSION
    scope_changed = meta.get("config_hash", "") != config_hash or meta.get("scope") != _scope_key(
        include, exclude
    )
    known = {row[0]: row[1] for row in conn.execute("select path, sha256 from files")}
    dirty_before = {row[0] for row in conn.execute("select path from files where dirty = 1")}
    repo = _open_repo(docs_root)
    if repo is not None:
        recorded = "" if rechunk_all or scope_changed else meta.get("docs_commit", "")
        try:
            candidates = _git_candidates(
                repo, docs_root, recorded=recorded, known=known, dirty_before=dirty_before
            )
        finally:
            repo.close()
    else:
        candidates = _Candidates(frozenset(_walk(docs_root) | set(known)), frozenset(), "")
    scope = Scope.of(include, exclude)
    if progress:
        progress(f"checking {len(candidates.paths)} candidate files")

    removed_hashes: set[str] = set()
    with atomic(conn):
        if full or model_changed:
            _drop_vectors(conn)
        if embedder is not None:
            _ensure_vector_table(conn, embedder.dimensions)
            _set_meta(conn, embedding_model=embedder.model, dimensions=str(embedder.dimensions))
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
        _set_meta(
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
