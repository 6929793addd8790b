"""Deciding a task's pending approval. Used by `agent approve`/`deny`, the inline prompt of
`agent run`, and any reviewer UI.

A decision names the request it decides, as the reviewer saw it: the request's id and its call's
hash (the first `SHORT_HASH` characters, as shown, are enough). A decision on any other request,
on one already decided, or on one no longer pending is refused, saying what is pending now. So a
reviewer who read "pay bob 5" cannot approve the "pay mallory 5000" that replaced it.

A request that waits longer than it may (`expire_after`) is denied by the first process that
finds it so (a decision that comes too late, a resume, a worker), and the model is told; or, when
the config escalates (`escalate_to`), escalated once: then only the reviewers named may approve
it (any may still deny it) until its second deadline, when it is denied.

    AgentError
    ├── NothingToApprove   the task is not waiting for a reviewer
    ├── NotPending         the request named is not the one pending (decided, replaced, unknown)
    │   ├── Expired        it was, but its time ran out first: it is now denied
    │   ├── Escalated      it was escalated to other reviewers: only they may approve it
    │   └── AlreadyGiven   it needs several reviewers, and this one has approved it already
    └── EditRefused        an edit that cannot be made (the call's effect is read, not given)
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from agent.events import (
    SHORT_HASH,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalGiven,
    ApprovalRequested,
)
from agent.inbox import Waiting, expiry
from agent.state import TaskState
from agent.store import Store
from base.errors import AgentError, ErrorCode
from tools.tool import EFFECT


class NothingToApprove(AgentError):
    code = ErrorCode.NOTHING_TO_APPROVE


class NotPending(AgentError):
    """The request a decision names is not the one pending."""

    code = ErrorCode.NOT_PENDING


class EditRefused(AgentError):
    """An edit that cannot be made to the request (nothing to edit, or a call whose effect is
    read, not given)."""

    code = ErrorCode.BAD_ARGUMENTS


class AlreadyGiven(NotPending):
    """A request that needs several reviewers was approved by this one already."""


class Expired(NotPending):
    """The request a decision names expired before it: it is denied, and the task told."""

    code = ErrorCode.EXPIRED


class Escalated(NotPending):
    """The request a decision names was escalated to other reviewers: only they may decide it."""

    code = ErrorCode.ESCALATED


@dataclass(frozen=True)
class Seen:
    """A request as a reviewer saw it: its id, and its call's hash (or the start of it)."""

    approval_id: str
    call_hash: str

    @classmethod
    def of(cls, request: ApprovalRequested) -> Seen:
        return cls(request.approval_id, request.call_hash)


def decide_command(task_id: str, request: ApprovalRequested | Waiting) -> str:
    """The commands that decide `request`, as a reviewer would type them."""
    named = f"{task_id} {request.approval_id} {request.call_hash[:SHORT_HASH]}"
    return f"agent approve {named}  |  agent deny {named} --reason …"


def pending_approval(state: TaskState) -> ApprovalRequested | None:
    call = state.awaiting
    return call.approval if call is not None else None


def named_pending(
    store: Store | None, state: TaskState, seen: Seen | ApprovalRequested
) -> ApprovalRequested:
    """The task's pending request, which `seen` must name. Raises `NothingToApprove` if the
    task is not waiting for a reviewer, `NotPending` if `seen` names another request (its
    message says which is pending, and, with the task's `store`, what became of the one named:
    a workflow checks without it)."""
    if isinstance(seen, ApprovalRequested):
        seen = Seen.of(seen)
    request = pending_approval(state)
    if request is None or state.status != "awaiting_approval":
        raise NothingToApprove(
            f"task {state.task_id} is not waiting for an approval (it is {state.status})"
            + _fate(store, state.task_id, seen),
            task_id=state.task_id,
        )
    if not _names(seen, request):
        fate = _fate(store, state.task_id, seen)
        raise NotPending(
            f"request {seen.approval_id} {seen.call_hash[:SHORT_HASH]} is not the one pending"
            f"{fate}. Pending now: {request.approval_id} {request.short_hash} "
            f"({_first_line(request.preview)}); read it with `agent show {state.task_id}`, then "
            f"decide: {decide_command(state.task_id, request)}",
            task_id=state.task_id,
            pending=request.approval_id,
        )
    return request


