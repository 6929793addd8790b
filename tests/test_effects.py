"""A tool's effect reader: the effect is judged beside the arguments, bound into the approval,
read again before the approved call runs, and asked about again (a bounded number of times) when
it has changed."""

from __future__ import annotations

from typing import Any

from agent.approvals import decide, pending_approval
from agent.call_steps import MAX_REJUDGEMENTS
from agent.events import ApprovalRequested, CallRejected
from agent.store import Store
from tools import Registry, ToolContext, tool

from .conftest import make_runner, pending, tool_results

POLICY = """
[default]
action = "allow"

[[rule]]
action = "ask"
reason = "it sends something"
[rule.args]
effect = '*"sends"*'
"""


def _sender(amounts: list[int]) -> tuple[Registry, list[int]]:
    """A tool whose effect is the next of `amounts` each time it is read; what it sent."""
    sent: list[int] = []
    reads = iter(amounts)

    async def effect(_ctx: ToolContext, _arguments: dict[str, Any]) -> dict[str, Any]:
        return {"sends": next(reads)}

    @tool(touches="external", effect=effect)
    def send(to: str) -> str:
        """Send the current amount.

        Args:
            to: where.
        """
        sent.append(len(sent))
        return f"sent to {to}"

    return Registry([send]), sent


TURNS = [
    {"plan": ["Send"]},
    {"tool": "send", "args": {"to": "bank"}},
    {"answer": "sent"},
]


async def test_an_unchanged_effect_runs_as_approved(store: Store) -> None:
    registry, sent = _sender([5, 5])
    runner, _ = make_runner(store, TURNS, policy=POLICY, registry=registry)
    task_id = runner.create("send")
    state = await runner.run(task_id)
    request = pending_approval(state)
    assert request is not None
    assert '"sends": 5' in request.preview
    decide(store, state, pending(state), approved=True)
    assert (await runner.run(task_id)).status == "done"
    assert sent == [0]


async def test_a_changed_effect_is_asked_again_with_what_changed(store: Store) -> None:
    registry, sent = _sender([5, 7, 7])
    runner, _ = make_runner(store, TURNS, policy=POLICY, registry=registry)
    task_id = runner.create("send")
    state = await runner.run(task_id)
    decide(store, state, pending(state), approved=True)
    state = await runner.run(task_id)
    again = pending_approval(state)
    assert state.status == "awaiting_approval"
    assert again is not None
    assert "sends: 5 -> 7" in again.reason
    assert sent == []
    decide(store, state, pending(state), approved=True)
    assert (await runner.run(task_id)).status == "done"
    assert sent == [0]


async def test_an_effect_that_keeps_changing_is_given_up_and_the_model_told(store: Store) -> None:
    registry, sent = _sender(list(range(20)))
    turns = [*TURNS[:2], {"answer": "could not send"}]
    runner, _ = make_runner(store, turns, policy=POLICY, registry=registry)
    task_id = runner.create("send")
    state = await runner.run(task_id)
    while state.status == "awaiting_approval":
        decide(store, state, pending(state), approved=True)
        state = await runner.run(task_id)
    assert state.status == "done"
    asked = [e.event for e in store.events(task_id) if isinstance(e.event, ApprovalRequested)]
    assert len(asked) == 1 + MAX_REJUDGEMENTS  # the first time, then again at each change
    assert sent == []
    assert tool_results(store, task_id) == []  # it never ran
    rejected = [e.event for e in store.events(task_id) if isinstance(e.event, CallRejected)]
    assert len(rejected) == 1
    assert f"changed {MAX_REJUDGEMENTS + 1} times since it was first judged" in rejected[0].error
