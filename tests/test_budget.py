"""Budgets and the stuck detector stop a runaway at exactly the configured limit, and the task
goes on once the limit is raised (or, for a stuck task, once a person resumes it)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.approvals import decide
from agent.prices import Price
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from policies import Gate
from tools import Registry, Shown, tool

from .conftest import ALLOW_ALL, make_runner, pending, run_limits, scripted, tools


def _runaway(n: int, *, answer: bool = True) -> list[dict[str, Any]]:
    turns: list[Any] = [{"plan": ["Add up numbers"]}]
    turns += [{"tool": "calculate", "args": {"expression": f"{i} + 1"}} for i in range(n)]
    if answer:
        turns.append({"answer": f"added {n} numbers"})
    return turns


def _ran(store: Store, task_id: str) -> int:
    return sum(1 for e in store.events(task_id) if e.event.kind == "tool_result")


async def test_step_budget_pauses_at_exactly_the_limit_and_resumes_when_raised(
    store: Store,
) -> None:
    runner, _ = make_runner(store, _runaway(12))
    task_id = runner.create("add numbers", run_limits(max_steps=5))
    state = await runner.run(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "budget_exhausted"
    assert state.pause.detail == "steps: 5 of 5 used"
    assert state.steps_taken == 5
    assert _ran(store, task_id) == 5

    # Resuming without more budget changes nothing; raising the limit goes on to the new limit.
    again = await runner.resume(task_id)
    assert (again.status, again.steps_taken) == ("paused", 5)
    state = await runner.resume(task_id, run_limits(max_steps=8))
    assert (state.status, state.steps_taken, _ran(store, task_id)) == ("paused", 8, 8)
    state = await runner.resume(task_id, run_limits(max_steps=100))
    assert state.status == "done"
    assert state.answer == "added 12 numbers"
    assert _ran(store, task_id) == 12


async def test_token_budget_stops_before_the_call_that_would_start_over_it(store: Store) -> None:
    turns = [{**t, "usage": {"input_tokens": 80, "output_tokens": 20}} for t in _runaway(10)]
    runner, _ = make_runner(store, turns)
    task_id = runner.create("add numbers", run_limits(max_tokens=450))
    state = await runner.run(task_id)
    # plan 100 + 4 executor turns of 100 = 500 >= 450: the fifth executor call is never made.
    assert (state.status, state.usage.total, state.steps_taken) == ("paused", 500, 4)
    assert state.pause is not None
    assert state.pause.detail == "tokens: 500 of 450 used"
    state = await runner.resume(task_id, run_limits(max_tokens=10_000))
    assert state.status == "done"


async def test_cost_budget_uses_the_price_table(store: Store) -> None:
    turns = [{**t, "usage": {"input_tokens": 1000, "output_tokens": 1000}} for t in _runaway(10)]
    backend = scripted(turns)
    runner = Runner(
        store,
        tools(),
        Gate.from_text(ALLOW_ALL),
        planner=backend,
        prices={backend.name: Price(input=1.0, output=4.0)},
    )  # $0.005 a turn
    task_id = runner.create("add numbers", run_limits(max_cost_usd=0.02))
    state = await runner.run(task_id)
    assert state.status == "paused"
    assert round(state.cost_usd, 6) == 0.02
    assert state.steps_taken == 3
    assert state.pause is not None
    assert state.pause.detail.startswith("cost: $0.0200 of $0.0200")


async def test_time_budget_counts_model_and_tool_time(store: Store) -> None:
    @tool
    async def wait(seconds: float) -> str:
        """Wait a while.

        Args:
            seconds: how long.
        """
        await asyncio.sleep(seconds)
        return "waited"

    registry = Registry([wait])
    turns = [
        {"plan": ["Wait"]},
        *[{"tool": "wait", "args": {"seconds": 0.2}}] * 10,
        {"answer": "done waiting"},
    ]
    runner, _ = make_runner(store, turns, registry=registry)
    task_id = runner.create("wait", run_limits(max_seconds=0.5))
    state = await runner.run(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.detail.startswith("time:")
    assert _ran(store, task_id) == 3  # 0.6 s >= 0.5 s after the third wait


async def _stuck_after(store: Store, turns: list[Any], **limits: int) -> TaskState:
    runner, _ = make_runner(store, turns)
    return await runner.run(runner.create("add numbers", run_limits(**limits)))


async def test_identical_action_and_observation_repeated_4_times_is_stuck(store: Store) -> None:
    turns = [{"plan": ["Add"]}, *[{"tool": "calculate", "args": {"expression": "1 + 1"}}] * 20]
    state = await _stuck_after(store, turns)
    assert state.status == "stuck"
    assert state.end_reason is not None
    assert state.end_reason == (
        'the same action and observation 4 times in a row: calculate({"expression": "1 + 1"})'
    )
    assert _ran(store, state.task_id) == 4


async def test_the_repeat_limit_is_configurable(store: Store) -> None:
    turns = [{"plan": ["Add"]}, *[{"tool": "calculate", "args": {"expression": "1 + 1"}}] * 20]
    state = await _stuck_after(store, turns, stuck_repeats=7)
    assert (state.status, _ran(store, state.task_id)) == ("stuck", 7)


async def test_identical_error_3_times_is_stuck(store: Store) -> None:
    turns = [
        {"plan": ["Divide"]},
        *[{"tool": "calculate", "args": {"expression": f"{i} / 0"}} for i in range(20)],
    ]
    state = await _stuck_after(store, turns)
    # Different expressions, the same error: that is still going nowhere.
    assert state.end_reason is not None
    assert state.end_reason.startswith("the same error 3 times in a row")
    assert _ran(store, state.task_id) == 3


async def test_alternating_between_two_actions_for_6_steps_is_stuck(store: Store) -> None:
    a = {"tool": "calculate", "args": {"expression": "1 + 1"}}
    b = {"tool": "calculate", "args": {"expression": "2 + 2"}}
    state = await _stuck_after(store, [{"plan": ["Add"]}, *[a, b] * 10])
    assert state.end_reason is not None
    assert state.end_reason.startswith("alternating between two actions for 6 steps")
    assert _ran(store, state.task_id) == 6


async def test_a_stuck_task_resumes_when_a_person_says_so(store: Store) -> None:
    same = {"tool": "calculate", "args": {"expression": "1 + 1"}}
    runner, _ = make_runner(store, [{"plan": ["Add"]}, *[same] * 4, *[same] * 2, {"answer": "2"}])
    task_id = runner.create("add")
    assert (await runner.run(task_id)).status == "stuck"
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert state.answer == "2"


async def test_varied_progress_is_not_stuck(store: Store) -> None:
    runner, _ = make_runner(store, _runaway(30))
    state = await runner.run(runner.create("add numbers"))
    assert state.status == "done"


async def test_the_same_action_in_every_step_is_progress_not_a_loop(store: Store) -> None:
    turns: list[Any] = [{"plan": [f"Check {i}" for i in range(5)]}]
    for _ in range(5):
        turns += [{"tool": "calculate", "args": {"expression": "1 + 1"}}, {"done": "2"}]
    state = await _stuck_after(store, turns)
    assert state.status == "done"
    assert len(state.completed) == 5


async def test_a_reviewer_declining_the_same_call_again_and_again_is_stuck(
    store: Store,
) -> None:
    ask = {"tool": "tally", "args": {"counter": "front-desk"}}
    runner, _ = make_runner(store, [{"plan": ["Tally"]}, *[ask] * 6], policy=None)
    task_id = runner.create("tally")
    state = await runner.run(task_id)
    for _ in range(3):
        assert state.status == "awaiting_approval"
        decide(store, state, pending(state), approved=False, reason="no")
        state = await runner.resume(task_id)
    assert state.status == "stuck"
    assert state.end_reason == (
        "the same error 3 times in a row: Error: a reviewer declined this call: no"
    )


async def test_finishing_in_the_same_turn_as_a_failed_call_is_refused(store: Store) -> None:
    turn = {
        "tool_calls": [
            {"name": "calculate", "arguments": {"expression": "1/0"}},
            {"name": "finish", "arguments": {"answer": "it is 42"}},
        ]
    }
    runner, backend = make_runner(store, [{"plan": ["Divide"]}, turn, {"answer": "cannot"}])
    state = await runner.run(runner.create("divide"))
    assert (state.status, state.answer) == ("done", "cannot")
    seen = backend.requests[-1].messages[-1].content
    assert seen.startswith("Error: not run: an earlier call in this turn failed or was declined")


def _watching(changing_for: int) -> Registry:
    """A tool that looks at something which changes by itself for its first `changing_for` looks
    (a page loading), then is still; it says the same every time, as a snapshot of a spinner
    does."""
    looks = 0

    @tool
    def look() -> Shown:
        """Look at the page."""
        nonlocal looks
        looks += 1
        return Shown("Loading…", changing=looks <= changing_for)

    registry = tools()
    registry.add(look)
    return registry


async def test_looking_again_at_a_page_still_changing_is_waiting_not_a_loop(store: Store) -> None:
    # Six looks while it changes, then the same look at a page that has stopped: the detector
    # tells them apart by the tool's word that what it looked at changed since its last look.
    turns = [{"plan": ["Wait for the page"]}, *[{"tool": "look", "args": {}}] * 20]
    runner, _ = make_runner(store, turns, registry=_watching(changing_for=6))
    state = await runner.run(runner.create("wait for the page", run_limits()))
    assert state.status == "stuck"
    assert state.end_reason == "the same action and observation 4 times in a row: look({})"
    # The positive control: the same results without the word are caught at the fourth.
    assert _ran(store, state.task_id) == 6 + 3


async def test_waiting_on_a_page_that_never_settles_is_stuck_at_the_poll_limit(
    store: Store,
) -> None:
    turns = [{"plan": ["Wait for the page"]}, *[{"tool": "look", "args": {}}] * 20]
    runner, _ = make_runner(store, turns, registry=_watching(changing_for=100))
    state = await runner.run(runner.create("wait", run_limits(stuck_polls=12)))
    assert state.status == "stuck"
    assert state.end_reason == (
        "waited 12 times in a row on something still changing, and it did not settle: look({})"
    )
    assert _ran(store, state.task_id) == 12
