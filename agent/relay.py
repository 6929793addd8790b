"""The live stream across processes: what a run makes as it makes it (a model's answer as it
arrives, a command's output as it comes), relayed through the store from the worker that runs a
task to the process that follows it (a terminal following a task of the Temporal engine).

    relay = Relay(store)              # a listener (see agent.live): effects(..., [relay])
    relay.flush()                     # written in one transaction (a worker does it often)
    items, after = relayed(store, task_id, after)     # the follower, in a loop

Items are not events: they are never part of the log (the whole answer and the command's result
are), and are kept only `KEEP_SECONDS`. A worker writes a run's items before the activity
returns, so they are in the store before the events the workflow records from its result: a
follower that reads the log, then the items, then tells the items before the events, keeps their
order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

from agent.backends.base import Delta
from agent.live import CommandOutput, Live, ModelDelta
from agent.store import Store

#: seconds an item is kept for a follower that looks late (a terminal re-attached to a task)
KEEP_SECONDS = 600.0

_TABLE = (
    "CREATE TABLE IF NOT EXISTS relayed (n INTEGER PRIMARY KEY AUTOINCREMENT, "
    "task_id TEXT NOT NULL, at REAL NOT NULL, item TEXT NOT NULL)"
)
_INDEX = "CREATE INDEX IF NOT EXISTS relayed_by_task ON relayed (task_id, n)"

Relayed = CommandOutput | ModelDelta


class Relay:
    """A listener that keeps a run's command output and model answer pieces until `flush`
    writes them to the store. Safe to be told from any thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, item: Live) -> None:
        if isinstance(item, CommandOutput | ModelDelta):  # an event is in the log already
            with self._lock:
                self._waiting.append((item.task_id, time.time(), _encoded(item)))

    def flush(self) -> None:
        """Write what waits, and forget items past KEEP_SECONDS. Raises `StoreError`."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        with self.store.writing() as db:
            db.execute(_TABLE)
            db.execute(_INDEX)
            db.executemany("INSERT INTO relayed (task_id, at, item) VALUES (?, ?, ?)", waiting)
            db.execute("DELETE FROM relayed WHERE at < ?", (time.time() - KEEP_SECONDS,))


def relayed(store: Store, task_id: str, after: int | None) -> tuple[list[Relayed], int]:
    """The task's items written after item `after` (None: none of those there now, only the
    mark to read from next), and the mark to give next time."""
    db = store.reader()
    try:
        if after is None:
            (last,) = db.execute("SELECT COALESCE(MAX(n), 0) FROM relayed").fetchone()
            return [], int(last)
        rows = db.execute(
            "SELECT n, item FROM relayed WHERE task_id = ? AND n > ? ORDER BY n", (task_id, after)
        ).fetchall()
    except sqlite3.OperationalError:  # no worker has relayed anything to this store yet
        return [], after or 0
    items = [_decoded(task_id, json.loads(item)) for _, item in rows]
    return items, int(rows[-1][0]) if rows else after


def _encoded(item: Relayed) -> str:
    if isinstance(item, CommandOutput):
        fields: dict[str, Any] = {
            "output": item.stream,
            "text": item.text,
            "source": item.source,
        }
    else:
        fields = {"purpose": item.purpose, "kind": item.delta.kind, "text": item.delta.text}
    return json.dumps(fields, ensure_ascii=False)


def _decoded(task_id: str, fields: dict[str, Any]) -> Relayed:
    if "output" in fields:
        return CommandOutput(task_id, fields["output"], fields["text"], fields["source"])
    return ModelDelta(task_id, fields["purpose"], Delta(fields["kind"], fields["text"]))
