"""A task's state: a fold of its events.

`TaskState.apply` takes one event at a time, so the runner keeps the state current as it appends
(constant work per event) and a restarted runner rebuilds it by folding the log once. Everything
the loop decides, it decides from this state, never from what happened to be on `self`.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.backends.base import Message, ModelResponse, ToolCall, Usage
from agent.events import (
    STATUS_AFTER,
    ApprovalDecided,
    ApprovalRequested,
    CallRejected,
    Event,
    GateDecided,
    IntentRecorded,
    Limits,
    LimitsRaised,
    ModelResponded,
    PlanProposed,
    ReplanRequested,
    ReplyRejected,
    Status,
    StepFinished,
    StepStarted,
    TaskCreated,
    TaskFailed,
    TaskFinished,
    TaskPaused,
    TaskResumed,
    TaskStuck,
    ToolResulted,
)

#: how many finished exchanges of the current step the executor is shown (bounds prompt size)
WINDOW = 12


def call_hash(tool: str, arguments: dict[str, Any]) -> str:
    """The identity of a call: its tool and canonical arguments. Approvals are bound to it."""
    canonical = json.dumps(
        {"tool": tool, "arguments": arguments},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Call:
    """One tool call of an executor turn, and everything decided about it so far."""

    ref: str
    wire: ToolCall
    arguments: dict[str, Any] | None = None
    call_hash: str | None = None
    verdict: str | None = None
    approval: ApprovalRequested | None = None
    decision: ApprovalDecided | None = None
    intent: IntentRecorded | None = None
    #: what the model is shown about this call; None while the call is unresolved
    observation: str | None = None
    is_error: bool = False
    #: the size in bytes of arguments too large to keep
    oversized: int | None = None


@dataclass
class Turn:
    """One executor response and its calls."""

    number: int
    response: ModelResponse
    calls: list[Call]
    rejected: str | None = None

    @property
    def resolved(self) -> bool:
        return self.rejected is not None or all(c.observation is not None for c in self.calls)

    def messages(self) -> tuple[Message, ...]:
        assistant = Message(
            role="assistant",
            content=self.response.text,
            tool_calls=tuple(c.wire for c in self.calls),
        )
        if self.rejected is not None:
            return (assistant, Message(role="user", content=f"Error: {self.rejected}"))
        return (
            assistant,
            *(
                Message(role="tool", tool_call_id=c.wire.id, content=c.observation or "")
                for c in self.calls
            ),
        )


@dataclass(frozen=True)
class _Signature:
    action: str
    observation: str
    error: bool


@dataclass
class TaskState:
    task_id: str
    task: str = ""
    model: str = ""
    limits: Limits = field(default_factory=Limits)
    status: Status = "running"
    last_seq: int = 0
    pause: TaskPaused | None = None
    answer: str | None = None
    end_reason: str | None = None

    plan: tuple[str, ...] = ()
    step: int = 0
    completed: list[tuple[str, str]] = field(default_factory=list)
    replans: int = 0
    replan_reason: str | None = None
    #: planner replies that were rejected since the last plan (shown back to the planner)
    plan_attempts: list[tuple[ModelResponse, str]] = field(default_factory=list)
    pending_plan: ModelResponse | None = None

    turns: int = 0
    steps_taken: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    seconds: float = 0.0

    pending: Turn | None = None
    window: deque[tuple[Message, ...]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    calls: dict[str, Call] = field(default_factory=dict)
    history: deque[_Signature] = field(default_factory=lambda: deque(maxlen=16))
    used_approvals: set[str] = field(default_factory=set)

    @classmethod
    def fold(cls, task_id: str, events: list[tuple[int, Event]]) -> TaskState:
        state = cls(task_id)
        for seq, event in events:
            state.apply(event, seq)
        return state

    @property
    def current_step(self) -> str | None:
        return self.plan[self.step] if self.step < len(self.plan) else None

    @property
    def needs_plan(self) -> bool:
        return not self.plan or self.replan_reason is not None

    def apply(self, event: Event, seq: int) -> None:  # noqa: PLR0915 - one branch per kind
        """Fold one event into the state."""
        self.last_seq = seq
        self.status = STATUS_AFTER.get(event.kind, self.status)
        match event:
            case TaskCreated():
                self.task, self.model, self.limits = event.task, event.model, event.limits
            case PlanProposed():
                self.plan, self.step = event.steps, 0
                if event.replan_reason is not None:
                    self.replans += 1
                self.replan_reason, self.pending_plan = None, None
                self.plan_attempts.clear()
                self._new_step()
            case StepStarted():
                self.step = event.index
                self._new_step()
            case ModelResponded():
                self.turns += 1
                self.usage = self.usage + event.response.usage
                self.cost_usd += event.cost_usd or 0.0
                self.seconds += event.seconds
                if event.purpose == "plan":
                    self.pending_plan = event.response
                else:
                    self.steps_taken += 1
                    calls = [
                        Call(f"{self.turns}.{i}", wire, oversized=event.oversized.get(i))
                        for i, wire in enumerate(event.response.tool_calls)
                    ]
                    self.pending = Turn(self.turns, event.response, calls)
                    self.calls = {c.ref: c for c in calls}
            case ReplyRejected():
                if self.pending_plan is not None:
                    self.plan_attempts.append((self.pending_plan, event.error))
                    self.pending_plan = None
                elif self.pending is not None:
                    self.pending.rejected = event.error
                    self._remember("reply:" + self.pending.response.text, event.error, True)
                    self._close_turn()
            case CallRejected():
                self._observe(event.ref, f"Error: {event.error}", error=True)
            case GateDecided():
                call = self.calls[event.ref]
                call.arguments, call.call_hash = event.arguments, event.call_hash
                call.verdict = event.verdict
                if event.verdict == "deny":
                    self._observe(event.ref, f"Error: denied by policy: {event.reason}", error=True)
            case ApprovalRequested():
                self.calls[event.ref].approval = event
                self.calls[event.ref].decision = None
            case ApprovalDecided():
                decided = self.awaiting
                if decided is not None:
                    decided.decision = event
                    if not event.approved:
                        why = f": {event.reason}" if event.reason else ""
                        self._observe(
                            decided.ref, f"Error: a reviewer declined this call{why}", error=True
                        )
            case IntentRecorded():
                self.calls[event.ref].intent = event
                if event.approval_id is not None:
                    self.used_approvals.add(event.approval_id)
            case ToolResulted():
                self.seconds += event.seconds
                text = event.content if event.ok else f"Error: {event.content}"
                self._observe(event.ref, text, error=not event.ok)
            case StepFinished():
                self.completed.append((self.plan[event.index], event.summary))
                self.step = event.index + 1
                self._new_step()
            case ReplanRequested():
                self.replan_reason = event.reason
                self.pending = None
            case TaskPaused():
                self.pause = event
            case LimitsRaised():
                self.limits = event.limits
            case TaskResumed():
                self.pause, self.end_reason = None, None
                self.history.clear()
            case TaskFinished():
                self.answer = event.answer
            case TaskFailed() | TaskStuck():
                self.end_reason = event.reason

    @property
    def awaiting(self) -> Call | None:
        """The call whose approval was requested and not yet decided."""
        if self.pending is None:
            return None
        for call in self.pending.calls:
            if call.approval is not None and call.decision is None:
                return call
        return None

    def _new_step(self) -> None:
        self.window.clear()
        self.pending = None

    def _observe(self, ref: str, text: str, *, error: bool) -> None:
        call = self.calls[ref]
        call.observation, call.is_error = text, error
        args = (
            json.dumps(call.arguments, sort_keys=True)
            if call.arguments is not None
            else call.wire.arguments
        )
        self._remember(f"{call.wire.name}:{args}", text, error)
        if self.pending is not None and self.pending.resolved:
            self._close_turn()

    def _remember(self, action: str, observation: str, error: bool) -> None:
        self.history.append(_Signature(action, observation, error))

    def _close_turn(self) -> None:
        assert self.pending is not None
        self.window.append(self.pending.messages())
        self.pending = None

    def stuck_reason(self) -> str | None:
        """Why the task looks stuck, or None. Checked after every observation."""
        h, lim = list(self.history), self.limits
        n = lim.stuck_errors
        last = h[-n:]
        if len(h) >= n and all(s.error for s in last) and len({s.observation for s in last}) == 1:
            return f"the same error {n} times in a row: {_short(h[-1].observation)}"
        n = lim.stuck_repeats
        if len(h) >= n and len(set(h[-n:])) == 1:
            return f"the same action and observation {n} times in a row: {_short(h[-1].action)}"
        n = lim.stuck_alternation
        if len(h) >= n:
            a, b = h[-2], h[-1]
            if a != b and all(s == (a if (n - i) % 2 == 0 else b) for i, s in enumerate(h[-n:])):
                return (
                    f"alternating between two actions for {n} steps: "
                    f"{_short(a.action)} / {_short(b.action)}"
                )
        return None

    def budget_exhausted(self) -> str | None:
        """Which limit is used up, or None. Checked before every model call."""
        lim = self.limits
        if self.steps_taken >= lim.max_steps:
            return f"steps: {self.steps_taken} of {lim.max_steps} used"
        if lim.max_tokens is not None and self.usage.total >= lim.max_tokens:
            return f"tokens: {self.usage.total} of {lim.max_tokens} used"
        if lim.max_seconds is not None and self.seconds >= lim.max_seconds:
            return f"time: {self.seconds:.1f} s of {lim.max_seconds:g} s used"
        if lim.max_cost_usd is not None and self.cost_usd >= lim.max_cost_usd:
            return f"cost: ${self.cost_usd:.4f} of ${lim.max_cost_usd:.4f} used"
        return None


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
