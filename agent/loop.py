"""What a step works with (`Loop`: the recorder, the effects, the tools, the gate) and the
moves every step makes through it: ask the model, run a tool, read a call's effect, record a
result, reject a call, stop when the budget is spent. Each asks `Loop.effects` and records what
came back; none touches the world itself."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.backends.base import ModelRequest, Usage
from agent.context import observation_chars
from agent.effects import Effects, Stopped
from agent.events import (
    CallRejected,
    Escalation,
    Event,
    LateResult,
    ModelResponded,
    OutcomeUnknown,
    ReplyRejected,
    TaskPaused,
    ToolResulted,
)
from agent.recorder import Recorder
from agent.state import Call, TaskState
from base.errors import ErrorCode
from base.toolspec import ToolSpec
from policies import Gate
from tools.asking import Spent
from tools.registry import Registry
from tools.tool import Tool, ToolResult

#: how much of oversized arguments is kept in the log
OVERSIZED_KEPT = 1000


@dataclass
class Loop:
    """What the steps work with: the task's recorder (and through it its state), the effects,
    the tools offered to the model and the gate (the policy) that judges their calls."""

    record: Recorder
    effects: Effects
    registry: Registry
    gate: Gate
    tool_specs: tuple[ToolSpec, ...]
    context_window: int | None
    max_argument_bytes: int = 64 * 1024
    #: how long a request for approval waits for a reviewer before it is denied (None: ever)
    approval_expiry: float | None = None
    #: what becomes of a request no reviewer decided in time, when not a denial
    approval_escalation: Escalation | None = None
    #: the task's state, the recorder's (an attribute, not a property: steps read it often)
    state: TaskState = field(init=False)
    #: the names in `tool_specs`, looked up once per call
    offered: frozenset[str] = field(init=False)
    #: calls given up on at their timeout whose threads run on: (tool, result to come) by ref;
    #: the runner's, so that it outlives one run of the task (a reviewer's decision, a resume)
    late: dict[str, tuple[str, Future[ToolResult]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.record.state
        self.offered = frozenset(spec.name for spec in self.tool_specs)


class Step(ABC):
    @abstractmethod
    async def run(self, loop: Loop) -> None:
        """Do this step's work and record it."""


def trim_oversized(event: ModelResponded, limit: int) -> ModelResponded:
    """Cut arguments beyond `limit` bytes out of the record; such calls are rejected, not run."""
    calls = event.response.tool_calls
    for call in calls:
        if len(call.arguments) * 4 > limit:
            break  # a character is at most 4 bytes in UTF-8: only then is there need to encode
    else:
        return event
    sizes = {i: len(c.arguments.encode()) for i, c in enumerate(calls)}
    oversized = {i: n for i, n in sizes.items() if n > limit}
    if not oversized:
        return event
    calls = tuple(
        c.model_copy(update={"arguments": c.arguments[:OVERSIZED_KEPT]}) if i in oversized else c
        for i, c in enumerate(event.response.tool_calls)
    )
    response = event.response.model_copy(update={"tool_calls": calls})
    return event.model_copy(update={"response": response, "oversized": oversized})


def record_result(loop: Loop, tool: Tool, result: ToolResulted, *, durable: bool) -> None:
    """Record what a call did. A side effect that timed out may still take effect: it is settled
    like a crash (reconciled, or decided by a reviewer), never reported as a failure to retry.
    An output too long to show the model whole is kept as an artifact (see `agent.context`)."""
    result = loop.effects.keep_whole(result, observation_chars(loop.context_window))
    if tool.has_side_effects and result.error_code == ErrorCode.TIMEOUT:
        loop.record.commit(
            [
                OutcomeUnknown(
                    ref=result.ref,
                    reason=result.content,
                    seconds=result.seconds,
                    printed=result.printed,
                )
            ]
        )
    elif durable or tool.has_side_effects:
        loop.record.commit([result])
    else:
        loop.record.stage([result])  # a read-only result is made durable with the next commit


def stop_if_over_budget(loop: Loop) -> bool:
    reason = loop.state.budget_exhausted()
    if reason is not None:
        loop.record.commit([TaskPaused(reason="budget_exhausted", detail=reason)])
    return reason is not None


def reject(loop: Loop, call: Call, error: str) -> None:
    loop.record.stage([CallRejected(ref=call.ref, tool=call.wire.name, error=error)])