def decide(
    store: Store,
    state: TaskState,
    seen: Seen | ApprovalRequested,
    *,
    approved: bool,
    reason: str = "",
    reviewer: str = "",
    origin: str = "",
    edit: dict[str, Any] | None = None,
    always: str | None = None,
) -> ApprovalDecided | ApprovalGiven:
    """Record a reviewer's decision on the request `seen`, which must be the task's pending one.

    Raises `NothingToApprove` if the task is not waiting for a reviewer, `NotPending` if `seen`
    is not the request pending (its message says what is), and `ConflictingWrite` if the task's
    log moved on since `state` was read (the decision is then not recorded).

    A request that needs several reviewers (a rule's `approvers`) gets an `ApprovalGiven` for
    each approval but the last, which is the decision; a denial by any of them decides it.
    Raises `AlreadyGiven` for a reviewer who approved it already.

    `always` (with `approved`): the rule saved with this approval (see `agent.always`), kept in
    the decision.

    `edit` (with `approved`): arguments to put in place of the model's, each key replacing the
    one of that name. The edited call is checked and judged by the gate again before it runs
    (see `call_steps.Execute`), and the edit is kept beside the original in the log. Raises
    `EditRefused` for an edit that cannot be made.
    """
    request = named_pending(store, state, seen)
    refuse_if_expired(store, state, request, reviewer, approving=approved)
    if approved and request.approvers > 1:
        given = _given(store, state, request, reviewer, edit=edit, origin=origin)
        if len(given) + 1 < request.approvers:
            one = ApprovalGiven(
                approval_id=request.approval_id,
                call_hash=request.call_hash,
                reviewer=reviewer,
                origin=origin,
                reason=reason,
            )
            store.append(state.task_id, [one], after=state.last_seq)
            state.apply(one, state.last_seq + 1)
            return one
        everyone = ", ".join([*given, identity(reviewer, origin)])
        reason = f"approved by {everyone}" + (f": {reason}" if reason else "")
    decision = ApprovalDecided(
        approval_id=request.approval_id,
        call_hash=request.call_hash,
        approved=approved,
        reason=reason,
        reviewer=reviewer,
        origin=origin,
        edited=_edited(state, request, edit) if edit is not None and approved else None,
        always=always if approved else None,
    )
    store.append(state.task_id, [decision], after=state.last_seq)
    state.apply(decision, state.last_seq + 1)
    return decision


def _given(
    store: Store,
    state: TaskState,
    request: ApprovalRequested,
    reviewer: str,
    *,
    edit: dict[str, Any] | None,
    origin: str,
) -> list[str]:
    """Who has approved `request` so far, for a request that needs several reviewers. Raises
    `AlreadyGiven` if `reviewer` is one of them (or has no name to tell them apart). A name
    is this host's account or an API reviewer's: "ann" of one is not "ann" of the other."""
    if edit is not None:
        raise EditRefused(
            f"this request needs {request.approvers} reviewers: approve or deny it as it is",
            task_id=state.task_id,
        )
    given = [
        identity(e.event.reviewer, e.event.origin)
        for e in store.events(state.task_id)
        if isinstance(e.event, ApprovalGiven)
        and (e.event.approval_id, e.event.call_hash) == (request.approval_id, request.call_hash)
    ]
    if not reviewer or identity(reviewer, origin) in given:
        raise AlreadyGiven(
            f"request {request.approval_id} needs {request.approvers} different reviewers, and "
            f"{reviewer or 'a reviewer with no name'} "
            + ("has approved it already" if reviewer else "cannot be told apart")
            + f" (approved so far by: {', '.join(given) or 'no one'})",
            task_id=state.task_id,
        )
    return given


def account() -> str:
    """The name of this process's account, as a decision made here records it: from the system's
    user database, not from $LOGNAME or $USER, which anyone can set."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def identity(reviewer: str, origin: str) -> str:
    """Who decided, told apart across where names come from: "api:ann" or "host:ann"."""
    return f"{'api' if origin.startswith('http') else 'host'}:{reviewer}"


def _edited(state: TaskState, request: ApprovalRequested, edit: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments with `edit` put in. Raises `EditRefused`."""
    call = state.awaiting
    if call is None or call.arguments is None:
        raise EditRefused("there is no call to edit", task_id=state.task_id)
    if request.cause == "reconcile":
        raise EditRefused(
            "this request is about a call that may have run already: approve or deny it as it is",
            task_id=state.task_id,
        )
    if EFFECT in call.arguments or EFFECT in edit:
        raise EditRefused(
            "what this call would do is read from the page or the files (a form's values, a "
            "deploy's folder): change it there, or approve or deny it as it is",
            task_id=state.task_id,
        )
    if not edit:
        raise EditRefused("the edit changes nothing", task_id=state.task_id)
    return {**call.arguments, **edit}


