"""A tool: a typed Python function plus metadata, made with `@tool`.

A tool is a typed Python function plus metadata. Its JSON schema comes from the signature and the
docstring (through pydantic), never by hand. Arguments from a model are validated before anything
runs; a call that does not validate never executes and the model is told which field is wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

from pydantic import (
    BaseModel,
    ValidationError,
)

from base.artifacts import ArtifactStore
from base.errors import ConfigError, ErrorCode
from base.images import Image
from base.toolspec import ToolSpec
from tools._docs import Docs
from tools._schema import (
    SchemaArguments,
    arguments_model,
    check_returns,
    closed_schema,
    describe_error,
    render_value,
    schema_checker,
)
from tools.asking import Spent, ToolModel
from tools.capture import Capture, OnPrint

if TYPE_CHECKING:
    from browser.driver import BrowserDriver
    from sandbox.deploy import DeployTarget
    from sandbox.protocol import TaskSandbox
    from tools.secrets import Secrets

Touches = Literal["read", "write", "external", "deploy"]
TOUCHES: tuple[Touches, ...] = ("read", "write", "external", "deploy")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ToolContext:
    """What a running tool may know about its call. Declare a parameter of this type to get it.

    `idempotency_key` is stable across restarts of the runner: a tool with side effects uses it
    so that a call re-sent after a crash is recognised (DESIGN invariant 2). `sandbox` gives the
    task's container (the same one on every call, for the task's whole life).
    """

    task_id: str
    call_id: str
    idempotency_key: str
    #: the task's sandbox, started on first use (None where the runner has no sandboxes)
    sandbox: Callable[[], Awaitable[TaskSandbox]] | None = None
    #: shows a command's output as it comes: called with ("stdout" | "stderr", text)
    output: Callable[[str, str], None] | None = None
    #: the task's browser, in its sandbox, started on first use (None where there is none)
    browser: Callable[[], Awaitable[BrowserDriver]] | None = None
    #: what the task keeps beyond its sandbox (screenshots, long outputs); None where the
    #: runner keeps none
    artifacts: ArtifactStore | None = None
    #: how much output the model is shown whole; longer output is kept as an artifact and
    #: shortened (None where the runner does not say)
    shown_chars: int | None = None
    #: where the deploy tools run services (None where the runner deploys nothing)
    deploy: DeployTarget | None = None
    #: who approved this call, for a call a reviewer approved ("" if they gave no name)
    approved_by: str | None = None
    #: the secrets a tool may fill in for `{{secret:NAME}}`, for the hosts each is scoped to
    secrets: Secrets | None = None
    #: the folder of the documents index (`agent index`), where the runner has one
    library: Path | None = None
    #: the task's model, for a tool that asks it itself (None where the runner lends none)
    model: ToolModel | None = None


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    content: str
    error_code: str | None = None
    #: what the tool printed while it ran (kept in the task's log, not shown to the model)
    printed: str = ""
    #: binary data it returned (kept as an artifact; `content` says so)
    data: bytes | None = None
    #: a picture for a model that sees (`content` says what it shows, for one that does not)
    image: Image | None = None
    #: what the tool looked at changed by itself since it last looked (a page still loading): the
    #: same call and result again is waiting, not a loop
    changing: bool = False
    #: what the tool's own calls to the task's model took (set by the runner, never the tool)
    spent: Spent | None = None


@dataclass(frozen=True)
class Shown:
    """What a tool returns to say more than text: `image` for a model that sees (the text says
    what it shows, for one that does not); `changing` when what it looked at is still changing
    by itself (see `ToolResult.changing`)."""

    text: str
    image: Image | None = None
    changing: bool = False


class ToolError(Exception):
    """Raised by a tool for a failure the model should see and correct (a 404, a bad path...)."""

    def __init__(self, message: str, *, code: str = ErrorCode.TOOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class CallInterrupted(BaseException):
    """The run was stopped while a tool ran in a thread; the call was let finish, and this carries
    its result so the runner can record it before stopping. A BaseException, like the
    cancellation it stands for: no `except Exception` should take it for a tool's bug."""

    def __init__(self, result: ToolResult) -> None:
        super().__init__("the run was stopped while a call was running")
        self.result = result


