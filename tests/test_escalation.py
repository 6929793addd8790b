"""Escalation on expiry: with `[approvals] escalate_to`, a request no reviewer decided in time is
escalated, not denied: only the reviewers named may decide it then (through the library, the API
and a worker alike), within a deadline of its own, after which it is denied and the model told.
Times are made short, not waited for; a decision in time by a reviewer named is the control."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import inbox
from agent.approvals import Escalated, decide
from agent.config import load_config
from agent.events import ApprovalDecided, ApprovalEscalated, Escalation
from agent.inbox import waiting
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError
from examples.tally_tool import read_ledger
from frontends.cli import main
from frontends.serve import app
from policies import Gate

from .apis import task_waiting
from .conftest import pending, scripted, told, tools

TURNS: list[Any] = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "counted, or told why not"},
]


def _runner(store: Store, *, after: float | None) -> Runner:
    return Runner(
        store,
        tools(),
        Gate.default(),
        planner=scripted(TURNS),
        approval_expiry=0.1,
        approval_escalation=Escalation(("dana",), after),
    )


def _escalations(store: Store, task: str) -> list[ApprovalEscalated]:
    return [e.event for e in store.events(task) if isinstance(e.event, ApprovalEscalated)]


async def test_an_expired_request_is_escalated_and_only_those_named_may_decide(
    store: Store,
) -> None:
    runner = _runner(store, after=60)
    task = runner.create("Count a visitor")
    request = pending(await runner.run(task))
    assert (request.escalate_to, request.escalate_after) == (["dana"], 60)
    await asyncio.sleep(0.2)
    with pytest.raises(Escalated, match=r"was escalated to dana .*: only they may approve it now"):
        decide(store, TaskState.from_store(store, task), request, approved=True, reviewer="ann")
    [escalated] = _escalations(store, task)  # recorded by the first to find it, once
    assert escalated.to == ["dana"]
    state = TaskState.from_store(store, task)
    assert state.status == "awaiting_approval"
    [listed] = waiting(store.reader(), expired=False)  # for dana to decide, for a minute more
    assert listed.escalated_to == '["dana"]'
    decide(store, state, request, approved=True, reviewer="dana")
    assert len(_escalations(store, task)) == 1
    assert (await runner.resume(task)).status == "done"
    assert [e["amount"] for e in read_ledger()] == [1]


async def test_anyone_may_deny_an_escalated_request(store: Store) -> None:
    runner = _runner(store, after=60)
    task = runner.create("Count a visitor")
    request = pending(await runner.run(task))
    await asyncio.sleep(0.2)
    assert (await runner.resume(task)).status == "awaiting_approval"  # escalated
    denied = decide(store, TaskState.from_store(store, task), request, approved=False)
    assert not denied.approved
    assert (await runner.resume(task)).status == "done"
    assert read_ledger() == []


async def test_an_escalated_request_no_one_decides_is_denied_and_the_model_told(
    store: Store,
) -> None:
    runner = _runner(store, after=0.1)
    task = runner.create("Count a visitor")
    await runner.run(task)
    await asyncio.sleep(0.2)
    assert (await runner.resume(task)).status == "awaiting_approval"  # escalated, still waiting
    assert len(_escalations(store, task)) == 1
    await asyncio.sleep(0.2)
    assert (await runner.resume(task)).status == "done"
    [denied] = [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]
    assert denied.expired
    assert "it had been escalated to dana" in denied.reason
    assert "no reviewer decided in time" in told(runner)
    assert read_ledger() == []


def test_a_worker_escalates_and_the_api_refuses_anyone_else(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[approvals]\nexpire_after = 0.1\nescalate_to = ["dana"]\nescalate_after = 600\n'
    )
    task = task_waiting(tmp_path, capsys, "--config", str(config))
    asyncio.run(asyncio.sleep(0.2))
    assert main(["worker", "--once", "--config", str(config)]) == 0
    with Store.open() as store:
        assert TaskState.from_store(store, task).status == "awaiting_approval"
        assert len(_escalations(store, task)) == 1
        notices = [n for (n,) in store.reader().execute("SELECT event FROM outbox ORDER BY n")]
        assert notices == ["approval.requested", "approval.escalated"]
    capsys.readouterr()
    tokens = {}
    for name in ("ann", "dana"):
        assert main(["reviewers", "add", name, "--json"]) == 0
        tokens[name] = json.loads(capsys.readouterr().out)["token"]

    async def over_http(name: str) -> httpx.Response:
        with Store.open() as store:
            request = pending(TaskState.from_store(store, task))
            transport = httpx.ASGITransport(app=app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
                listed = await api.get(
                    "/api/requests", headers={"Authorization": f"Bearer {tokens[name]}"}
                )
                assert listed.json()[0]["escalated_to"] == ["dana"]
                return await api.post(
                    f"/api/requests/{request.approval_id}/decision",
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                    json={"approved": True, "call_hash": request.call_hash},
                )

    refused = asyncio.run(over_http("ann"))
    assert (refused.status_code, refused.json()["code"]) == (409, "escalated")
    assert asyncio.run(over_http("dana")).status_code == 200
    assert main(["worker", "--once", "--config", str(config)]) == 0
    assert [e["amount"] for e in read_ledger()] == [1]


def test_a_bad_escalation_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[approvals]\nescalate_to = ["not a name"]\n')
    with pytest.raises(ConfigError, match="escalate_to"):
        load_config(config)


def test_the_inbox_rows_stay_as_the_version_before_escalation_writes_them(store: Store) -> None:
    # A process of that version, still running beside this one, inserts rows of 16 columns.
    with store.writing() as db:
        db.execute(
            "INSERT OR REPLACE INTO inbox VALUES "
            "('a1', 't1', 2, 0, 'tally', 'external', NULL, 'why', 'p', 'h', 'gate', NULL, "
            "NULL, NULL, NULL, NULL)"
        )
    assert inbox.find(store.reader(), "a1") is not None
