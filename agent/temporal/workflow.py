"""A task as a Temporal workflow: the embedded runner's steps, driven in workflow code.

The workflow decides and nothing else: `next_step` and the steps are the embedded runner's own;
each effect is an activity (`_effects.ActivityEffects`); the gate is built from the policy's text,
read by an activity. It folds the task's log into its state when it starts (a page at a time),
records into that state, and has an activity write what it recorded to the store before the next
effect, so the log stays the one record every view reads.

A person's part is durable without a worker holding anything: a reviewer's decision is the
`decide` update, checked by its validator against the request pending (a decision on another is
refused as the embedded inbox refuses it); going on after a pause, with limits raised or an
instruction, and cancelling are the `steer` update; a request's expiry is a durable timer. The
history is kept short by continuing as new at a step boundary; the new run folds the log again.

The host holding the task's sandbox (see `_effects`) is part of the run's state: it is carried
into the next run, answered by the `sandbox_host` query, and told to let the sandbox go at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar, cast

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from agent.approvals import Seen, named_pending, pending_approval
    from agent.events import TaskPaused
    from agent.loop import Loop
    from agent.runner import offered_event
    from agent.state import TaskState
    from agent.steps import next_step
    from agent.temporal import _wire as w
    from agent.temporal._effects import (
        ActivityEffects,
        EffectLost,
        WorkflowRecorder,
        bookkeeping,
    )
    from agent.temporal._tools import registry
    from base.errors import AgentError
    from policies import Gate

_T = TypeVar("_T")


@workflow.defn(name=w.WORKFLOW)
class TaskWorkflow:
    def __init__(self) -> None:
        self._state: TaskState | None = None
        self._effects: ActivityEffects | None = None
        #: the run waits for a person, its log written: a decision may be recorded now
        self._waiting = False
        #: a person did something the run should look at
        self._woken = False
        self._one_at_a_time = asyncio.Lock()
        #: a person asked the run to pause at the next step boundary
        self._pause_asked = False

    @workflow.run
    async def run(self, start: w.Start) -> str:
        state = self._state = await self._fold(start.task_id)
        record = WorkflowRecorder(state)
        effects = self._effects = ActivityEffects(record, host=start.host, lost=start.lost)
        while True:
            prepared = await self._prepare(start.task_id)
            if prepared is not None:
                full = await self._drive(prepared)
                await effects.flush()
                if state.status in ("done", "failed"):
                    await effects.release(start.task_id)
                    await _short(w.RELEASE, start.task_id, type(None))
                    return state.status
                if full:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        w.Start(
                            task_id=start.task_id,
                            continued=start.continued + 1,
                            host=effects.host,
                            lost=effects.lost,
                        )
                    )
            await self._wait_for_a_person(state)

    async def _drive(self, prepared: w.Prepared) -> bool:
        """Run steps until the state says to stop; True when it stopped for the history's
        length, at a step boundary."""
        assert self._effects is not None
        record, effects = self._effects.record, self._effects
        effects.heartbeat = timedelta(seconds=prepared.heartbeat_seconds)
        effects.host_wait = timedelta(seconds=prepared.host_wait_seconds)
        loop = Loop(
            record,
            effects,
            registry(),
            Gate.from_text(prepared.policy, prepared.policy_source),
            prepared.offered,
            prepared.context_window,
            prepared.max_argument_bytes,
            prepared.approval_expiry,
            prepared.escalation,
        )
        offered = offered_event(loop.tool_specs)
        if offered.digest != loop.state.offered_digest:
            record.commit([offered])
        record.check_stuck()  # decisions recorded since are observations too
        while (step := next_step(loop.state)) is not None:
            # A lost call with a side effect: as after a crash, its intent is recorded, so the
            # next step reconciles it.
            with contextlib.suppress(EffectLost):
                await step.run(loop)
            if self._pause_asked and loop.state.status == "running":
                record.commit([TaskPaused(reason="interrupted", detail="paused by the user")])
                break
            if _history_full(prepared.history_events):
                return True
        return False

    async def _wait_for_a_person(self, state: TaskState) -> None:
        """Wait, holding nothing, until a person acts (or the pending request expires)."""
        self._woken = False
        self._waiting = True
        try:
            while not self._woken:
                timeout = self._expiry_wait(state)
                try:
                    await workflow.wait_condition(lambda: self._woken, timeout=timeout)
                except TimeoutError:
                    await self._expire(state)
        finally:
            self._waiting = False

    def _expiry_wait(self, state: TaskState) -> timedelta | None:
        request = pending_approval(state)
        if state.status != "awaiting_approval" or request is None:
            return None
        after = request.expire_after
        if state.awaiting is not None and state.awaiting.escalated is not None:
            after = state.awaiting.escalated.expire_after
        return timedelta(seconds=after) if after else None

    async def _expire(self, state: TaskState) -> None:
        assert self._effects is not None
        async with self._one_at_a_time:
            appended = await _short(w.EXPIRE, self._effects.record.records(), w.Appended)
            self._apply(appended)
            if appended.events:
                self._woken = True
            elif appended.wait is not None:  # not yet: its time is the store's
                await workflow.sleep(appended.wait)

    # What a person does

    @workflow.update(name="decide")
    async def decide(self, decision: w.Decide) -> str:
        """Record a reviewer's decision; refused (the update fails) as the embedded inbox
        refuses it: expired, already given, an edit that cannot be made."""
        await self._act(w.DECIDE, lambda r: w.DecideIn(records=r, decision=decision))
        return "approved" if decision.approved else "denied"

    @decide.validator
    def _check_decision(self, decision: w.Decide) -> None:
        """Refuse, before anything is recorded, a decision on a request that is not the one
        pending (decided, replaced, never asked)."""
        state = self._state
        if state is None:
            raise ApplicationError("the task's workflow is starting: try again", type="NotReady")
        try:
            named_pending(None, state, Seen(decision.approval_id, decision.call_hash))
        except AgentError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__) from None

    @workflow.update(name="steer")
    async def steer(self, steer: w.Steer) -> str:
        """Pause a running task (at its next step boundary), tell a waiting one something, go
        on with a paused or stuck one, or cancel it; its status after."""
        assert self._state is not None
        if steer.action in ("pause", "cancel"):
            self._pause_asked = True  # a running task stops at its next step boundary
            try:
                await workflow.wait_condition(lambda: self._waiting)
            finally:
                self._pause_asked = False
            if steer.action == "pause":
                return self._state.status
        await self._act(w.STEER, lambda r: w.SteerIn(records=r, steer=steer))
        return self._state.status

    @steer.validator
    def _check_steer(self, steer: w.Steer) -> None:
        state = self._state
        if state is None:
            raise ApplicationError("the task's workflow is starting: try again", type="NotReady")
        if state.status in ("done", "failed"):
            raise ApplicationError(f"task {state.task_id} is {state.status}", type="NotSteerable")
        running = state.status == "running"
        if steer.action == "pause" and not running:
            raise ApplicationError(
                f"task {state.task_id} is not running (it is {state.status})", type="NotSteerable"
            )
        if (steer.action in ("resume", "tell") or steer.action in w.PLAN_ACTIONS) and running:
            raise ApplicationError(
                f"task {state.task_id} is running: pause it first", type="NotSteerable"
            )

    @workflow.query(name="status")
    def status(self) -> str:
        return self._state.status if self._state is not None else "starting"

    @workflow.query(name="sandbox_host")
    def sandbox_host(self) -> str | None:
        """The host holding the task's sandbox (None before a call has used one)."""
        return self._effects.host if self._effects is not None else None

    async def _act(self, name: str, given: Callable[[w.Records], BaseModel]) -> w.Appended:
        """Have an activity record what a person did, once the run waits with its log written;
        the events it added are folded in, and the run woken. Raises `ApplicationError` (the
        update fails) with the activity's refusal."""
        async with self._one_at_a_time:
            await workflow.wait_condition(lambda: self._waiting)
            assert self._effects is not None
            appended = await _short(name, given(self._effects.record.records()), w.Appended)
            self._apply(appended)
            if appended.events:
                self._woken = True
        if appended.refused is not None:
            raise ApplicationError(appended.refusal, type=appended.refused)
        return appended

    def _apply(self, appended: w.Appended) -> None:
        assert self._state is not None
        assert self._effects is not None
        for seq, event in appended.events:
            self._state.apply(event, seq)
        self._effects.record.written = self._state.last_seq

    # The log

    async def _fold(self, task_id: str) -> TaskState:
        """The task's state, folded from its log a page at a time."""
        state = TaskState(task_id)
        while True:
            page = await _short(
                w.READ_LOG, w.ReadLog(task_id=task_id, after=state.last_seq), w.Page
            )
            for seq, event in page.events:
                state.apply(event, seq)
            if not page.more:
                return state

    async def _prepare(self, task_id: str) -> w.Prepared | None:
        """What this deployment decides with (a policy a reviewer changed included); None when
        the task's model, tools or policy cannot be had, which pauses it, saying why."""
        try:
            return await _short(w.PREPARE, task_id, w.Prepared)
        except ActivityError as exc:
            assert self._effects is not None
            assert self._state is not None
            if self._state.status == "running":
                detail = str(exc.cause) if exc.cause is not None else str(exc)
                self._effects.record.commit([TaskPaused(reason="config_error", detail=detail)])
                await self._effects.flush()
            return None


#: a run's history is continued as new before it holds this many bytes (Temporal warns at 10 MB)
HISTORY_BYTES = 8_000_000


def _history_full(events: int) -> bool:
    """Whether the run's history should end here: past `events` events or HISTORY_BYTES
    bytes, or past what the service suggests."""
    info = workflow.info()
    return (
        info.get_current_history_length() >= events
        or info.get_current_history_size() >= HISTORY_BYTES
        or info.is_continue_as_new_suggested()
    )


async def _short(name: str, given: object, returns: type[_T]) -> _T:
    """A bookkeeping activity (reading or writing the log), tried until it succeeds."""
    result = await bookkeeping(name, given, result_type=returns)
    return cast(_T, result)
