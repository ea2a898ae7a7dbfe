"""Docs embeddings kept across runs in a small SQLite file, so no chunk is paid for twice.

The index already reuses a vector for every chunk whose content hash it has seen; this file
covers what the index cannot: a dry run (which saves no index), a first run after one, a data
branch that was reset. The Action keeps it in the Actions cache, so it must hold nothing taken
from chat: only `document` texts (docs chunks, public anyway) are cached, by a hash of model,
dimensions and text, and the texts themselves are never stored. Queries, which are written
from chat messages, always go to the model and are never stored.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from array import array
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from .ports import Embedder, EmbedTask

SCHEMA = (
    "create table if not exists vectors ("
    " key text primary key, vector blob not null, used_day integer not null)"
)
KEEP_DAYS = 90  # a vector no docs chunk asked for in this long is dropped


class CachedEmbedder:
    """An Embedder that answers docs texts it embedded before from `path`, and asks `inner`
    for the rest; `computed` and `cached` count texts of each kind."""

    def __init__(self, inner: Embedder, path: Path, *, today: int | None = None) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.path = Path(path)
        self.computed = 0
        self.cached = 0
        self.today = int(time.time() // 86400) if today is None else today

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        if task != "document":
            return self.inner.embed(texts, task=task)  # chat-derived: never stored
        keys = [self._key(text) for text in texts]
        with closing(self._connect()) as conn:
            found = self._lookup(conn, keys)
            missing = [i for i, key in enumerate(keys) if key not in found]
            if missing:
                vectors = self.inner.embed([texts[i] for i in missing], task=task)
                fresh = dict(zip((keys[i] for i in missing), vectors, strict=True))
                with conn:
                    conn.executemany(
                        "insert or replace into vectors (key, vector, used_day) values (?, ?, ?)",
                        [(k, array("f", v).tobytes(), self.today) for k, v in fresh.items()],
                    )
                found.update(fresh)
        self.computed += len(missing)
        self.cached += len(texts) - len(missing)
        return [found[key] for key in keys]

    def prune(self) -> int:
        """Drop vectors no docs chunk has asked for in KEEP_DAYS; returns how many."""
        if not self.path.exists():
            return 0
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                "delete from vectors where used_day < ?", (self.today - KEEP_DAYS,)
            )
            return int(cursor.rowcount)

    def _key(self, text: str) -> str:
        digest = hashlib.sha256(f"{self.model}\n{self.dimensions}\n{text}".encode())
        return digest.hexdigest()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.execute(SCHEMA)
        return conn

    def _lookup(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = conn.execute(f"select key, vector from vectors where key in ({marks})", part)
            for key, blob in rows:
                vector = array("f")
                vector.frombytes(blob)
                if len(vector) == self.dimensions:
                    found[key] = vector.tolist()
        if found:
            with conn:
                conn.executemany(
                    "update vectors set used_day = ? where key = ?",
                    [(self.today, key) for key in found],
                )
        return found
