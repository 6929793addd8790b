"""The typed events a task's log is made of.

Every fact about a task is one of these, appended to the store in order. A task's state is a fold
of its events (`agent.state.TaskState.apply`); the terminal, `agent show` and tests read the same
stream. Events are a discriminated union on `kind`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agent.backends.base import ModelResponse, Purpose, Usage
from base.images import Image
from base.toolspec import ToolSpec
from sandbox.limits import SandboxLimits


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Event):
    """What one task may spend. `None` means no limit. A step is one executor model turn."""

    max_steps: int = Field(50, ge=1)
    max_tokens: int | None = Field(500_000, ge=1)
    max_seconds: float | None = Field(1800.0, gt=0)
    max_cost_usd: float | None = Field(None, gt=0)
    max_replans: int = Field(3, ge=0)
    #: stuck detector: identical action+observation this many times in a row
    stuck_repeats: int = Field(4, ge=2)
    #: stuck detector: the identical error this many times in a row
    stuck_errors: int = Field(3, ge=2)
    #: stuck detector: two actions alternating A,B,A,B,... over this many steps
    stuck_alternation: int = Field(6, ge=4)
    #: stuck detector: the same look at something still changing (a page loading) this many
    #: times in a row; until then it counts as waiting, not as repeating
    stuck_polls: int = Field(30, ge=2)


class Attachment(BaseModel):
    """A file given with the task (`agent run --file`): the model reads it as untrusted data."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: a plain file name: it names the task's artifact that holds the file
    name: str = Field(pattern=r"^[^/\\.][^/\\]*$", max_length=200)
    #: what the model is given: the file's text (a PDF's with its pages marked); for one
    #: indexed instead of shown, the passages most relevant to the task
    content: str
    #: "text", "html", "pdf", "image", "audio" or "video" (what the text was read from)
    kind: str = "text"
    #: a PDF's pages
    pages: int | None = None
    #: too long to show whole: indexed for `search_documents` instead (its words counted)
    indexed: bool = False
    words: int | None = None
    #: an image given with the task, or a video's frames: pictures for a model that sees
    images: tuple[Image, ...] = ()


class TaskCreated(_Event):
    """A new task, with what it runs with: every later run of it (a resume, an approval from
    another process) uses the same model, tools and policy unless told otherwise."""

    kind: Literal["task_created"] = "task_created"
    task: str
    model: str
    limits: Limits
    #: the planner's model, where it is not `model`
    planner: str | None = None
    #: where its tools came from beyond the installed ones: modules, or absolute .py paths
    tools: tuple[str, ...] = ()
    #: the policy file's absolute path; None for the packaged default policy
    policy: str | None = None
    #: the sandbox's limits where the task asked for its own; None for the configured ones
    sandbox: SandboxLimits | None = None
    #: files given with the task, kept here so the task never depends on them staying put
    files: tuple[Attachment, ...] = ()
    #: False: no planner call; the task is its own one step (for small models and small tasks)
    plan: bool = True
    #: True: the task may deploy services (it is offered the deploy tools)
    deploy: bool = False
    #: True: each plan (and replan) waits for the user to accept, edit or replace it
    review_plan: bool = False
    #: what runs it: this process ("embedded") or workflows on a Temporal service
    engine: Literal["embedded", "temporal"] = "embedded"


class PlanProposed(_Event):
    kind: Literal["plan_proposed"] = "plan_proposed"
    steps: tuple[str, ...]
    #: why the plan was made again; None for the first plan
    replan_reason: str | None = None
    #: who wrote it: the planner, or the user (who edited the planner's)
    by: Literal["model", "user"] = "model"


class InstructionAdded(_Event):
    """Something the user told the task while it was paused: the model is shown it from its next
    request on, beside the task."""

    kind: Literal["instruction_added"] = "instruction_added"
    text: str


class StepStarted(_Event):
    kind: Literal["step_started"] = "step_started"
    index: int
    title: str


class ModelResponded(_Event):
    """A model's answer, recorded before anything acts on it (so a restart never asks again)."""

    kind: Literal["model_responded"] = "model_responded"
    purpose: Purpose
    response: ModelResponse
    seconds: float
    cost_usd: float | None = None
    #: calls whose arguments were too large to keep, by index: the size the model sent, in bytes
    #: (the recorded arguments are cut short; such a call is rejected, never run)
    oversized: dict[int, int] = Field(default_factory=dict)


class ReplyRejected(_Event):
    """The model's reply had no usable tool call (prose, an empty reply, a malformed plan)."""

    kind: Literal["reply_rejected"] = "reply_rejected"
    error: str


class CallRejected(_Event):
    """A tool call that never ran: unknown tool, invalid or oversized arguments, or skipped."""

    kind: Literal["call_rejected"] = "call_rejected"
    ref: str
    tool: str
    error: str


