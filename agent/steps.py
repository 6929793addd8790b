"""The loop's steps: Plan → Act → Gate → [AwaitApproval] → Execute → Observe → ... → Done.

Each step reads the task state, does one thing, and records what happened as events. Which step
comes next is a pure function of the state (`next_step`), so a runner that starts on a task half
way through (after a crash, kill -9 included) picks up exactly where the log ends.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agent._control import EXECUTOR, MAX_PLAN_STEPS, complete_step, finish, replan, submit_plan
from agent.events import (
    ApprovalRequested,
    CallRejected,
    Event,
    GateDecided,
    IntentRecorded,
    ModelResponded,
    OutcomeUnknown,
    PlanProposed,
    ReplanRequested,
    ReplyRejected,
    StepFinished,
    StepStarted,
    TaskFailed,
    TaskFinished,
    TaskPaused,
    ToolResulted,
)
from agent.prompts import act_request, plan_request
from agent.state import Call, TaskState, call_hash
from base.errors import SandboxError
from policies import Allow, Decision, Deny, RequireApproval
from tools.registry import (
    EFFECT,
    CannotTell,
    InvalidArguments,
    Tool,
    ToolResult,
    without_effect,
)

if TYPE_CHECKING:
    from agent.runner import RunContext

#: planner replies that may be rejected in a row before the task fails
PLAN_ATTEMPTS = 3
#: how many times an approved call whose effect keeps changing is judged again before it is
#: given up (and the model told)
MAX_REJUDGEMENTS = 3
#: how much of oversized arguments is kept in the log
OVERSIZED_KEPT = 1000


class Step(ABC):
    @abstractmethod
    async def run(self, rt: RunContext) -> None:
        """Do this step's work and record it."""


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
                return Gate(call)
            return Execute(call)
    return Act()


class Plan(Step):
    """Ask the planner for a plan (or, after a failure, for a new one)."""

    async def run(self, rt: RunContext) -> None:
        if rt.stop_if_over_budget():
            return
        state = rt.state
        if state.created is not None and not state.created.plan:
            # Planning is off: the task is its one step, and asking again starts it afresh.
            rt.commit(
                [
                    PlanProposed(steps=(state.task,), replan_reason=state.replan_reason),
                    StepStarted(index=0, title=state.task),
                ]
            )
            return
        await rt.ask("plan", plan_request(rt.state, rt.tool_specs))


class ReadPlan(Step):
    """Check the planner's reply; start the first step, or tell the planner what was wrong."""

    async def run(self, rt: RunContext) -> None:
        state = rt.state
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
            rt.commit(events)
            return
        rt.commit(
            [
                PlanProposed(steps=tuple(steps), replan_reason=state.replan_reason),
                StepStarted(index=0, title=steps[0]),
            ]
        )


class Act(Step):
    """Ask the executor for its next tool call on the current step."""

    async def run(self, rt: RunContext) -> None:
        if rt.stop_if_over_budget():
            return
        window = rt.backends["act"].context_window
        await rt.ask("act", act_request(rt.state, rt.tool_specs, window))


def trim_oversized(event: ModelResponded, limit: int) -> ModelResponded:
    """Cut arguments beyond `limit` bytes out of the record; such calls are rejected, not run."""
    sizes = {i: len(c.arguments.encode()) for i, c in enumerate(event.response.tool_calls)}
    oversized = {i: n for i, n in sizes.items() if n > limit}
    if not oversized:
        return event
    calls = tuple(
        c.model_copy(update={"arguments": c.arguments[:OVERSIZED_KEPT]}) if i in oversized else c
        for i, c in enumerate(event.response.tool_calls)
    )
    response = event.response.model_copy(update={"tool_calls": calls})
    return event.model_copy(update={"response": response, "oversized": oversized})


