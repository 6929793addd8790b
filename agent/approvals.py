"""Deciding a task's pending approval. Used by `agent approve`/`deny`, and by any reviewer UI."""

from __future__ import annotations

from agent.errors import AgentError
from agent.events import ApprovalDecided, ApprovalRequested
from agent.state import TaskState
from agent.store import Store


class NothingToApprove(AgentError):
    code = "nothing_to_approve"


def pending_approval(state: TaskState) -> ApprovalRequested | None:
    call = state.awaiting
    return call.approval if call is not None else None


def decide(
    store: Store, state: TaskState, *, approved: bool, reason: str = "", reviewer: str = ""
) -> ApprovalDecided:
    """Record a reviewer's decision on the task's pending approval.

    Raises `NothingToApprove` if the task is not waiting for one, and `ConflictingWrite` if the
    task's log moved on since `state` was read (the decision is then not recorded).
    """
    request = pending_approval(state)
    if request is None or state.status != "awaiting_approval":
        raise NothingToApprove(
            f"task {state.task_id} is not waiting for an approval (it is {state.status})",
            task_id=state.task_id,
        )
    decision = ApprovalDecided(
        approval_id=request.approval_id, approved=approved, reason=reason, reviewer=reviewer
    )
    store.append(state.task_id, [decision], after=state.last_seq)
    state.apply(decision, state.last_seq + 1)
    return decision
