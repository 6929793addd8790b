"""The reviewers' inbox: every request for approval across all tasks, kept in the store beside
the log, in the same transaction as the events that ask and decide (so it survives whatever the
log survives, and no process sees one without the other). A request is waiting while it is
undecided and its task waits for a reviewer; `waiting` lists them oldest first, in one indexed
query, however many tasks the store holds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import NamedTuple

from agent._db import Db
from agent.events import (
    EVENT_ADAPTER,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRequested,
    Event,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    approval_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, seq INTEGER NOT NULL,
    asked REAL NOT NULL, tool TEXT NOT NULL, risk TEXT NOT NULL, rule TEXT, reason TEXT NOT NULL,
    preview TEXT NOT NULL, call_hash TEXT NOT NULL, cause TEXT NOT NULL, expires REAL,
    decided REAL, approved INTEGER, reviewer TEXT, origin TEXT);
CREATE INDEX IF NOT EXISTS inbox_waiting ON inbox (decided, asked);
CREATE INDEX IF NOT EXISTS inbox_task ON inbox (task_id);
CREATE TABLE IF NOT EXISTS inbox_escalations (
    approval_id TEXT PRIMARY KEY, escalated REAL NOT NULL, escalated_to TEXT NOT NULL);
"""
#: the inbox's own columns, in order (a PostgreSQL store's table has its rowid too)
COLUMNS = (
    "i.approval_id, task_id, seq, asked, tool, risk, rule, reason, preview, call_hash, cause, "
    "expires, decided, approved, reviewer, origin"
)
#: the kinds of event the inbox follows
KINDS = frozenset({"approval_requested", "approval_decided", "approval_escalated"})


class Waiting(NamedTuple):
    """A request waiting for a reviewer, as the inbox lists it (a tuple: made fast, 10,000 at
    a time)."""

    approval_id: str
    task_id: str
    asked: float
    tool: str
    risk: str
    rule: str | None
    reason: str
    preview: str
    call_hash: str
    cause: str
    #: when it is denied (or escalated) if no reviewer decides it first (None: never)
    expires: float | None
    #: the reviewers it was escalated to, who alone may decide it now (JSON list; None: any)
    escalated_to: str | None


def note(db: Db, task_id: str, seq: int, ts: float, event: Event) -> None:
    """Follow a request, an escalation or a decision, inside the caller's write transaction."""
    if isinstance(event, ApprovalEscalated):
        # Kept in a table of its own: a process of the version before escalation writes the
        # inbox's rows as they were, and goes on doing so beside this one.
        db.execute(
            "UPDATE inbox SET expires = ? WHERE approval_id = ?",
            (None if event.expire_after is None else ts + event.expire_after, event.approval_id),
        )
        # Delete, then insert (not an upsert): a row asked again is a new row, as the
        # inbox's `marker` counts them.
        db.execute("DELETE FROM inbox_escalations WHERE approval_id = ?", (event.approval_id,))
        db.execute(
            "INSERT INTO inbox_escalations VALUES (?, ?, ?)",
            (event.approval_id, ts, json.dumps(event.to)),
        )
    elif isinstance(event, ApprovalRequested):
        # asked again (its call changed): the last asking counts, as a new row
        db.execute("DELETE FROM inbox WHERE approval_id = ?", (event.approval_id,))
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL)",
            (
                event.approval_id,
                task_id,
                seq,
                ts,
                event.tool,
                event.risk,
                event.rule,
                event.reason,
                event.preview,
                event.call_hash,
                event.cause,
                None if event.expire_after is None else ts + event.expire_after,
            ),
        )
    elif isinstance(event, ApprovalDecided):
        db.execute(
            "UPDATE inbox SET decided = ?, approved = ?, reviewer = ?, origin = ? "
            "WHERE approval_id = ?",
            (ts, int(event.approved), event.reviewer, event.origin, event.approval_id),
        )


def waiting(
    db: Db,
    *,
    task: str | None = None,
    tools: Sequence[str] = (),
    risks: Sequence[str] = (),
    limit: int = -1,
    expired: bool | None = None,
) -> list[Waiting]:
    """The requests waiting for a reviewer, oldest first; only those of `task`, of one of
    `tools`, of one of `risks`, when given. `expired`: only those whose time has run out (no
    reviewer may decide them: the first process to find them denies them), or only those whose
    time has not; None: both."""
    where = ["i.decided IS NULL", "t.status = 'awaiting_approval'"]
    args: list[str | int | float] = []
    if expired is not None:
        where.append("i.expires <= ?" if expired else "(i.expires IS NULL OR i.expires > ?)")
        args.append(time.time())
    if task is not None:
        where.append("i.task_id = ?")
        args.append(task)
    for column, wanted in (("tool", tools), ("risk", risks)):
        if wanted:
            where.append(f"i.{column} IN ({','.join('?' * len(wanted))})")
            args += wanted
    rows = db.execute(
        "SELECT i.approval_id, i.task_id, i.asked, i.tool, i.risk, i.rule, i.reason, i.preview, "
        "i.call_hash, i.cause, i.expires, e.escalated_to FROM inbox i "
        "JOIN tasks t ON t.id = i.task_id LEFT JOIN inbox_escalations e USING (approval_id) "
        f"WHERE {' AND '.join(where)} ORDER BY i.decided, i.asked, i.approval_id LIMIT ?",
        (*args, limit if limit >= 0 else 2**62),  # SQLite's -1 (no limit) is not SQL's
    ).fetchall()
    return [Waiting(*row) for row in rows]


