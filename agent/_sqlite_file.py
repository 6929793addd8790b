"""Opening the SQLite file of a store where it cannot be written: a read-only folder or file
system, where `agent tasks` and `agent show` can still read it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from base.errors import StoreError


def read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that only reads the store at `path`. On a read-only file system SQLite
    cannot make the shared-memory file WAL mode reads through; there nobody can be writing
    either, so the file is read as immutable."""
    uri = f"file:{quote(str(path.resolve()))}"
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=busy_timeout)
        conn.execute("SELECT 1 FROM tasks LIMIT 1")
    except sqlite3.OperationalError as exc:
        if not read_only_mount(path):
            raise StoreError(f"cannot read the event store at {path}: {exc}") from exc
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=busy_timeout)
    conn.isolation_level = None
    return conn


def read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def unwritable(path: Path) -> bool:
    """Whether the store at `path` cannot be written: its file system or folder is read-only."""
    folder = path.parent if path.parent.exists() else path.parent.parent
    return read_only_mount(folder) or not os.access(folder, os.W_OK)
