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
import hashlib
import json
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Literal

from agent.approvals import expired, pending_approval
from agent.backends.base import ModelBackend, Purpose
from agent.effects import LocalEffects, artifacts_root, keep_files, library_of
from agent.events import (
    Attachment,
    EgressDecided,
    Escalation,
    Event,
    Limits,
    LimitsRaised,
    TaskCreated,
    TaskPaused,
    TaskResumed,
    ToolsOffered,
)
from agent.live import Listener
from agent.loop import Loop
from agent.loop_tools import EXECUTOR, PLANNER
from agent.prices import Price
from agent.recorder import Recorder
from agent.state import TaskState
from agent.steps import drive
from agent.store import Store, StoredEvent
from base.artifacts import Artifacts, folder_artifacts
from base.errors import ConfigError, SandboxError
from base.toolspec import ToolSpec
from policies import Gate
from sandbox.limits import SandboxLimits
from tools.documents import indexed
from tools.registry import Registry
from tools.secrets import Secrets
from tools.tool import Tool, ToolResult

if TYPE_CHECKING:
    from browser.manager import Browsers
    from sandbox.deploy import DeployTarget
    from sandbox.manager import Sandboxes
    from sandbox.proxy import EgressAttempt


class Runner:
    """Runs tasks. Holds its dependencies; all task state lives in the store."""

    #: what runs the tasks this runner creates (see `TaskCreated.engine`)
    engine_kind: Literal["embedded", "temporal"] = "embedded"

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
        deploy: DeployTarget | None = None,
        secrets: Secrets | None = None,
        approval_expiry: float | None = None,
        approval_escalation: Escalation | None = None,
        artifacts: Artifacts | None = None,
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
        #: how long a request for approval may wait before it is denied (None: for ever)
        self.approval_expiry = approval_expiry
        #: what becomes of a request no reviewer decided in time, when not a denial
        self.approval_escalation = approval_escalation
        self.listeners: list[Listener] = []
        #: where each task keeps what it keeps beside its log (default: a folder per task
        #: beside the store)
        self.artifacts = artifacts or folder_artifacts(artifacts_root(store))
        #: by task: its calls given up on at their timeout whose threads run on (see `Loop.late`)
        self._late: dict[str, dict[str, tuple[str, Future[ToolResult]]]] = {}
        #: the tasks' containers; None runs without (sandbox tools then fail, telling the model)
        self.sandboxes = sandboxes
        if browsers is None and sandboxes is not None:
            from browser.manager import Browsers  # noqa: PLC0415 - Playwright loads only if used

            browsers = Browsers(sandboxes)
        #: the tasks' browsers, in their sandboxes
        self.browsers = browsers
        #: where the deploy tools run services; None runs without (they fail, telling the model)
        self.deploy = deploy
        #: what tools fill in for `{{secret:NAME}}` (the model never sees a value)
        self.secrets = secrets or Secrets()
        #: what the model is told of them: their names and hosts (see `_told`)
        self._secrets_told = "; ".join(
            f"{{{{secret:{s.name}}}}} for {', '.join(s.hosts)}"
            for s in self.secrets
            if s.value is not None
        )
        self._told_specs: dict[str, tuple[ToolSpec, ToolSpec]] = {}
        self._running: dict[str, Recorder] = {}
        if sandboxes is not None:
            sandboxes.egress.listener = self._record_egress
            if deploy is not None:  # a task's browser reaches the services it deployed
                sandboxes.egress.services = deploy.reachable_by

    def offered(self, state: TaskState) -> tuple[ToolSpec, ...]:
        """The tools the task's model is told of: all, but those that need the network where
        the task's sandbox has none (a browser that can load no page is only a distraction,
        and costs a small model a third of its prompt), and the deploy tools unless the task
        may deploy (and this runner has somewhere to), and the documents' search unless there
        are documents indexed."""
        created = state.created
        limits = created.sandbox if created is not None else None
        if limits is None and self.sandboxes is not None:
            limits = self.sandboxes.config.limits
        online = limits is not None and limits.network != "none"
        deploys = created is not None and created.deploy and self.deploy is not None
        documents = indexed(library_of(self.store))
        return (
            tuple(
                self._told(t)
                for t in self.registry
                if (online or not t.needs_network)
                and (deploys or not t.needs_deploy)
                and (documents or not t.needs_documents)
            )
            + EXECUTOR.specs()
        )

    def _told(self, tool: Tool) -> ToolSpec:
        """What the model is told of `tool`: for a tool that fills in secrets, which there are
        (their names and hosts; never a value)."""
        if not tool.fills_secrets or not self._secrets_told:
            return tool.spec
        told = self._told_specs.get(tool.name)
        if told is None or told[0] is not tool.spec:
            description = f"{tool.spec.description}\n\nSecrets you may use: {self._secrets_told}."
            told = self._told_specs[tool.name] = (
                tool.spec,
                tool.spec.model_copy(update={"description": description}),
            )
        return told[1]

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with everything this runner's runs make, as they make it: each event
        once it is recorded, each piece of a command's output and of a model's answer as it
        comes (agent/live.py)."""
        self.listeners.append(listener)

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
        deploy: bool = False,
        review_plan: bool = False,
    ) -> str:
        """Record a new task; return its id. Nothing runs until `run`.

        `tools` and `policy` say where this runner's tools and policy came from, so that a later
        run of the task, in any process, can load the same ones. `files` are given to the model
        with the task (and kept as the task's artifacts); `plan=False` skips the planner;
        `deploy=True` lets it deploy services (it is offered the deploy tools).
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
            deploy=deploy,
            review_plan=review_plan,
            engine=self.engine_kind,
        )
        task_id = self.store.create_task(created)
        if files:
            keep_files(self.artifacts(task_id), files)
        for notify in self.listeners:
            notify(StoredEvent(task_id, 1, time.time(), created))
        return task_id

    def _record_egress(self, task_id: str, attempt: EgressAttempt) -> None:
        """Record a decision of the egress proxy in the task's log, as it is made."""
        record = self._running.get(task_id)
        if record is None:
            return  # its run has ended; the proxy refuses a task it no longer knows anyway
        record.commit(
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

    def local_effects(self, state: TaskState, listeners: list[Listener]) -> LocalEffects:
        """The effects of a run of the task `state` folds, in this process, with this runner's
        models, sandboxes, browsers and secrets; `listeners` hear what comes as it comes."""
        return LocalEffects(
            self.store,
            state,
            self.backends,
            self.prices,
            self.sandboxes,
            self.browsers,
            deploy=self.deploy,
            listeners=listeners,
            secrets=self.secrets,
            artifact_store=self.artifacts,
        )

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
            if state.created is not None and state.created.engine != "embedded":
                raise ConfigError(
                    f"task {task_id} runs on the {state.created.engine} engine: continue it with "
                    f'[engine] kind = "{state.created.engine}" in agent.toml'
                )
            self.gate = self.gate.current()  # with the rules a reviewer saved meanwhile
            if state.created is not None and state.created.files:
                keep_files(self.artifacts(task_id), state.created.files)
            record = Recorder(self.store, state, self.listeners)
            effects = self.local_effects(state, self.listeners)
            loop = Loop(
                record,
                effects,
                self.registry,
                self.gate,
                self.offered(state),
                self.backends["act"].context_window,
                self.max_argument_bytes,
                self.approval_expiry,
                self.approval_escalation,
                late=self._late.setdefault(task_id, {}),
            )
            events: list[Event] = []
            offered = offered_event(loop.tool_specs)
            if offered.digest != state.offered_digest:
                events.append(offered)
            if limits is not None and limits != state.limits:
                events.append(LimitsRaised(limits=limits))
            if not continue_only and state.status in ("paused", "stuck"):
                events.append(TaskResumed())
            if (request := pending_approval(state)) is not None and (
                lapsed := expired(self.store, state, request)
            ) is not None:
                # no reviewer decided in time: denied (the model is told), or escalated
                events.append(lapsed)
            self._running[task_id] = record
            record.commit(events)
            # Decisions recorded by other processes (a reviewer's denials) are observations too.
            record.check_stuck()
            record.flush()
            try:
                await drive(loop)
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


def offered_event(specs: tuple[ToolSpec, ...]) -> ToolsOffered:
    """The record of the tools a model is told of, with a digest that names the set."""
    canonical = json.dumps([s.model_dump(mode="json") for s in specs], sort_keys=True)
    return ToolsOffered(tools=specs, digest=hashlib.sha256(canonical.encode()).hexdigest()[:16])
