"""`agent worker`: a task a reviewer decided over HTTP runs on with no one re-running a command;
one whose request expired is denied and runs on; one that another command decided is left to it
for the grace period; two workers at once run a task once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main

from .apis import TALLY, decide_over_http, task_waiting
from .conftest import REPO, request_args, write_script
from .terminal import agent_in_terminal, read_until


def _waiting(tmp_path: Path, capsys: pytest.CaptureFixture[str], *config: str) -> str:
    return task_waiting(tmp_path, capsys, *config)


def _approve_over_http(home: Path, task: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["reviewers", "add", "ann", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    with Store.open(home / "events.db") as store:
        answer = decide_over_http(store, task, token)
    assert answer.status_code == 200, answer.text


def _status(task: str) -> str:
    with Store.open() as store:
        return TaskState.from_store(store, task).status


def test_a_decision_over_http_is_carried_out_by_a_worker(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _waiting(tmp_path, capsys)
    assert main(["worker", "--once"]) == 0  # nothing is due: it waits for a reviewer
    assert _status(task) == "awaiting_approval"
    _approve_over_http(home, task, capsys)
    assert main(["worker", "--once"]) == 0
    assert _status(task) == "done"
    assert [(e["counter"], e["amount"]) for e in read_ledger()] == [("front", 1)]


def test_a_decision_by_another_command_is_left_to_it_for_the_grace_period(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _waiting(tmp_path, capsys)
    assert main(["approve", *request_args(task), "--no-resume"]) == 4  # running, not here
    assert main(["worker", "--once", "--grace", "600"]) == 0
    assert _status(task) == "running"  # the command that decided may yet go on with it
    assert main(["worker", "--once", "--grace", "0"]) == 0  # the control: past the grace
    assert _status(task) == "done"


def test_an_expired_request_is_denied_and_the_task_goes_on(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = 0.1\n")
    task = _waiting(tmp_path, capsys, "--config", str(config))
    time.sleep(0.2)
    assert main(["worker", "--once", "--config", str(config)]) == 0
    assert _status(task) == "done"
    assert read_ledger() == []


def test_a_task_another_process_holds_is_left_to_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _waiting(tmp_path, capsys)
    _approve_over_http(home, task, capsys)
    with Store.open() as store, store.lease(task):  # as another worker running it would
        assert main(["worker", "--once"]) == 0
        assert _status(task) == "running"
        assert read_ledger() == []
    assert main(["worker", "--once"]) == 0  # the control: once let go, a worker runs it
    assert _status(task) == "done"
    assert len(read_ledger()) == 1


def test_two_workers_at_once_run_a_task_once(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _waiting(tmp_path, capsys)
    _approve_over_http(home, task, capsys)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENT_HOME": str(home)}
    command = [sys.executable, "-m", "frontends.cli", "worker", "--once"]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [w.wait(120) for w in workers] == [0, 0]
    assert _status(task) == "done"
    assert len(read_ledger()) == 1


def test_the_inline_prompt_notices_a_decision_made_elsewhere_and_goes_on(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    turns: list[Any] = [
        {"plan": ["Count a visitor"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
        {"done": "counted"},
    ]
    model = f"scripted:{write_script(tmp_path / 'script.json', turns)}"
    pid, fd = agent_in_terminal("run", "count", "--model", model, "--tools", TALLY)
    read_until(fd, b"Approve?")
    with Store.open() as store:
        [task] = [row.id for row in store.tasks()]
    _approve_over_http(home, task, capsys)  # while the prompt waits, nothing typed
    screen = read_until(fd, b"counted")
    assert b"was approved elsewhere, by ann (http 127.0.0.1)" in screen
    os.waitpid(pid, 0)
    assert [e["amount"] for e in read_ledger()] == [1]
    assert _status(task) == "done"
