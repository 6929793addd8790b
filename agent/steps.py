"""The loop's steps: Plan → ReadPlan → Act → Judge → (a reviewer) → Execute | Reconcile → Act ...

Each step reads the task state, does one thing, and records what happened as events. Which step
comes next is a pure function of the state (`next_step`), so a runner that starts on a task half
way through (after a crash, kill -9 included) picks up exactly where the log ends. `drive` walks
them. Steps decide; what touches the world comes through `Loop.effects` (agent/effects.py).
"""

from __future__ import annotations

from agent.call_steps import Execute, Judge, Reconcile
from agent.events import (
    Event,
    PlanProposed,
    ReplyRejected,
    StepStarted,
    TaskFailed,
    TaskPaused,
)
from agent.loop import Loop, Step, ask, settle_late, stop_if_over_budget
from agent.loop_tools import MAX_PLAN_STEPS, submit_plan
from agent.prompts import act_request, plan_request
from agent.state import TaskState
from tools.tool import InvalidArguments

#: planner replies that may be rejected in a row before the task fails
PLAN_ATTEMPTS = 3


async def drive(loop: Loop) -> None:
    """Run the task's steps until the state says to stop; everything recorded is durable after."""
    while (step := next_step(loop.state)) is not None:
        await step.run(loop)
    loop.record.flush()


def next_step(state: TaskState) -> Step | None:
    """What to do next, derived from the state alone; None when the runner should stop."""
    if state.status != "running":
        return None  # done, failed, stuck, paused, or waiting for a reviewer
    if state.pending_plan is not None:
        return ReadPlan()
    if state.needs_plan:
        return Plan()
    if state.pending is not None:
        for call in state.pending.calls:
            if call.observation is not None:
                continue
            if call.approval is not None and call.decision is None:
                return None  # a reviewer decides first
            if call.approval is not None and call.approval.approval_id not in state.used_approvals:
                return Execute(call)  # approved (a denial would have resolved the call)
            if call.intent is not None:
                return Reconcile(call)  # it started and the runner stopped before its result
            if call.verdict is None:
                return Judge(call)
            return Execute(call)
    return Act()


class Plan(Step):
    """Ask the planner for a plan (or, after a failure, for a new one)."""

    async def run(self, loop: Loop) -> None:
        if stop_if_over_budget(loop):
            return
        state = loop.state
        if state.created is not None and not state.created.plan:
            # Planning is off: the task is its one step, and asking again starts it afresh.
            loop.record.commit(
                [
                    PlanProposed(steps=(state.task,), replan_reason=state.replan_reason),
                    StepStarted(index=0, title=state.task),
                ]
            )
            return
        await ask(loop, "plan", plan_request(loop.state, loop.tool_specs))


class ReadPlan(Step):
    """Check the planner's reply; start the first step, or tell the planner what was wrong."""

    async def run(self, loop: Loop) -> None:
        state = loop.state
        response = state.pending_plan
        assert response is not None
        calls = response.tool_calls
        error = None
        if len(calls) != 1 or calls[0].name != submit_plan.name:
            error = (
                f"answer with exactly one call to {submit_plan.name} "
                f"(got {', '.join(c.name for c in calls) or 'no tool call'})"
            )
        else:
            try:
                steps = submit_plan.parse(calls[0].arguments)["steps"]
            except InvalidArguments as exc:
                error = f"{exc} (a plan has 1 to {MAX_PLAN_STEPS} steps)"
        if error is not None:
            events: list[Event] = [ReplyRejected(error=error)]
            if len(state.plan_attempts) + 1 >= PLAN_ATTEMPTS:
                events.append(
                    TaskFailed(
                        reason=f"the model gave no valid plan in {PLAN_ATTEMPTS} tries: {error}"
                    )
                )
            loop.record.commit(events)
            return
        proposed = PlanProposed(steps=tuple(steps), replan_reason=state.replan_reason)
        if state.created is not None and state.created.review_plan:
            # The user reads it first: accept, edit or ask for another (agent/steering.py).
            why = "the plan waits for you: accept it, edit it, or ask for another"
            loop.record.commit([proposed, TaskPaused(reason="plan_review", detail=why)])
            return
        loop.record.commit([proposed, StepStarted(index=0, title=steps[0])])


class Act(Step):
    """Ask the executor for its next tool call on the current step."""

    async def run(self, loop: Loop) -> None:
        if stop_if_over_budget(loop):
            return
        if loop.late:
            settle_late(loop)  # what a call given up on did after all: told before it is asked
        await ask(loop, "act", act_request(loop.state, loop.tool_specs, loop.context_window))
