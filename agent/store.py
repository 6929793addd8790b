"""The append-only event log, in SQLite (WAL).

Each task is an ordered list of events, numbered from 1. Several processes (a runner, a reviewer's
CLI) may use one store at once: appends are transactions that check the sequence number they
expect, and a runner holds a lease on the task so that two runners never drive the same task.

SQLite calls are made inline from async code on purpose: each is a local write of a few tens of
microseconds (WAL, no fsync per commit by default), far less than a hop to a thread would cost.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent import _beside, _sqlite_file, inbox
from agent._db import Db
from agent._process import alive, process_start
from agent.damage import damaged, ranges_text, recovery, salvage
from agent.events import EVENT_ADAPTER, STATUS_AFTER, Event, Status, TaskCreated
from agent.home import default_home
from base.errors import (
    ConfigError,
    ConflictingWrite,
    ErrorCode,
    StoreError,
    TaskBusy,
    TaskNotFound,
)

_ALL = 2**31

#: the environment variable naming a shared (PostgreSQL) store, for workers on many hosts
STORE_URL = "AGENT_STORE_URL"

#: the kinds of event whose commit is on disk before `append` returns, whatever `synchronous` says
MUST_SURVIVE = frozenset({"intent", "approval_decided"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (task_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    task_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL,
    since REAL NOT NULL);
"""

#: a task row's columns, in order (a PostgreSQL store's table has its rowid too)
_TASK = "id, task, status, created, updated"


@dataclass(frozen=True)
class StoredEvent:
    task_id: str
    seq: int
    ts: float
    event: Event


@dataclass(frozen=True)
class TaskRow:
    id: str
    task: str
    status: Status
    created: float
    #: when the task's status last changed
    updated: float


