"""Recording a run: each event is applied to the task's state at once, and made durable either
now (committed) or with the next commit (staged).

Staged events are those a crash may lose because they are made again the same way: a gate
decision, a read-only tool's result. They are committed with the next commit, before the next
model call, and when the run stops. Listeners hear each event once it is durable.
"""

from __future__ import annotations

import time

from agent.events import Event, TaskStuck
from agent.live import Listener
from agent.state import TaskState
from agent.store import Store, StoredEvent


class Recorder:
    """The one writer of a running task's log."""

    def __init__(self, store: Store | None, state: TaskState, listeners: list[Listener]) -> None:
        self.store = store
        self.state = state
        self.listeners = listeners
        self.staged: list[Event] = []

    def stage(self, events: list[Event]) -> None:
        seen = self.state.observations
        for event in events:
            self.staged.append(event)
            self.state.apply(event, self.state.last_seq + 1)
        if self.state.observations != seen:
            self.check_stuck()

    def check_stuck(self) -> None:
        if self.state.status == "running" and (reason := self.state.stuck_reason()) is not None:
            self.stage([TaskStuck(reason=reason)])

    def commit(self, events: list[Event]) -> None:
        self.stage(events)
        self.flush()

    def flush(self) -> None:
        if not self.staged:
            return
        events = self.staged
        first = self.state.last_seq - len(events) + 1
        self.write(events, after=first - 1)
        self.staged = []  # only once they are durable
        if self.listeners:
            now = time.time()
            for seq, event in enumerate(events, first):
                for notify in self.listeners:
                    notify(StoredEvent(self.state.task_id, seq, now, event))

    def write(self, events: list[Event], *, after: int) -> None:
        """Make `events` durable, the first after the log's event `after`. Here: in the store;
        a workflow's recorder keeps them in its history instead (agent/temporal/workflow.py)."""
        assert self.store is not None
        self.store.append(self.state.task_id, events, after=after)
