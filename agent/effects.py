"""Where the loop touches the world: the `Effects` protocol, and its local implementation.

The steps (agent/steps.py) decide; everything they need from outside (a model's answer, a tool's
run, a tool's reading of what a call would do, a reconciler's answer, a long output kept as a
file) comes through one `Effects` object, as plain values the steps then record. `LocalEffects`
does it in this process: the backends, the registry's tools, the task's sandbox and browser. A
second implementation (Temporal activities; a fake in tests) replaces it without touching a step.

No method records anything: a failure that should pause the task comes back as the `TaskPaused`
event to record.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextvars
import dataclasses
import functools
import hashlib
import inspect
import json
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent.asking import TaskModel, price_of
from agent.backends.base import Delta, ModelBackend, ModelRequest, Purpose
from agent.context import observation_chars, shortened
from agent.events import Attachment, ModelResponded, TaskPaused, ToolResulted
from agent.live import CommandOutput, Listener, ModelDelta
from agent.prices import Price
from agent.state import Call, TaskState
from agent.store import Store
from base.artifacts import Artifacts, ArtifactStore, FolderArtifacts
from base.errors import BackendError, SandboxError
from tools._redact import LiveText, RedactedArtifacts, Redactor
from tools.capture import OnPrint, Stream, uncaptured
from tools.secrets import Secrets
from tools.tool import CallInterrupted, CannotTell, Tool, ToolContext, ToolError, ToolResult

if TYPE_CHECKING:
    from browser.driver import PageDriver
    from browser.manager import Browsers
    from sandbox.container import Sandbox
    from sandbox.deploy import DeployTarget
    from sandbox.manager import Sandboxes


@dataclass(frozen=True)
class Ran:
    """A tool ran and gave `result` in `seconds`. `interrupted`: the run was stopped (Ctrl-C)
    while the call ran in a thread, which was let finish: record the result, then stop."""

    result: ToolResult
    seconds: float
    interrupted: bool = False
    #: a synchronous call past its timeout, still running: its result, if it ends
    late: concurrent.futures.Future[ToolResult] | None = None


@dataclass(frozen=True)
class Stopped:
    """A tool could not run to an end the model should see: the task pauses with `paused`.
    `not_run` is the call's result when it is known not to have run at all (its sandbox could
    not be had), so that a resume asks the model again rather than a reviewer."""

    paused: TaskPaused
    not_run: ToolResult | None = None
    seconds: float = 0.0


Reconciled = ToolResult | Literal["absent", "unknown"] | TaskPaused


class Effects(Protocol):
    """What the steps ask of the world. Each method may take long; none records anything."""

    async def ask_model(
        self, purpose: Purpose, request: ModelRequest
    ) -> ModelResponded | TaskPaused:
        """The model's answer as an event to record, or the pause its failure calls for."""
        ...

    async def run_tool(self, tool: Tool, call: Call, key: str) -> Ran | Stopped:
        """Run the call's tool (its arguments validated) under the idempotency `key`."""
        ...

    async def read_effect(
        self, tool: Tool, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any] | TaskPaused | ToolResult:
        """What the tool's effect reader says the call would do ({} for nothing beyond its
        arguments); a failed `ToolResult` when the call cannot be what it asks (a `ToolError`
        of the reader: the model is told, no reviewer asked)."""
        ...

    async def reconcile(self, tool: Tool, call: Call) -> Reconciled:
        """The tool's reconciler, asked whether a call that recorded its intent took effect:
        its result, "absent" (it did not), or "unknown" (it cannot tell in time)."""
        ...

    def keep_whole(self, result: ToolResulted, limit: int) -> ToolResulted:
        """`result`, shortened to `limit` characters for the model if it is longer, with the
        whole kept as an artifact first."""
        ...


def tool_crashed(tool: Tool, exc: BaseException, detail: str) -> TaskPaused:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return TaskPaused(
        reason="tool_crashed",
        detail=f"the tool {tool.name} raised {type(exc).__name__}: {exc}{where}\n{detail}",
    )


def artifacts_of(store: Store, task_id: str) -> Path:
    """The task's folder for what it keeps beside its log (files given with it, screenshots,
    long outputs); made by whoever writes there first."""
    return artifacts_root(store) / task_id


