"""Opening SQLite with sqlite-vec loaded, whichever sqlite3 module can load extensions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol, cast

import sqlite_vec


class DatabaseError(Exception):
    """The index database could not be opened."""


class Cursor(Protocol):
    """The part of a DB-API cursor Pythia uses; a row's values are whatever SQLite stored."""

    @property
    def lastrowid(self) -> int | None: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a connection Pythia uses, which sqlite3's and sqlean.py's both have.

    Not `sqlite3.Connection` itself: sqlean.py's class is a separate (older) copy of it that
    lacks some newer methods, such as `blobopen` and `serialize`.
    """

    # Typed as typeshed types sqlite3's, so that sqlite3.Connection fits; at run time it
    # can also be "", the default.
    isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[object] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[object]], /) -> Cursor: ...

    def close(self) -> None: ...


def _driver() -> ModuleType:
    # Some Python builds (this project's CI among them) ship sqlite3 without
    # enable_load_extension; sqlean.py bundles a SQLite that can load extensions.
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        probe = sqlite3.connect(":memory:")
        try:
            probe.enable_load_extension(True)
            return sqlite3
        except (AttributeError, sqlite3.OperationalError):
            pass
        finally:
            probe.close()
    import sqlean

    module: ModuleType = sqlean
    return module


def connect(path: Path | str) -> Connection:
    """Open (creating if needed) a database with sqlite-vec loaded and rows as `Row`s."""
    driver = _driver()
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = driver.connect(str(path))
        connection.enable_load_extension(True)
        sqlite_vec.load(connection)
        connection.enable_load_extension(False)
    except Exception as error:  # driver-specific error classes
        raise DatabaseError(f"cannot open {path} with sqlite-vec: {error}") from None
    connection.row_factory = driver.Row
    connection.execute("pragma foreign_keys = on")
    # The driver is picked at run time and sqlean is untyped; from here on it is checked.
    return cast(Connection, connection)