@dataclass
class Gate(Step):
    """Validate a call and ask the policy about it. Invalid calls never reach a tool."""

    call: Call

    async def run(self, rt: RunContext) -> None:
        call, state = self.call, rt.state
        name = call.wire.name
        if call.oversized is not None:
            return rt.reject(
                call,
                f"the arguments are {call.oversized:,} bytes; the limit is "
                f"{rt.max_argument_bytes:,} bytes. Send less at a time.",
            )
        if name in EXECUTOR:
            return self._control(rt)
        tool = rt.registry.get(name)
        offered = any(spec.name == name for spec in rt.tool_specs)
        if tool is not None and not offered and tool.needs_network:
            return rt.reject(
                call,
                f"{name} needs the network, and this task's sandbox has none (a task is given "
                "it with --allow-domain HOST)",
            )
        if tool is None or not offered:
            shown = name if len(name) <= 60 else name[:60] + "..."
            return rt.reject(
                call,
                f"there is no tool named {shown!r}; the tools are: "
                + ", ".join(t.name for t in rt.tool_specs),
            )
        try:
            validated = tool.validate(call.wire.arguments)
        except InvalidArguments as exc:
            return rt.reject(call, str(exc))
        arguments = validated.model_dump(mode="json")
        if tool.effect is not None:
            effect = await rt.read_effect(tool, call, arguments)
            if effect is None:
                return None  # the task paused: the tool's effect reader failed
            arguments = with_effect(arguments, effect)
        decision, events = judged(rt, tool, call, arguments, f"{state.task_id}-{call.ref}")
        if isinstance(decision, RequireApproval):
            rt.commit(events)
        else:
            rt.stage(events)  # made durable with the intent or the result that follows
        call.validated = validated
        return None

    def _control(self, rt: RunContext) -> None:
        call, state = self.call, rt.state
        control = EXECUTOR.get(call.wire.name)
        assert control is not None
        try:
            args = control.parse(call.wire.arguments)
        except InvalidArguments as exc:
            return rt.reject(call, str(exc))
        assert state.pending is not None
        calls = state.pending.calls
        position = calls.index(call)
        if any(c.is_error for c in calls[:position]):
            # Finishing or moving on would skip over a failure the model has not seen yet; and
            # what it planned to do after moving on is not run either.
            why = "an earlier call in this turn failed or was declined; read its result first"
            rt.stage(
                [
                    CallRejected(ref=c.ref, tool=c.wire.name, error=f"not run: {why}")
                    for c in calls[position:]
                ]
            )
            return None
        later = calls[position + 1 :]
        events: list[Event] = [
            CallRejected(
                ref=c.ref,
                tool=c.wire.name,
                error=f"not run: {call.wire.name} ended the step before it",
            )
            for c in later
        ]
        if control is complete_step:
            events.append(StepFinished(index=state.step, summary=args["summary"]))
            if state.step + 1 < len(state.plan):
                events.append(StepStarted(index=state.step + 1, title=state.plan[state.step + 1]))
            else:
                events.append(TaskFinished(answer=args["summary"]))
        elif control is replan:
            if state.replans >= state.limits.max_replans:
                events.append(
                    TaskFailed(
                        reason=f"the plan failed {state.replans + 1} times "
                        f"(limit {state.limits.max_replans} replans); "
                        f"last reason: {args['reason']}"
                    )
                )
            else:
                events.append(ReplanRequested(reason=args["reason"]))
        elif control is finish:
            events.append(TaskFinished(answer=args["answer"]))
        rt.commit(events)
        return None


def with_effect(arguments: dict[str, Any], effect: dict[str, Any]) -> dict[str, Any]:
    """The arguments as judged: with the effect the tool read beside them, if it read one ({}:
    none)."""
    return {**arguments, EFFECT: effect} if effect else arguments


def judged(
    rt: RunContext,
    tool: Tool,
    call: Call,
    arguments: dict[str, Any],
    approval_id: str,
    *,
    note: str = "",
) -> tuple[Decision, list[Event]]:
    """Ask the policy about a call; the events that record its answer. `note` is added to the
    reason a reviewer is given."""
    decision = rt.gate.evaluate(tool, arguments)
    digest = call_hash(tool.identity, arguments)
    verdict = (
        "ask"
        if isinstance(decision, RequireApproval)
        else "deny"
        if isinstance(decision, Deny)
        else "allow"
    )
    events: list[Event] = [
        GateDecided(
            ref=call.ref,
            tool=tool.name,
            arguments=arguments,
            call_hash=digest,
            verdict=verdict,
            reason=decision.reason,
            rule=decision.rule,
        )
    ]
    if isinstance(decision, RequireApproval):
        events.append(
            ApprovalRequested(
                approval_id=approval_id,
                ref=call.ref,
                call_hash=digest,
                reason=decision.reason + note,
                preview=decision.preview,
            )
        )
    return decision, events


