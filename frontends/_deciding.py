"""A reviewer's decision on a request of the inbox, as the HTTP API and the web inbox take it:
what was decided, or why nothing was (with the HTTP status that says so)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.always import RuleRefused, Scope, allow_always
from agent.approvals import EditRefused, NothingToApprove, NotPending, Seen, decide
from agent.events import ApprovalDecided, ApprovalGiven
from agent.inbox import Waiting
from agent.state import TaskState
from agent.store import Store
from base.errors import ConflictingWrite, StoreError


@dataclass(frozen=True)
class Refused:
    """Nothing was recorded: `message` says why (to the reviewer)."""

    status: int
    message: str
    code: str


def decide_request(
    store: Store,
    found: Waiting,
    call_hash: str,
    *,
    approved: bool,
    reason: str,
    reviewer: str,
    origin: str,
    edit: dict[str, Any] | None,
    always: tuple[Scope, str] | None = None,
) -> ApprovalDecided | ApprovalGiven | Refused:
    """Decide `found`, named with the hash the reviewer was shown (see `approvals.decide`):
    one on another request, one decided already, one expired, one that lost a race with
    another reviewer, or an edit that cannot be made is refused, and records nothing.
    `always`: approve it and save the rule of this scope whose digest the reviewer was shown
    (see `agent.always`)."""
    state = TaskState.from_store(store, found.task_id)
    seen = Seen(found.approval_id, call_hash)
    try:
        if always is not None:
            scope, digest = always
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
        return decide(
            store,
            state,
            seen,
            approved=approved,
            reason=reason,
            reviewer=reviewer,
            origin=origin,
            edit=edit,
        )
    except (NotPending, NothingToApprove) as exc:
        return Refused(409, exc.message, str(exc.code))
    except (EditRefused, RuleRefused) as exc:
        return Refused(400, exc.message, str(exc.code))
    except ConflictingWrite:
        return Refused(409, "another decision was recorded first", "conflict")
    except StoreError as exc:
        return Refused(503, exc.message, str(exc.code))
