"""The `Effects` of a task's workflow: each effect asked of an activity, and the recorder that
keeps a workflow's events until an activity writes them.

Workflow code: it runs in Temporal's workflow sandbox, decides nothing the embedded runner would
not, and touches nothing itself. An event recorded here is durable the moment it is made (the
workflow's history makes it again the same way on replay); the next activity writes it to the
store before it acts, so a call's intent is in the log before the call runs.

Retries follow what an effect is: a model call and a read-only tool are tried again (on another
worker if theirs died); a call with a side effect never is. When its worker dies, the call is
settled as after a crash: its intent is in the log, so the next step reconciles it.

Once a call has used the task's sandbox, the task's calls go to the task queue of the host that
holds it. When no worker of that host takes a call within the host wait, the host is given up:
the call goes to any worker, which makes the sandbox again from the last snapshot of its
workspace (a call that never started is safe to send elsewhere).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, TypeVar, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from agent.backends.base import ModelRequest, Purpose
    from agent.effects import Ran, Reconciled, Stopped
    from agent.events import Event, ModelResponded, TaskPaused, ToolResulted
    from agent.recorder import Recorder
    from agent.state import Call, TaskState
    from agent.temporal import _wire as w
    from tools.tool import Tool, ToolResult

_T = TypeVar("_T", bound=BaseModel)

#: tries of an effect that is safe to try again (a model call, a read-only tool)
SAFE_ATTEMPTS = 4


#: how long a bookkeeping activity (reading or writing the log) may take, and its retries
BOOKKEEPING_TIMEOUT = timedelta(seconds=60)
BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), non_retryable_error_types=["ConflictingLog"]
)

#: the versions of this workflow's decisions: each change that would make a running workflow
#: decide differently on replay is guarded by a patch, and its older histories stay in
#: tests/golden/temporal (v1-*.json) for the replay test
LOCAL_BOOKKEEPING = "bookkeeping-as-local-activities"


async def bookkeeping(name: str, given: object, *, result_type: type | None = None) -> object:
    """Run a bookkeeping activity: since LOCAL_BOOKKEEPING, as a local activity, in the worker
    that runs the workflow (no round trip to the service, only a marker in the history); in
    the workflows started before, as the activity it was."""
    if workflow.patched(LOCAL_BOOKKEEPING):
        return await workflow.execute_local_activity(
            name,
            given,
            result_type=result_type,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
        )
    return await workflow.execute_activity(
        name,
        given,
        result_type=result_type,
        start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        retry_policy=BOOKKEEPING_RETRY,
    )


class EffectLost(Exception):
    """The worker running a call with a side effect was lost: whether it took effect is not
    known. The workflow goes on from its state, which reconciles the call (its intent is
    recorded), as the embedded runner does after a crash."""


class WorkflowRecorder(Recorder):
    """Records into the workflow's state; what is made durable waits in `outbox` for the next
    activity to write it to the store."""

    def __init__(self, state: TaskState) -> None:
        super().__init__(None, state, [])
        self.outbox: list[Event] = []
        #: the last event of the log the store holds
        self.written = state.last_seq

    def write(self, events: list[Event], *, after: int) -> None:
        assert after == self.written + len(self.outbox), "events out of order"
        self.outbox.extend(events)

    def records(self) -> w.Records:
        """What the next activity writes first: everything recorded so far, staged events too
        (the activity reads the call's judged arguments from the log)."""
        self.flush()
        return w.Records(task_id=self.state.task_id, after=self.written, events=tuple(self.outbox))

    def wrote(self, records: w.Records) -> None:
        """An activity wrote `records`: they leave the outbox."""
        del self.outbox[: len(records.events)]
        self.written = records.after + len(records.events)


class ActivityEffects:
    """Each effect, an activity; what they return, as the steps expect it."""

    def __init__(
        self,
        record: WorkflowRecorder,
        heartbeat_seconds: float = 10.0,
        host: str | None = None,
        lost: str | None = None,
    ) -> None:
        self.record = record
        self.heartbeat = timedelta(seconds=heartbeat_seconds)
        #: the host holding the task's sandbox (None until a call uses it), and how long a
        #: call waits for a worker there before the host is given up
        self.host = host
        self.host_wait = timedelta(seconds=60)
        #: the host given up, until a call names the host that holds the sandbox now: each
        #: call meanwhile may be the one that makes it again from its snapshot
        self.lost = lost
        #: the artifact holding the whole output of a call, by ref, until it is recorded
        self._kept: dict[str, str] = {}

    async def _activity(
        self,
        name: str,
        given: Any,
        returns: type[_T],
        *,
        seconds: float,
        attempts: int = SAFE_ATTEMPTS,
        on_host: bool = False,
    ) -> _T:
        """Run an effect's activity (on the sandbox's host, for a call that may use it)."""
        records = given.records if hasattr(given, "records") else None
        host = self.host if on_host else None
        if on_host and host is None and self.lost is not None:
            given = given.model_copy(update={"moved_from": self.lost})
        try:
            result = await self._execute(
                name, given, returns, seconds=seconds, attempts=attempts, host=host
            )
        except ActivityError as exc:
            if host is None or not _not_taken(exc):
                raise
            # No worker of the host took the call, so it never started: any worker may.
            self.host, self.lost = None, host
            given = given.model_copy(update={"moved_from": host})
            result = await self._execute(
                name, given, returns, seconds=seconds, attempts=attempts, host=None
            )
        if records is not None:
            self.record.wrote(records)
        placed = getattr(result, "host", None)
        if on_host and isinstance(placed, str):
            self.host, self.lost = placed, None
        return cast(_T, result)

    async def _execute(
        self,
        name: str,
        given: BaseModel,
        returns: type[_T],
        *,
        seconds: float,
        attempts: int,
        host: str | None,
    ) -> object:
        return await workflow.execute_activity(
            name,
            given,
            result_type=returns,
            task_queue=w.host_queue(workflow.info().task_queue, host) if host else None,
            schedule_to_start_timeout=self.host_wait if host else None,
            start_to_close_timeout=timedelta(seconds=seconds),
            heartbeat_timeout=self.heartbeat,
            retry_policy=RetryPolicy(
                maximum_attempts=attempts,
                initial_interval=timedelta(milliseconds=200),
                non_retryable_error_types=["ConflictingLog", "UnknownTool"],
            ),
        )

    async def release(self, task_id: str) -> None:
        """Have the host holding the task's sandbox let it go (a host that does not answer
        within the host wait keeps it until its own clean-up)."""
        if self.host is None:
            return
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(
                w.RELEASE,
                task_id,
                task_queue=w.host_queue(workflow.info().task_queue, self.host),
                schedule_to_start_timeout=self.host_wait,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        self.host = None

    async def flush(self) -> None:
        """Write what waits in the outbox now (before waiting for a person, or ending)."""
        self.record.flush()
        if self.record.outbox:
            records = self.record.records()
            await bookkeeping(w.RECORD, records)
            self.record.wrote(records)

    async def ask_model(
        self, purpose: Purpose, request: ModelRequest
    ) -> ModelResponded | TaskPaused:
        given = w.AskModel(records=self.record.records(), purpose=purpose, request=request)
        try:
            asked = await self._activity(w.ASK_MODEL, given, w.Asked, seconds=3600)
        except ActivityError as exc:
            return TaskPaused(
                reason="model_error", detail=f"the model was not reached: {_why(exc)}"
            )
        answer = asked.responded or asked.paused
        assert answer is not None
        return answer

    async def run_tool(self, tool: Tool, call: Call, key: str) -> Ran | Stopped:
        given = w.RunTool(records=self.record.records(), tool=tool.name, ref=call.ref, key=key)
        try:
            ran = await self._activity(
                w.RUN_TOOL,
                given,
                w.ToolRan,
                seconds=tool.timeout + 60,
                attempts=1 if tool.has_side_effects else SAFE_ATTEMPTS,
                on_host=True,
            )
        except ActivityError as exc:
            if tool.has_side_effects:
                raise EffectLost(_why(exc)) from exc
            detail = f"{tool.name} could not be run: {_why(exc)}"
            return Stopped(TaskPaused(reason="sandbox_error", detail=detail))
        if ran.paused is not None:
            not_run = _result(ran) if ran.not_run else None
            return Stopped(ran.paused, not_run, ran.seconds)
        if ran.artifact is not None:
            self._kept[call.ref] = ran.artifact
        return Ran(_result(ran), ran.seconds)

    async def read_effect(
        self, tool: Tool, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any] | TaskPaused | ToolResult:
        given = w.ReadEffect(
            records=self.record.records(), tool=tool.name, ref=call.ref, arguments=arguments
        )
        try:
            read = await self._activity(
                w.READ_EFFECT, given, w.EffectRead, seconds=tool.timeout + 60, on_host=True
            )
        except ActivityError as exc:
            return TaskPaused(reason="sandbox_error", detail=f"{tool.name}: {_why(exc)}")
        if read.refused is not None:
            return _result(read.refused)
        if read.paused is not None:
            return read.paused
        return read.effect or {}

    async def reconcile(self, tool: Tool, call: Call) -> Reconciled:
        given = w.Reconcile(records=self.record.records(), tool=tool.name, ref=call.ref)
        try:
            found = await self._activity(
                w.RECONCILE, given, w.Reconciled, seconds=tool.timeout + 60, on_host=True
            )
        except ActivityError as exc:
            return TaskPaused(reason="sandbox_error", detail=f"{tool.name}: {_why(exc)}")
        if found.found == "result" and found.result is not None:
            return _result(found.result)
        if found.found == "paused" and found.paused is not None:
            return found.paused
        return "unknown" if found.found == "unknown" else "absent"

    def keep_whole(self, result: ToolResulted, limit: int) -> ToolResulted:
        # The activity kept a long output whole and sent it shortened: here it is only named.
        artifact = self._kept.pop(result.ref, None)
        if artifact is None:
            return result
        return result.model_copy(update={"artifact": artifact})


def _result(ran: w.ToolRan) -> ToolResult:
    return ToolResult(
        ok=ran.ok,
        content=ran.content,
        error_code=ran.error_code,
        printed=ran.printed,
        image=ran.image,
        changing=ran.changing,
        spent=ran.spent,
    )


def _not_taken(exc: ActivityError) -> bool:
    """Whether no worker took the activity in its time (so it never started)."""
    cause = exc.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def _why(exc: ActivityError) -> str:
    cause = exc.cause
    return str(cause) if cause is not None else str(exc)