class InvalidArguments(Exception):
    """A model's arguments do not fit the tool's schema. The message names each wrong field."""


class CannotTell(Exception):
    """Raised by a reconciler that cannot tell whether a call took effect: a reviewer decides."""


Reconciler = Callable[[ToolContext], "ToolResult | str | Awaitable[ToolResult | str | None] | None"]
"""Tells after a crash whether a call took effect: its result (a `ToolResult`, or a str for a
success), None if it did not, or `CannotTell`. A coroutine function is awaited; a plain one runs
in a thread."""
EffectReader = Callable[[ToolContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Reads, just before a call is judged (and again just before an approved one runs), what it would
do that its arguments do not say: the values a form would send. See `tool(effect=...)`."""
#: the key an effect is judged and recorded under, beside the arguments
EFFECT = "effect"


def without_effect(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call as recorded by the gate, without the effect read beside them."""
    return {k: v for k, v in arguments.items() if k != EFFECT}


class Tool:
    """A registered tool. Build one with `@tool`; call `parse` then `invoke`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        description: str | None = None,
        touches: Touches = "read",
        timeout: float,
        reconcile: Reconciler | None,
        idempotent: bool,
        effect: EffectReader | None = None,
        needs_network: bool = False,
        needs_deploy: bool = False,
        needs_documents: bool = False,
        replaces: str | None = None,
        touches_declared: bool = True,
        render: Callable[[Any], str] | None = None,
        needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
        fills_secrets: bool = False,
        schema: dict[str, Any] | None = None,
    ) -> None:
        """See `tool` for the arguments. With `schema` (a JSON schema of its arguments: an
        OpenAPI operation's, an MCP tool's), `fn` is called as `fn(ctx, arguments)` with the
        validated arguments as one dict, and `description` is said in full."""
        if not _NAME.match(name):
            raise ConfigError(f"tool name {name!r} must match {_NAME.pattern}")
        if touches not in TOUCHES:
            raise ConfigError(
                f"tool {name}: touches={touches!r} is not one of " + ", ".join(TOUCHES)
            )
        if not timeout > 0:  # also refuses nan
            raise ConfigError(f"tool {name}: timeout must be positive, got {timeout}")
        self.fn = fn
        self.name = name
        self.touches: Touches = touches
        #: whether its author said what it touches (`@tool` without `touches=` says "read")
        self.touches_declared = touches_declared
        self.timeout = timeout
        self.reconcile = reconcile
        self.idempotent = idempotent
        self.effect = effect
        self.needs_network = needs_network
        #: offered only to a task that may deploy services (the deploy tools)
        self.needs_deploy = needs_deploy
        #: offered only where there are documents to search (an index, or files too long)
        self.needs_documents = needs_documents
        #: the name of a tool (a built-in, say) this one takes the place of
        self.replaces = replaces
        #: turns a return value that is not JSON into the text the model reads
        self.render = render
        #: whether a call waits for a reviewer even where the policy allows it (or a function
        #: of the call's arguments that says so); a policy's denial stands
        self.needs_approval = needs_approval
        #: it puts secrets' values in for `{{secret:NAME}}` (the model is told which there are)
        self.fills_secrets = fills_secrets
        if render is None:
            check_returns(fn, name)
        arguments = _arguments(fn, name, description, schema)
        self.args_model, self._ctx_param, docs, parameters, self._check = arguments
        #: the names of its arguments, which policy rules may read
        self.parameters = frozenset(parameters.get("properties", {}))
        self.description = description if description is not None else docs.description or name
        #: what its author may want to fix: said at load for tools that are not built in
        self.warnings: tuple[str, ...] = docs.warnings + (
            ()
            if touches_declared
            else (
                "touches is not declared, so it is taken for a read, which the default policy "
                "allows unasked: declare touches='read' if it changes nothing, or what it changes",
            )
        )
        if effect is not None and EFFECT in self.parameters:
            raise ConfigError(f"tool {name}: a tool with an effect reader has no {EFFECT!r} field")
        self._is_async = inspect.iscoroutinefunction(fn)
        #: what the tool is, beyond its name: approvals and decisions are bound to it, so a
        #: different function registered under the same name after a restart inherits none
        self.identity = f"{name}|{touches}|{fn.__module__}.{fn.__qualname__}"
        self.spec = ToolSpec(name=name, description=self.description, parameters=parameters)

    @property
    def has_side_effects(self) -> bool:
        return self.touches != "read"

    def __repr__(self) -> str:
        return f"<Tool {self.name} touches={self.touches}>"

    def validate(self, raw: str | dict[str, Any]) -> BaseModel:
        """Validate a model's arguments (JSON text or a dict) into the tool's argument model.

        Raises `InvalidArguments` naming every wrong, missing or unexpected field.
        """
        try:
            if isinstance(raw, str):
                model = self.args_model.model_validate_json(raw or "{}")
            else:
                if self.effect is not None and EFFECT in raw:
                    # As recorded by the gate: the arguments and, beside them, the effect read
                    # then.
                    raw = without_effect(raw)
                model = self.args_model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidArguments(describe_error(self.name, exc)) from None
        if self._check is not None:
            try:
                self._check(model.model_dump(mode="json"))
            except ValueError as exc:
                raise InvalidArguments(f"invalid arguments for {self.name}: {exc}") from None
        return model

    def parse(self, raw: str | dict[str, Any]) -> dict[str, Any]:
        """`validate`, returned as plain JSON-able values (as recorded in the log)."""
        return self.validate(raw).model_dump(mode="json")

    @property
    def wants_context(self) -> bool:
        """Whether the function declares a `ToolContext` parameter."""
        return self._ctx_param is not None

    async def invoke(
        self, arguments: BaseModel | dict[str, Any], ctx: ToolContext | None
    ) -> ToolResult:
        """Run the tool on validated arguments (the model from `validate`, or its dump); see
        `run`. Raises what `run` raises."""
        return (await self.run(arguments, ctx)).result

    async def run(
        self,
        arguments: BaseModel | dict[str, Any],
        ctx: ToolContext | None,
        on_print: OnPrint | None = None,
    ) -> Outcome:
        """Run the tool on validated arguments (the model from `validate`, or its dump).

        A `ToolError` or a timeout becomes a failed `ToolResult` for the model. What the tool
        prints is kept with the result (`ToolResult.printed`) and passed to `on_print` as it
        comes. A synchronous tool runs in a daemon thread: one past its timeout is abandoned
        without holding the process open, and if it ends while the process lives, its result is
        `Outcome.late`. Any other exception is a bug in the tool and propagates: the runner
        records it and pauses the task.
        """
        model = arguments if isinstance(arguments, BaseModel) else self.validate(arguments)
        if isinstance(model, SchemaArguments):
            kwargs: dict[str, Any] = {"arguments": model.root}
        else:
            kwargs = dict(model.__dict__)  # the fields; far cheaper than iterating the model
        if self._ctx_param:
            if ctx is None:
                raise TypeError(f"tool {self.name} needs a ToolContext")
            kwargs[self._ctx_param] = ctx
        with Capture(on_print) as capture:
            if not self._is_async:
                return await self._run_in_thread(kwargs, capture)
            try:
                async with asyncio.timeout(self.timeout):
                    value = await self.fn(**kwargs)
            except ToolError as exc:
                return Outcome(ToolResult(False, str(exc), exc.code, capture.text()))
            except TimeoutError:
                return Outcome(self._timed_out(capture))
            return Outcome(self._done(value, capture))

    async def _run_in_thread(self, kwargs: dict[str, Any], capture: Capture) -> Outcome:
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[ToolResult] = loop.create_future()
        # The result, for whoever asks, in any event loop: this one may be gone when it comes.
        late: concurrent.futures.Future[ToolResult] = concurrent.futures.Future()
        work = functools.partial(contextvars.copy_context().run, self._call, kwargs, capture)

        def run() -> None:
            try:
                late.set_result(work())
            except BaseException as exc:  # noqa: BLE001 - a bug in the tool, handed on
                late.set_exception(exc)
            # Where the loop is gone (the run ended), nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiting, late)

        # A daemon thread: one that overruns does not keep the process alive at exit.
        threading.Thread(target=run, name=f"tool {self.name}", daemon=True).start()
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                try:
                    return Outcome(await asyncio.shield(waiting))
                except asyncio.CancelledError:
                    if deadline.expired():
                        raise  # our own time limit: the context turns it into TimeoutError
                    # Stopped from outside (Ctrl-C) while the thread runs. It cannot be stopped:
                    # wait here, so that what the call did is known and can be recorded.
                    deadline.reschedule(None)
                    raise CallInterrupted(await waiting) from None
        except TimeoutError:
            return Outcome(self._timed_out(capture), late=late)

    def _call(self, kwargs: dict[str, Any], capture: Capture) -> ToolResult:
        """Call a synchronous tool (in its thread)."""
        try:
            value = self.fn(**kwargs)
        except ToolError as exc:
            return ToolResult(False, str(exc), exc.code, capture.text())
        return self._done(value, capture)

    def _done(self, value: Any, capture: Capture) -> ToolResult:
        """A successful call's result: its value as the model reads it (bytes kept aside, to be
        kept as an artifact). Raises `TypeError` for a value that cannot be written as JSON."""
        if type(value) is str:
            printed = capture.text()
            return ToolResult(True, value, None, printed) if printed else ToolResult(True, value)
        if isinstance(value, Shown):
            printed = capture.text()
            return ToolResult(
                True, value.text, printed=printed, image=value.image, changing=value.changing
            )
        if isinstance(value, bytes):
            return ToolResult(
                True, f"{len(value):,} bytes of binary data", printed=capture.text(), data=value
            )
        try:
            text = render_value(value, self.render)
        except TypeError as exc:
            code = getattr(self.fn, "__code__", None)
            where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
            raise TypeError(f"{self.name}{where}: {exc}") from None
        return ToolResult(True, text, printed=capture.text())

    def _timed_out(self, capture: Capture) -> ToolResult:
        return ToolResult(
            ok=False,
            content=f"{self.name} timed out after {self.timeout:g} s",
            error_code=ErrorCode.TIMEOUT,
            printed=capture.text(),
        )


def _arguments(
    fn: Callable[..., Any], name: str, description: str | None, schema: dict[str, Any] | None
) -> tuple[
    type[BaseModel], str | None, Docs, dict[str, Any], Callable[[dict[str, Any]], None] | None
]:
    """A tool's arguments: their model, the name of the parameter given the `ToolContext`, the
    docs, the JSON schema the model is shown, and (for a tool described by a `schema`) the
    check of arguments against it."""
    if schema is None:
        model, ctx_param, docs = arguments_model(fn, name, ToolContext)
        return model, ctx_param, docs, closed_schema(model.model_json_schema()), None
    check = schema_checker(name, schema)
    docs = Docs(description or name, {}, ())
    return SchemaArguments, "ctx", docs, {"type": "object", **schema}, check


def _settle(
    waiting: asyncio.Future[ToolResult], late: concurrent.futures.Future[ToolResult]
) -> None:
    if waiting.cancelled():
        return
    if (exc := late.exception()) is not None:
        waiting.set_exception(exc)
    else:
        waiting.set_result(late.result())


class Outcome(NamedTuple):
    """A call's result, and for a synchronous call past its timeout, its result to come (set if
    its thread ends while the process lives; a tool's bug is its exception)."""

    result: ToolResult
    late: concurrent.futures.Future[ToolResult] | None = None


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    touches: Touches | None = None,
    timeout: float = 30.0,
    reconcile: Reconciler | None = None,
    idempotent: bool = False,
    effect: EffectReader | None = None,
    needs_network: bool = False,
    needs_deploy: bool = False,
    needs_documents: bool = False,
    replaces: str | None = None,
    render: Callable[[Any], str] | None = None,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
    fills_secrets: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    touches: Touches | None = None,
    timeout: float = 30.0,
    reconcile: Reconciler | None = None,
    idempotent: bool = False,
    effect: EffectReader | None = None,
    needs_network: bool = False,
    needs_deploy: bool = False,
    needs_documents: bool = False,
    replaces: str | None = None,
    render: Callable[[Any], str] | None = None,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
    fills_secrets: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a typed function a tool.

    Args:
        name: the name the model calls it by (default: the function's name).
        touches: what it affects: ``read`` (nothing), ``write`` (the task's own workspace),
            ``external`` (the world outside), ``deploy`` (running services). The default policy
            allows reads and asks a reviewer before external and deploy effects. Left out, it
            is ``read``, and `agent tools list` marks it undeclared.
        timeout: seconds before the call is abandoned and the model told it timed out.
        reconcile: for a tool with side effects, a function (or coroutine function) that tells
            after a crash whether a call with the given idempotency key already took effect
            (return its result) or not (return None), or raises `CannotTell`. It is given the
            call's `ToolContext` (its sandbox included). Without it, and unless `idempotent`, a
            reviewer decides.
        idempotent: the tool honours `ToolContext.idempotency_key` itself, so sending the same
            call twice has the effect of once.
        effect: reads what a call would do that its arguments do not say (the values a form
            would send), as a dict, or None. The gate judges the arguments with it beside them
            (under "effect", which policy rules can match), an approval is bound to it, and an
            approved call whose effect has changed by the time it runs is asked again.
        needs_network: the tool is of use only where the task's sandbox reaches the network
            (the browser's tools); a task without network is not offered it.
        needs_deploy: the tool is offered only to a task allowed to deploy services
            (`agent run --deploy`; the deploy tools).
        needs_documents: the tool is offered only where there are documents to search: an
            index made by `agent index`, or files given with the task that did not fit.
        replaces: the name of a registered tool (a built-in, say) this one takes the place of;
            without it, a second tool of one name is an error.
        render: turns the function's return value into the text the model reads, for a value
            that is not JSON. Without it, a return type that cannot be written as JSON is
            refused here; `bytes` are kept as an artifact and the model told so.
        needs_approval: every call waits for a reviewer, even where the policy allows it; or a
            function of the call's (validated, JSON) arguments that says whether this one does.
            It adds a question, never an allowance: a policy's denial stands.
        fills_secrets: the tool puts secrets' values in for `{{secret:NAME}}` in its arguments,
            with `ToolContext.secrets.fill`, for the host the call goes to; the model is told
            which secrets there are (their names and hosts, never a value) in its description.
    """

    def wrap(func: Callable[..., Any]) -> Tool:
        return Tool(
            func,
            name=name or func.__name__,
            touches=touches or "read",
            touches_declared=touches is not None,
            timeout=timeout,
            reconcile=reconcile,
            idempotent=idempotent,
            effect=effect,
            needs_network=needs_network,
            needs_deploy=needs_deploy,
            needs_documents=needs_documents,
            replaces=replaces,
            render=render,
            needs_approval=needs_approval,
            fills_secrets=fills_secrets,
        )

    return wrap(fn) if fn is not None else wrap
