""" "Always allow calls like this": a reviewer approves the request pending and, in the same act,
saves a rule that allows calls exactly like it from then on, in this task or in every task of the
project (its policy file).

The rule is made by `policies.allowing` (never wider than the call), shown to the reviewer first,
and saved only as shown: `allow_always` makes it again and refuses it if it is not the rule whose
digest the reviewer confirmed. Everything that could refuse the decision is checked before the rule
is written, and the rule takes its place in the file only once the decision is recorded (the file's
lock held throughout; see `policies.allowing.adding`). The decision keeps the rule's text, so the
log (and its audit chain) says who allowed what, when.

    RuleRefused   no rule can be made for this request, or it is not the rule shown
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.approvals import Seen, decide, named_pending, refuse_if_expired
from agent.events import ApprovalDecided, ApprovalGiven, ApprovalRequested
from agent.state import TaskState
from agent.store import Store
from base.errors import AgentError, ConfigError, ErrorCode
from policies.allowing import Pinned, adding, rule_for

Scope = Literal["task", "project"]
SCOPES: tuple[Scope, ...] = ("task", "project")


class RuleRefused(AgentError):
    """No "always allow" rule can be saved for this request (the message says why)."""

    code = ErrorCode.RULE_REFUSED


@dataclass(frozen=True)
class Proposal:
    """The rule to be shown to the reviewer, where it would be saved, and the call it pins."""

    path: Path
    rule: str
    scope: Scope
    call: Pinned

    @property
    def digest(self) -> str:
        """What a reviewer's confirmation names: the rule they were shown, and no other (its
        dated comment aside, so that a confirmation after midnight still names it)."""
        lines = [line for line in self.rule.splitlines() if not line.startswith("#")]
        return hashlib.sha256("\n".join([str(self.path), *lines]).encode()).hexdigest()[:16]


def propose(
    store: Store, state: TaskState, seen: Seen | ApprovalRequested, *, scope: Scope, reviewer: str
) -> Proposal:
    """The rule that would allow calls exactly like the pending one `seen` names. Raises
    `NothingToApprove` or `NotPending` (as `decide` does) and `RuleRefused`."""
    request = named_pending(store, state, seen)
    call = state.awaiting
    created = state.created
    if call is None or call.arguments is None or created is None:
        raise RuleRefused("there is no call to allow", task_id=state.task_id)
    if request.cause == "reconcile":
        raise RuleRefused(
            "this request is about a call that may have run already: approve or deny it as it is",
            task_id=state.task_id,
        )
    if request.approvers > 1:
        raise RuleRefused(
            f"calls like this need {request.approvers} reviewers each (the rule that asked says "
            "so): approve or deny this one as it is",
            task_id=state.task_id,
        )
    if request.rule == "tool:needs_approval":
        raise RuleRefused(
            f"the tool {call.wire.name} asks a reviewer for every call itself (needs_approval): "
            "no rule can allow it",
            task_id=state.task_id,
        )
    if created.policy is None:
        raise RuleRefused(
            "this task runs with the packaged default policy, which is not yours to change: copy "
            "policies/default.toml, give it to tasks with --policy (or [policy] file in "
            "agent.toml), and always-allow rules are saved there",
            task_id=state.task_id,
        )
    pinned = Pinned(
        call.wire.name,
        request.risk or "external",
        call.arguments,
        state.task_id if scope == "task" else None,
    )
    try:
        rule = rule_for(
            pinned, who=reviewer, request=f"{request.approval_id} of task {state.task_id}"
        )
    except ConfigError as exc:
        raise RuleRefused(exc.message, task_id=state.task_id) from None
    return Proposal(Path(created.policy), rule, scope, pinned)


def allow_always(
    store: Store,
    state: TaskState,
    seen: Seen | ApprovalRequested,
    *,
    scope: Scope,
    confirmed: str,
    reviewer: str,
    origin: str,
    reason: str = "",
) -> ApprovalDecided:
    """Save the rule whose digest is `confirmed` (see `Proposal.digest`) ahead of the policy
    file's rules, and approve the request `seen`. Raises what `propose` and `decide` raise
    (nothing saved, nothing decided), `Expired` (the request is then denied; nothing saved), and
    `RuleRefused` for a rule that is not the one confirmed or cannot be saved."""
    proposal = propose(store, state, seen, scope=scope, reviewer=reviewer)
    if proposal.digest != confirmed.strip():
        raise RuleRefused(
            "the rule is not the one you were shown (the request, the policy file or the date "
            "changed): look at it again",
            task_id=state.task_id,
        )
    refuse_if_expired(store, state, named_pending(store, state, seen), reviewer, approving=True)
    try:
        with adding(proposal.path, proposal.rule, proposal.call) as put_in_place:
            decision = decide(
                store,
                state,
                seen,
                approved=True,
                reason=f"always allowed from now on ({scope}): the rule is in {proposal.path}"
                + (f": {reason}" if reason else ""),
                reviewer=reviewer,
                origin=origin,
                always=proposal.rule,
            )
            put_in_place()
    except ConfigError as exc:
        raise RuleRefused(exc.message, task_id=state.task_id) from None
    assert isinstance(decision, ApprovalDecided), "a request for several reviewers is refused above"
    return decision


def decide_or_allow(
    store: Store,
    state: TaskState,
    seen: Seen | ApprovalRequested,
    *,
    approved: bool,
    reason: str,
    reviewer: str,
    origin: str,
    edit: dict[str, Any] | None = None,
    saving: tuple[Scope, str] | None = None,
    always: str | None = None,
) -> ApprovalDecided | ApprovalGiven:
    """`approvals.decide`, or, with `saving` (a scope, and the digest of the rule the reviewer
    was shown), approve and save that rule (`allow_always`). Raises what those raise."""
    if saving is None:
        return decide(
            store,
            state,
            seen,
            approved=approved,
            reason=reason,
            reviewer=reviewer,
            origin=origin,
            edit=edit,
            always=always,
        )
    scope, digest = saving
    return allow_always(
        store,
        state,
        seen,
        scope=scope,
        confirmed=digest,
        reviewer=reviewer,
        origin=origin,
        reason=reason,
    )
