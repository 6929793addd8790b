"""The steps of one tool call: `Judge` (validate it, read its effect, ask the gate), `Execute`
(run it, its intent recorded first when it has an effect or was approved) and `Reconcile` (find
out what a call cut off did, never blindly sending it again)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agent.events import (
    ApprovalDecided,
    ApprovalGiven,
    ApprovalRequested,
    CallRejected,
    Event,
    GateDecided,
    IntentRecorded,
    ReplanRequested,
    StepFinished,
    StepStarted,
    TaskFailed,
    TaskFinished,
    TaskPaused,
    ToolResulted,
)
from agent.loop import Loop, Step, read_effect, record_result, reject, run_tool, settle_late
from agent.loop_tools import EXECUTOR, complete_step, finish, replan
from agent.state import Call, call_hash
from base import failpoints
from policies import Allow, Decision, Deny, RequireApproval
from tools.tool import EFFECT, InvalidArguments, Tool, ToolResult, without_effect

#: how many times an approved call whose effect keeps changing is judged again before it is
#: given up (and the model told)
MAX_REJUDGEMENTS = 3


@dataclass
class Judge(Step):
    """Validate a call and ask the policy about it. Invalid calls never reach a tool."""

    call: Call

    async def run(self, loop: Loop) -> None:
        call, state = self.call, loop.state
        name = call.wire.name
        if call.oversized is not None:
            return reject(
                loop,
                call,
                f"the arguments are {call.oversized:,} bytes; the limit is "
                f"{loop.max_argument_bytes:,} bytes. Send less at a time.",
            )
        if name in EXECUTOR:
            return self._control(loop)
        tool = loop.registry.get(name)
        offered = name in loop.offered
        if tool is not None and not offered and tool.needs_network:
            return reject(
                loop,
                call,
                f"{name} needs the network, and this task's sandbox has none (a task is given "
                "it with --allow-domain HOST)",
            )
        if tool is None or not offered:
            shown = name if len(name) <= 60 else name[:60] + "..."
            return reject(
                loop,
                call,
                f"there is no tool named {shown!r}; the tools are: "
                + ", ".join(t.name for t in loop.tool_specs),
            )
        try:
            validated = tool.validate(call.wire.arguments)
        except InvalidArguments as exc:
            return reject(loop, call, str(exc))
        arguments = validated.model_dump(mode="json")
        if tool.effect is not None:
            effect = await read_effect(loop, tool, call, arguments)
            if effect is None:
                return None  # the task paused: the tool's effect reader failed
            arguments = with_effect(arguments, effect)
        decision, events = judged(loop, tool, call, arguments, f"{state.task_id}-{call.ref}")
        if isinstance(decision, RequireApproval):
            loop.record.commit(events)
        else:
            loop.record.stage(events)  # made durable with the intent or the result that follows
        call.validated = validated
        return None

    def _control(self, loop: Loop) -> None:
        call, state = self.call, loop.state
        control = EXECUTOR.get(call.wire.name)
        assert control is not None
        try:
            args = control.parse(call.wire.arguments)
        except InvalidArguments as exc:
            return reject(loop, call, str(exc))
        assert state.pending is not None
        calls = state.pending.calls
        position = calls.index(call)
        if any(c.is_error for c in calls[:position]):
            # Finishing or moving on would skip over a failure the model has not seen yet; and
            # what it planned to do after moving on is not run either.
            why = "an earlier call in this turn failed or was declined; read its result first"
            loop.record.stage(
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
        loop.record.commit(events)
        return None


def with_effect(arguments: dict[str, Any], effect: dict[str, Any]) -> dict[str, Any]:
    """The arguments as judged: with the effect the tool read beside them, if it read one ({}:
    none)."""
    return {**arguments, EFFECT: effect} if effect else arguments


def expiry_fields(loop: Loop) -> dict[str, Any]:
    """When a request expires, and what then (escalated, or denied), as it records them."""
    escalation = loop.approval_escalation
    if loop.approval_expiry is None or escalation is None:
        return {"expire_after": loop.approval_expiry}
    return {
        "expire_after": loop.approval_expiry,
        "escalate_to": list(escalation.to),
        "escalate_after": escalation.after,
    }


def judged(
    loop: Loop,
    tool: Tool,
    call: Call,
    arguments: dict[str, Any],
    approval_id: str,
    *,
    note: str = "",
) -> tuple[Decision, list[Event]]:
    """Ask the policy about a call; the events that record its answer. `note` is added to the
    reason a reviewer is given."""
    decision = loop.gate.evaluate(tool, arguments, task=loop.state.task_id)
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
                tool=tool.name,
                rule=decision.rule,
                risk=tool.touches,
                approvers=decision.approvers,
                **expiry_fields(loop),
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

    async def run(self, loop: Loop) -> None:
        call, state = self.call, loop.state
        tool = loop.registry.get(call.wire.name)
        assert call.arguments is not None
        assert call.call_hash is not None
        if tool is None:
            return reject(loop, call, f"the tool {call.wire.name!r} is no longer registered")
        if call.validated is None:  # after a restart: validate again from the log
            try:
                call.validated = tool.validate(call.arguments)
            except InvalidArguments as exc:
                return reject(
                    loop, call, f"not run: the arguments no longer fit {tool.name}: {exc}"
                )
        approval_id = None
        if call.decision is not None and call.decision.edited is not None:
            return await self._edited(loop, tool)
        if call.approval is not None:
            # The approval is bound to the exact call: checked again, just before it runs.
            approval = call.approval
            if (
                call.decision is None
                or not call.decision.approved
                or approval.call_hash != call_hash(tool.identity, call.arguments)
                or approval.call_hash != call.call_hash
            ):
                return reject(loop, call, "the approval does not match this call; it was not run")
            approval_id = approval.approval_id
            if tool.effect is not None and approval.cause != "reconcile":
                changed = await self._effect_changed(loop, tool)
                if changed is not False:
                    return None  # asked again, or paused
            if approval.cause == "reconcile" and call.ref in loop.late:
                settle_late(loop, call.ref)  # it finished since: it is not sent again
                if call.observation is not None:
                    return None
            if approval.cause == "reconcile" and tool.reconcile is not None:
                # The reviewer said "run it again", but the call that was cut off may have
                # landed since (a timed-out thread finishes on its own): ask once more first.
                found = await ask_reconciler(loop, tool, call)
                if isinstance(found, ToolResult):
                    loop.record.commit([reconciled(call, found)])
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
            failpoints.reached("intent:before")
            loop.record.commit([intent])
            failpoints.reached("intent:after")
        result = await run_tool(loop, tool, call, key)
        if result is not None:
            record_result(loop, tool, result, durable=durable)
            failpoints.reached("result:after")
        return None

    async def _edited(self, loop: Loop, tool: Tool) -> None:
        """A reviewer approved the call with arguments of their own: check them, and have the
        gate judge the edited call again. What the gate allows or asks about runs as edited,
        under an approval of its own (the reviewer's, for the call they wrote); what it denies
        does not run. The edit is recorded beside the original; the model is told."""
        call, decision = self.call, self.call.decision
        assert decision is not None
        assert decision.edited is not None
        assert call.approval is not None
        assert call.arguments is not None
        if call.approval.call_hash != call_hash(tool.identity, call.arguments):
            # The tool is not the one the reviewer saw asked about (another of that name now).
            return reject(loop, call, "the approval does not match this call; it was not run")
        try:
            validated = tool.validate(decision.edited)
        except InvalidArguments as exc:
            return reject(
                loop, call, f"not run: the arguments a reviewer gave do not fit {tool.name}: {exc}"
            )
        # Judged as the tool will receive them (values converted to the schema's types).
        edited = validated.model_dump(mode="json")
        changed = "; ".join(changes(call.arguments, edited)) or "no change"
        approval_id = f"{loop.state.task_id}-{call.ref}-e{call.judgements + 1}"
        verdict, events = judged(
            loop, tool, call, edited, approval_id, note=f" (a reviewer's edit: {changed})"
        )
        if isinstance(verdict, Deny):
            loop.record.commit(events)  # its own observation: denied by policy
            return None
        [gate] = [e for e in events if isinstance(e, GateDecided)]
        if isinstance(verdict, RequireApproval) and verdict.approvers > 1:
            # The edited call needs several reviewers: the editor is one of them, no more.
            given = ApprovalGiven(
                approval_id=approval_id,
                call_hash=gate.call_hash,
                reviewer=decision.reviewer,
                origin=decision.origin,
                reason=f"edited: {changed}",
            )
            loop.record.commit([*events, given])
            return None
        if isinstance(verdict, Allow):
            asked = ApprovalRequested(
                approval_id=approval_id,
                ref=call.ref,
                call_hash=gate.call_hash,
                reason=f"a reviewer's edit of {call.approval.approval_id}: {changed}",
                preview=_previewed(tool.name, tool.touches, edited),
                tool=tool.name,
                rule=gate.rule,
                risk=tool.touches,
            )
            events.append(asked)
        events.append(
            ApprovalDecided(
                approval_id=approval_id,
                call_hash=gate.call_hash,
                approved=True,
                reason=f"edited: {changed}",
                reviewer=decision.reviewer,
                origin=decision.origin,
                edit_of=call.approval.approval_id,
            )
        )
        loop.record.commit(events)
        call.validated = validated
        return await self.run(loop)

    async def _effect_changed(self, loop: Loop, tool: Tool) -> bool | None:
        """Read the call's effect again, just before it runs. If it is not what the reviewer
        approved (the page's values changed since), record the new one and ask again. False when
        unchanged; None when the reader failed (the task paused)."""
        call = self.call
        assert call.arguments is not None
        plain = without_effect(call.arguments)
        effect = await read_effect(loop, tool, call, plain)
        if effect is None:
            return None
        arguments = with_effect(plain, effect)
        if arguments == call.arguments:
            return False
        if call.judgements > MAX_REJUDGEMENTS:
            # A value that changes every time (a rotating token) would ask a reviewer forever.
            reject(
                loop,
                call,
                f"not run: what this call would do (a page's values, a deploy's files) changed "
                f"{call.judgements} times since it was first judged; read it again before "
                "trying once more",
            )
            return True
        changed = "; ".join(changes(call.arguments.get(EFFECT), effect))
        note = f" (asked again: what it would do changed since the approval: {changed})"
        approval_id = f"{loop.state.task_id}-{call.ref}-v{call.judgements + 1}"
        decision, events = judged(loop, tool, call, arguments, approval_id, note=note)
        loop.record.commit(events)
        if isinstance(decision, Allow):
            # Nothing to approve any more (it no longer submits): still not what the reviewer
            # approved. (A denial is its own observation already.)
            reject(
                loop,
                call,
                "not run: what it would do changed since this call was approved; call again",
            )
        return True


@dataclass
class Reconcile(Step):
    """A call recorded its intent and no result (the run stopped, or the call timed out): find out
    what happened, and never blindly send it again."""

    call: Call

    async def run(self, loop: Loop) -> None:
        call = self.call
        assert call.intent is not None
        if call.ref in loop.late:
            settle_late(loop, call.ref)  # a timed-out call that has finished since says itself
            if call.observation is not None:
                return None
        tool = loop.registry.get(call.wire.name)
        if tool is None:
            return self._ask_reviewer(loop, None)
        # Safe to send again: it has no effect, or it drops repeats of the key. But an approval
        # is used once (a read a reviewer approved is not read again without one), and a call
        # that already timed out is not sent again on its own (it could hang every time).
        harmless = tool.idempotent or (
            not tool.has_side_effects and call.intent.approval_id is None
        )
        if harmless and not call.timed_out:
            return await self._rerun(loop, tool)
        if tool.reconcile is None:
            return self._ask_reviewer(loop, tool)
        found = await ask_reconciler(loop, tool, call)
        if isinstance(found, ToolResult):
            loop.record.commit([reconciled(call, found)])
        elif found == "absent" and not call.timed_out:
            await self._rerun(loop, tool)  # it never happened, and nothing is still running it
        elif found != "crashed":
            self._ask_reviewer(loop, tool)  # no answer in time, or a timed-out call may yet land
        return None

    async def _rerun(self, loop: Loop, tool: Tool) -> None:
        assert self.call.intent is not None
        key = self.call.intent.idempotency_key
        result = await run_tool(loop, tool, self.call, key, recovery="rerun")
        if result is not None:
            record_result(loop, tool, result, durable=True)

    def _ask_reviewer(self, loop: Loop, tool: Tool | None) -> None:
        call, state = self.call, loop.state
        assert call.intent is not None
        what = (
            "this call timed out and may still take effect"
            if call.timed_out
            else "the runner stopped while this call was running"
        )
        loop.record.commit(
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
                    preview=preview(tool, call),
                    tool=call.wire.name,
                    risk=tool.touches if tool is not None else "external",
                    **expiry_fields(loop),
                )
            ]
        )


async def ask_reconciler(
    loop: Loop, tool: Tool, call: Call
) -> ToolResult | Literal["absent", "unknown", "crashed"]:
    """The tool's reconciler, asked whether the call took effect (and given the tool's time limit
    to say). A reconciler that raises pauses the task ("crashed"), like any tool bug."""
    found = await loop.effects.reconcile(tool, call)
    if isinstance(found, TaskPaused):
        loop.record.commit([found])
        return "crashed"
    return found


def reconciled(call: Call, found: ToolResult) -> ToolResulted:
    return ToolResulted(
        ref=call.ref,
        ok=found.ok,
        content=found.content,
        error_code=found.error_code,
        recovery="reconciled",
    )


def preview(tool: Tool | None, call: Call) -> str:
    return _previewed(call.wire.name, tool.touches if tool else "unknown", call.arguments)


def _previewed(name: str, touches: str, arguments: Any) -> str:
    args = json.dumps(arguments, indent=2, ensure_ascii=False)
    return f"{name} (touches: {touches})\n{args}"
