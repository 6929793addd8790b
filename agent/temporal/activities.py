"""The activities of a task's workflow: everything that touches the world, done on a worker.

Each is the embedded runner's own effect (`LocalEffects`), asked by name with plain values. An
activity that acts first writes what the workflow recorded since its last write (`Records`), so
a call's intent is in the log before the call runs, as on the embedded engine; a write that an
earlier attempt made already is not made twice. The log in the store stays the product's one
record: `agent show`, the live stream and the audit log read it whatever the engine.

The worker's state per task (its folded log, its browser) is a cache: another worker rebuilds it
from the log, as the embedded runner does after a crash. A task's sandbox is the exception: it
lives on one host (`host`), whose workers take the task's calls once one has used it; after each
call that may change its files, a snapshot of its workspace is kept with the task's artifacts,
and a worker that takes a call whose host was given up makes the sandbox again from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agent.always import decide_or_allow
from agent.approvals import Seen, expired, pending_approval
from agent.context import observation_chars
from agent.effects import LocalEffects, Ran, Stopped
from agent.events import Event, LimitsRaised, TaskResumed, ToolResulted
from agent.inbox import expiry
from agent.relay import Relay
from agent.state import TaskState
from agent.steering import accept_plan, add_instruction, another_plan, cancel, edit_plan
from agent.store import Store
from agent.temporal import _wire as w
from agent.temporal._hosts import arrive, keep_snapshot, placed
from base.errors import AgentError, ConfigError, SandboxError
from policies import Gate
from tools.tool import Tool, ToolResult

if TYPE_CHECKING:
    from agent.runner import Runner


#: how often a call's live stream is written for the terminals that follow the task
RELAY_SECONDS = 0.1


class TaskActivities:
    """The activities, bound to this worker's store and to the runner it makes for a task (its
    model, tools, policy, sandboxes: the same `Runner` the embedded engine would use)."""

    def __init__(
        self,
        store: Store,
        runner_for: Callable[[TaskState], Runner],
        *,
        heartbeat_seconds: float = 10.0,
        history_events: int = 5000,
        host: str = "",
        host_wait_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.runner_for = runner_for
        self.heartbeat_seconds = heartbeat_seconds
        self.history_events = history_events
        #: the host this worker's sandboxes are on (its task queue is named after it)
        self.host = host or socket.gethostname()
        self.host_wait_seconds = host_wait_seconds
        self._states: dict[str, TaskState] = {}

    def bookkeeping(self) -> list[Callable[..., Any]]:
        """The activities that read and write the log for the workflow: local activities, run
        by the worker that runs the workflow (it must reach the store)."""
        return [
            self.prepare,
            self.read_log,
            self.record,
            self.decide,
            self.expire,
            self.steer,
            self.release,
        ]

    def effects(self) -> list[Callable[..., Any]]:
        """The activities that touch the world: any worker of the task queue runs them."""
        return [self.ask_model, self.run_tool, self.read_effect, self.reconcile]

    def on_host(self) -> list[Callable[..., Any]]:
        """The activities of a task whose sandbox is on this worker's host (its own task
        queue): the calls, and letting go of the sandbox."""
        return [self.run_tool, self.read_effect, self.reconcile, self.release]

    # The task's log, as this worker knows it

    def _state(self, task_id: str) -> TaskState:
        """The task's state, caught up with its log."""
        state = self._states.get(task_id)
        if state is None:
            state = self._states[task_id] = TaskState.from_store(self.store, task_id)
        else:
            for stored in self.store.events(task_id, after=state.last_seq):
                state.apply(stored.event, stored.seq)
        return state

    def _write(self, records: w.Records) -> TaskState:
        """Write what the workflow recorded, less what an earlier attempt wrote already; the
        task's state after it."""
        state = self._state(records.task_id)
        events = list(records.events)
        written = state.last_seq - records.after
        if written < 0 or written > len(events):
            raise ApplicationError(
                f"task {records.task_id}'s log ends at event {state.last_seq}, and the workflow's "
                f"records follow event {records.after}: another runner wrote to it",
                type="ConflictingLog",
                non_retryable=True,
            )
        if written < len(events):
            rest = events[written:]
            self.store.append(records.task_id, rest, after=state.last_seq)
            for event in rest:
                state.apply(event, state.last_seq + 1)
        return state

    def _effects(self, state: TaskState, relay: Relay | None = None) -> tuple[Runner, LocalEffects]:
        runner = self.runner_for(state)
        return runner, runner.local_effects(state, [relay] if relay is not None else [])

    @contextlib.asynccontextmanager
    async def _relaying(self, state: TaskState) -> AsyncIterator[Relay]:
        """A relay of the call's live stream (a model's answer as it arrives, a command's
        output as it comes), written every RELAY_SECONDS and before the activity returns. Best
        effort: a write that fails is skipped, never the call's outcome."""
        relay = Relay(self.store, after=state.last_seq)

        def flush() -> None:
            try:
                relay.flush()
            except Exception as exc:  # noqa: BLE001 - what is shown live must not fail a call
                activity.logger.warning("live output not relayed: %s", exc)

        async def flushing() -> None:
            while True:
                await asyncio.sleep(RELAY_SECONDS)
                flush()

        running = asyncio.create_task(flushing())
        try:
            yield relay
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            flush()

    @contextlib.asynccontextmanager
    async def _beating(self) -> AsyncIterator[None]:
        """Heartbeat while the body runs, so that a worker that dies is noticed in seconds."""

        async def beat() -> None:
            while True:  # a call done within the first interval costs no heartbeat
                await asyncio.sleep(self.heartbeat_seconds / 4)
                activity.heartbeat()

        beating = asyncio.create_task(beat())
        try:
            yield
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    # The activities

    @activity.defn(name=w.PREPARE)
    async def prepare(self, task_id: str) -> w.Prepared:
        """What the workflow decides with. Fails for good (the task pauses, saying why) when the
        task's model, tools or policy cannot be had here."""
        state = self._state(task_id)
        created = state.created
        try:
            runner = self.runner_for(state)
            policy, source = Gate.text_of(created.policy if created is not None else None)
        except ConfigError as exc:
            raise ApplicationError(str(exc), type="ConfigError", non_retryable=True) from None
        return w.Prepared(
            policy=policy,
            policy_source=source,
            offered=runner.offered(state),
            context_window=runner.backends["act"].context_window,
            max_argument_bytes=runner.max_argument_bytes,
            approval_expiry=runner.approval_expiry,
            escalation=runner.approval_escalation,
            tools=tuple(t.name for t in runner.registry),
            heartbeat_seconds=self.heartbeat_seconds,
            history_events=self.history_events,
            host_wait_seconds=self.host_wait_seconds,
        )

    @activity.defn(name=w.READ_LOG)
    async def read_log(self, given: w.ReadLog) -> w.Page:
        """A page of the log after `given.after`, under the payload warning."""
        events: list[tuple[int, Event]] = []
        size = 0
        for stored in self.store.events(given.task_id, after=given.after):
            size += len(stored.event.model_dump_json())
            if events and size > w.PAGE_BYTES:
                return w.Page(events=tuple(events), more=True)
            events.append((stored.seq, stored.event))
        return w.Page(events=tuple(events), more=False)

    @activity.defn(name=w.RECORD)
    async def record(self, records: w.Records) -> None:
        self._write(records)

    @activity.defn(name=w.ASK_MODEL)
    async def ask_model(self, given: w.AskModel) -> w.Asked:
        state = self._write(given.records)
        async with self._relaying(state) as relay, self._beating():
            _, effects = self._effects(state, relay)
            answer = await effects.ask_model(given.purpose, given.request)
        if answer.kind == "task_paused":
            return w.Asked(paused=answer)
        return w.Asked(responded=answer)

    @activity.defn(name=w.RUN_TOOL)
    async def run_tool(self, given: w.RunTool) -> w.ToolRan:
        state = self._write(given.records)
        async with self._relaying(state) as relay:
            return await self._run_tool(given, state, relay)

    async def _run_tool(self, given: w.RunTool, state: TaskState, relay: Relay) -> w.ToolRan:
        runner, effects = self._effects(state, relay)
        tool = _tool(runner, given.tool)
        call = state.calls[given.ref]
        async with self._beating():
            lost = await arrive(runner, effects, state, given.moved_from, self.host)
            if lost is not None:
                return w.ToolRan(paused=lost, not_run=True, content=f"not run: {lost.detail}")
            outcome = await effects.run_tool(tool, call, given.key)
            if tool.has_side_effects:
                await keep_snapshot(runner, effects, state)
        host = placed(runner, state, self.host)
        if isinstance(outcome, Stopped):
            not_run = outcome.not_run
            return w.ToolRan(
                paused=outcome.paused,
                seconds=outcome.seconds,
                not_run=not_run is not None,
                host=host,
                **(_fields(not_run) if not_run is not None else {}),
            )
        # Kept in a thread: a bucket's put must not stop the worker's other heartbeats.
        whole = await asyncio.to_thread(self._whole, effects, runner, given.ref, outcome)
        return whole.model_copy(update={"host": host})

    @staticmethod
    def _whole(effects: LocalEffects, runner: Runner, ref: str, ran: Ran) -> w.ToolRan:
        """A result as the workflow gets it: an output too long to show the model kept as an
        artifact here, and passed by its name (however long, the payload stays small)."""
        result = ran.result
        limit = observation_chars(runner.backends["act"].context_window)
        kept = effects.keep_whole(
            ToolResulted(ref=ref, ok=result.ok, content=result.content), limit
        )
        return w.ToolRan(
            **{**_fields(result), "content": kept.content},
            artifact=kept.artifact,
            seconds=ran.seconds,
        )

    @activity.defn(name=w.READ_EFFECT)
    async def read_effect(self, given: w.ReadEffect) -> w.EffectRead:
        state = self._write(given.records)
        runner, effects = self._effects(state)
        tool = _tool(runner, given.tool)
        async with self._beating():
            lost = await arrive(runner, effects, state, given.moved_from, self.host)
            if lost is not None:
                return w.EffectRead(paused=lost)
            read = await effects.read_effect(tool, state.calls[given.ref], given.arguments)
        host = placed(runner, state, self.host)
        if isinstance(read, ToolResult):
            return w.EffectRead(refused=w.ToolRan(**_fields(read)), host=host)
        if isinstance(read, dict):
            return w.EffectRead(effect=read, host=host)
        return w.EffectRead(paused=read, host=host)

    @activity.defn(name=w.RECONCILE)
    async def reconcile(self, given: w.Reconcile) -> w.Reconciled:
        state = self._write(given.records)
        runner, effects = self._effects(state)
        tool = _tool(runner, given.tool)
        async with self._beating():
            if given.moved_from not in (None, self.host):
                # What the call did is known only where it ran, on the host given up: a
                # reviewer says, as for any call whose outcome cannot be read back.
                lost = await arrive(runner, effects, state, given.moved_from, self.host)
                if lost is not None:
                    return w.Reconciled(found="paused", paused=lost)
                return w.Reconciled(found="unknown", host=placed(runner, state, self.host))
            found = await effects.reconcile(tool, state.calls[given.ref])
        host = placed(runner, state, self.host)
        if found in {"absent", "unknown"}:
            return w.Reconciled(found=found, host=host)
        if isinstance(found, ToolResult):
            return w.Reconciled(found="result", result=w.ToolRan(**_fields(found)), host=host)
        return w.Reconciled(found="paused", paused=found, host=host)

    @activity.defn(name=w.DECIDE)
    async def decide(self, given: w.DecideIn) -> w.Appended:
        """A reviewer's decision, recorded as the embedded inbox records it (and refused with
        the same words: expired, not the one pending, already given)."""
        state = self._write(given.records)
        after = state.last_seq
        d = given.decision
        try:
            # A rule saved goes into the policy file here, where the workflow's next look at the
            # policy (before it goes on) reads it.
            decide_or_allow(
                self.store,
                state,
                Seen(d.approval_id, d.call_hash),
                approved=d.approved,
                reason=d.reason,
                reviewer=d.reviewer,
                origin=d.origin,
                edit=d.edit,
                saving=(d.always_scope, d.confirmed) if d.always_scope is not None else None,
                always=d.always,
            )
        except AgentError as exc:
            return self._appended(state, after, exc)
        return self._appended(state, after)

    @activity.defn(name=w.EXPIRE)
    async def expire(self, records: w.Records) -> w.Appended:
        """The pending request's denial (or escalation) if its time ran out; else how long it
        has left."""
        state = self._write(records)
        after = state.last_seq
        request = pending_approval(state)
        if request is None or state.status != "awaiting_approval":
            return w.Appended()
        lapsed = expired(self.store, state, request)
        if lapsed is None:
            expires = expiry(self.store.reader(), request.approval_id)
            return w.Appended(wait=None if expires is None else max(expires - time.time(), 0.1))
        self.store.append(state.task_id, [lapsed], after=state.last_seq)
        state.apply(lapsed, state.last_seq + 1)
        return self._appended(state, after)

    @activity.defn(name=w.STEER)
    async def steer(self, given: w.SteerIn) -> w.Appended:
        """Go on with a paused or stuck task (limits raised, an instruction added), or end it."""
        state = self._write(given.records)
        after = state.last_seq
        steer = given.steer
        try:
            if steer.action == "cancel":
                cancel(self.store, state)
                return self._appended(state, after)
            if steer.instruction:
                add_instruction(self.store, state, steer.instruction)
            if steer.action == "tell":
                return self._appended(state, after)
            if steer.action == "accept_plan":
                accept_plan(self.store, state)
            elif steer.action == "another_plan":
                another_plan(self.store, state, steer.why)
            elif steer.action == "edit_plan":
                edit_plan(self.store, state, steer.steps)
            events: list[Event] = []
            if steer.limits:
                limits = state.limits.model_validate({**state.limits.model_dump(), **steer.limits})
                if limits != state.limits:
                    events.append(LimitsRaised(limits=limits))
            if state.status in ("paused", "stuck"):
                events.append(TaskResumed())
            if events:
                self.store.append(state.task_id, events, after=state.last_seq)
                for event in events:
                    state.apply(event, state.last_seq + 1)
        except AgentError as exc:
            return self._appended(state, after, exc)
        return self._appended(state, after)

    def _appended(
        self, state: TaskState, after: int, refused: AgentError | None = None
    ) -> w.Appended:
        events = tuple((e.seq, e.event) for e in self.store.events(state.task_id, after=after))
        if refused is None:
            return w.Appended(events=events)
        return w.Appended(events=events, refused=type(refused).__name__, refusal=str(refused))

    @activity.defn(name=w.RELEASE)
    async def release(self, task_id: str) -> None:
        """Let go of a finished task's sandbox and browser on this worker (also after it was
        started again since the task last used it here)."""
        state = self._states.pop(task_id, None)
        if state is None:
            if "@" not in activity.info().task_queue:
                return  # the workflow's worker, which never held it
            state = TaskState.from_store(self.store, task_id)  # the host's, started again
        try:
            runner = self.runner_for(state)
        except ConfigError:
            return  # its setup cannot be had here now: its sandbox goes with the next reap
        if runner.browsers is not None:
            await runner.browsers.forget(task_id)
        if runner.sandboxes is not None:
            runner.sandboxes.done_running(task_id)
            with contextlib.suppress(SandboxError):
                await runner.sandboxes.release(task_id)


def _tool(runner: Runner, name: str) -> Tool:
    tool = runner.registry.get(name)
    if tool is None:
        raise ApplicationError(
            f"this worker has no tool named {name!r}: start it with the same tools as the "
            "task's other workers",
            type="UnknownTool",
            non_retryable=True,
        )
    return tool


def _fields(result: ToolResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "content": result.content,
        "error_code": result.error_code,
        "printed": result.printed,
        "image": result.image,
        "changing": result.changing,
        "spent": result.spent,
    }