def decided_elsewhere(db: Db) -> set[str]:
    """The running tasks whose last request was decided where no runner goes on with it (over
    HTTP, or in `agent review`): a worker's to continue."""
    rows = db.execute(
        "SELECT t.id FROM tasks t JOIN inbox i ON i.task_id = t.id WHERE t.status = 'running' "
        "AND i.decided IS NOT NULL AND (i.origin LIKE 'http %' OR i.origin = 'review') "
        "AND i.decided >= t.updated"
    ).fetchall()
    return {str(task_id) for (task_id,) in rows}


def marker(db: Db) -> tuple[object, ...]:
    """What changes whenever a request is asked or decided (for a reader that polls)."""
    row = db.execute(
        "SELECT COUNT(*), MAX(asked), MAX(decided), MAX(rowid), "
        "(SELECT COUNT(*) FROM inbox_escalations) FROM inbox"
    ).fetchone()
    return tuple(row)


def find(db: Db, approval_id: str) -> Waiting | None:
    """The request `approval_id`, waiting or not; None if the inbox holds none."""
    row = db.execute(
        "SELECT i.approval_id, task_id, asked, tool, risk, rule, reason, preview, call_hash, "
        "cause, expires, e.escalated_to FROM inbox i "
        "LEFT JOIN inbox_escalations e USING (approval_id) WHERE i.approval_id = ?",
        (approval_id,),
    ).fetchone()
    return None if row is None else Waiting(*row)


def describe(db: Db, approval_id: str) -> dict[str, object] | None:
    """Everything the inbox holds of a request, decision included, by column."""
    cursor = db.execute(
        f"SELECT {COLUMNS}, e.escalated_to FROM inbox i LEFT JOIN inbox_escalations e USING "
        "(approval_id) WHERE i.approval_id = ?",
        (approval_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    found = dict(zip([c[0] for c in cursor.description], row, strict=True))
    found["approved"] = None if found["approved"] is None else bool(found["approved"])
    return found


class Decision(NamedTuple):
    """How a request was decided, as the inbox holds it."""

    approved: bool
    reviewer: str
    origin: str
    decided: float


def decision(db: Db, approval_id: str) -> Decision | None:
    """How the request `approval_id` was decided; None while it is not (or is not listed)."""
    row = db.execute(
        "SELECT approved, reviewer, origin, decided FROM inbox WHERE approval_id = ? "
        "AND decided IS NOT NULL",
        (approval_id,),
    ).fetchone()
    if row is None:
        return None
    approved, reviewer, origin, decided = row
    return Decision(bool(approved), reviewer or "", origin or "", float(decided))


def expiry(db: Db, approval_id: str) -> float | None:
    """When the request expires (None: never, or not in the inbox)."""
    row = db.execute("SELECT expires FROM inbox WHERE approval_id = ?", (approval_id,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def unlisted(db: Db) -> list[str]:
    """The tasks waiting for a reviewer whose request the inbox does not hold: they were
    waiting before the store kept an inbox."""
    rows = db.execute(
        "SELECT t.id FROM tasks t WHERE t.status = 'awaiting_approval' AND NOT EXISTS "
        "(SELECT 1 FROM inbox i WHERE i.task_id = t.id)"
    ).fetchall()
    return [str(task_id) for (task_id,) in rows]


def backfill(db: Db, tasks: Sequence[str]) -> None:
    """Put in the inbox the requests and decisions of `tasks`, from their logs, inside the
    caller's write transaction."""
    for task_id in tasks:
        try:
            rows = db.execute(
                "SELECT seq, ts, body FROM events WHERE task_id = ? AND kind IN "
                "('approval_requested', 'approval_decided', 'approval_escalated') ORDER BY seq",
                (task_id,),
            ).fetchall()
        except sqlite3.DatabaseError:
            continue  # on a damaged page: its readers say so; the others are listed
        for seq, ts, body in rows:
            note(db, task_id, seq, ts, EVENT_ADAPTER.validate_json(body))
