"""The audit log: the events that decide and do things (gate decisions, approval requests and
decisions, intents, results, a task's start and end), each given an entry chained by hash to
the entry before it, in the store's own transaction, in the order the store took them from every
process.

    entry n:  hash(n) = sha256( hash(n-1) "\\n" n, task, seq, time, kind, sha256(event body) )

An entry names its event in the task's log; the event itself is not copied. The newest entry's
number and hash are kept as the head, in the same transaction. `verify` recomputes the chain and
names the first entry that does not hold: one changed (its hash no longer matches), removed (a
number missing, or its event gone), reordered (hashes no longer follow), the log cut (the head
names an entry that is not there), an event filed under another kind than its body's, or more
events of audited kinds without an entry than the store held before its audit log began (added
from outside, or the audit log emptied). Someone who can write the file can also rewrite the
head, or recompute every hash: `agent audit head` prints the head, to be kept elsewhere and
given back to `verify`, which then finds both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agent._db import Db

#: the kinds of event the audit log records
AUDITED = frozenset(
    {
        "task_created",
        "gate_decided",
        "approval_requested",
        "approval_decided",
        "approval_given",
        "approval_escalated",
        "intent",
        "tool_result",
        "outcome_unknown",
        "late_result",
        "task_finished",
        "task_failed",
    }
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    n INTEGER PRIMARY KEY, task_id TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1), n INTEGER NOT NULL, hash TEXT NOT NULL,
    before INTEGER NOT NULL);
"""
_GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    """An event as the audit log records it."""

    task_id: str
    seq: int
    ts: float
    kind: str
    body: str


@dataclass(frozen=True)
class Head:
    """The newest entry: its number and hash (0 and the genesis hash for an empty log)."""

    n: int
    hash: str

    def __str__(self) -> str:
        return f"{self.n}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """A head as `str` writes it. Raises `ValueError`."""
        number, _, digest = text.strip().partition(":")
        if not number.isdigit() or len(digest) != 64:
            raise ValueError(
                f"not an audit head (N:SHA256, as `agent audit head` prints): {text!r}"
            )
        return cls(int(number), digest.lower())


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: how many entries hold, and the first problem (None if none)."""

    entries: int
    head: Head
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def link(previous: str, n: int, entry: Entry) -> str:
    """Entry `n`'s hash, after the entry whose hash is `previous`."""
    body = hashlib.sha256(entry.body.encode()).hexdigest()
    fields = json.dumps([n, entry.task_id, entry.seq, repr(entry.ts), entry.kind, body])
    return hashlib.sha256(f"{previous}\n{fields}".encode()).hexdigest()


def extend(db: Db, entries: Sequence[Entry]) -> None:
    """Add `entries` (whose events are written already) to the log, inside the caller's write
    transaction. The first time, the head also records how many audited events the store held
    from before there was an audit log (they have no entries)."""
    row = db.execute("SELECT n, hash, before FROM audit_head").fetchone()
    if row is None:
        n, previous, before = 0, _GENESIS, _audited_events(db) - len(entries)
    else:
        n, previous, before = int(row[0]), str(row[1]), int(row[2])
    for entry in entries:
        n += 1
        previous = link(previous, n, entry)
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", (n, entry.task_id, entry.seq, previous))
    db.execute(
        "INSERT INTO audit_head VALUES (1, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET "
        "n = excluded.n, hash = excluded.hash, before = excluded.before",
        (n, previous, before),
    )


def _audited_events(db: Db) -> int:
    kinds = sorted(AUDITED)
    query = f"SELECT COUNT(*) FROM events WHERE kind IN ({','.join('?' * len(kinds))})"
    return int(db.execute(query, kinds).fetchone()[0])


def head(db: Db) -> Head:
    """The head as the store records it."""
    row = db.execute("SELECT n, hash FROM audit_head").fetchone()
    return Head(int(row[0]), str(row[1])) if row is not None else Head(0, _GENESIS)


