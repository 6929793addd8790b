"""Edit, then approve: a reviewer approves a call with arguments of their own. The edited call is
checked against the tool's schema and judged by the policy again; it runs under an approval of
its own, recorded beside the original, and the model is told. Through the library,
`agent approve --edit`, and the HTTP API with a worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent import audit
from agent.approvals import EditRefused, decide
from agent.events import ApprovalDecided, ApprovalRequested, GateDecided, IntentRecorded
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main
from policies import Gate
from tools import Registry, tool

from .apis import decide_over_http
from .conftest import REPO, pending, request_args, scripted, told, tools, write_script

TALLY = str(REPO / "examples" / "tally_tool.py")


def _turns(**arguments: Any) -> list[Any]:
    return [
        {"plan": ["Count a visitor"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1, **arguments}},
        {"done": "counted"},
    ]


async def test_an_edited_call_is_judged_again_runs_as_edited_and_the_model_is_told(
    store: Store,
) -> None:
    runner = Runner(store, tools(), Gate.default(), planner=scripted(_turns()))
    task = runner.create("Count a visitor")
    state = await runner.run(task)
    asked = pending(state)
    # Given as text, the amount is judged as the tool will take it: a number.
    decision = decide(store, state, asked, approved=True, reviewer="ann", edit={"amount": "5"})
    assert decision.edited == {"counter": "front", "amount": "5"}
    assert (await runner.resume(task)).status == "done"
    assert [(e["counter"], e["amount"]) for e in read_ledger()] == [("front", 5)]
    events = [e.event for e in store.events(task)]
    gates = [e for e in events if isinstance(e, GateDecided)]
    assert [g.arguments["amount"] for g in gates] == [1, 5]  # judged again, as edited
    [again] = [
        e for e in events if isinstance(e, ApprovalRequested) and e.approval_id != asked.approval_id
    ]
    [edit] = [e for e in events if isinstance(e, ApprovalDecided) and e.edit_of is not None]
    assert (edit.edit_of, edit.reviewer, edit.call_hash) == (
        asked.approval_id,
        "ann",
        again.call_hash,
    )
    assert edit.reason == "edited: amount: 1 -> 5"
    [intent] = [e for e in events if isinstance(e, IntentRecorded)]
    assert (intent.approval_id, intent.call_hash) == (again.approval_id, again.call_hash)
    assert "A reviewer changed this call before it ran: edited: amount: 1 -> 5" in told(runner)
    assert audit.verify(store.reader()).ok


@tool(touches="external")
def save(path: str, text: str) -> str:
    """Save a text somewhere (a stand-in for any call a reviewer might edit).

    Args:
        path: where.
        text: what.
    """
    return f"saved {len(text)} characters to {path}"


async def test_an_edit_the_policy_denies_or_the_schema_refuses_does_not_run(store: Store) -> None:
    registry = Registry([save])
    turns = [{"plan": ["Save"]}, {"tool": "save", "args": {"path": "/srv/a.txt", "text": "x"}}]
    for edit, said in (
        ({"path": "/etc/passwd"}, "denied by policy"),
        ({"text": 3}, "the arguments a reviewer gave do not fit save"),
    ):
        runner = Runner(
            store, registry, Gate.default(), planner=scripted([*turns, {"done": "not saved"}])
        )
        task = runner.create("Save")
        state = await runner.run(task)
        assert state.status == "awaiting_approval"
        decide(store, state, pending(state), approved=True, edit=edit)
        assert (await runner.resume(task)).status == "done"
        assert said in told(runner)
        assert "saved" not in told(runner)


async def test_an_edit_that_cannot_be_made_is_refused(store: Store) -> None:
    runner = Runner(store, tools(), Gate.default(), planner=scripted(_turns()))
    task = runner.create("Count a visitor")
    state = await runner.run(task)
    with pytest.raises(EditRefused, match="the edit changes nothing"):
        decide(store, state, pending(state), approved=True, edit={})
    with pytest.raises(EditRefused, match="read from the page"):
        decide(store, state, pending(state), approved=True, edit={"effect": {}})
    assert TaskState.from_store(store, task).status == "awaiting_approval"  # nothing recorded


def test_agent_approve_edit_and_the_api_edit(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = write_script(tmp_path / "script.json", _turns())
    run = ["run", "--model", f"scripted:{script}", "--tools", TALLY, "--json", "Count"]
    assert main(run) == 3
    task = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    with pytest.raises(SystemExit) as refused:
        main(["approve", *request_args(task), "--edit", "{not json"])
    assert refused.value.code == 2
    assert "argument --edit: not JSON" in capsys.readouterr().err
    assert main(["approve", *request_args(task), "--edit", '{"amount": 3}']) == 0
    assert [e["amount"] for e in read_ledger()] == [3]
    # Over HTTP, then a worker.
    assert main(run) == 3
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    assert main(["reviewers", "add", "bo", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    with Store.open() as store:
        answer = decide_over_http(store, second, token, edit={"amount": 7})
    assert answer.status_code == 200, answer.text
    assert answer.json()["edited"] == {"counter": "front", "amount": 7}
    assert main(["worker", "--once"]) == 0
    assert [e["amount"] for e in read_ledger()] == [3, 7]
