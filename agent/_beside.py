"""What the store keeps beside the log: the audit log's entries and the reviewers' inbox,
written in the transaction that appends the events; and the reviewers who may decide."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from agent import audit, inbox, reviewers
from agent.events import Event

SCHEMA = audit.SCHEMA + inbox.SCHEMA + reviewers.SCHEMA


def keep(
    db: sqlite3.Connection, task_id: str, ts: float, written: Sequence[tuple[int, Event, str]]
) -> None:
    """Keep beside the log what its new events (seq, event, its JSON body) call for."""
    audited: list[audit.Entry] = []
    for seq, event, body in written:
        if event.kind in audit.AUDITED:
            audited.append(audit.Entry(task_id, seq, ts, event.kind, body))
        if event.kind in inbox.KINDS:
            inbox.note(db, task_id, seq, ts, event)
    if audited:
        audit.extend(db, audited)