def _rows(db: Db) -> Iterator[tuple[int, str, int, str, Entry | None]]:
    """Each entry in order: its number, task, seq, hash, and its event (None if gone)."""
    query = (
        "SELECT a.n, a.task_id, a.seq, a.hash, e.ts, e.kind, e.body FROM audit a LEFT JOIN "
        "events e ON e.task_id = a.task_id AND e.seq = a.seq ORDER BY a.n"
    )
    for n, task_id, seq, digest, ts, kind, body in db.execute(query):
        event = Entry(task_id, seq, ts, kind, body) if body is not None else None
        yield n, task_id, seq, digest, event


def verify(db: Db, pinned: Head | None = None) -> Verdict:
    """Recompute the chain; the first entry that does not hold is the verdict's problem.
    `pinned`, a head kept elsewhere, must be an entry of the chain. Read in one transaction,
    so that what other processes append meanwhile is not half seen."""
    db.execute("BEGIN")
    try:
        return _verify(db, pinned)
    finally:
        db.execute("COMMIT")


def _verify(db: Db, pinned: Head | None) -> Verdict:
    recorded = head(db)
    previous, expected = _GENESIS, 1
    hashes: dict[int, str] = {}
    for n, task_id, seq, digest, event in _rows(db):
        where = f"entry {n} (task {task_id} event {seq})"
        if n != expected:
            return Verdict(expected - 1, recorded, f"entry {expected} was removed")
        if event is None:
            return Verdict(n - 1, recorded, f"{where}: its event was removed from the task's log")
        if event.kind not in AUDITED or link(previous, n, event) != digest:
            return Verdict(n - 1, recorded, f"{where}, {event.kind}: it was changed (or reordered)")
        previous, expected = digest, n + 1
        if pinned is not None and n == pinned.n:
            hashes[n] = digest
    last = expected - 1
    if last < recorded.n:
        return Verdict(
            last, recorded, f"the log was cut after entry {last} (its head is {recorded.n})"
        )
    if last > recorded.n or (last and previous != recorded.hash):
        return Verdict(last, recorded, f"entry {last} does not match the head the store records")
    if pinned is not None and (pinned.n > last or hashes.get(pinned.n, pinned.hash) != pinned.hash):
        return Verdict(
            last,
            recorded,
            f"the head kept elsewhere ({pinned}) is not in this log: it was rewritten",
        )
    if (stray := _outside(db)) is not None:
        return Verdict(last, recorded, stray)
    return Verdict(last, recorded, None)


def _outside(db: Db) -> str | None:
    """An event written into the log from outside: one whose kind column is not its body's (a
    state is rebuilt from the body), or more audited events with no entry than the store held
    before its audit log began."""
    # Read here, not by the database's JSON functions: PostgreSQL's refuse a body holding
    # the character NUL, which a tool's output may.
    for task_id, seq, kind, body in db.execute("SELECT task_id, seq, kind, body FROM events"):
        try:
            said = json.loads(body).get("kind")
        except (ValueError, AttributeError):
            said = "body that is not an event"
        if said != kind:
            return (
                f"task {task_id} event {seq}: it is filed as {kind} but its body is a {said} "
                "(it was changed from outside)"
            )
    kinds = sorted(AUDITED)
    unrecorded = db.execute(
        "SELECT e.task_id, e.seq, e.kind FROM events e LEFT JOIN audit a ON a.task_id = "
        f"e.task_id AND a.seq = e.seq WHERE e.kind IN ({','.join('?' * len(kinds))}) AND "
        "a.n IS NULL ORDER BY e.ts DESC",
        kinds,
    ).fetchall()
    head_row = db.execute("SELECT before FROM audit_head").fetchone()
    before = int(head_row[0]) if head_row is not None else 0
    if len(unrecorded) <= before:
        return None
    task_id, seq, kind = unrecorded[0]
    return (
        f"task {task_id} event {seq}, {kind}: no entry records it ({len(unrecorded)} audited "
        f"events have none, where {before} came before the audit log: it was added from outside, "
        "or the audit log was emptied)"
    )


def entries(db: Db) -> Iterator[dict[str, Any]]:
    """Each entry with its event, as `agent audit export` writes it (a JSON object a line)."""
    for n, task_id, seq, digest, event in _rows(db):
        yield {
            "n": n,
            "hash": digest,
            "task_id": task_id,
            "seq": seq,
            "ts": event.ts if event is not None else None,
            "kind": event.kind if event is not None else None,
            "event": json.loads(event.body) if event is not None else None,
        }