class Store:
    """The event log. Open with `Store.open(path)`; close with `close()` or a `with` block."""

    def __init__(
        self,
        conn: Db,
        path: Path,
        synchronous: Literal["normal", "full"],
        *,
        shared: str | None = None,
    ) -> None:
        self._db = conn
        #: the SQLite file; for a shared store, where the file would be (its folder still
        #: holds what this host keeps: artifacts by default, model sockets)
        self.path = path
        #: a shared (PostgreSQL) store's URL, its password left out; None for SQLite
        self.shared = shared
        #: where the store is, as messages and sandbox names say it
        self.location = shared or str(path)
        self._synchronous = synchronous
        #: the last seq this connection appended, per task
        self._written: dict[str, int] = {}
        #: what a read found damaged and went round (see `tasks`), for the reader to say
        self.damage: list[str] = []
        #: the inbox and audit tables are known to be there (see `reader`)
        self._beside_checked = False

    @classmethod
    def open(
        cls,
        path: Path | None = None,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 30.0,
        read_only: bool = False,
    ) -> Store:
        """Open (creating if needed) the store at `path` (default: the PostgreSQL store that
        `$AGENT_STORE_URL` names, if it is set, else `default_home()/events.db`).

        `read_only` (for listing and showing): an existing store is opened for reading only, so
        one on a read-only file system or folder can still be read; a write to it raises a
        `StoreError` saying it is read-only. A store that does not exist yet is created.

        `normal` survives any crash of the process (kill -9 included); `full` also survives a
        power loss, at the cost of an fsync per append. Either way, an append that holds an
        intent (written before a side effect) or a reviewer's decision is on disk (fsync'd)
        before `append` returns: after a power loss, an effect is never sent again for want of
        its intent, nor a decision asked again. A write waits up to `busy_timeout`
        seconds for another process's write to finish, then raises a retryable `StoreError`.
        """
        url = os.environ.get(STORE_URL) if path is None else None
        path = path or default_home() / "events.db"
        if url:
            return cls._open_shared(url, path, busy_timeout, read_only=read_only)
        if read_only and path.exists():
            return cls(_sqlite_file.read_only(path, busy_timeout), path, synchronous)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            conn.executescript(_SCHEMA + _beside.SCHEMA)
            if unlisted := _unlisted(conn):
                with _transaction(conn):
                    inbox.backfill(conn, unlisted)
        except (OSError, sqlite3.Error) as exc:
            if _sqlite_file.unwritable(path):
                raise StoreError(
                    f"the event store at {path} is read-only ({exc}): `agent tasks` and "
                    "`agent show` can read it; running or deciding a task needs it writable",
                    code=ErrorCode.STORE_READ_ONLY,
                ) from exc
            raise StoreError(f"cannot open the event store at {path}: {exc}") from exc
        return cls(conn, path, synchronous)

    @classmethod
    def _open_shared(cls, url: str, path: Path, busy_timeout: float, *, read_only: bool) -> Store:
        """The PostgreSQL store at `url`, its tables made if need be (not for a reader, when
        they are there: it then takes no writer's lock, and needs no right to make them)."""
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"{STORE_URL} must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), "
                f"not {url[:60]!r}; unset it to use the SQLite store in {path.parent}"
            )
        try:
            from agent import _postgres  # noqa: PLC0415 - psycopg is an optional extra
        except ImportError as exc:
            raise ConfigError(
                f"{STORE_URL} names a PostgreSQL store, but its driver is not installed "
                f"({exc}): pip install 'agent-runtime[postgres]'"
            ) from exc
        where = _postgres.redacted(url)
        try:
            conn = _postgres.Connection(url, busy_timeout=busy_timeout)
            if read_only and _postgres.has_tables(conn, ("tasks", "events", "inbox", "audit")):
                return cls(conn, path, "full", shared=where)
            conn.executescript(_SCHEMA + _beside.SCHEMA)
            if unlisted := _unlisted(conn):
                with _transaction(conn):
                    inbox.backfill(conn, unlisted)
        except sqlite3.Error as exc:
            raise _store_error(exc, where) from exc
        # Commits on PostgreSQL are on disk before they return (synchronous_commit): "full".
        return cls(conn, path, "full", shared=where)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def writing(self) -> Iterator[Db]:
        """A write transaction, for what is kept beside the log (reviewers)."""
        with self._write() as db:
            yield db

    @contextmanager
    def _write(self) -> Iterator[Db]:
        try:
            with _transaction(self._db):
                yield self._db
        except sqlite3.Error as exc:
            raise _store_error(exc, self.location) from exc

    def create_task(self, created: TaskCreated, task_id: str | None = None) -> str:
        """Start a task's log with its `TaskCreated` event; return the new task id."""
        task_id = task_id or secrets.token_hex(4)
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO tasks VALUES (?, ?, 'running', ?, ?)",
                (task_id, created.task, now, now),
            )
            body = created.model_dump_json()
            db.execute(
                "INSERT INTO events VALUES (?, 1, ?, ?, ?)", (task_id, now, created.kind, body)
            )
            _beside.keep(db, task_id, now, [(1, created, body)])
        self._written[task_id] = 1
        return task_id

    def append(self, task_id: str, events: Sequence[Event], *, after: int | None = None) -> int:
        """Append events in one transaction; return the last sequence number.

        With `after`, the append succeeds only if the task's log still ends at `after`; otherwise
        it raises `ConflictingWrite` and writes nothing (another process appended first). Raises
        `TaskNotFound` if there is no such task.
        """
        # An intent or a decision must survive a power loss, not only a crash of the process:
        # its commit waits for the disk (one fsync), the others need not.
        if self._synchronous == "full" or not _must_survive(events):
            return self._append(task_id, events, after)
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            return self._append(task_id, events, after)
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _append(self, task_id: str, events: Sequence[Event], after: int | None) -> int:
        now = time.time()
        db = self._db
        # BEGIN/COMMIT by hand rather than through `_write`: this runs twice per step.
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(exc, self.location) from exc
        try:
            # Where this connection wrote the event at `after` itself, it certainly exists (events
            # are never deleted): no lookup needed, and the (task, seq) key still refuses a seq
            # another process took. Otherwise look the log's end up under the write lock.
            if after is not None and self._written.get(task_id) == after:
                last = after
            else:
                last = _last_seq(db, task_id, expected=after)
            status = None
            written: list[tuple[int, Event, str]] = []
            for event in events:
                last += 1
                body = event.model_dump_json()
                db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                    (task_id, last, now, event.kind, body),
                )
                status = STATUS_AFTER.get(event.kind, status)
                written.append((last, event, body))
            _beside.keep(db, task_id, now, written)
            if status is not None:  # the tasks table is an index for listing: status only
                db.execute(
                    "UPDATE tasks SET updated = ?, status = ? WHERE id = ?", (now, status, task_id)
                )
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK")
            raise ConflictingWrite(
                f"task {task_id} has moved on: another process appended after {after}",
                task_id=task_id,
            ) from None
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _store_error(exc, self.location) from exc
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _store_error(exc, self.location) from exc
        self._written[task_id] = last
        return last

    def events(self, task_id: str, *, after: int = 0) -> list[StoredEvent]:
        """The task's events with sequence number above `after`, in order. Raises `StoreError`
        (code "store_damaged") if some of them are on a damaged page of the store."""
        try:
            rows = self._db.execute(
                "SELECT seq, ts, body FROM events WHERE task_id = ? AND seq > ? ORDER BY seq",
                (task_id, after),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            query = "SELECT seq, ts, body FROM events WHERE task_id = ? AND seq BETWEEN ? AND ?"
            rows, lost = salvage(self._db, query, (task_id,), after + 1)
            if lost or not rows:
                raise StoreError(
                    f"task {task_id}: its log is on a damaged part of the event store at "
                    f"{self.path} ({exc}; events {ranges_text(lost)} cannot be read). "
                    f"{recovery(self.path)}",
                    code=ErrorCode.STORE_DAMAGED,
                ) from exc
            rows.sort()
        if not rows and after == 0:
            raise TaskNotFound(f"no task {task_id}", task_id=task_id)
        return [
            StoredEvent(task_id, seq, ts, EVENT_ADAPTER.validate_json(body))
            for seq, ts, body in rows
        ]

    async def tail(
        self, task_id: str, *, after: int = 0, poll: float = 0.05
    ) -> AsyncIterator[StoredEvent]:
        """The task's events above `after`, then each event any process appends to it, once it
        is committed, in order; it goes on until the caller stops iterating. This is how another
        process follows a task live (a terminal, a reviewer's inbox, a worker): the log is
        read again every `poll` seconds, a query of microseconds when nothing is new. Raises
        `TaskNotFound` for a task the store does not hold."""
        self.task(task_id)
        while True:
            for stored in self.events(task_id, after=after):
                after = stored.seq
                yield stored
            await asyncio.sleep(poll)

    def reader(self) -> Db:
        """The connection, for the readers of what the store keeps beside the log (the audit
        log's `verify` and `entries`, the inbox's `waiting`). Raises `StoreError` for a store
        last written by a version that kept neither (and opened read-only since)."""
        if not self._beside_checked:  # once: tables do not come and go under an open store
            try:
                self._db.execute("SELECT 1 FROM inbox, inbox_escalations, audit_head LIMIT 0")
            except sqlite3.OperationalError:
                raise StoreError(
                    f"the event store at {self.location} has no inbox or audit log of this version "
                    "yet (an older version wrote it): a command that writes to it adds them "
                    "(`agent doctor`, `agent run`)"
                ) from None
            self._beside_checked = True
        return self._db

    def check(self) -> str:
        """SQLite's quick integrity check of the log: "ok", or what is wrong. A shared store's
        server checks its own pages: there, that it answers."""
        if self.shared:
            self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()
            return "ok"
        (result,) = self._db.execute("PRAGMA quick_check").fetchone()
        return str(result)

    def task(self, task_id: str) -> TaskRow:
        row = self._db.execute(f"SELECT {_TASK} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {task_id}", task_id=task_id)
        return TaskRow(*row)

    def tasks(self, *, statuses: Sequence[str] | None = None, limit: int = 1000) -> list[TaskRow]:
        """Tasks, newest first, optionally only those in `statuses`. On a damaged store, those
        that can be read, with what could not said in `damage`."""
        where, args = _status_filter(statuses)
        query = f"SELECT {_TASK} FROM tasks{where} ORDER BY created DESC, rowid DESC LIMIT ?"
        try:
            return [TaskRow(*r) for r in self._db.execute(query, (*args, limit)).fetchall()]
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            rows, lost = salvage(
                self._db, "SELECT rowid, * FROM tasks WHERE rowid BETWEEN ? AND ?", (), 1
            )
            damage = (
                f"the event store at {self.path} is damaged ({exc}): rows {ranges_text(lost)} of "
                f"its task list cannot be read; listed are those that can. {recovery(self.path)}"
            )
            if damage not in self.damage:
                self.damage.append(damage)
            wanted = [TaskRow(*r[1:]) for r in rows if not statuses or r[3] in statuses]
            wanted.sort(key=lambda row: row.created, reverse=True)
            return wanted[:limit]

    def count(self, *, statuses: Sequence[str] | None = None) -> int:
        """How many tasks there are (in `statuses`, if given)."""
        where, args = _status_filter(statuses)
        try:
            return int(self._db.execute(f"SELECT COUNT(*) FROM tasks{where}", args).fetchone()[0])
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            return len(self.tasks(statuses=statuses, limit=_ALL))

    def resolve(self, prefix: str) -> str:
        """The task id that starts with `prefix` (ids are long; people type a few characters)."""
        # Escape LIKE's wildcards: a typed `_` or `%` is a character of the id, not a pattern.
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        try:
            rows = self._db.execute(
                "SELECT id FROM tasks WHERE id LIKE ? || '%' ESCAPE '\\' LIMIT 2", (pattern,)
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            rows = [(r.id,) for r in self.tasks(limit=_ALL) if r.id.startswith(prefix)][:2]
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise TaskNotFound(f"no task id starts with {prefix!r} (see `agent tasks`)")
        raise TaskNotFound(f"more than one task id starts with {prefix!r}; type more of it")

    def orphans(self) -> list[str]:
        """Embedded tasks left running with no live runner (it crashed, or was killed): oldest
        first. A Temporal task's workers hold no lease: it is never one."""
        rows = self._db.execute(
            "SELECT t.id, l.host, l.pid, l.started FROM tasks t LEFT JOIN leases l "
            "ON l.task_id = t.id JOIN events e ON e.task_id = t.id AND e.seq = 1 "
            "WHERE t.status = 'running' AND e.body NOT LIKE '%\"engine\":\"temporal\"%' "
            "ORDER BY t.created, t.rowid"
        ).fetchall()
        return [
            task_id
            for task_id, host, pid, started in rows
            if host is None or not alive(host, pid, started)
        ]

    @contextmanager
    def lease(self, task_id: str) -> Iterator[None]:
        """Hold the task for this process. Raises `TaskBusy` if a live process holds it.

        A lease whose process is gone (it crashed, or was killed with -9) is taken over at once.
        """
        me = (socket.gethostname(), os.getpid(), process_start(os.getpid()))
        with self._write() as db:
            row = db.execute(
                "SELECT host, pid, started, since FROM leases WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is not None and tuple(row[:3]) != me and alive(row[0], row[1], row[2]):
                raise TaskBusy(
                    f"task {task_id} is being run by process {row[1]} on {row[0]}",
                    task_id=task_id,
                    pid=row[1],
                )
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, started = excluded.started, "
                "since = excluded.since",
                (task_id, *me, time.time()),
            )
        try:
            yield
        finally:
            with self._write() as db:
                db.execute("DELETE FROM leases WHERE task_id = ? AND pid = ?", (task_id, me[1]))


def _unlisted(db: Db) -> list[str]:
    """`inbox.unlisted`, or none where the store is damaged (its readers say where)."""
    try:
        return inbox.unlisted(db)
    except sqlite3.DatabaseError as exc:
        if not damaged(exc):
            raise
        return []


@contextmanager
def _transaction(db: Db) -> Iterator[None]:
    # BEGIN IMMEDIATE takes the write lock up front, so a concurrent writer waits on
    # busy_timeout instead of failing half way through.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _status_filter(statuses: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause and its parameters that keep tasks in `statuses` (all, if none)."""
    if not statuses:
        return "", ()
    return f" WHERE status IN ({','.join('?' * len(statuses))})", tuple(statuses)


def _last_seq(db: Db, task_id: str, *, expected: int | None = None) -> int:
    """The task's last sequence number; `ConflictingWrite` if it is not `expected` (when given).

    One index lookup, made under the write lock. Trusting `expected` instead would let a stale or
    wrong value write a gap in the log, or events of a task that does not exist.
    """
    row = db.execute("SELECT MAX(seq) FROM events WHERE task_id = ?", (task_id,)).fetchone()
    if row[0] is None:
        raise TaskNotFound(f"no task {task_id}", task_id=task_id)
    last = int(row[0])
    if expected is not None and expected != last:
        raise ConflictingWrite(
            f"task {task_id} has moved on: its log ends at {last}, not {expected}",
            task_id=task_id,
        )
    return last


def _store_error(exc: sqlite3.Error, path: Path | str) -> StoreError:
    """Map an SQLite failure, once, to the store's own error (busy and locked are retryable)."""
    name = getattr(exc, "sqlite_errorname", "")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"the event store refused a write: {exc}", code=ErrorCode.STORE_INTEGRITY)
    if name == "SQLITE_READONLY" or "readonly database" in str(exc):
        return StoreError(
            f"the event store at {path} is read-only: running or deciding a task needs it writable",
            code=ErrorCode.STORE_READ_ONLY,
        )
    busy = name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return StoreError(
        f"the event store at {path} failed: {exc}"
        + (" (another process holds it)" if busy else ""),
        retryable=busy or name == "PG_UNAVAILABLE",  # a server that may come back
        sqlite_error=name,
    )


def _must_survive(events: Sequence[Event]) -> bool:
    """Whether one of the events must survive a power loss (a plain loop: this runs twice a
    step, and a generator costs more than the one or two events it looks at)."""
    for event in events:  # noqa: SIM110 - not any(...): no generator, this runs twice a step
        if event.kind in MUST_SURVIVE:
            return True
    return False
