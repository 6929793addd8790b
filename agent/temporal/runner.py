"""The runner for the Temporal engine, as the command line and the session use it.

It creates a task as the embedded runner does (its first event in the store), then has the task's
workflow run it on the workers, and follows the task's log until it stops: listeners hear every
event as they would on the embedded engine, since the workflow's activities write the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from temporalio.client import Client

from agent import relay
from agent.config import EngineConfig
from agent.events import Limits
from agent.live import Live
from agent.runner import Runner
from agent.state import TaskState
from agent.store import StoredEvent
from agent.temporal import _wire as w
from agent.temporal import client as engine_client
from base.errors import AgentError


class TemporalRunner(Runner):
    engine_kind: Literal["embedded", "temporal"] = "temporal"

    def __init__(self, *args: Any, engine: EngineConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        self._client: Client | None = None
        #: by task: the last event of its log this runner told its listeners
        self._followed: dict[str, int] = {}

    def create(self, task: str, limits: Limits | None = None, **given: Any) -> str:
        """Record a new task to run on the Temporal engine (see `Runner.create`), once the
        service answers. Raises `EngineError` when it does not (nothing is recorded)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop runs here: ask the service now, before anything is kept
            asyncio.run(engine_client.connect(self.engine))
        return super().create(task, limits, **given)

    async def client(self) -> Client:
        if self._client is None:
            self._client = await engine_client.connect(self.engine)
        return self._client

    async def resume(
        self, task_id: str, limits: Limits | None = None, *, continue_only: bool = False
    ) -> TaskState:
        """Have the task's workflow go on (started if it is not running; a paused or stuck task
        resumed, with `limits`, unless `continue_only`), then follow its log until it stops."""
        state = self.load(task_id)
        if state.status in ("done", "failed"):
            return state
        client = await self.client()
        await engine_client.start(client, self.engine, task_id)
        if limits is not None or (not continue_only and state.status in ("paused", "stuck")):
            given = limits.model_dump() if limits is not None else {}
            await engine_client.steer(client, task_id, w.Steer(action="resume", limits=given))
        try:
            return await self.follow(task_id)
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Stopped by the user (Ctrl-C): the task pauses at its next step boundary, as on
            # the embedded engine (the workers, not this process, are running it).
            with contextlib.suppress(AgentError):
                await engine_client.steer(client, task_id, w.Steer(action="pause"))
            raise

    async def follow(self, task_id: str, *, poll: float = 0.05) -> TaskState:
        """The task's state once it stops running (done, failed, paused, stuck, or waiting for
        a reviewer); each event recorded meanwhile told to the listeners, and those recorded
        since this runner last followed the task (the workflow may have run on and stopped
        again before this looks). What the workers relay as it comes (a model's answer, a
        command's output: `agent.relay`) is told too, before the events that follow it."""
        state = self.load(task_id)
        told = self._followed.get(task_id)
        if told is not None:
            for stored in self.store.events(task_id, after=told):
                if stored.seq <= state.last_seq:
                    self._tell(stored)
        self._followed[task_id] = state.last_seq
        if state.status != "running":
            return state
        seen = relay.mark(self.store)
        while True:
            merged, seen = relay.together(self.store, task_id, after=state.last_seq, mark=seen)
            for item in merged:
                self._tell(item)
                if isinstance(item, StoredEvent):
                    state.apply(item.event, item.seq)
                    self._followed[task_id] = item.seq
                    if state.status != "running":
                        return state
            await asyncio.sleep(poll)

    def _tell(self, stored: Live) -> None:
        for notify in self.listeners:
            notify(stored)
