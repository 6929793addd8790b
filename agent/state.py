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
from typing import TYPE_CHECKING, Any, NamedTuple, assert_never

from pydantic import BaseModel

from agent.backends.base import Message, ModelResponse, ToolCall, Usage
from agent.events import (
    STATUS_AFTER,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalGiven,
    ApprovalRequested,
    CallRejected,
    EgressDecided,
    Event,
    GateDecided,
    InstructionAdded,
    IntentRecorded,
    LateResult,
    Limits,
    LimitsRaised,
    ModelResponded,
    OutcomeUnknown,
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
    ToolsOffered,
)
from base.images import Image

if TYPE_CHECKING:
    from agent.store import Store

#: how many finished exchanges of the current step the executor is shown (bounds prompt size)
WINDOW = 12


def call_hash(tool: str, arguments: dict[str, Any]) -> str:
    """The identity of a call, which approvals are bound to: its tool (`Tool.identity`) and its
    recorded (JSON) arguments with sorted keys, so it is the same in any process that reads the
    log, whatever order a set or a dict had when it was first validated."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{tool}\n{canonical}".encode()).hexdigest()


@dataclass(slots=True)
class Call:
    """One tool call of an executor turn, and everything decided about it so far."""

    ref: str
    wire: ToolCall
    arguments: dict[str, Any] | None = None
    call_hash: str | None = None
    #: how many times the gate judged it (again when its effect changed before it ran)
    judgements: int = 0
    verdict: str | None = None
    approval: ApprovalRequested | None = None
    #: the request went unanswered and was escalated: only these reviewers may decide it now
    escalated: ApprovalEscalated | None = None
    decision: ApprovalDecided | None = None
    intent: IntentRecorded | None = None
    #: what the model is shown about this call; None while the call is unresolved
    observation: str | None = None
    is_error: bool = False
    #: a picture the result carries, for a model that sees
    image: Image | None = None
    #: the size in bytes of arguments too large to keep
    oversized: int | None = None
    #: how many times a reviewer was asked to settle this call's unknown outcome
    reconcile_requests: int = 0
    #: the run timed out waiting for this side-effecting call: it may still take effect
    timed_out: bool = False
    #: the validated arguments, kept in memory from the gate to the execution (not in the log;
    #: after a restart they are validated again from `arguments`)
    validated: BaseModel | None = None


@dataclass(slots=True)
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
                Message(
                    role="tool",
                    tool_call_id=c.wire.id,
                    content=c.observation or "",
                    images=(c.image,) if c.image is not None else (),
                )
                for c in self.calls
            ),
        )


class _Signature(NamedTuple):
    action: str
    observation: str
    error: bool


@dataclass
class TaskState:
    task_id: str
    task: str = ""
    model: str = ""
    created: TaskCreated | None = None
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
    #: how many plans there have been (the first is 1)
    plan_revision: int = 0
    replan_reason: str | None = None
    #: the replan asked for was the user's (it does not count against the limit)
    replan_by_user: bool = False
    #: planner replies that were rejected since the last plan (shown back to the planner)
    plan_attempts: list[tuple[ModelResponse, str]] = field(default_factory=list)
    pending_plan: ModelResponse | None = None
    #: what the user told the task while it was paused, oldest first (the model is shown them)
    instructions: list[str] = field(default_factory=list)

    turns: int = 0
    steps_taken: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: whether any model call had a known price (else cost_usd means "not counted")
    priced: bool = False
    seconds: float = 0.0

    pending: Turn | None = None
    window: deque[tuple[Message, ...]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    calls: dict[str, Call] = field(default_factory=dict)
    #: the stuck detector's memory: the last two observations and how long each pattern has run
    recent: deque[_Signature] = field(default_factory=lambda: deque(maxlen=2))
    recent_shown: deque[ToolCall | str] = field(default_factory=lambda: deque(maxlen=2))
    repeat_run: int = 0
    #: the same look at something still changing, in a row (waiting, not repeating)
    poll_run: int = 0
    error_run: int = 0
    alternation_run: int = 0
    #: observations so far (the runner checks for being stuck when this moves)
    observations: int = 0
    #: the executor's prompt header, cached with the (plan, step, progress) it was built for
    header: tuple[tuple[int, int, int, int], tuple[Message, Message]] | None = None
    used_approvals: set[str] = field(default_factory=set)
    #: the digest of the tools the model was last told of (see `ToolsOffered`)
    offered_digest: str | None = None

    @classmethod
    def from_store(cls, store: Store, task_id: str) -> TaskState:
        """Fold a task's whole log. Raises `TaskNotFound`."""
        return cls.fold(task_id, [(e.seq, e.event) for e in store.events(task_id)])

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

    def apply(self, event: Event, seq: int) -> None:
        """Fold one event into the state."""
        self.last_seq = seq
        self.status = STATUS_AFTER.get(event.kind, self.status)
        # Exhaustive: an event kind with no case here fails the type check (assert_never). The
        # kinds every tool call records come first: the fold runs for each event recorded.
        match event:
            case GateDecided():
                self._on_gate_decided(event)
            case ToolResulted():
                self._on_tool_result(event)
            case ModelResponded():
                self._on_model_responded(event)
            case IntentRecorded():
                self._on_intent(event)
            case CallRejected():
                self._on_call_rejected(event)
            case ReplyRejected():
                self._on_reply_rejected(event)
            case StepStarted():
                self._on_step_started(event)
            case StepFinished():
                self._on_step_finished(event)
            case TaskCreated():
                self._on_task_created(event)
            case PlanProposed():
                self._on_plan_proposed(event)
            case ApprovalRequested() | ApprovalEscalated():
                self._on_approval_requested(event)
            case ApprovalDecided():
                self._on_approval_decided(event)
            case OutcomeUnknown():
                self._on_outcome_unknown(event)
            case LateResult():
                self._on_late_result(event)
            case ToolsOffered() | InstructionAdded():
                self._on_told(event)
            case ReplanRequested():
                self._on_replan_requested(event)
            case TaskPaused():
                self._on_task_paused(event)
            case LimitsRaised():
                self._on_limits_raised(event)
            case TaskResumed():
                self._on_task_resumed(event)
            case TaskFinished():
                self._on_task_finished(event)
            case TaskFailed() | TaskStuck():
                self._on_task_ended(event)
            case EgressDecided() | ApprovalGiven():
                pass  # a proxy's decision; one approval of several (`decide` counts them)
            case _:
                assert_never(event)

    def _on_task_created(self, event: TaskCreated) -> None:
        self.task, self.model, self.limits = event.task, event.model, event.limits
        self.created = event

    def _on_told(self, event: ToolsOffered | InstructionAdded) -> None:
        """What the model is told changed: the tools it is offered, or a user's instruction."""
        if isinstance(event, ToolsOffered):
            self.offered_digest = event.digest
        else:
            self.instructions.append(event.text)

    def _on_plan_proposed(self, event: PlanProposed) -> None:
        self.plan, self.step = event.steps, 0
        self.plan_revision += 1
        if event.replan_reason is not None and not self.replan_by_user:
            self.replans += 1
        self.replan_by_user = False
        self.replan_reason, self.pending_plan = None, None
        self.plan_attempts.clear()
        self._new_step()

    def _on_step_started(self, event: StepStarted) -> None:
        self.step = event.index
        self._new_step()

    def _on_model_responded(self, event: ModelResponded) -> None:
        self.turns += 1
        usage = event.response.usage
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        if event.cost_usd is not None:
            self.cost_usd += event.cost_usd
            self.priced = True
        self.seconds += event.seconds
        if event.purpose == "plan":
            self.pending_plan = event.response
            return
        self.steps_taken += 1
        calls = [
            Call(f"{self.turns}.{i}", wire, oversized=event.oversized.get(i))
            for i, wire in enumerate(event.response.tool_calls)
        ]
        self.pending = Turn(self.turns, event.response, calls)
        self.calls = {c.ref: c for c in calls}

    def _on_reply_rejected(self, event: ReplyRejected) -> None:
        if self.pending_plan is not None:
            self.plan_attempts.append((self.pending_plan, event.error))
            self.pending_plan = None
        elif self.pending is not None:
            self.pending.rejected = event.error
            text = self.pending.response.text
            self._remember("reply:" + text, event.error, True, text)
            self._close_turn()

    def _on_call_rejected(self, event: CallRejected) -> None:
        self._observe(event.ref, f"Error: {event.error}", error=True)

    def _on_gate_decided(self, event: GateDecided) -> None:
        call = self.calls[event.ref]
        call.arguments, call.call_hash = event.arguments, event.call_hash
        call.verdict = event.verdict
        call.judgements += 1
        if event.verdict == "deny":
            self._observe(event.ref, f"Error: denied by policy: {event.reason}", error=True)

    def _on_approval_requested(self, event: ApprovalRequested | ApprovalEscalated) -> None:
        if isinstance(event, ApprovalEscalated):  # it waits on, for the reviewers it names
            waiting = self.awaiting
            asked = waiting.approval if waiting is not None else None
            if waiting is not None and asked is not None and asked.approval_id == event.approval_id:
                waiting.escalated = event
            return
        call = self.calls[event.ref]
        call.approval, call.decision, call.escalated = event, None, None
        if event.cause == "reconcile":
            call.reconcile_requests += 1

    def _on_approval_decided(self, event: ApprovalDecided) -> None:
        decided = self.awaiting
        if decided is None or decided.approval is None:
            return
        if decided.approval.approval_id != event.approval_id or (
            event.call_hash and event.call_hash != decided.approval.call_hash
        ):
            # A decision about another request (stale): it decides nothing, and the task waits
            # for one on the request pending.
            self.status = "awaiting_approval"
            return
        decided.decision = event
        if not event.approved:
            why = f": {event.reason}" if event.reason else ""
            if event.expired:
                text = f"Error: not run: no reviewer decided in time{why}"
            elif decided.approval.cause == "reconcile":
                text = "Error: not sent again: its outcome is unknown and a reviewer declined to "
                text += f"repeat it{why}"
            else:
                text = f"Error: a reviewer declined this call{why}"
            self._observe(decided.ref, text, error=True)

    def _on_intent(self, event: IntentRecorded) -> None:
        self.calls[event.ref].intent = event
        if event.approval_id is not None:
            self.used_approvals.add(event.approval_id)

    def _on_tool_result(self, event: ToolResulted) -> None:
        self.seconds += event.seconds
        self.turns += event.model_turns
        self._spent(event.model_usage, event.model_cost_usd)
        text = event.content if event.ok else f"Error: {event.content}"
        call = self.calls.get(event.ref)
        if call is not None and call.decision is not None and call.decision.edit_of is not None:
            text = f"(A reviewer changed this call before it ran: {call.decision.reason}.)\n{text}"
        if call is not None:
            call.image = event.image
        self._observe(event.ref, text, error=not event.ok, changing=event.changing)

    def _spent(self, usage: Usage | None, cost_usd: float | None) -> None:
        """Count what a tool's own model calls took."""
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
        if cost_usd is not None:
            self.cost_usd += cost_usd
            self.priced = True

    def _on_outcome_unknown(self, event: OutcomeUnknown) -> None:
        self.calls[event.ref].timed_out = True
        self.seconds += event.seconds

    def _on_late_result(self, event: LateResult) -> None:
        text = event.content if event.ok else f"Error: {event.content}"
        call = self.calls.get(event.ref)
        if call is not None and call.observation is None:
            # Still unsettled (its outcome was unknown): this is its outcome.
            if call.approval is not None and call.decision is None:
                self.status = "running"  # the reviewer's question is moot
            self._observe(event.ref, text, error=not event.ok)
            return
        said = "finished after all" if event.ok else "ended after all, with an error"
        note = (
            f"Note: your earlier call {event.ref} ({event.tool}) was given up on at its timeout, "
            f"but it {said}. What it did:\n{text}"
        )
        self.window.append((Message(role="user", content=note),))

    def _on_step_finished(self, event: StepFinished) -> None:
        self.completed.append((self.plan[event.index], event.summary))
        self.step = event.index + 1
        self._new_step()

    def _on_replan_requested(self, event: ReplanRequested) -> None:
        self.replan_reason = event.reason
        self.replan_by_user = event.by == "user"
        self.pending = None

    def _on_task_paused(self, event: TaskPaused) -> None:
        self.pause = event
        self._spent(event.model_usage, event.model_cost_usd)
        self.seconds += event.seconds or 0.0

    def _on_limits_raised(self, event: LimitsRaised) -> None:
        self.limits = event.limits

    def _on_task_resumed(self, event: TaskResumed) -> None:
        self.pause, self.end_reason = None, None
        self._forget_runs()

    def _on_task_finished(self, event: TaskFinished) -> None:
        self.answer = event.answer

    def _on_task_ended(self, event: TaskFailed | TaskStuck) -> None:
        self.end_reason = event.reason

    @property
    def usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)

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
        self._forget_runs()  # repeating yourself is about one step; a new step starts afresh

    def _forget_runs(self) -> None:
        self.recent.clear()
        self.recent_shown.clear()
        self.repeat_run = self.poll_run = self.error_run = self.alternation_run = 0

    def _observe(self, ref: str, text: str, *, error: bool, changing: bool = False) -> None:
        call = self.calls[ref]
        call.observation, call.is_error = text, error
        # The call hash identifies a validated call; a rejected one is known by its raw text.
        action = call.call_hash or call.wire.arguments
        self._remember(f"{call.wire.name}:{action}", text, error, call.wire, changing=changing)
        if self.pending is not None and self.pending.resolved:
            self._close_turn()

    def _remember(
        self,
        action: str,
        observation: str,
        error: bool,
        shown: ToolCall | str,
        *,
        changing: bool = False,
    ) -> None:
        """Update the stuck detector's runs in constant time. `shown` is what to tell people
        (the call, or a reply's text), formatted only if the task is found stuck. A repeat whose
        tool saw what it looked at still `changing` is waiting: it counts toward `stuck_polls`,
        not `stuck_repeats`."""
        self.recent_shown.append(shown)
        sig = _Signature(action, observation, error)
        prev = self.recent[-1] if self.recent else None
        before = self.recent[0] if len(self.recent) == 2 else None
        waiting = sig == prev and changing
        self.poll_run = self.poll_run + 1 if waiting else 1
        self.repeat_run = 1 if waiting else self.repeat_run + 1 if sig == prev else 1
        same_error = prev is not None and prev.error and prev.observation == observation
        self.error_run = (self.error_run + 1 if same_error else 1) if error else 0
        if prev is None or sig == prev:
            self.alternation_run = 1
        elif sig == before and self.alternation_run >= 2:
            self.alternation_run += 1
        else:
            self.alternation_run = 2
        self.recent.append(sig)
        self.observations += 1

    def _close_turn(self) -> None:
        assert self.pending is not None
        self.window.append(self.pending.messages())
        self.pending = None

    def stuck_reason(self) -> str | None:
        """Why the task looks stuck, or None. Checked after every observation."""
        lim = self.limits
        if not self.recent:
            return None
        last = self.recent[-1]
        if self.error_run >= lim.stuck_errors:
            return f"the same error {self.error_run} times in a row: {_short(last.observation)}"
        if self.repeat_run >= lim.stuck_repeats:
            return (
                f"the same action and observation {self.repeat_run} times in a row: "
                f"{_shown(self.recent_shown[-1])}"
            )
        if self.poll_run >= lim.stuck_polls:
            return (
                f"waited {self.poll_run} times in a row on something still changing, and it did "
                f"not settle: {_shown(self.recent_shown[-1])}"
            )
        if self.alternation_run >= lim.stuck_alternation:
            return (
                f"alternating between two actions for {self.alternation_run} steps: "
                f"{_shown(self.recent_shown[0])} / {_shown(self.recent_shown[-1])}"
            )
        return None

    def budget_exhausted(self) -> str | None:
        """Which limit is used up, or None. Checked before every model call."""
        lim = self.limits
        if self.steps_taken >= lim.max_steps:
            return f"steps: {self.steps_taken} of {lim.max_steps} used"
        tokens = self.input_tokens + self.output_tokens
        if lim.max_tokens is not None and tokens >= lim.max_tokens:
            return f"tokens: {tokens} of {lim.max_tokens} used"
        if lim.max_seconds is not None and self.seconds >= lim.max_seconds:
            return f"time: {self.seconds:.1f} s of {lim.max_seconds:g} s used"
        if lim.max_cost_usd is not None and self.cost_usd >= lim.max_cost_usd:
            return f"cost: ${self.cost_usd:.4f} of ${lim.max_cost_usd:.4f} used"
        return None


def _shown(action: ToolCall | str) -> str:
    if isinstance(action, str):
        return f"a reply with no tool call: {_short(action)}"
    return f"{action.name}({_short(action.arguments, 80)})"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
