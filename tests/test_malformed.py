"""50 malformed model outputs: each becomes an error observation the model can read, none runs a
tool, and the loop goes on to finish the task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store
from examples.tally_tool import read_ledger

from .conftest import make_runner, run_limits

MB = 1024 * 1024


def _call(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


CASES: list[tuple[str, dict[str, Any]]] = [
    # truncated or broken JSON
    ("truncated object", _call("tally", '{"counter": "a"')),
    ("truncated key", _call("tally", '{"coun')),
    ("open brace", _call("tally", "{")),
    ("truncated after colon", _call("tally", '{"counter":')),
    ("trailing comma", _call("tally", '{"counter": "a",}')),
    ("single quotes", _call("tally", "{'counter': 'a'}")),
    ("extra closing brace", _call("tally", '{"counter": "a"}}')),
    ("unquoted key", _call("tally", '{counter: "a"}')),
    ("NaN number", _call("tally", '{"counter": "a", "amount": NaN}')),
    ("open array", _call("tally", "[")),
    # not an object at all
    ("null", _call("tally", "null")),
    ("a string", _call("tally", '"front-desk"')),
    ("a number", _call("tally", "42")),
    ("an array", _call("tally", '["front-desk", 1]')),
    # unknown tools
    ("misspelled tool", _call("taly", {"counter": "a"})),
    ("wrong case", _call("Tally", {"counter": "a"})),
    ("empty name", _call("", {"counter": "a"})),
    ("shell", _call("shell", {"command": "rm -rf /"})),
    ("path as name", _call("../tally", {"counter": "a"})),
    ("injection in name", _call("tally; rm -rf /", {"counter": "a"})),
    ("huge name", _call("t" * 5000, {"counter": "a"})),
    ("planner tool while acting", _call("submit_plan", {"steps": ["x"]})),
    # wrong types
    ("amount as words", _call("tally", {"counter": "a", "amount": "five"})),
    ("amount as list", _call("tally", {"counter": "a", "amount": [1]})),
    ("amount as object", _call("tally", {"counter": "a", "amount": {"n": 1}})),
    ("amount fractional", _call("tally", {"counter": "a", "amount": 1.5})),
    ("counter as number", _call("tally", {"counter": 5})),
    ("counter null", _call("tally", {"counter": None})),
    ("counter as list", _call("tally", {"counter": ["a"]})),
    ("expression as object", _call("calculate", {"expression": {"op": "+"}})),
    # missing fields
    ("empty object", _call("tally", {})),
    ("empty string", _call("tally", "")),
    ("only amount", _call("tally", {"amount": 2})),
    ("calculate without expression", _call("calculate", {})),
    ("complete_step without summary", _call("complete_step", {})),
    ("replan without reason", _call("replan", {})),
    ("finish with empty answer", _call("finish", {"answer": ""})),
    # unexpected fields
    ("extra field", _call("tally", {"counter": "a", "priority": "high"})),
    ("misspelled field", _call("tally", {"countr": "a"})),
    # oversized arguments
    ("1 MB string field", _call("tally", {"counter": "a" * MB})),
    ("1 MB of garbage", _call("tally", "x" * MB)),
    ("2 MB nested", _call("tally", {"counter": "a", "pad": ["b" * 1024] * 2048})),
    # prose instead of (or around) a call
    ("prose with JSON inside", {"text": 'Sure! {"tool": "tally", "args": {"counter": "a"}}'}),
    ("fenced JSON", {"text": '```json\n{"name": "tally", "arguments": {"counter": "a"}}\n```'}),
    ("plain prose", {"text": "I will now count the visitors at the front desk."}),
    ("empty reply", {"text": ""}),
    ("prose after JSON args", _call("tally", '{"counter": "a"} Hope that helps!')),
    ("prose before JSON args", _call("tally", 'Here you go: {"counter": "a"}')),
    ("JSON args in a code fence", _call("tally", '```json\n{"counter": "a"}\n```')),
    ("arguments doubly encoded", _call("tally", json.dumps(json.dumps({"counter": "a"})))),
]


def test_there_are_fifty_cases() -> None:
    assert len(CASES) == 50
    assert len({name for name, _ in CASES}) == 50


@pytest.mark.parametrize(("name", "turn"), CASES, ids=[name for name, _ in CASES])
async def test_malformed_output_is_an_error_observation(
    name: str, turn: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    runner, backend = make_runner(
        store, [{"plan": ["Count one visitor"]}, turn, {"answer": "gave up counting"}]
    )
    # The scripted model's usage is estimated from what it sends: 2 MB of output is ~500k
    # tokens, which the default token budget would (rightly) refuse to go on after.
    task_id = runner.create("count one visitor", run_limits(max_tokens=None))
    state = await runner.run(task_id)

    assert state.status == "done", state.end_reason or state.pause
    assert state.answer == "gave up counting"
    assert read_ledger(tmp_path / "tally.jsonl") == [], "nothing may run"
    kinds = [e.event.kind for e in store.events(task_id)]
    assert "tool_result" not in kinds
    assert "intent" not in kinds
    assert kinds.count("call_rejected") + kinds.count("reply_rejected") == 1
    # The model's next request carries the error, so it can correct itself.
    last = backend.requests[-1].messages[-1]
    assert last.role in ("tool", "user")
    assert last.content.startswith("Error: ")
    assert len(last.content) < 2000, "errors stay short, whatever the model sent"
