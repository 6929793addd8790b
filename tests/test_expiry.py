"""A request for approval that no reviewer decides in time is denied, and the model told: through
the library, `agent approve` (too late), `agent resume`, and the inline prompt; the inbox stops
listing it once its time has run out. Times are made short, not waited for; a decision in time
is the positive control."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import Expired, decide
from agent.config import load_config
from agent.events import ApprovalDecided
from agent.inbox import waiting
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main
from policies import Gate

from .conftest import REPO, pending, request_args, scripted, told, tools, write_script
from .terminal import agent_in_terminal, read_until

TALLY = str(REPO / "examples" / "tally_tool.py")

TURNS: list[Any] = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "told it was not counted"},
]


def _runner(store: Store, expiry: float | None) -> Runner:
    return Runner(store, tools(), Gate.default(), planner=scripted(TURNS), approval_expiry=expiry)


async def test_a_decision_after_the_request_expired_is_refused_and_the_model_told(
    store: Store,
) -> None:
    runner = _runner(store, expiry=0.2)
    task = runner.create("Count a visitor")
    state = await runner.run(task)
    request = pending(state)
    assert request.expire_after == 0.2
    [listed] = waiting(store.reader())  # listed while there is time
    assert listed.expires is not None
    await asyncio.sleep(0.3)
    assert waiting(store.reader(), expired=False) == []  # no longer for a reviewer to decide
    [shown] = waiting(store.reader())  # still listed, as expired, until a process denies it
    assert shown.expires is not None
    assert shown.expires <= time.time()
    assert [w.task_id for w in waiting(store.reader(), expired=True)] == [task]
    with pytest.raises(Expired, match=r"expired at .* \(no reviewer decided it within 0\.2 s\)"):
        decide(store, TaskState.from_store(store, task), request, approved=True)
    state = await runner.resume(task)
    assert state.status == "done"
    decided = [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]
    assert [(d.approved, d.expired) for d in decided] == [(False, True)]
    assert "Error: not run: no reviewer decided in time: expired at" in told(runner)


async def test_a_resume_after_expiry_denies_it_and_goes_on(store: Store) -> None:
    runner = _runner(store, expiry=0.1)
    task = runner.create("Count a visitor")
    await runner.run(task)
    await asyncio.sleep(0.2)
    state = await runner.resume(task)
    assert state.status == "done"
    assert read_ledger() == []  # never counted


def test_the_inline_prompt_answered_too_late_tells_the_model(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = 0.5\n")
    model = f"scripted:{write_script(tmp_path / 'script.json', TURNS)}"
    pid, fd = agent_in_terminal(
        "run", "count", "--config", str(config), "--model", model, "--tools", TALLY
    )
    read_until(fd, b"Approve?")
    time.sleep(0.7)
    os.write(fd, b"y\n")
    screen = read_until(fd, b"told it was not counted")
    assert b"expired at" in screen
    os.waitpid(pid, 0)
    assert read_ledger() == []


async def test_a_request_with_time_left_is_decided_as_ever(store: Store) -> None:
    # The positive control: the same decision, in time, approves.
    runner = _runner(store, expiry=60)
    task = runner.create("Count a visitor")
    state = await runner.run(task)
    decision = decide(store, state, pending(state), approved=True)
    assert decision.approved
    assert (await runner.resume(task)).status == "done"


def test_agent_approve_too_late_says_so(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = 0.5\n")
    script = write_script(tmp_path / "script.json", TURNS)
    run = ["run", "--config", str(config), "--model", f"scripted:{script}", "--tools", TALLY]
    assert main([*run, "--json", "Count a visitor"]) == 3
    task = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    time.sleep(0.6)
    assert main(["approve", *request_args(task), "--config", str(config)]) == 2
    said = capsys.readouterr().err
    assert "expired at" in said
    assert f"agent resume {task}" in said
    assert main(["resume", task, "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "done"


def test_a_bad_expiry_in_the_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = -1\n")
    assert main(["tasks", "--config", str(config)]) == 2
    assert "approvals.expire_after" in capsys.readouterr().err
    config.write_text("[approvals]\nexpire_after = 0\n")  # never
    assert load_config(config).approvals.expire_after == 0
