"""The reviewers' API under load, on loopback and bounded: 10 reviewers racing to decide the same
1,000 requests make exactly 1,000 decisions, and each approved call runs once; the API then
answers 200 requests a second for 30 seconds without an error."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.events import ApprovalDecided
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main
from policies import Gate

from .apis import served_fixture  # noqa: F401 - a fixture
from .conftest import pending, scripted, tools

REQUESTS = 1000
REVIEWERS = 10
RATE = 200
SECONDS = 30


async def _make_waiting(store: Store, count: int) -> list[tuple[str, str, str]]:
    """`count` tasks waiting for a reviewer: (task, request id, call hash) each."""
    made = []
    for number in range(count):
        turns: list[Any] = [
            {"plan": ["Count"]},
            {"tool": "tally", "args": {"counter": f"c{number}", "amount": 1}},
            {"done": "counted"},
        ]
        runner = Runner(store, tools(), Gate.default(), planner=scripted(turns))
        task = runner.create(f"Count {number}")
        state = await runner.run(task)
        request = pending(state)
        made.append((task, request.approval_id, request.call_hash))
    return made


def _tokens(capsys: pytest.CaptureFixture[str]) -> list[str]:
    tokens = []
    for number in range(REVIEWERS):
        capsys.readouterr()
        assert main(["reviewers", "add", f"reviewer{number}", "--json"]) == 0
        tokens.append(json.loads(capsys.readouterr().out)["token"])
    return tokens


def test_reviewers_racing_decide_each_request_once_and_it_runs_once(
    home: Path, served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = _tokens(capsys)
    with Store.open() as store:
        made = asyncio.run(_make_waiting(store, REQUESTS))
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    statuses: list[int] = []
    lock = threading.Lock()

    def review(token: str, order: random.Random) -> None:
        mine = list(made)
        order.shuffle(mine)
        with httpx.Client(base_url=served, timeout=60) as api:
            for _task, approval_id, call_hash in mine:
                answer = api.post(
                    f"/api/requests/{approval_id}/decision",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"approved": True, "call_hash": call_hash},
                )
                with lock:
                    statuses.append(answer.status_code)

    threads = [
        threading.Thread(target=review, args=(token, random.Random(seed + n)))
        for n, token in enumerate(tokens)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) == REQUESTS
    assert statuses.count(409) == REQUESTS * (REVIEWERS - 1)
    assert len(statuses) == REQUESTS * REVIEWERS  # nothing else: no 5xx, no refusals of auth
    with Store.open() as store:
        decided = sum(
            isinstance(e.event, ApprovalDecided) for task, _, _ in made for e in store.events(task)
        )
        assert decided == REQUESTS
        # Each approved call runs once.
        for task, _, _ in made:
            runner = Runner(store, tools(), Gate.default(), planner=scripted([]))
            state = TaskState.from_store(store, task)
            assert state.status == "running"
            assert asyncio.run(runner.resume(task)).status in ("done", "paused")
    counted = [entry["counter"] for entry in read_ledger()]
    assert sorted(counted) == sorted(f"c{n}" for n in range(REQUESTS))


def test_the_api_holds_200_requests_a_second_for_30_seconds(
    home: Path, served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    [token, *_] = _tokens(capsys)
    with Store.open() as store:
        asyncio.run(_make_waiting(store, 50))
    errors: list[str] = []
    done = 0
    lock = threading.Lock()
    start = time.monotonic()

    def client(offset: int, clients: int) -> None:
        nonlocal done
        with httpx.Client(base_url=served, timeout=10) as api:
            for number in range(offset, RATE * SECONDS, clients):
                due = start + number / RATE  # paced: the rate asked, no more
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                try:
                    answer = api.get("/api/requests", headers={"Authorization": f"Bearer {token}"})
                    ok = answer.status_code == 200 and len(answer.json()) == 50
                    problem = None if ok else f"{answer.status_code} {answer.text[:100]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    done += 1
                    if problem is not None:
                        errors.append(problem)

    clients = 8
    threads = [threading.Thread(target=client, args=(n, clients)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - start
    print(f"{done} requests in {took:.1f} s: {done / took:.0f} a second, {len(errors)} errors")
    assert errors == []
    assert done == RATE * SECONDS
    assert took < SECONDS * 1.1  # it kept up with the rate asked