def refuse_if_expired(
    store: Store, state: TaskState, request: ApprovalRequested, reviewer: str, *, approving: bool
) -> None:
    """Raise `Expired` if `request`'s time has run out, once its denial is recorded. A request
    the config escalates is escalated instead (recorded), the first time; then only the
    reviewers it was escalated to may approve it (`Escalated` for anyone else), while any
    reviewer may still deny it (the safe way: a name mistyped in the config must not leave a
    task no one can decide)."""
    lapsed = expired(store, state, request)
    if lapsed is not None:
        store.append(state.task_id, [lapsed], after=state.last_seq)
        state.apply(lapsed, state.last_seq + 1)
    if isinstance(lapsed, ApprovalDecided):
        raise Expired(
            f"request {request.approval_id} {request.short_hash} {lapsed.reason}: it is denied, "
            f"and the task is told when it runs on (`agent resume {state.task_id}`)",
            task_id=state.task_id,
        )
    call = state.awaiting
    escalated = call.escalated if call is not None else None
    if approving and escalated is not None and reviewer not in escalated.to:
        raise Escalated(
            f"request {request.approval_id} {request.short_hash} was escalated to "
            f"{', '.join(escalated.to)} ({escalated.reason}): only they may approve it now "
            "(any reviewer may deny it)",
            task_id=state.task_id,
        )


def expired(
    store: Store, state: TaskState, request: ApprovalRequested
) -> ApprovalDecided | ApprovalEscalated | None:
    """What `request` is due if its time has run out: its escalation (the first time, when the
    config escalates), else its denial; None if its time has not run out."""
    expires = expiry(store.reader(), request.approval_id)
    if expires is None or expires > time.time():
        return None
    call = state.awaiting
    escalated = call.escalated if call is not None else None
    if request.escalate_to and escalated is None:
        return ApprovalEscalated(
            approval_id=request.approval_id,
            call_hash=request.call_hash,
            to=request.escalate_to,
            expire_after=request.escalate_after,
            reason=f"no reviewer decided it within {duration(request.expire_after or 0)}",
        )
    waited = duration(
        (escalated.expire_after if escalated is not None else request.expire_after) or 0
    )
    after = f"; it had been escalated to {', '.join(escalated.to)}" if escalated else ""
    return ApprovalDecided(
        approval_id=request.approval_id,
        call_hash=request.call_hash,
        approved=False,
        reason=f"expired at {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(expires))} "
        f"(no reviewer decided it within {waited}{after})",
        expired=True,
    )


def duration(seconds: float) -> str:
    """A span of time as a person reads it: "0.2 s", "5 min", "3 h", "2 days"."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _names(seen: Seen, request: ApprovalRequested) -> bool:
    """Whether `seen` names `request`: the same id, and a hash that is the start of its own."""
    given = seen.call_hash.strip().lower()
    return (
        seen.approval_id == request.approval_id
        and len(given) >= min(SHORT_HASH, len(request.call_hash))
        and request.call_hash.startswith(given)
    )


def _fate(store: Store | None, task_id: str, seen: Seen) -> str:
    """What became of the request `seen` names, from the task's log (" (it was ...)")."""
    if store is None:
        return ""
    asked: ApprovalRequested | None = None
    decided: ApprovalDecided | None = None
    for stored in store.events(task_id):
        event = stored.event
        if isinstance(event, ApprovalRequested) and event.approval_id == seen.approval_id:
            asked, decided = event, None  # asked again (its call changed): the last one counts
        elif isinstance(event, ApprovalDecided) and event.approval_id == seen.approval_id:
            decided = event
    if asked is None:
        return " (the task never asked it)"
    if not asked.call_hash.startswith(seen.call_hash.strip().lower()):
        return " (the hash given is not its call's: the call changed, or it was mistyped)"
    if decided is not None:
        by = f" by {decided.reviewer}" if decided.reviewer else ""
        return f" (it was {'approved' if decided.approved else 'denied'}{by})"
    return ""


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 100 else line[:97] + "..."
