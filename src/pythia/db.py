"""Opening SQLite with sqlite-vec loaded, whichever sqlite3 module can load extensions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlite_vec


class DatabaseError(Exception):
    """The index database could not be opened."""


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


def connect(path: Path | str) -> Any:
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
    return connection
