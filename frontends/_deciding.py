"""A reviewer's decision on a request of the inbox, as the HTTP API and the web inbox take it:
what was decided, or why nothing was (with the HTTP status that says so)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.always import RuleRefused, Scope, decide_or_allow
from agent.approvals import (
    EditRefused,
    NothingToApprove,
    NotPending,
    Seen,
    named_pending,
)
from agent.config import EngineConfig
from agent.events import ApprovalDecided, ApprovalGiven, Limits
from agent.inbox import Waiting
from agent.state import TaskState
from agent.steering import accept_plan, another_plan, edit_plan
from agent.store import Store
from agent.temporal import client as engine_client
from agent.temporal._wire import Decide, PlanAction, Steer
from agent.temporal.client import EngineError
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
    engine: EngineConfig | None = None,
) -> ApprovalDecided | ApprovalGiven | Refused:
    """Decide `found`, named with the hash the reviewer was shown (see `approvals.decide`):
    one on another request, one decided already, one expired, one that lost a race with
    another reviewer, or an edit that cannot be made is refused, and records nothing.
    `always`: approve it and save the rule of this scope whose digest the reviewer was shown
    (see `agent.always`). A task on the Temporal engine is sent the decision as an update,
    through the service `engine` names."""
    state = TaskState.from_store(store, found.task_id)
    seen = Seen(found.approval_id, call_hash)
    try:
        return decide_on_its_engine(
            store,
            state,
            seen,
            engine=engine,
            approved=approved,
            reason=reason,
            reviewer=reviewer,
            origin=origin,
            edit=edit,
            always=always,
        )
    except (NotPending, NothingToApprove) as exc:
        return Refused(409, exc.message, str(exc.code))
    except (EditRefused, RuleRefused) as exc:
        return Refused(400, exc.message, str(exc.code))
    except EngineError as exc:
        return Refused(503, exc.message, str(exc.code))
    except ConflictingWrite:
        return Refused(409, "another decision was recorded first", "conflict")
    except StoreError as exc:
        return Refused(503, exc.message, str(exc.code))


def on_temporal(state: TaskState) -> bool:
    """Whether the task runs on the Temporal engine (what people do to it goes to its
    workflow, which keeps its log)."""
    return state.created is not None and state.created.engine == "temporal"


def decide_on_its_engine(
    store: Store,
    state: TaskState,
    seen: Seen,
    *,
    engine: EngineConfig | None,
    approved: bool,
    reason: str,
    reviewer: str,
    origin: str,
    edit: dict[str, Any] | None = None,
    always: tuple[Scope, str] | None = None,
) -> ApprovalDecided | ApprovalGiven:
    """`approvals.decide`, or for a task of the Temporal engine, its workflow's `decide`
    update through the service `engine` names. `always` (a scope, and the digest of the rule
    the reviewer was shown): approve, and save that rule (`agent.always.allow_always`). Raises
    what `approvals.decide` and `allow_always` raise, and `EngineError` (also when no Temporal
    engine is configured here)."""
    if not on_temporal(state):
        return decide_or_allow(
            store,
            state,
            seen,
            approved=approved,
            reason=reason,
            reviewer=reviewer,
            origin=origin,
            edit=edit,
            saving=always,
        )
    decision = Decide(
        approval_id=seen.approval_id,
        call_hash=seen.call_hash,
        approved=approved,
        reason=reason,
        reviewer=reviewer,
        origin=origin,
        edit=edit,
        always_scope=always[0] if always is not None else None,
        confirmed=always[1] if always is not None else "",
    )
    return decided_on_temporal(_configured(engine, state), store, state, decision)


def plan_on_its_engine(
    store: Store,
    state: TaskState,
    engine: EngineConfig | None,
    action: PlanAction,
    *,
    steps: Sequence[str] = (),
    why: str = "",
    limits: Limits | None = None,
) -> None:
    """What a person does with the task's plan (`agent.steering`'s accept, another, edit), or
    for a task of the Temporal engine, sent to its workflow, which goes on at once (with
    `limits`, when given; on the embedded engine the run that follows takes them). Raises
    `NotSteerable`, `StoreError` and `EngineError`."""
    if on_temporal(state):
        given = limits.model_dump() if limits is not None else {}
        steer = Steer(action=action, steps=tuple(steps), why=why, limits=given)
        steer_on_temporal(_configured(engine, state), state.task_id, steer)
        return
    if action == "accept_plan":
        accept_plan(store, state)
    elif action == "another_plan":
        another_plan(store, state, why)
    else:
        edit_plan(store, state, steps)


def _configured(engine: EngineConfig | None, state: TaskState) -> EngineConfig:
    """The Temporal service a task of that engine is sent what a person does. Raises
    `EngineError` when none is configured here."""
    if engine is None:
        raise EngineError(
            f"task {state.task_id} runs on the Temporal engine, and none is configured here: "
            'set [engine] kind = "temporal" and its address in agent.toml'
        )
    return engine


def steer_on_temporal(engine: EngineConfig, task_id: str, steer: Steer) -> str:
    """Send a person's `steer` to a Temporal task's workflow; its status after. Raises
    `NotSteerable` (as the embedded engine would) or `EngineError`. Blocking, as
    `decided_on_temporal` is."""

    async def send() -> str:
        client = await engine_client.connect(engine)
        return await engine_client.steer(client, task_id, steer)

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, send()).result()


def decided_on_temporal(
    engine: EngineConfig, store: Store, state: TaskState, decision: Decide
) -> ApprovalDecided | ApprovalGiven:
    """Send `decision` to the task's workflow as an update, checked first against the log
    for the embedded inbox's full words; the decision as the workflow recorded it. Raises what
    `approvals.decide` raises for a decision it refuses, and `EngineError`.

    Blocking (the update runs in a thread of its own): the command line and the inbox's
    handlers wait for it as they wait for SQLite."""
    named_pending(store, state, Seen(decision.approval_id, decision.call_hash))

    async def send() -> None:
        client = await engine_client.connect(engine)
        await engine_client.decide(client, state.task_id, decision)

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, send()).result()
    for stored in reversed(store.events(state.task_id, after=state.last_seq)):
        if isinstance(stored.event, ApprovalDecided | ApprovalGiven):
            return stored.event
    raise AssertionError("the workflow accepted a decision it did not record")
