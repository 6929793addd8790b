"""Steering a task between its stretches of running (agent/steering.py): a plan under review is
accepted, edited or replaced; the user's requests for another plan do not use up the model's
replans; an instruction reaches the model; a plan is not rewritten under a call that has not
settled; a cancelled task stays cancelled. And the session's commands refuse bad input without
ending the session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.events import StepStarted
from agent.runner import Runner
from agent.state import TaskState
from agent.steering import (
    NotSteerable,
    accept_plan,
    add_instruction,
    another_plan,
    cancel,
    edit_plan,
    reviewing_plan,
)
from agent.store import Store
from policies import Gate

from .apis import TALLY
from .conftest import REPO, scripted, told, tools


def _runner(store: Store, turns: list[Any]) -> Runner:
    return Runner(store, tools(), Gate.default(), planner=scripted(turns))


async def test_a_plan_under_review_is_accepted_edited_or_replaced(store: Store) -> None:
    turns: list[Any] = [
        {"plan": ["Look"]},
        {"plan": ["Look again"]},
        {"plan": ["Look once more"]},
        {"plan": ["Look a fourth time"]},
        {"done": "looked", "expect": "Step by the user"},
    ]
    runner = _runner(store, turns)
    task = runner.create("Look", review_plan=True)
    state = await runner.run(task)
    assert reviewing_plan(state)
    for why in ("too vague", "still vague", "no"):  # more than max_replans, all the user's
        another_plan(store, state, why)
        state = await runner.resume(task)
        assert reviewing_plan(state), state.end_reason
    assert state.replans == 0
    edit_plan(store, state, ["Step by the user"])
    state = await runner.resume(task)
    assert state.status == "done"
    assert [e.event.title for e in store.events(task) if isinstance(e.event, StepStarted)] == [
        "Step by the user"
    ]


async def test_an_accepted_plan_starts_its_first_step_and_an_instruction_reaches_the_model(
    store: Store,
) -> None:
    runner = _runner(store, [{"plan": ["Look"]}, {"done": "looked", "expect": "mind the cat"}])
    task = runner.create("Look", review_plan=True)
    state = await runner.run(task)
    add_instruction(store, state, "mind the cat")
    accept_plan(store, state)
    assert (await runner.resume(task)).status == "done"
    assert "The user added, while the task ran (follow it):\\n- mind the cat" in told(runner)
    with pytest.raises(NotSteerable, match="is done"):
        add_instruction(store, TaskState.from_store(store, task), "too late")


async def test_a_plan_is_not_rewritten_under_a_call_that_has_not_settled(store: Store) -> None:
    turns: list[Any] = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    ]
    runner = _runner(store, turns)
    task = runner.create("Count")
    state = await runner.run(task)
    assert state.status == "awaiting_approval"
    with pytest.raises(NotSteerable, match="is awaiting_approval"):
        edit_plan(store, state, ["Something else"])
    cancel(store, state)
    assert TaskState.from_store(store, task).end_reason == "cancelled by the user"
    with pytest.raises(NotSteerable):
        cancel(store, TaskState.from_store(store, task))


def test_bad_commands_in_a_session_are_said_and_the_session_goes_on(home: Path) -> None:
    typed = (
        "/show\n/resume zzzz\n/budget steps=abc\n/budget steps=5\n/tools\n/plan edit\n"
        "/deny don't\n/help\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "--model", "scripted:none.json", "--tools", TALLY],
        input=typed,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    said = done.stdout + done.stderr
    assert "no current task: name one" in said
    assert "no task id starts with 'zzzz'" in said
    assert "give steps=N" in said
    assert "tally" in said  # /tools ran, the session's --model notwithstanding
    assert "the current task waits for no approval" in said
    assert "/exit leave" in said  # the last line ran: nothing above ended the session
    assert done.returncode == 0, said
