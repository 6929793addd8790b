"""Rules that need two approvers: a call runs only once two different reviewers have approved
it; one of them approving twice counts once; a denial by either denies it. Through the library,
the CLI and the HTTP API. A rule that allows or denies cannot ask for approvers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import reviewers
from agent.approvals import AlreadyGiven, decide
from agent.events import ApprovalDecided, ApprovalGiven
from agent.inbox import waiting
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError
from examples.tally_tool import read_ledger
from frontends.serve import app
from policies import Gate
from policies.rules import parse_rules

from .conftest import pending, scripted, tools

TWO = """
[[rule]]
action = "ask"
reason = "counting needs two reviewers"
tool = "tally"
approvers = 2

[default]
action = "allow"
"""
TURNS: list[Any] = [
    {"plan": ["Count"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "counted"},
]


async def _waiting(store: Store) -> tuple[Runner, str]:
    runner = Runner(store, tools(), Gate.from_text(TWO), planner=scripted(TURNS))
    task = runner.create("Count")
    assert (await runner.run(task)).status == "awaiting_approval"
    return runner, task


async def test_a_call_runs_once_two_reviewers_have_approved_it(store: Store) -> None:
    runner, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    assert request.approvers == 2
    first = decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="ann")
    assert isinstance(first, ApprovalGiven)
    assert TaskState.from_store(store, task).status == "awaiting_approval"
    assert [w.task_id for w in waiting(store.reader())] == [task]  # still waiting
    assert (await runner.resume(task)).status == "awaiting_approval"  # nothing runs on one
    assert read_ledger() == []
    with pytest.raises(AlreadyGiven, match="ann has approved it already"):
        decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="ann")
    second = decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="bo")
    assert isinstance(second, ApprovalDecided)
    assert second.reason == "approved by host:ann, host:bo"
    assert (await runner.resume(task)).status == "done"
    assert len(read_ledger()) == 1


async def test_a_denial_by_either_reviewer_denies_it(store: Store) -> None:
    runner, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="ann")
    denied = decide(
        store,
        TaskState.from_store(store, task),
        request,
        approved=False,
        reviewer="bo",
        reason="no",
    )
    assert isinstance(denied, ApprovalDecided)
    assert not denied.approved
    assert (await runner.resume(task)).status == "done"
    assert read_ledger() == []


async def test_two_reviewers_over_http(store: Store) -> None:
    with store.writing() as db:
        tokens = [reviewers.add(db, name) for name in ("ann", "bo")]
    _, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    url = f"/api/requests/{request.approval_id}/decision"
    body = {"approved": True, "call_hash": request.call_hash}
    transport = httpx.ASGITransport(app=app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
        answers = []
        for token in (tokens[0], tokens[0], tokens[1]):
            answer = await api.post(url, headers={"Authorization": f"Bearer {token}"}, json=body)
            answers.append((answer.status_code, answer.json().get("final")))
    assert answers == [(200, False), (409, None), (200, True)]
    assert TaskState.from_store(store, task).status == "running"


def test_only_a_rule_that_asks_can_want_approvers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="approvers is for a rule that asks"):
        parse_rules('[[rule]]\naction = "allow"\ntool = "x"\napprovers = 2\n', source="p.toml")
    with pytest.raises(ConfigError, match="approvers"):
        parse_rules('[[rule]]\naction = "ask"\ntool = "x"\napprovers = 0\n', source="p.toml")


async def test_an_edit_into_a_rule_that_wants_two_waits_for_another_reviewer(store: Store) -> None:
    # Asked by the default policy; edited, the call falls under the two-approver rule.
    policy = (
        '[[rule]]\naction = "ask"\ntool = "tally"\napprovers = 2\n[rule.args]\ncounter = "vault"\n'
        '\n[default]\naction = "ask"\n'
    )
    runner = Runner(store, tools(), Gate.from_text(policy), planner=scripted(TURNS))
    task = runner.create("Count")
    state = await runner.run(task)
    decide(store, state, pending(state), approved=True, reviewer="ann", edit={"counter": "vault"})
    state = await runner.resume(task)
    assert state.status == "awaiting_approval"  # the editor counts once; another must approve
    request = pending(state)
    assert request.approvers == 2
    with pytest.raises(AlreadyGiven):
        decide(store, state, request, approved=True, reviewer="ann")
    decide(store, state, request, approved=True, reviewer="bo")
    assert (await runner.resume(task)).status == "done"
    assert [(e["counter"], e["amount"]) for e in read_ledger()] == [("vault", 1)]


def test_the_same_name_from_this_host_and_the_api_are_two_reviewers(store: Store) -> None:
    _, task = asyncio.run(_waiting(store))
    request = pending(TaskState.from_store(store, task))
    decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="ann")
    final = decide(
        store,
        TaskState.from_store(store, task),
        request,
        approved=True,
        reviewer="ann",
        origin="http 127.0.0.1",
    )
    assert final.reason == "approved by host:ann, api:ann"