def artifacts_root(store: Store) -> Path:
    """The folder of the tasks' artifact folders, beside the store."""
    return store.path.parent / "artifacts"


def library_of(store: Store) -> Path:
    """The folder of the documents index (`agent index`), beside the store."""
    return library_in(store.path.parent)


def library_in(home: Path) -> Path:
    """The folder of the documents index in the home folder `home`."""
    return home / "index"


def keep_files(artifacts: ArtifactStore, files: tuple[Attachment, ...]) -> None:
    """Keep the files given with a task as its artifacts, where they are not kept already (the
    log holds them; a crash between recording the task and writing them is made good here)."""
    kept = set(artifacts.names())
    for file in files:
        if file.name in kept or file.indexed:  # an indexed file's text is the index's
            continue
        if file.kind == "image" and file.images:
            artifacts.keep(file.name, base64.b64decode(file.images[0].data))
        else:
            artifacts.keep(file.name, file.content.encode("utf-8"))


@dataclass
class LocalEffects:
    """The effects of one run of one task, in this process."""

    store: Store
    state: TaskState
    backends: dict[Purpose, ModelBackend]
    prices: dict[str, Price]
    sandboxes: Sandboxes | None = None
    browsers: Browsers | None = None
    #: where the deploy tools run services
    deploy: DeployTarget | None = None
    #: told of each piece of a command's output and of a model's answer as it comes
    listeners: list[Listener] = field(default_factory=list)
    #: what tools may fill in for `{{secret:NAME}}`; their values are taken out of everything a
    #: tool returns, prints, shows or keeps, before any of it is recorded or shown
    secrets: Secrets = field(default_factory=Secrets)
    #: where the task's artifacts are kept (default: its folder beside the store)
    artifact_store: Artifacts | None = None

    @property
    def _redactor(self) -> Redactor:
        return self.secrets.redactor()

    async def ask_model(
        self, purpose: Purpose, request: ModelRequest
    ) -> ModelResponded | TaskPaused:
        backend = self.backends[purpose]
        started = time.perf_counter()
        on_delta = None
        if self.listeners:
            task_id, listeners = self.state.task_id, self.listeners

            def on_delta(delta: Delta) -> None:
                for notify in listeners:
                    notify(ModelDelta(task_id, purpose, delta))

        try:
            response = await backend.complete(request, on_delta=on_delta)
        except BackendError as exc:
            return TaskPaused(reason="model_error", detail=f"{backend.name}: {exc} [{exc.code}]")
        price = price_of(backend, self.prices, response.model)
        return ModelResponded(
            purpose=purpose,
            response=response,
            seconds=time.perf_counter() - started,
            cost_usd=price.cost(response.usage) if price else None,
        )

    async def run_tool(self, tool: Tool, call: Call, key: str) -> Ran | Stopped:
        assert call.arguments is not None
        # With secrets, what the call shows as it runs is redacted (and a tail of it held back).
        live = LiveText(self._redactor) if self.secrets else None
        redact = self._redactor.text if self.secrets else None
        # Timed from before the model lent is: the time its calls may take is counted from
        # there, so what the call is said to take is never less.
        started = time.perf_counter()
        model = TaskModel.of(self.backends["act"], self.state, self.prices, redact)
        ctx = self.tool_context(call, key, live, model) if tool.wants_context else None
        try:
            printing = self._printing(live) if self.listeners else None
            outcome = await tool.run(call.validated or call.arguments, ctx, printing)
        except CallInterrupted as stopped:
            result = self._redacted(stopped.result)
            return Ran(result, time.perf_counter() - started, interrupted=True)
        except SandboxError as exc:  # the sandbox cannot be had: nothing for the model to fix
            text = self._redactor.text(str(exc))
            paused = TaskPaused(reason="sandbox_error", detail=text)
            not_run = None
            if exc.nothing_ran:
                not_run = ToolResult(ok=False, content=f"not run: {text}", error_code=exc.code)
            return Stopped(paused, not_run, time.perf_counter() - started)
        except BackendError as exc:  # a tool's own call to the model failed: as the loop's would
            detail = self._redactor.text(f"{self.backends['act'].name}: {exc} [{exc.code}]")
            paused = TaskPaused(reason="model_error", detail=detail)
            return Stopped(model.spent_with(paused), seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a tool's own bug; recorded, the task pauses
            crashed = model.spent_with(self._crashed(tool, exc))
            return Stopped(crashed, seconds=time.perf_counter() - started)
        finally:
            if live is not None:
                self._show_held(live)
        result = self._redacted(outcome.result)
        if model.asked:
            result = dataclasses.replace(result, spent=model.spent())
        if result.data is not None:
            result = self._keep_data(result, result.data)
        late = outcome.late
        if late is not None and self.secrets:
            late = _redacted_later(late, self._redacted, self._redactor.text)
        return Ran(result, time.perf_counter() - started, late=late)

    def _redacted(self, result: ToolResult) -> ToolResult:
        """`result` without the secrets' values, wherever a server or a page echoed them."""
        if not self.secrets:
            return result
        redact = self._redactor
        return dataclasses.replace(
            result,
            content=redact.text(result.content),
            printed=redact.text(result.printed),
            data=None if result.data is None else redact.data(result.data),
        )

    def _crashed(self, tool: Tool, exc: Exception) -> TaskPaused:
        paused = tool_crashed(tool, exc, traceback.format_exc(limit=8))
        if not self.secrets:
            return paused
        return paused.model_copy(update={"detail": self._redactor.text(paused.detail)})

    def _keep_data(self, result: ToolResult, data: bytes) -> ToolResult:
        """Binary data a tool returned, kept as an artifact; the model is told where."""
        name = f"output-{hashlib.sha256(data).hexdigest()[:12]}.bin"
        self.artifacts.keep(name, data)
        note = f"{len(data):,} bytes of binary data, kept with the task as the artifact {name}"
        return dataclasses.replace(result, content=note, data=None)

    def _show_held(self, live: LiveText) -> None:
        """Show what live output was held back to be redacted whole, once a call has ended."""
        for stream, text in live.flush():
            item = CommandOutput(
                self.state.task_id, "stderr" if stream == "stderr" else "stdout", text
            )
            for notify in self.listeners:
                notify(item)

    def _printing(self, live: LiveText | None) -> OnPrint | None:
        """Shows what a tool prints as it comes, like a command's output: in the loop's thread,
        wherever the tool printed it from."""
        if not self.listeners:
            return None
        task_id, listeners = self.state.task_id, self.listeners
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def tell(item: CommandOutput) -> None:
            for notify in listeners:
                notify(item)

        def on_print(stream: Stream, text: str) -> None:
            shown = text if live is None else live.feed(stream, text)
            item = CommandOutput(task_id, stream, shown, source="print")
            if threading.get_ident() == loop_thread:
                tell(item)
            else:  # from a tool's thread; in a context of its own, so not caught as printed
                loop.call_soon_threadsafe(tell, item, context=contextvars.Context())

        return on_print

    async def read_effect(
        self, tool: Tool, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any] | TaskPaused | ToolResult:
        assert tool.effect is not None
        ctx = self.tool_context(call, f"{self.state.task_id}/{call.ref}")
        redact = self._redactor
        try:
            async with asyncio.timeout(tool.timeout):
                effect = await tool.effect(ctx, arguments) or {}
        except ToolError as exc:
            return ToolResult(False, redact.text(str(exc)), exc.code)
        except SandboxError as exc:
            return TaskPaused(reason="sandbox_error", detail=redact.text(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a tool's own bug (a timeout too): the task pauses
            return self._crashed(tool, exc)
        if not self.secrets:
            return effect
        # What a page or a service shows (a form's values, say) may hold a value typed before.
        redacted: dict[str, Any] = json.loads(redact.text(json.dumps(effect, default=str)))
        return redacted

    async def reconcile(self, tool: Tool, call: Call) -> Reconciled:
        assert tool.reconcile is not None
        assert call.intent is not None
        ctx = self.tool_context(call, call.intent.idempotency_key)
        try:
            asked = (
                tool.reconcile(ctx)
                if inspect.iscoroutinefunction(tool.reconcile)
                else asyncio.to_thread(tool.reconcile, ctx)
            )
            found = await asyncio.wait_for(asked, tool.timeout)
        except (TimeoutError, CannotTell):
            return "unknown"
        except SandboxError as exc:  # the sandbox cannot be had now: paused, as a call would be
            return TaskPaused(reason="sandbox_error", detail=self._redactor.text(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug in the reconciler; the task pauses
            return self._crashed(tool, exc)
        if found is None:
            return "absent"
        return self._redacted(
            found if isinstance(found, ToolResult) else ToolResult(True, str(found))
        )

    @property
    def artifacts(self) -> ArtifactStore:
        task_id = self.state.task_id
        kept = (
            self.artifact_store(task_id)
            if self.artifact_store is not None
            else FolderArtifacts(artifacts_of(self.store, task_id))
        )
        return RedactedArtifacts(kept, self._redactor) if self.secrets else kept

    def keep_whole(self, result: ToolResulted, limit: int) -> ToolResulted:
        if len(result.content) <= limit:
            return result
        # Named by content: the same output twice is one file, and reads the same to the model
        # (and to the stuck detector, which compares what the model was shown). A crash between
        # the file and the record leaves an unused file, never a lost output.
        digest = hashlib.sha256(result.content.encode()).hexdigest()[:12]
        name = f"output-{digest}.txt"
        self.artifacts.keep(name, result.content.encode("utf-8"))
        return result.model_copy(
            update={"content": shortened(result.content, limit, name), "artifact": name}
        )

    def tool_context(
        self, call: Call, key: str, live: LiveText | None = None, model: TaskModel | None = None
    ) -> ToolContext:
        """What a tool (or its reconciler, or its effect reader) is given for `call`; what it
        shows as it runs is redacted through `live`; `model` is lent to a tool that asks the
        task's model itself (a reconciler or an effect reader is lent none)."""
        task_id = self.state.task_id
        sandbox = browser = None
        if self.sandboxes is not None:
            created = self.state.created
            limits = created.sandbox if created is not None else None
            sandbox = functools.partial(self.sandboxes.for_task, task_id, limits)
            if self.browsers is not None:
                browser = functools.partial(_browser_of, self.browsers, sandbox, task_id)
        output = None
        if self.listeners:
            shows = live or (LiveText(self._redactor) if self.secrets else None)

            def output(stream: str, text: str) -> None:
                shown = text if shows is None else shows.feed(stream, text)
                item = CommandOutput(task_id, "stderr" if stream == "stderr" else "stdout", shown)

                def tell() -> None:
                    for notify in self.listeners:
                        notify(item)

                uncaptured(tell)  # shown, not taken for what the tool printed

        return ToolContext(
            task_id,
            call.wire.id,
            key,
            sandbox=sandbox,
            output=output,
            browser=browser,
            artifacts=self.artifacts,
            # What read_artifact may give at once without being shortened itself.
            shown_chars=observation_chars(self.backends["act"].context_window),
            deploy=self.deploy,
            secrets=self.secrets,
            library=library_of(self.store),
            model=model,
            approved_by=(
                call.decision.reviewer
                if call.decision is not None and call.decision.approved
                else None
            ),
        )


def _redacted_later(
    late: concurrent.futures.Future[ToolResult],
    redact: Callable[[ToolResult], ToolResult],
    redact_text: Callable[[str], str],
) -> concurrent.futures.Future[ToolResult]:
    """The result to come of a call past its timeout, redacted when it comes (an exception the
    tool raised, as the failure it is recorded as)."""
    redacted: concurrent.futures.Future[ToolResult] = concurrent.futures.Future()

    def done(finished: concurrent.futures.Future[ToolResult]) -> None:
        if (exc := finished.exception()) is not None:
            said = redact_text(f"the tool raised {type(exc).__name__}: {exc}")
            redacted.set_result(ToolResult(False, said))
        else:
            redacted.set_result(redact(finished.result()))

    late.add_done_callback(done)
    return redacted


async def _browser_of(
    browsers: Browsers, sandbox: Callable[[], Awaitable[Sandbox]], task_id: str
) -> PageDriver:
    return await browsers.for_task(task_id, await sandbox())