def settle_late(loop: Loop, ref: str | None = None) -> None:
    """Record the results of calls given up on at their timeout that have since finished (or
    only that of `ref`)."""
    for late_ref, (tool, result) in list(loop.late.items()):
        if not result.done() or ref not in (None, late_ref):
            continue
        del loop.late[late_ref]
        if (exc := result.exception()) is not None:
            found = ToolResult(False, f"the tool raised {type(exc).__name__}: {exc}")
        else:
            found = result.result()
        loop.record.stage(
            [
                LateResult(
                    ref=late_ref,
                    tool=tool,
                    ok=found.ok,
                    content=found.content,
                    error_code=found.error_code,
                    printed=found.printed or None,
                )
            ]
        )


async def ask(loop: Loop, purpose: Literal["plan", "act"], request: ModelRequest) -> None:
    """Call the model and record its answer (or pause the task if the model failed)."""
    loop.record.flush()
    answer = await loop.effects.ask_model(purpose, request)
    if not isinstance(answer, ModelResponded):  # the model failed: the task pauses
        loop.record.commit([answer])
        return
    events: list[Event] = [trim_oversized(answer, loop.max_argument_bytes)]
    if purpose == "act" and not answer.response.tool_calls:
        names = ", ".join(t.name for t in loop.tool_specs)
        events.append(
            ReplyRejected(
                error=f"your reply had no tool call. Call exactly one tool; the tools are: {names}"
            )
        )
    loop.record.commit(events)


async def read_effect(
    loop: Loop, tool: Tool, call: Call, arguments: dict[str, Any]
) -> dict[str, Any] | None:
    """What the tool's effect reader says the call would do ({} for nothing beyond its
    arguments). None if the reader could not tell (the task is paused) or found the call cannot
    be what it asks (it is rejected, and the model told why)."""
    effect = await loop.effects.read_effect(tool, call, arguments)
    if isinstance(effect, TaskPaused):
        loop.record.commit([effect])
        return None
    if isinstance(effect, ToolResult):
        reject(loop, call, effect.content)
        return None
    return effect


async def run_tool(
    loop: Loop, tool: Tool, call: Call, key: str, recovery: Literal["rerun"] | None = None
) -> ToolResulted | None:
    """Run a tool and return its result, to be recorded. A bug in the tool (an exception other
    than `ToolError`) pauses the task instead, leaving the call unresolved."""
    outcome = await loop.effects.run_tool(tool, call, key)
    if isinstance(outcome, Stopped):
        events: list[Event] = []
        paused = outcome.paused
        if outcome.not_run is not None:
            # Known not to have run: say so, so that a resume asks the model again rather than
            # a reviewer whether it took effect.
            events.append(resulted(call, outcome.not_run, outcome.seconds, recovery))
        elif outcome.seconds:  # no result to count the call's time: the pause counts it
            paused = paused.model_copy(update={"seconds": outcome.seconds})
        loop.record.commit([*events, paused])
        return None
    done = resulted(call, outcome.result, outcome.seconds, recovery)
    if outcome.late is not None:
        loop.late[call.ref] = (tool.name, outcome.late)
    if outcome.interrupted:
        # Stopped (Ctrl-C) while the call ran in a thread: it was let finish, so its outcome is
        # known. Record it, then stop as asked.
        record_result(loop, tool, done, durable=True)
        raise asyncio.CancelledError
    return done


def resulted(
    call: Call, result: ToolResult, seconds: float, recovery: Literal["rerun"] | None
) -> ToolResulted:
    return ToolResulted(
        ref=call.ref,
        ok=result.ok,
        content=result.content,
        error_code=result.error_code,
        seconds=seconds,
        recovery=recovery,
        printed=result.printed or None,
        image=result.image,
        changing=result.changing,
        **spent_fields(result.spent),
    )


def spent_fields(spent: Spent | None) -> dict[str, Any]:
    """The `ToolResulted` fields that say what a tool's own model calls took."""
    if spent is None or not (spent.turns or spent.calls):
        return {}
    return {
        "model_turns": spent.turns,
        "model_usage": Usage(input_tokens=spent.input_tokens, output_tokens=spent.output_tokens),
        "model_cost_usd": spent.cost_usd,
    }
