"""What the user does to a task between its stretches of running: read a plan before it runs
(accept it, edit it, or ask for another), tell the model something, or cancel the task.

Each is recorded in the task's log like everything else, appended only if the log has not moved
on since the user looked (`ConflictingWrite` otherwise), so any process may steer and any may
run the task on: `Runner.resume` then records the task resumed.

    AgentError
    ├── NotSteerable   the task is not in a state this can be done in (the message says why)
    └── TaskBusy       another process runs the task now
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.events import (
    Event,
    InstructionAdded,
    PlanProposed,
    ReplanRequested,
    StepStarted,
    TaskFailed,
)
from agent.state import TaskState
from agent.store import Store
from base.errors import AgentError, ErrorCode

#: a plan the user writes has the planner's bounds
MAX_STEPS = 20
MAX_STEP_CHARS = 500
MAX_INSTRUCTION_CHARS = 4000


class NotSteerable(AgentError):
    code = ErrorCode.NOT_RUNNING


def reviewing_plan(state: TaskState) -> bool:
    """Whether the task waits for the user to read its plan."""
    return (
        state.status == "paused" and state.pause is not None and state.pause.reason == "plan_review"
    )


def accept_plan(store: Store, state: TaskState) -> None:
    """Run the plan as the planner wrote it (the next resume starts its first step)."""
    _must_review(state)
    _append(store, state, [StepStarted(index=0, title=state.plan[0])])


def edit_plan(store: Store, state: TaskState, steps: Sequence[str]) -> PlanProposed:
    """Replace the plan with `steps` (the user's), to run as written from its first step: one
    waiting for review, or that of a task paused or stuck."""
    if not reviewing_plan(state) and state.status not in ("paused", "stuck"):
        raise NotSteerable(
            f"task {state.task_id} is {state.status}: pause it first (Ctrl-C) to change its plan",
            task_id=state.task_id,
        )
    if state.pending is not None and any(c.observation is None for c in state.pending.calls):
        raise NotSteerable(
            "a call of this step has not settled yet (it may have taken effect): resume the "
            "task, and change its plan once the call is settled",
            task_id=state.task_id,
        )
    cleaned = tuple(s.strip() for s in steps if s.strip())
    if not cleaned:
        raise NotSteerable("a plan needs at least one step", task_id=state.task_id)
    if len(cleaned) > MAX_STEPS or any(len(s) > MAX_STEP_CHARS for s in cleaned):
        raise NotSteerable(
            f"a plan has at most {MAX_STEPS} steps of {MAX_STEP_CHARS} characters",
            task_id=state.task_id,
        )
    plan = PlanProposed(steps=cleaned, replan_reason=None, by="user")
    _append(store, state, [plan, StepStarted(index=0, title=cleaned[0])])
    return plan


def another_plan(store: Store, state: TaskState, why: str) -> None:
    """Ask the planner for another plan, telling it why the user wants one."""
    _must_review(state)
    said = why.strip() or "no reason given"
    asked = ReplanRequested(reason=f"the user asked for another plan: {said}", by="user")
    _append(store, state, [asked])


def add_instruction(store: Store, state: TaskState, text: str) -> InstructionAdded:
    """Tell the model `text` from its next request on. Raises `TaskBusy` while another process
    runs the task, and `NotSteerable` for a finished one."""
    if state.status in ("done", "failed"):
        raise NotSteerable(f"task {state.task_id} is {state.status}", task_id=state.task_id)
    text = text.strip()
    if not text or len(text) > MAX_INSTRUCTION_CHARS:
        raise NotSteerable(
            f"an instruction is 1 to {MAX_INSTRUCTION_CHARS} characters", task_id=state.task_id
        )
    added = InstructionAdded(text=text)
    _append(store, state, [added])
    return added


def cancel(store: Store, state: TaskState) -> TaskFailed:
    """End the task here: nothing more of it runs (its sandbox is removed by the next reap)."""
    if state.status in ("done", "failed"):
        raise NotSteerable(f"task {state.task_id} is {state.status}", task_id=state.task_id)
    failed = TaskFailed(reason="cancelled by the user")
    _append(store, state, [failed])
    return failed


def _must_review(state: TaskState) -> None:
    if not reviewing_plan(state):
        raise NotSteerable(
            f"task {state.task_id} has no plan waiting for review (it is {state.status})",
            task_id=state.task_id,
        )


def _append(store: Store, state: TaskState, events: list[Event]) -> None:
    # Held while appending: a runner of the task in another process would find its log moved.
    with store.lease(state.task_id):
        store.append(state.task_id, events, after=state.last_seq)
    for event in events:
        state.apply(event, state.last_seq + 1)
