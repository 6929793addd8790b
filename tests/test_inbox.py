"""The reviewers' inbox: every waiting request across all tasks, oldest first, with its tool,
risk and rule; filtered; a decided request leaves it; a store from before the inbox gets one
when it is opened; `agent inbox` lists it as text and JSON."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import decide
from agent.events import ApprovalRequested, Limits, TaskCreated
from agent.inbox import waiting
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from frontends.cli import main

from .conftest import make_runner, pending


def _asks(counter: str) -> list[Any]:
    return [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": counter, "amount": 1}},
        {"done": "counted"},
    ]


async def _waiting_task(store: Store, counter: str) -> tuple[Runner, str]:
    runner, _ = make_runner(store, _asks(counter), policy=None)  # the default policy asks
    task = runner.create(f"Count {counter}")
    assert (await runner.run(task)).status == "awaiting_approval"
    return runner, task


async def test_waiting_requests_are_listed_oldest_first_and_leave_when_decided(
    store: Store,
) -> None:
    first_runner, first = await _waiting_task(store, "front")
    _, second = await _waiting_task(store, "side")
    done, _ = make_runner(store, [{"plan": ["x"]}, {"done": "nothing to do"}])
    assert (await done.run(done.create("Nothing"))).status == "done"
    listed = waiting(store.reader())
    assert [w.task_id for w in listed] == [first, second]
    request = listed[0]
    assert (request.tool, request.risk, request.cause) == ("tally", "external", "gate")
    assert request.rule is not None
    assert "default.toml" in request.rule
    assert "front" in request.preview
    assert [w.task_id for w in waiting(store.reader(), task=second)] == [second]
    assert waiting(store.reader(), tools=["shell"]) == []
    assert waiting(store.reader(), risks=["read", "write"]) == []
    assert len(waiting(store.reader(), risks=["external"])) == 2
    assert len(waiting(store.reader(), limit=1)) == 1
    state = TaskState.from_store(store, first)
    decide(store, state, pending(state), approved=True, reviewer="ann")
    assert [w.task_id for w in waiting(store.reader())] == [second]
    assert (await first_runner.resume(first)).status == "done"
    assert [w.task_id for w in waiting(store.reader())] == [second]


async def test_a_store_from_before_the_inbox_gets_one_when_opened(home: Path) -> None:
    with Store.open() as store:
        _, task = await _waiting_task(store, "front")
    with sqlite3.connect(home / "events.db") as db:  # as a store written by an older version
        db.execute("DROP TABLE inbox")
    with Store.open() as store:
        assert [w.task_id for w in waiting(store.reader())] == [task]


async def test_agent_inbox_lists_as_text_and_json(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _, task = await _waiting_task(store, "front")
    request = pending(TaskState.from_store(store, task))
    capsys.readouterr()
    assert main(["inbox"]) == 0
    text = capsys.readouterr().out
    assert task in text
    assert "tally" in text
    assert "external" in text
    assert f"agent approve {task} {request.approval_id} {request.short_hash}" in text
    assert main(["inbox", "--json", "--task", task[:4]]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["approval_id"], listed["call_hash"]) == (request.approval_id, request.call_hash)
    assert main(["inbox", "--risk", "deploy"]) == 0
    assert "nothing is waiting" in capsys.readouterr().out


def test_what_a_page_or_model_put_in_a_request_cannot_steer_the_listing(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per request, to read it whole
    # A reason can carry what a page said (an effect that changed: "values.name: 'a' -> '...'").
    hostile = "changed: \x1b[2J\x1b]0;owned\x07 [bold red]APPROVED[/] \u202eevil\x9b31m"
    task = store.create_task(TaskCreated(task="t", model="m", limits=Limits()))
    asked = ApprovalRequested(
        approval_id=f"{task}-1.0",
        ref="1.0",
        call_hash="ab" * 32,
        reason=hostile,
        preview=hostile,
        tool="browser_submit",
        risk="external",
    )
    store.append(task, [asked], after=1)
    capsys.readouterr()
    assert main(["inbox"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\x9b" not in shown
    assert "\u202e" not in shown
    assert "\\x1b[2J" in shown  # made visible, not obeyed
    assert "[bold red]APPROVED[/]" in shown  # markup shown as text
    assert "<U+202E>" in shown
    # The JSON is exact: every character, for a client that escapes it itself.
    assert main(["inbox", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["reason"] == hostile
