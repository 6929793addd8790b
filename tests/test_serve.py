"""The reviewers' HTTP API (`agent serve`) over a real store: tokens made by `agent reviewers`,
kept hashed and revocable; the inbox listed; a decision recorded with the reviewer's name and
address, bound to the hash shown; replayed, stale, expired and raced decisions refused with 409
and nothing recorded; bad bodies refused with 400. In process through httpx's ASGI transport,
and once as `agent serve` listening on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.events import ApprovalDecided
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from frontends.cli import main
from frontends.serve import app
from policies import Gate

from .apis import served_fixture  # noqa: F401 - a fixture
from .conftest import pending, scripted, tools

TURNS: list[Any] = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "counted"},
]


def _token(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["reviewers", "add", name, "--json"]) == 0
    token: str = json.loads(capsys.readouterr().out)["token"]
    return token


async def _waiting(store: Store, expiry: float | None = None) -> tuple[Runner, str]:
    runner = Runner(store, tools(), Gate.default(), planner=scripted(TURNS), approval_expiry=expiry)
    task = runner.create("Count a visitor")
    assert (await runner.run(task)).status == "awaiting_approval"
    return runner, task


@pytest.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app(store), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _decisions(store: Store, task: str) -> list[ApprovalDecided]:
    return [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]


async def test_a_reviewer_decides_through_the_api_and_the_task_runs_it(
    store: Store, home: Path, api: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _token("ann", capsys)
    assert token.encode() not in (home / "events.db").read_bytes()  # kept as its digest only
    runner, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    # Without a token, or with another, nothing is shown.
    assert (await api.get("/api/requests")).status_code == 401
    assert (await api.get("/api/requests", headers=_as("rvw_nope"))).status_code == 401
    listed = (await api.get("/api/requests", headers=_as(token))).json()
    assert [(r["task_id"], r["approval_id"], r["tool"]) for r in listed] == [
        (task, request.approval_id, "tally")
    ]
    shown = (await api.get(f"/api/requests/{request.approval_id}", headers=_as(token))).json()
    assert shown["task_status"] == "awaiting_approval"
    assert "front" in shown["preview"]
    answer = await api.post(
        f"/api/requests/{request.approval_id}/decision",
        headers=_as(token),
        json={"approved": True, "call_hash": request.short_hash, "reason": "fine"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["reviewer"] == "ann"
    [decided] = _decisions(store, task)
    assert (decided.approved, decided.reviewer, decided.origin) == (True, "ann", "http 127.0.0.1")
    assert (await api.get("/api/requests", headers=_as(token))).json() == []
    assert (await runner.resume(task)).status == "done"


async def test_stale_replayed_expired_and_malformed_decisions_are_refused(
    store: Store, api: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _token("ben", capsys)
    _, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    url = f"/api/requests/{request.approval_id}/decision"
    wrong = await api.post(url, headers=_as(token), json={"approved": True, "call_hash": "0" * 8})
    assert wrong.status_code == 409
    assert "is not the one pending" in wrong.json()["error"]
    for body in ({"approved": "yes", "call_hash": "x"}, {"approved": True}, {"x": 1}):
        bad = await api.post(url, headers=_as(token), json=body)
        assert bad.status_code == 400, body
    assert (await api.post(url, headers=_as(token), content=b"{not json")).status_code == 400
    unknown = "/api/requests/nope/decision"
    assert (await api.post(unknown, headers=_as(token), json={})).status_code in (400, 404)
    assert _decisions(store, task) == []  # none of those recorded anything
    good = {"approved": False, "call_hash": request.call_hash, "reason": "no"}
    assert (await api.post(url, headers=_as(token), json=good)).status_code == 200
    replayed = await api.post(url, headers=_as(token), json=good)
    assert replayed.status_code == 409
    assert len(_decisions(store, task)) == 1
    # One whose time ran out is denied, and the reviewer told so.
    _, late_task = await _waiting(store, expiry=0.1)
    late = pending(TaskState.from_store(store, late_task))
    await asyncio.sleep(0.2)
    expired = await api.post(
        f"/api/requests/{late.approval_id}/decision",
        headers=_as(token),
        json={"approved": True, "call_hash": late.call_hash},
    )
    assert (expired.status_code, expired.json()["code"]) == (409, "expired")
    assert [d.expired for d in _decisions(store, late_task)] == [True]


async def test_many_reviewers_deciding_one_request_make_one_decision(
    store: Store, api: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = [_token(f"r{n}", capsys) for n in range(5)]
    _, task = await _waiting(store)
    request = pending(TaskState.from_store(store, task))
    url = f"/api/requests/{request.approval_id}/decision"
    answers = await asyncio.gather(
        *(
            api.post(url, headers=_as(t), json={"approved": True, "call_hash": request.call_hash})
            for t in tokens * 2
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 9
    assert len(_decisions(store, task)) == 1


def test_a_revoked_token_is_refused(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    token = _token("cy", capsys)
    assert main(["reviewers", "add", "cy"]) == 2  # a name is taken once
    assert "there is a reviewer cy already" in capsys.readouterr().err
    assert main(["reviewers", "add", "no spaces"]) == 2
    assert main(["reviewers", "revoke", "cy"]) == 0
    assert main(["reviewers", "revoke", "cy"]) == 2  # once
    capsys.readouterr()
    assert main(["reviewers", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "cy"
    assert listed["revoked"] is not None

    async def ask() -> int:
        transport = httpx.ASGITransport(app=app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return (await client.get("/api/requests", headers=_as(token))).status_code

    assert asyncio.run(ask()) == 401


def _next_inbox(lines: Iterator[str]) -> list[dict[str, Any]]:
    """The requests the stream's next `inbox` event lists."""
    for line in lines:
        if line.startswith("data: "):
            listed: list[dict[str, Any]] = json.loads(line.removeprefix("data: "))
            return listed
    raise AssertionError("the stream ended")


def test_agent_serve_listens_on_loopback_only_unless_told(
    home: Path, served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert main(["serve", "--host", "example"]) == 2
    assert "not an IP address (or localhost)" in capsys.readouterr().err
    token = _token("dee", capsys)
    answer = httpx.get(f"{served}/api/requests", headers=_as(token))
    assert (answer.status_code, answer.json()) == (200, [])
    # The stream says what is waiting now, then again when a task asks.
    url = f"{served}/api/stream"
    with httpx.stream("GET", url, headers=_as(token), timeout=30) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert _next_inbox(lines) == []
        with Store.open() as store:
            _, task = asyncio.run(_waiting(store))
        [listed] = _next_inbox(lines)
        assert (listed["task_id"], listed["tool"]) == (task, "tally")
