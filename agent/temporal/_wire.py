"""What passes between a task's workflow and its activities: pydantic models, converted by the
SDK's pydantic data converter. Every one stays well under Temporal's 256 KB payload warning: a
tool's long output is kept as an artifact by the activity and passed by its name."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from agent.backends.base import ModelRequest, Purpose
from agent.events import Escalation, Event, ModelResponded, TaskPaused
from base.images import Image
from base.toolspec import ToolSpec
from tools.asking import Spent

#: the name a task's workflow is registered under
WORKFLOW = "AgentTask"

#: the activities' names (stable: recorded histories name them)
PREPARE = "agent.prepare"
READ_LOG = "agent.read_log"
RECORD = "agent.record"
ASK_MODEL = "agent.ask_model"
RUN_TOOL = "agent.run_tool"
READ_EFFECT = "agent.read_effect"
RECONCILE = "agent.reconcile"
DECIDE = "agent.decide"
EXPIRE = "agent.expire"
STEER = "agent.steer"
RELEASE = "agent.release"


def host_queue(task_queue: str, host: str) -> str:
    """The task queue of `host`'s workers: the calls of a task whose sandbox is there."""
    return f"{task_queue}@{host}"


#: a page of the log read at a time: under the payload warning, whatever the events hold
PAGE_BYTES = 200_000


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Start(_Wire):
    """A task's workflow input: the task (its log is the truth), and how this run came to be."""

    task_id: str
    #: the runs before this one (continued as new at a step boundary)
    continued: int = 0
    #: the host holding the task's sandbox, as the run before this one left it, and the host
    #: given up, if no call has named the one that holds it since
    host: str | None = None
    lost: str | None = None


class Records(_Wire):
    """What the workflow recorded since its last write, for an activity to write first: the
    events, the first to follow the log's event `after`."""

    task_id: str
    after: int
    events: tuple[Event, ...] = ()


class Prepared(_Wire):
    """What the workflow needs of this deployment to decide: the policy's text, the tools the
    model is told of, and the settings its steps read."""

    policy: str
    policy_source: str
    offered: tuple[ToolSpec, ...]
    context_window: int | None
    max_argument_bytes: int
    approval_expiry: float | None
    escalation: Escalation | None
    #: the tools this deployment can run
    tools: tuple[str, ...]
    #: how often a long activity heartbeats (a worker that dies is noticed in this long)
    heartbeat_seconds: float
    #: the workflow continues as new at the first step boundary past this many events
    history_events: int
    #: how long a call waits for a worker on its sandbox's host before the host is given up
    host_wait_seconds: float = 60.0


class ReadLog(_Wire):
    task_id: str
    after: int


class Page(_Wire):
    events: tuple[tuple[int, Event], ...]
    more: bool


class AskModel(_Wire):
    records: Records
    purpose: Purpose
    request: ModelRequest


class Asked(_Wire):
    responded: ModelResponded | None = None
    paused: TaskPaused | None = None


class _OnHost(_Wire):
    """A call that may use the task's sandbox: when the host that held it was given up (no
    worker of it answered), the worker that takes the call makes it again from its snapshot."""

    moved_from: str | None = None


class RunTool(_OnHost):
    records: Records
    tool: str
    ref: str
    key: str


class ToolRan(_Wire):
    """A tool's outcome: its result (shortened, the whole kept as `artifact`), or the pause it
    calls for (with its result when it is known not to have run)."""

    ok: bool = False
    content: str = ""
    error_code: str | None = None
    printed: str = ""
    image: Image | None = None
    changing: bool = False
    artifact: str | None = None
    seconds: float = 0.0
    #: what the tool's own calls to the task's model took
    spent: Spent | None = None
    paused: TaskPaused | None = None
    not_run: bool = False
    #: the host whose worker holds the task's sandbox, once a call used it
    host: str | None = None


class ReadEffect(_OnHost):
    records: Records
    tool: str
    ref: str
    arguments: dict[str, Any]


class EffectRead(_Wire):
    effect: dict[str, Any] | None = None
    paused: TaskPaused | None = None
    #: the call cannot be what it asks: the model is told (a failed result)
    refused: ToolRan | None = None
    host: str | None = None


class Reconcile(_OnHost):
    records: Records
    tool: str
    ref: str


class Reconciled(_Wire):
    found: Literal["result", "absent", "unknown", "paused"]
    result: ToolRan | None = None
    paused: TaskPaused | None = None
    host: str | None = None


class Decide(_Wire):
    """A reviewer's decision, as `agent approve|deny` and the inbox make it."""

    approval_id: str
    call_hash: str
    approved: bool
    reason: str = ""
    reviewer: str = ""
    origin: str = ""
    edit: dict[str, Any] | None = None
    always: str | None = None
    #: approve, and save the rule that always allows calls like it, in this task or the
    #: project: the rule whose digest (`agent.always.Proposal.digest`) the reviewer confirmed
    always_scope: Literal["task", "project"] | None = None
    confirmed: str = ""


class DecideIn(_Wire):
    records: Records
    decision: Decide


#: what a person does with a plan: run it as written, ask the planner for another (saying
#: why), or replace it with their own steps
PlanAction = Literal["accept_plan", "another_plan", "edit_plan"]
PLAN_ACTIONS: tuple[PlanAction, ...] = get_args(PlanAction)


class Steer(_Wire):
    """What a person does to a task between its stretches of running: pause it (at the next
    step boundary), tell its model something, go on with it (its limits raised, an instruction
    given), cancel it, or act on its plan (one of PLAN_ACTIONS; the task then goes on)."""

    action: Literal["pause", "tell", "resume", "cancel", "accept_plan", "another_plan", "edit_plan"]
    limits: dict[str, Any] = Field(default_factory=dict)
    instruction: str | None = None
    #: edit_plan: the person's steps
    steps: tuple[str, ...] = ()
    #: another_plan: why the person wants one
    why: str = ""


class SteerIn(_Wire):
    records: Records
    steer: Steer


class Appended(_Wire):
    """The events an activity added to the log after the workflow's last one, and, when it
    refused what it was asked, why (the refusal's kind and message, as the embedded inbox
    words it)."""

    events: tuple[tuple[int, Event], ...] = ()
    refused: str | None = None
    refusal: str = ""
    #: seconds until a request expires, when it has not yet
    wait: float | None = None
