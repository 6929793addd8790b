"""What the store keeps beside the log: the audit log's entries, the reviewers' inbox and the
webhooks' outbox, written in the transaction that appends the events; and the reviewers who may
decide."""

from __future__ import annotations

from collections.abc import Sequence

from agent import audit, inbox, reviewers, webhooks
from agent._db import Db
from agent.events import ApprovalDecided, ApprovalEscalated, ApprovalRequested, Event

SCHEMA = audit.SCHEMA + inbox.SCHEMA + reviewers.SCHEMA + webhooks.SCHEMA


def keep(db: Db, task_id: str, ts: float, written: Sequence[tuple[int, Event, str]]) -> None:
    """Keep beside the log what its new events (seq, event, its JSON body) call for."""
    audited: list[audit.Entry] = []
    for seq, event, body in written:
        if event.kind in audit.AUDITED:
            audited.append(audit.Entry(task_id, seq, ts, event.kind, body))
        if isinstance(event, ApprovalRequested | ApprovalDecided | ApprovalEscalated):
            inbox.note(db, task_id, seq, ts, event)
            notice = "approval." + event.kind.removeprefix("approval_")
            webhooks.queue(db, notice, event.approval_id, ts)
    if audited:
        audit.extend(db, audited)
