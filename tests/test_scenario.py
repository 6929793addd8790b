"""The whole loop, end to end, through the CLI a person uses: a plan of three steps, a failing
step and a replan, an approval, and a final answer; then `agent show` prints all of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.tally_tool import read_ledger
from frontends.cli import main

from .conftest import REPO, request_args

QUICKSTART = REPO / "examples" / "quickstart.json"
TALLY = str(REPO / "examples" / "tally_tool.py")
TASK = "Record today's visitors (2 at the front desk, 1 at the side door) and report the share"


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    result: dict[str, object] = json.loads(out[-1])
    return result


def test_plan_replan_approval_answer_and_history(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", TASK, "--model", f"scripted:{QUICKSTART}", "--tools", TALLY, "--json"])
    first = _json(capsys)
    assert code == 3, "the default policy asks before a side effect"
    assert first["status"] == "awaiting_approval"
    assert len(first["plan"]) == 3  # type: ignore[arg-type]
    pending = first["pending_approval"]
    assert isinstance(pending, dict)
    assert '"counter": "front-desk"' in pending["preview"]
    assert read_ledger(tmp_path / "tally.jsonl") == [], "nothing happens before approval"
    task_id = str(first["task_id"])

    # A reviewer approves from another process; the task goes on until the second approval.
    assert main(["approve", *request_args(task_id[:4]), "--tools", TALLY, "--json"]) == 3
    second = _json(capsys)
    assert second["replans"] == 1
    assert second["plan"] == [
        "Record 1 visitor at the side door",
        "Work out the side-door share and report it",
    ]
    approve = ["approve", *request_args(task_id), "--tools", TALLY, "--reason", "ok", "--json"]
    assert main(approve) == 0
    done = _json(capsys)
    assert done["status"] == "done"
    assert (
        done["answer"] == "3 visitors today: 2 at the front desk, 1 at the side door "
        "(a third of them)."
    )
    ledger = read_ledger(tmp_path / "tally.jsonl")
    assert [(e["counter"], e["total"]) for e in ledger] == [("front-desk", 2), ("side-door", 1)]

    assert main(["show", task_id]) == 0
    history = capsys.readouterr().out
    for expected in [
        "Record 2 visitors at the front desk",
        "approval needed",
        "approved by",
        "front-desk is now 2",
        "ZeroDivisionError",
        "replanning",
        "New plan",
        "side-door is now 1",
        "0.3333",
        "done: 3 visitors today",
        "37 events",  # with the record of the tools offered
    ]:
        assert expected in history, expected

    assert main(["show", task_id, "--json"]) == 0
    kinds = [e["kind"] for e in json.loads(capsys.readouterr().out)]
    assert kinds.count("plan_proposed") == 2
    assert kinds.count("approval_decided") == 2
    assert kinds.count("intent") == 2
    assert kinds[-1] == "task_finished"


def test_deny_tells_the_model_and_nothing_runs(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "deny.json"
    script.write_text(
        json.dumps(
            [
                {"plan": ["Tally one visitor"]},
                {"tool": "tally", "args": {"counter": "front-desk"}},
                {"answer": "not recorded: the reviewer declined"},
            ]
        )
    )
    assert (
        main(["run", "tally one", "--model", f"scripted:{script}", "--tools", TALLY, "--json"]) == 3
    )
    task_id = str(_json(capsys)["task_id"])
    deny = ["deny", *request_args(task_id), "--reason", "not today", "--tools", TALLY, "--json"]
    assert main(deny) == 0
    assert _json(capsys)["status"] == "done"
    assert read_ledger(tmp_path / "tally.jsonl") == []
    assert main(["show", task_id]) == 0
    assert "declined by" in capsys.readouterr().out


def test_a_script_with_unused_turns_fails_the_run(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "long.json"
    script.write_text(json.dumps([{"plan": ["Answer"]}, {"answer": "42"}, {"answer": "43"}]))
    assert main(["run", "answer", "--model", f"scripted:{script}", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "done"
    assert "turn 3 was never used" in captured.err