def changes(before: Any, after: Any, path: str = "") -> list[str]:
    """What differs between two JSON values, field by field ("values.name: 'Ann' -> 'Bo'")."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            found += changes(before.get(key), after.get(key), where)
        return found
    return [] if before == after else [f"{path or 'value'}: {before!r} -> {after!r}"]


@dataclass
class Execute(Step):
    """Run an allowed or approved call. A side-effecting call records its intent first."""

    call: Call

    async def run(self, rt: RunContext) -> None:
        call, state = self.call, rt.state
        tool = rt.registry.get(call.wire.name)
        assert call.arguments is not None
        assert call.call_hash is not None
        if tool is None:
            return rt.reject(call, f"the tool {call.wire.name!r} is no longer registered")
        if call.validated is None:  # after a restart: validate again from the log
            try:
                call.validated = tool.validate(call.arguments)
            except InvalidArguments as exc:
                return rt.reject(call, f"not run: the arguments no longer fit {tool.name}: {exc}")
        approval_id = None
        if call.approval is not None:
            # The approval is bound to the exact call: checked again, just before it runs.
            approval = call.approval
            if (
                call.decision is None
                or not call.decision.approved
                or approval.call_hash != call_hash(tool.identity, call.arguments)
                or approval.call_hash != call.call_hash
            ):
                return rt.reject(call, "the approval does not match this call; it was not run")
            approval_id = approval.approval_id
            if tool.effect is not None and approval.cause != "reconcile":
                changed = await self._effect_changed(rt, tool)
                if changed is not False:
                    return None  # asked again, or paused
            if approval.cause == "reconcile" and tool.reconcile is not None:
                # The reviewer said "run it again", but the call that was cut off may have
                # landed since (a timed-out thread finishes on its own): ask once more first.
                found = await ask_reconciler(rt, tool, call)
                if isinstance(found, ToolResult):
                    rt.commit([reconciled(call, found)])
                    return None
                if found == "crashed":
                    return None
        key = f"{state.task_id}/{call.ref}"
        # An intent comes first for anything with an effect, and for anything approved: it marks
        # the approval as used before the call runs, so one approval never runs a call twice.
        durable = tool.has_side_effects or approval_id is not None
        if durable:
            intent = IntentRecorded(
                ref=call.ref, call_hash=call.call_hash, idempotency_key=key, approval_id=approval_id
            )
            rt.commit([intent])
        result = await rt.run_tool(tool, call, key)
        if result is not None:
            record_result(rt, tool, result, durable=durable)
        return None

    async def _effect_changed(self, rt: RunContext, tool: Tool) -> bool | None:
        """Read the call's effect again, just before it runs. If it is not what the reviewer
        approved (the page's values changed since), record the new one and ask again. False when
        unchanged; None when the reader failed (the task paused)."""
        call = self.call
        assert call.arguments is not None
        plain = without_effect(call.arguments)
        effect = await rt.read_effect(tool, call, plain)
        if effect is None:
            return None
        arguments = with_effect(plain, effect)
        if arguments == call.arguments:
            return False
        if call.judgements > MAX_REJUDGEMENTS:
            # A value that changes every time (a rotating token) would ask a reviewer forever.
            rt.reject(
                call,
                f"not run: the page changed what this call sends {call.judgements} times since "
                "it was first judged; read the page again before trying once more",
            )
            return True
        changed = "; ".join(changes(call.arguments.get(EFFECT), effect))
        note = f" (asked again: the page changed it since the approval: {changed})"
        approval_id = f"{rt.state.task_id}-{call.ref}-v{call.judgements + 1}"
        decision, events = judged(rt, tool, call, arguments, approval_id, note=note)
        rt.commit(events)
        if isinstance(decision, Allow):
            # Nothing to approve any more (it no longer submits): still not what the reviewer
            # approved. (A denial is its own observation already.)
            rt.reject(call, "not run: the page changed since this call was approved; call again")
        return True


def record_result(rt: RunContext, tool: Tool, result: ToolResulted, *, durable: bool) -> None:
    """Record what a call did. A side effect that timed out may still take effect: it is settled
    like a crash (reconciled, or decided by a reviewer), never reported as a failure to retry.
    An output too long to show the model whole is kept as an artifact (see `agent.context`)."""
    result = rt.keep_whole(result)
    if tool.has_side_effects and result.error_code == "timeout":
        rt.commit([OutcomeUnknown(ref=result.ref, reason=result.content, seconds=result.seconds)])
    elif durable or tool.has_side_effects:
        rt.commit([result])
    else:
        rt.stage([result])  # a read-only result is made durable with the next commit


@dataclass
class Reconcile(Step):
    """A call recorded its intent and no result (the run stopped, or the call timed out): find out
    what happened, and never blindly send it again."""

    call: Call

    async def run(self, rt: RunContext) -> None:
        call = self.call
        assert call.intent is not None
        tool = rt.registry.get(call.wire.name)
        if tool is None:
            return self._ask_reviewer(rt, None)
        # Safe to send again: it has no effect, or it drops repeats of the key. But an approval
        # is used once (a read a reviewer approved is not read again without one), and a call
        # that already timed out is not sent again on its own (it could hang every time).
        harmless = tool.idempotent or (
            not tool.has_side_effects and call.intent.approval_id is None
        )
        if harmless and not call.timed_out:
            return await self._rerun(rt, tool)
        if tool.reconcile is None:
            return self._ask_reviewer(rt, tool)
        found = await ask_reconciler(rt, tool, call)
        if isinstance(found, ToolResult):
            rt.commit([reconciled(call, found)])
        elif found == "absent" and not call.timed_out:
            await self._rerun(rt, tool)  # it never happened, and nothing is still running it
        elif found != "crashed":
            self._ask_reviewer(rt, tool)  # no answer in time, or a timed-out call may yet land
        return None

    async def _rerun(self, rt: RunContext, tool: Tool) -> None:
        assert self.call.intent is not None
        key = self.call.intent.idempotency_key
        result = await rt.run_tool(tool, self.call, key, recovery="rerun")
        if result is not None:
            record_result(rt, tool, result, durable=True)

    def _ask_reviewer(self, rt: RunContext, tool: Tool | None) -> None:
        call, state = self.call, rt.state
        assert call.intent is not None
        what = (
            "this call timed out and may still take effect"
            if call.timed_out
            else "the runner stopped while this call was running"
        )
        rt.commit(
            [
                ApprovalRequested(
                    approval_id=f"{state.task_id}-{call.ref}-r{call.reconcile_requests + 1}",
                    ref=call.ref,
                    call_hash=call.intent.call_hash,
                    cause="reconcile",
                    reason=(
                        f"{what}, and the tool cannot tell whether it took effect. Approve to run "
                        "it again; deny to tell the model it did not run."
                    ),
                    preview=rt.preview(tool, call),
                )
            ]
        )


async def ask_reconciler(
    rt: RunContext, tool: Tool, call: Call
) -> ToolResult | Literal["absent", "unknown", "crashed"]:
    """The tool's reconciler, asked whether the call took effect (and given the tool's time limit
    to say). A reconciler that raises pauses the task, like any tool bug."""
    assert tool.reconcile is not None
    assert call.intent is not None
    ctx = rt.tool_context(call, call.intent.idempotency_key)
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
        rt.commit([TaskPaused(reason="sandbox_error", detail=str(exc))])
        return "crashed"
    except Exception as exc:  # noqa: BLE001 - a bug in the reconciler; the task pauses
        rt.commit([tool_crashed(tool, exc, traceback.format_exc(limit=8))])
        return "crashed"
    if found is None:
        return "absent"
    return found if isinstance(found, ToolResult) else ToolResult(True, str(found))


def reconciled(call: Call, found: ToolResult) -> ToolResulted:
    return ToolResulted(
        ref=call.ref,
        ok=found.ok,
        content=found.content,
        error_code=found.error_code,
        recovery="reconciled",
    )


def tool_crashed(tool: Tool, exc: BaseException, detail: str) -> TaskPaused:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return TaskPaused(
        reason="tool_crashed",
        detail=f"the tool {tool.name} raised {type(exc).__name__}: {exc}{where}\n{detail}",
    )