class GateDecided(_Event):
    kind: Literal["gate_decided"] = "gate_decided"
    ref: str
    tool: str
    arguments: dict[str, Any]
    call_hash: str
    verdict: Literal["allow", "deny", "ask"]
    reason: str
    rule: str | None = None


#: how many characters of a call's hash a reviewer is shown, and must give back
SHORT_HASH = 8


class ApprovalRequested(_Event):
    kind: Literal["approval_requested"] = "approval_requested"
    approval_id: str
    ref: str
    call_hash: str
    reason: str
    preview: str
    #: "gate" for a policy's ask; "reconcile" when a crash left the call's outcome unknown
    cause: Literal["gate", "reconcile"] = "gate"
    #: the tool called, the rule that asked (file:line), and what the tool touches, as the
    #: reviewer's inbox lists them ("" in logs from before they were recorded)
    tool: str = ""
    rule: str | None = None
    risk: str = ""
    #: seconds after it was asked that it expires (denied, the task told); None: never
    expire_after: float | None = None
    #: how many reviewers must approve it, each once (the rule's `approvers`)
    approvers: int = 1
    #: when it expires: escalated to these reviewers (names), who alone may decide it then,
    #: instead of denied ([approvals] escalate_to); empty: denied
    escalate_to: list[str] = Field(default_factory=list)
    #: seconds an escalated request then waits before it is denied (None: for ever)
    escalate_after: float | None = None

    @property
    def short_hash(self) -> str:
        """The start of the call's hash that a reviewer is shown, and names in a decision."""
        return self.call_hash[:SHORT_HASH]


class ApprovalDecided(_Event):
    kind: Literal["approval_decided"] = "approval_decided"
    approval_id: str
    #: the hash of the call decided, as the reviewer was shown it ("" in logs from before it was
    #: recorded)
    call_hash: str = ""
    approved: bool
    reason: str = ""
    reviewer: str = ""
    #: no reviewer decided in time: the request expired, and this denial says so
    expired: bool = False
    #: where the decision came from: "cli", "terminal" (the inline prompt), "http ADDRESS"
    origin: str = ""
    #: approved with these arguments instead of the model's (the reviewer's edit, whole): the
    #: edited call is checked and judged again before it runs
    edited: dict[str, Any] | None = None
    #: "always allow calls like this": the rule the reviewer saved into the policy file with
    #: this approval, as it was written there
    always: str | None = None
    #: this approval is the reviewer's edit of the request named (recorded when the edited
    #: call was judged again): the model is told its arguments were changed
    edit_of: str | None = None


class ApprovalGiven(_Event):
    """One reviewer's approval of a request that needs more than one: the request still waits
    until enough reviewers have approved it (then an `ApprovalDecided` records the decision)."""

    kind: Literal["approval_given"] = "approval_given"
    approval_id: str
    call_hash: str
    reviewer: str
    origin: str = ""
    reason: str = ""
    #: read as a decision is (an approval, with no edit), by whoever shows it
    approved: Literal[True] = True
    edited: None = None


@dataclass(frozen=True)
class Escalation:
    """What becomes of a request no reviewer decides in time, when not a denial: only the
    reviewers named (`to`) may decide it from then, for `after` seconds more (None: for ever),
    then it is denied."""

    to: tuple[str, ...]
    after: float | None = None


class ApprovalEscalated(_Event):
    """No reviewer decided a request in time, and the policy's config escalates rather than
    denies: from now on only the reviewers named may decide it, within a new deadline (then it
    is denied)."""

    kind: Literal["approval_escalated"] = "approval_escalated"
    approval_id: str
    call_hash: str
    to: list[str]
    #: seconds from now it waits for them before it is denied (None: for ever)
    expire_after: float | None = None
    reason: str = ""


class IntentRecorded(_Event):
    """Written before a side-effecting call runs; its result is written after."""

    kind: Literal["intent"] = "intent"
    ref: str
    call_hash: str
    idempotency_key: str
    approval_id: str | None = None


class ToolResulted(_Event):
    kind: Literal["tool_result"] = "tool_result"
    ref: str
    ok: bool
    content: str
    error_code: str | None = None
    seconds: float = 0.0
    #: how the result was obtained after a crash: None (it ran), "reconciled" (the tool said it
    #: had already taken effect), "rerun" (safe to run again and it was)
    recovery: Literal["reconciled", "rerun"] | None = None
    #: the task artifact that holds the whole output, when `content` is shortened
    artifact: str | None = None
    #: what the tool printed while it ran (not shown to the model)
    printed: str | None = None
    #: a picture for a model that sees (a screenshot); `content` says what it shows
    image: Image | None = None
    #: what the tool looked at was still changing by itself (see `tools.ToolResult.changing`)
    changing: bool = False
    #: what the tool's own calls to the task's model took (map_documents): the turn numbers
    #: it reserved, the tokens, the cost (None: unknown); counted against the task's budget
    model_turns: int = 0
    model_usage: Usage | None = None
    model_cost_usd: float | None = None


