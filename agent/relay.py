"""The live stream across processes: what a run makes as it makes it (a model's answer as it
arrives, a command's output as it comes), relayed through the store from the worker that runs a
task to the process that follows it (a terminal following a task of the Temporal engine).

    relay = Relay(store, after=state.last_seq)   # a listener (agent.live) of one activity
    relay.flush()                     # written in one transaction (a worker does it often)
    events, items, mark = together(store, task_id, after=seq, mark=mark)   # the follower

Items are not events: they are never part of the log (the whole answer and the command's result
are), and are kept only `KEEP_SECONDS`. Each item names the last event of the log when its
activity began (the call's intent, or the request to the model, is in the log by then); a
follower reads the log and the items in one read, and tells each item after the event it names,
so the order is the one the run made them in.
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

#: seconds between two clean-ups of the items past KEEP_SECONDS, by one relay
PRUNE_SECONDS = 30.0

_TABLE = (
    "CREATE TABLE IF NOT EXISTS relayed (n INTEGER PRIMARY KEY AUTOINCREMENT, "
    "task_id TEXT NOT NULL, after_seq INTEGER NOT NULL, at REAL NOT NULL, item TEXT NOT NULL)"
)
_INDEX = "CREATE INDEX IF NOT EXISTS relayed_by_task ON relayed (task_id, n)"

Relayed = CommandOutput | ModelDelta


class Relay:
    """A listener that keeps a run's command output and model answer pieces until `flush`
    writes them to the store. Safe to be told from any thread."""

    def __init__(self, store: Store, *, after: int) -> None:
        self.store = store
        #: the last event of the log when the activity began: its items follow it
        self.after = after
        self._waiting: list[tuple[str, int, float, str]] = []
        self._lock = threading.Lock()
        self._pruned = 0.0
        #: the table is known to be there (made by this relay's first write, if need be)
        self._made = False

    def __call__(self, item: Live) -> None:
        if isinstance(item, CommandOutput | ModelDelta):  # an event is in the log already
            with self._lock:
                self._waiting.append((item.task_id, self.after, time.time(), _encoded(item)))

    def flush(self) -> None:
        """Write what waits, and now and then forget items past KEEP_SECONDS. Raises
        `StoreError`."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        prune = time.monotonic() - self._pruned > PRUNE_SECONDS
        with self.store.writing() as db:
            if not self._made:
                db.execute(_TABLE)
                db.execute(_INDEX)
            db.executemany(
                "INSERT INTO relayed (task_id, after_seq, at, item) VALUES (?, ?, ?, ?)", waiting
            )
            if prune:
                db.execute("DELETE FROM relayed WHERE at < ?", (time.time() - KEEP_SECONDS,))
        self._made = True
        if prune:
            self._pruned = time.monotonic()


def mark(store: Store) -> int:
    """Where a follower starts reading items: after those already written."""
    try:
        (last,) = store.reader().execute("SELECT COALESCE(MAX(n), 0) FROM relayed").fetchone()
    except sqlite3.OperationalError:  # no worker has relayed anything to this store yet
        return 0
    return int(last)


def together(store: Store, task_id: str, *, after: int, mark: int) -> tuple[list[Live], int]:
    """The task's events after event `after` and its items after item `mark`, read at one
    moment and merged: each item after the event it follows (those that follow an event told
    already, first). The mark to give next time."""
    db = store.reader()
    db.execute("BEGIN")  # one read: what the log and the items held at the same moment
    try:
        events = store.events(task_id, after=after)
        try:
            rows = db.execute(
                "SELECT n, after_seq, item FROM relayed WHERE task_id = ? AND n > ? ORDER BY n",
                (task_id, mark),
            ).fetchall()
        except sqlite3.OperationalError:  # no worker has relayed anything to this store yet
            rows = []
    finally:
        db.execute("COMMIT")
    following: dict[int, list[Live]] = {}
    for _, seq, item in rows:
        following.setdefault(max(int(seq), after), []).append(_decoded(task_id, json.loads(item)))
    merged: list[Live] = list(following.pop(after, []))
    for stored in events:
        merged.append(stored)
        merged += following.pop(stored.seq, [])
    for rest in following.values():  # items of events not read yet cannot be: kept in order
        merged += rest
    return merged, int(rows[-1][0]) if rows else mark


def _encoded(item: Relayed) -> str:
    if isinstance(item, CommandOutput):
        fields: dict[str, Any] = {
            "output": item.stream,
            "text": item.text,
            "source": item.source,
        }
    else:
        fields = {"purpose": item.purpose, "kind": item.delta.kind, "text": item.delta.text}
    # ASCII: a piece cut inside a character pair (a lone surrogate) is still stored
    return json.dumps(fields)


def _decoded(task_id: str, fields: dict[str, Any]) -> Relayed:
    if "output" in fields:
        return CommandOutput(task_id, fields["output"], fields["text"], fields["source"])
    return ModelDelta(task_id, fields["purpose"], Delta(fields["kind"], fields["text"]))
