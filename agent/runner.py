"""The runner: drives a task's steps, keeping its state and its log in step.

    runner = Runner(store, registry, gate, planner=backend)
    task_id = runner.create("Count the visitors", Limits(max_steps=20))
    state = await runner.run(task_id)

`run` stops when the task is done, failed or stuck, paused (a budget is used up, the model
failed, Ctrl-C), or waiting for a reviewer; `resume` continues it later, in this process or any
other, from its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent._control import EXECUTOR, PLANNER
from agent.backends.base import Delta, ModelBackend, ModelRequest, Purpose, Usage
from agent.context import observation_chars, shortened
from agent.events import (
    Attachment,
    CallRejected,
    EgressDecided,
    Event,
    Limits,
    LimitsRaised,
    ModelResponded,
    ReplyRejected,
    TaskCreated,
    TaskPaused,
    TaskResumed,
    TaskStuck,
    ToolResulted,
)
from agent.state import Call, TaskState
from agent.steps import next_step, record_result, tool_crashed, trim_oversized
from agent.store import Store, StoredEvent
from base.errors import BackendError, ConfigError, SandboxError
from base.toolspec import ToolSpec
from policies import Gate
from sandbox.limits import SandboxLimits
from tools.registry import CallInterrupted, Registry, Tool, ToolContext, ToolResult

if TYPE_CHECKING:
    from browser.driver import PageDriver
    from browser.manager import Browsers
    from sandbox.container import Sandbox
    from sandbox.manager import Sandboxes
    from sandbox.proxy import EgressAttempt

Subscriber = Callable[[StoredEvent], None]
#: live output of a running command: (task id, "stdout" | "stderr", text); never recorded
OutputSubscriber = Callable[[str, str, str], None]
#: told (task id, purpose, piece) of a model's answer as it arrives; not recorded
DeltaSubscriber = Callable[[str, Purpose, Delta], None]


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


#: what a model on this machine costs, unless the price table says otherwise
FREE = Price(0.0, 0.0)


@dataclass
class RunContext:
    """One run of one task: its state, its dependencies, and the way events are recorded.

    Events are either committed (durable before the run goes on) or staged (kept in memory and
    committed with the next commit, before the next model call, and when the run stops). Staged
    events are those a crash may lose because they are made again the same way: a gate decision,
    a read-only tool's result.
    """

    store: Store
    state: TaskState
    registry: Registry
    gate: Gate
    backends: dict[Purpose, ModelBackend]
    tool_specs: tuple[ToolSpec, ...]
    prices: dict[str, Price]
    subscribers: list[Subscriber]
    max_argument_bytes: int
    sandboxes: Sandboxes | None = None
    output_subscribers: list[OutputSubscriber] = field(default_factory=list)
    delta_subscribers: list[DeltaSubscriber] = field(default_factory=list)
    browsers: Browsers | None = None
    staged: list[Event] = field(default_factory=list)

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
        self.store.append(self.state.task_id, events, after=first - 1)
        self.staged = []  # only once they are durable
        if self.subscribers:
            now = time.time()
            for seq, event in enumerate(events, first):
                for notify in self.subscribers:
                    notify(StoredEvent(self.state.task_id, seq, now, event))

    def reject(self, call: Call, error: str) -> None:
        self.stage([CallRejected(ref=call.ref, tool=call.wire.name, error=error)])

    def stop_if_over_budget(self) -> bool:
        reason = self.state.budget_exhausted()
        if reason is not None:
            self.commit([TaskPaused(reason="budget_exhausted", detail=reason)])
        return reason is not None

    async def ask(self, purpose: Purpose, request: ModelRequest) -> None:
        """Call the model and record its answer (or pause the task if the model failed)."""
        self.flush()
        backend = self.backends[purpose]
        started = time.perf_counter()
        on_delta = None
        if self.delta_subscribers:
            task_id, listeners = self.state.task_id, self.delta_subscribers

            def on_delta(delta: Delta) -> None:
                for notify in listeners:
                    notify(task_id, purpose, delta)

        try:
            response = await backend.complete(request, on_delta=on_delta)
        except BackendError as exc:
            self.commit(
                [TaskPaused(reason="model_error", detail=f"{backend.name}: {exc} [{exc.code}]")]
            )
            return
        price = self.prices.get(backend.name) or self.prices.get(response.model)
        if price is None and backend.runs_locally:
            price = FREE
        event = ModelResponded(
            purpose=purpose,
            response=response,
            seconds=time.perf_counter() - started,
            cost_usd=price.cost(response.usage) if price else None,
        )
        events: list[Event] = [trim_oversized(event, self.max_argument_bytes)]
        if purpose == "act" and not response.tool_calls:
            names = ", ".join(t.name for t in self.tool_specs)
            events.append(
                ReplyRejected(
                    error=f"your reply had no tool call. Call exactly one "
                    f"tool; the tools are: {names}"
                )
            )
        self.commit(events)

    async def run_tool(
        self,
        tool: Tool,
        call: Call,
        key: str,
        recovery: Literal["rerun"] | None = None,
    ) -> ToolResulted | None:
        """Run a tool and return its result, to be recorded. A bug in the tool (an exception other
        than `ToolError`) pauses the task instead, leaving the call unresolved."""
        assert call.arguments is not None
        ctx = self.tool_context(call, key) if tool.wants_context else None
        started = time.perf_counter()
        try:
            result = await tool.invoke(call.validated or call.arguments, ctx)
        except CallInterrupted as stopped:
            # Stopped (Ctrl-C) while the call ran in a thread: it was let finish, so its outcome
            # is known. Record it, then stop as asked.
            done = _resulted(call, stopped.result, started, recovery)
            record_result(self, tool, done, durable=True)
            raise asyncio.CancelledError from None
        except SandboxError as exc:  # the sandbox cannot be had: nothing for the model to fix
            events: list[Event] = []
            if exc.context.get("nothing_ran"):
                # Known not to have run: say so, so that a resume asks the model again rather
                # than a reviewer whether it took effect.
                failed = ToolResult(ok=False, content=f"not run: {exc}", error_code=exc.code)
                events.append(_resulted(call, failed, started, recovery))
            self.commit([*events, TaskPaused(reason="sandbox_error", detail=str(exc))])
            return None
        except Exception as exc:  # noqa: BLE001 - a tool's own bug; recorded, the task pauses
            self.commit([tool_crashed(tool, exc, traceback.format_exc(limit=8))])
            return None
        return _resulted(call, result, started, recovery)

    async def read_effect(
        self, tool: Tool, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any] | None:
        """What the tool's effect reader says the call would do ({} for nothing beyond its
        arguments). None if the reader could not tell: the task is paused."""
        assert tool.effect is not None
        ctx = self.tool_context(call, f"{self.state.task_id}/{call.ref}")
        try:
            async with asyncio.timeout(tool.timeout):
                return await tool.effect(ctx, arguments) or {}
        except SandboxError as exc:
            self.commit([TaskPaused(reason="sandbox_error", detail=str(exc))])
        except Exception as exc:  # noqa: BLE001 - a tool's own bug (a timeout too): the task pauses
            self.commit([tool_crashed(tool, exc, traceback.format_exc(limit=8))])
        return None

    @property
    def artifacts(self) -> Path:
        return artifacts_of(self.store, self.state.task_id)

    @property
    def shown_chars(self) -> int:
        """How long a tool output may be to be shown to the executor whole."""
        return observation_chars(self.backends["act"].context_window)

    def keep_whole(self, result: ToolResulted) -> ToolResulted:
        """`result`, shortened for the model if it is too long, with the whole kept as an
        artifact first (a crash in between leaves an unused file, never a lost output)."""
        limit = self.shown_chars
        if len(result.content) <= limit:
            return result
        # Named by content: the same output twice is one file, and reads the same to the model
        # (and to the stuck detector, which compares what the model was shown).
        digest = hashlib.sha256(result.content.encode()).hexdigest()[:12]
        name = f"output-{digest}.txt"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        partial = self.artifacts / f".{name}.partial"
        partial.write_text(result.content, encoding="utf-8")
        partial.replace(self.artifacts / name)
        return result.model_copy(
            update={"content": shortened(result.content, limit, name), "artifact": name}
        )

    def tool_context(self, call: Call, key: str) -> ToolContext:
        """What a tool (or its reconciler, or its effect reader) is given for `call`."""
        task_id = self.state.task_id
        sandbox = browser = None
        if self.sandboxes is not None:
            created = self.state.created
            limits = created.sandbox if created is not None else None
            sandbox = functools.partial(self.sandboxes.for_task, task_id, limits)
            if self.browsers is not None:
                browser = functools.partial(_browser_of, self.browsers, sandbox, task_id)
        output = None
        if self.output_subscribers:

            def output(stream: str, text: str) -> None:
                for notify in self.output_subscribers:
                    notify(task_id, stream, text)

        return ToolContext(
            task_id,
            call.wire.id,
            key,
            sandbox=sandbox,
            output=output,
            browser=browser,
            artifacts=self.artifacts,
            # What read_artifact may give at once without being shortened itself.
            shown_chars=self.shown_chars,
        )

    def preview(self, tool: Tool | None, call: Call) -> str:
        touches = tool.touches if tool else "unknown"
        args = json.dumps(call.arguments, indent=2, ensure_ascii=False)
        return f"{call.wire.name} (touches: {touches})\n{args}"


async def _browser_of(
    browsers: Browsers, sandbox: Callable[[], Awaitable[Sandbox]], task_id: str
) -> PageDriver:
    return await browsers.for_task(task_id, await sandbox())


def artifacts_of(store: Store, task_id: str) -> Path:
    """The task's folder for what it keeps beside its log (files given with it, screenshots,
    long outputs); made by whoever writes there first."""
    return store.path.parent / "artifacts" / task_id


def keep_files(folder: Path, files: tuple[Attachment, ...]) -> None:
    """Keep the files given with a task as its artifacts, where they are not kept already (the
    log holds them; a crash between recording the task and writing them is made good here)."""
    for file in files:
        path = folder / file.name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(file.content, encoding="utf-8")


def _resulted(
    call: Call, result: ToolResult, started: float, recovery: Literal["rerun"] | None
) -> ToolResulted:
    return ToolResulted(
        ref=call.ref,
        ok=result.ok,
        content=result.content,
        error_code=result.error_code,
        seconds=time.perf_counter() - started,
        recovery=recovery,
    )


class Runner:
    """Runs tasks. Holds its dependencies; all task state lives in the store."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        gate: Gate,
        *,
        planner: ModelBackend,
        executor: ModelBackend | None = None,
        prices: dict[str, Price] | None = None,
        max_argument_bytes: int = 64 * 1024,
        sandboxes: Sandboxes | None = None,
        browsers: Browsers | None = None,
    ) -> None:
        clash = [t.name for t in registry if t.name in EXECUTOR or t.name in PLANNER]
        if clash:
            raise ConfigError(f"tool names reserved by the runner: {', '.join(clash)}")
        self.store = store
        self.registry = registry
        self.gate = gate
        self.backends: dict[Purpose, ModelBackend] = {"plan": planner, "act": executor or planner}
        self.prices = prices or {}
        self.max_argument_bytes = max_argument_bytes
        self.subscribers: list[Subscriber] = []
        self.output_subscribers: list[OutputSubscriber] = []
        self.delta_subscribers: list[DeltaSubscriber] = []
        #: the tasks' containers; None runs without (sandbox tools then fail, telling the model)
        self.sandboxes = sandboxes
        if browsers is None and sandboxes is not None:
            from browser.manager import Browsers  # noqa: PLC0415 - Playwright loads only if used

            browsers = Browsers(sandboxes)
        #: the tasks' browsers, in their sandboxes
        self.browsers = browsers
        self._running: dict[str, RunContext] = {}
        if sandboxes is not None:
            sandboxes.egress.listener = self._record_egress

    def offered(self, state: TaskState) -> tuple[ToolSpec, ...]:
        """The tools the task's model is told of: all, but those that need the network where
        the task's sandbox has none (a browser that can load no page is only a distraction,
        and costs a small model a third of its prompt)."""
        created = state.created
        limits = created.sandbox if created is not None else None
        if limits is None and self.sandboxes is not None:
            limits = self.sandboxes.config.limits
        online = limits is not None and limits.network != "none"
        return (
            tuple(t.spec for t in self.registry if online or not t.needs_network) + EXECUTOR.specs()
        )

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` with every event this runner records, as it is recorded."""
        self.subscribers.append(subscriber)

    def subscribe_output(self, subscriber: OutputSubscriber) -> None:
        """Call `subscriber` with the output of sandbox commands as it comes (not recorded)."""
        self.output_subscribers.append(subscriber)

    def subscribe_deltas(self, subscriber: DeltaSubscriber) -> None:
        """Call `subscriber` with each piece of a model's answer as it arrives (not recorded;
        the whole answer is recorded as one event when it is complete)."""
        self.delta_subscribers.append(subscriber)

    def create(
        self,
        task: str,
        limits: Limits | None = None,
        *,
        tools: tuple[str, ...] = (),
        policy: str | None = None,
        sandbox: SandboxLimits | None = None,
        files: tuple[Attachment, ...] = (),
        plan: bool = True,
    ) -> str:
        """Record a new task; return its id. Nothing runs until `run`.

        `tools` and `policy` say where this runner's tools and policy came from, so that a later
        run of the task, in any process, can load the same ones. `files` are given to the model
        with the task (and kept as the task's artifacts); `plan=False` skips the planner.
        """
        planner, executor = self.backends["plan"], self.backends["act"]
        created = TaskCreated(
            task=task,
            model=executor.name,
            planner=planner.name if planner is not executor else None,
            limits=limits or Limits(),
            tools=tools,
            policy=policy,
            sandbox=sandbox,
            files=files,
            plan=plan,
        )
        task_id = self.store.create_task(created)
        if files:
            keep_files(artifacts_of(self.store, task_id), files)
        for notify in self.subscribers:
            notify(StoredEvent(task_id, 1, time.time(), created))
        return task_id

    def _record_egress(self, task_id: str, attempt: EgressAttempt) -> None:
        """Record a decision of the egress proxy in the task's log, as it is made."""
        rt = self._running.get(task_id)
        if rt is None:
            return  # its run has ended; the proxy refuses a task it no longer knows anyway
        rt.commit(
            [
                EgressDecided(
                    method=attempt.method,
                    host=attempt.host,
                    port=attempt.port,
                    allowed=attempt.allowed,
                    reason=attempt.reason,
                    address=attempt.address,
                )
            ]
        )

    def _pause_interrupted(self, task_id: str) -> None:
        """Record that the user stopped the run. The log is read again rather than trusting
        memory: staged events may not be durable, and the interrupt may have cut a flush short.
        Only a running task is paused: one that is done or waiting for a reviewer stays so."""
        durable = self.load(task_id)
        if durable.status == "running":
            pause = TaskPaused(reason="interrupted", detail="stopped by the user")
            self.store.append(task_id, [pause], after=durable.last_seq)

    def load(self, task_id: str) -> TaskState:
        return TaskState.from_store(self.store, task_id)

    async def run(self, task_id: str) -> TaskState:
        """Drive the task until it stops; return its state. Raises `TaskBusy` if another live
        process is running it."""
        return await self.resume(task_id, continue_only=True)

    async def resume(
        self, task_id: str, limits: Limits | None = None, *, continue_only: bool = False
    ) -> TaskState:
        """Continue a task from its log: after a crash, a pause, or a stop for being stuck.

        `limits` replaces the task's limits (to go on after a budget ran out). With
        `continue_only`, a paused or stuck task is left as it is.
        """
        with self.store.lease(task_id):
            state = self.load(task_id)
            if state.created is not None and state.created.files:
                keep_files(artifacts_of(self.store, task_id), state.created.files)
            rt = RunContext(
                self.store,
                state,
                self.registry,
                self.gate,
                self.backends,
                self.offered(state),
                self.prices,
                self.subscribers,
                self.max_argument_bytes,
                self.sandboxes,
                output_subscribers=self.output_subscribers,
                delta_subscribers=self.delta_subscribers,
                browsers=self.browsers,
            )
            events: list[Event] = []
            if limits is not None and limits != state.limits:
                events.append(LimitsRaised(limits=limits))
            if not continue_only and state.status in ("paused", "stuck"):
                events.append(TaskResumed())
            self._running[task_id] = rt
            rt.commit(events)
            # Decisions recorded by other processes (a reviewer's denials) are observations too.
            rt.check_stuck()
            rt.flush()
            try:
                while (step := next_step(state)) is not None:
                    await step.run(rt)
                rt.flush()
            except (KeyboardInterrupt, asyncio.CancelledError):
                self._pause_interrupted(task_id)
                raise
            finally:
                self._running.pop(task_id, None)
                if self.sandboxes is not None:
                    self.sandboxes.done_running(task_id)
                if self.browsers is not None:
                    await self.browsers.forget(task_id)
            if state.status in ("done", "failed") and self.sandboxes is not None:
                # Left behind if this fails (Docker gone): the next runner's reap removes it.
                with contextlib.suppress(SandboxError):
                    await self.sandboxes.release(task_id)
            return state