class OutcomeUnknown(_Event):
    """A side-effecting call did not finish in time, so it may still take effect. It is settled
    like a call cut off by a crash (reconciled, sent again only where that is safe, or decided by a
    reviewer), never by letting the model simply try again."""

    kind: Literal["outcome_unknown"] = "outcome_unknown"
    ref: str
    reason: str
    #: how long the run waited for it (counted against the time budget)
    seconds: float = 0.0
    #: what the tool printed before it was given up on
    printed: str | None = None


class ToolsOffered(_Event):
    """The tools the task's model is told of, as it is told (name, description, JSON schema):
    recorded when a run starts with a set other than the last one recorded, so that what the
    model saw can be answered afterwards (`agent show ID --tools`)."""

    kind: Literal["tools_offered"] = "tools_offered"
    tools: tuple[ToolSpec, ...]
    digest: str


class LateResult(_Event):
    """A call given up on at its timeout finished after all (a synchronous tool's thread ran
    on): what it did. It settles the call if nothing else has; otherwise the model is told on its
    next turn that what it was told before (a timeout, "not sent again") is not the whole truth."""

    kind: Literal["late_result"] = "late_result"
    ref: str
    tool: str
    ok: bool
    content: str
    error_code: str | None = None
    printed: str | None = None


class StepFinished(_Event):
    kind: Literal["step_finished"] = "step_finished"
    index: int
    summary: str


class ReplanRequested(_Event):
    kind: Literal["replan_requested"] = "replan_requested"
    reason: str
    #: who asked: the model (a replan counts against the task's limit), or the user reviewing a
    #: plan (which does not)
    by: Literal["model", "user"] = "model"


PauseReason = Literal[
    "budget_exhausted",
    "model_error",
    "tool_crashed",
    "interrupted",
    "sandbox_error",
    "plan_review",
    "config_error",
]


class TaskPaused(_Event):
    kind: Literal["task_paused"] = "task_paused"
    reason: PauseReason
    detail: str
    #: what a tool's own model calls took before the pause stopped it (its call unresolved, so
    #: no result carries it): counted against the task's budget all the same
    model_usage: Usage | None = None
    model_cost_usd: float | None = None
    #: how long the tool's call ran before the pause stopped it (counted as its result would be)
    seconds: float | None = Field(None, ge=0)


class LimitsRaised(_Event):
    kind: Literal["limits_raised"] = "limits_raised"
    limits: Limits


class TaskResumed(_Event):
    kind: Literal["task_resumed"] = "task_resumed"


class TaskFinished(_Event):
    kind: Literal["task_finished"] = "task_finished"
    answer: str


class TaskFailed(_Event):
    kind: Literal["task_failed"] = "task_failed"
    reason: str


class TaskStuck(_Event):
    kind: Literal["task_stuck"] = "task_stuck"
    reason: str


class EgressDecided(_Event):
    """The egress proxy let the task's sandbox reach a host, or refused it (before any byte)."""

    kind: Literal["egress"] = "egress"
    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    #: the address connected to, or the one refused, where the host was resolved
    address: str | None = None


Event = Annotated[
    TaskCreated
    | PlanProposed
    | InstructionAdded
    | StepStarted
    | ModelResponded
    | ReplyRejected
    | CallRejected
    | GateDecided
    | ApprovalRequested
    | ApprovalDecided
    | ApprovalGiven
    | ApprovalEscalated
    | IntentRecorded
    | ToolResulted
    | OutcomeUnknown
    | LateResult
    | ToolsOffered
    | StepFinished
    | ReplanRequested
    | TaskPaused
    | LimitsRaised
    | TaskResumed
    | TaskFinished
    | TaskFailed
    | TaskStuck
    | EgressDecided,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

Status = Literal["running", "awaiting_approval", "paused", "done", "failed", "stuck"]

#: the task status each kind of event leaves behind (kinds not listed leave it as it was)
STATUS_AFTER: dict[str, Status] = {
    "task_created": "running",
    "approval_requested": "awaiting_approval",
    "approval_decided": "running",
    "task_paused": "paused",
    "task_resumed": "running",
    "task_finished": "done",
    "task_failed": "failed",
    "task_stuck": "stuck",
}

__all__ = ["EVENT_ADAPTER", "STATUS_AFTER", "Event", "Limits", "Status", "Usage"]
