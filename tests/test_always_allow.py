"""Always allow calls like this: `agent approve --always` writes a rule that allows exactly the
call approved (never wider: every argument pinned, glob characters escaped) at the top of the
task's policy file, shown first; later calls exactly like it run unasked, any other is asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from base.errors import ConfigError
from examples import tally_tool
from frontends.cli import main
from policies import Allow, Gate, RequireApproval
from policies.allowing import add_rule, rule_for

from .conftest import REPO, request_args, write_script

TALLY = str(REPO / "examples" / "tally_tool.py")


def test_the_rule_allows_the_call_and_nothing_wider() -> None:
    tally = tally_tool.tally
    arguments = {"counter": "front*?[x]\u202e", "amount": 1}
    rule = rule_for(tally, arguments, who="ann", request="t-1.0")
    assert "\u202e" not in rule  # escaped in the file, so nothing in it can hide or reorder
    gate = Gate.from_text(rule + '\n[default]\naction = "ask"\n', source="p.toml")
    assert isinstance(gate.evaluate(tally, arguments), Allow)
    for other in (
        {"counter": "front*?[x]\u202e", "amount": 2},
        {"counter": "frontAB[x]\u202e", "amount": 1},  # * and ? are not wildcards here
        {"counter": "front", "amount": 1},
    ):
        assert isinstance(gate.evaluate(tally, other), RequireApproval), other


def test_the_rule_goes_first_and_the_file_must_load(tmp_path: Path) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text(
        '[default]\naction = "ask"\n\n# a comment about the deny rule\n[[rule]]\n'
        'action = "deny"\ntool = "tally"\n'
    )
    policy.chmod(0o640)
    rule = rule_for(tally_tool.tally, {"counter": "a", "amount": 1}, who="ann", request="r")
    add_rule(policy, rule)
    text = policy.read_text()
    assert text.index('action = "allow"') < text.index("# a comment about the deny rule")
    assert policy.stat().st_mode & 0o777 == 0o640
    gate = Gate.from_file(policy)
    assert isinstance(gate.evaluate(tally_tool.tally, {"counter": "a", "amount": 1}), Allow)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rule]]\naction = 'sometimes'\ntool = 'x'\n")
    with pytest.raises(ConfigError):
        add_rule(broken, rule)
    assert broken.read_text() == "[[rule]]\naction = 'sometimes'\ntool = 'x'\n"  # unchanged


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, amount: int = 1) -> Any:
    turns = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": "front", "amount": amount}},
        {"done": "counted"},
    ]
    script = write_script(tmp_path / f"script{amount}.json", turns)
    capsys.readouterr()
    code = main(["run", "--model", f"scripted:{script}", "--tools", TALLY, *extra, "--json", "x"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_agent_approve_always_writes_the_rule_and_the_next_call_runs_unasked(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policies.toml"
    shutil.copy(REPO / "policies" / "default.toml", policy)
    code, first = _run(tmp_path, capsys, "--policy", str(policy))
    assert code == 3
    assert main(["approve", *request_args(first["task_id"]), "--always", "--yes"]) == 0
    shown = capsys.readouterr().out
    assert f"this rule goes at the top of {policy}" in shown
    assert 'tool = "tally"' in shown
    text = policy.read_text()
    assert text.index('action = "allow"') < text.index('action = "deny"')  # ahead of every rule
    code, again = _run(tmp_path, capsys, "--policy", str(policy))
    assert (code, again["status"]) == (0, "done")  # the same call: unasked
    code, other = _run(tmp_path, capsys, "--policy", str(policy), amount=2)
    assert (code, other["status"]) == (3, "awaiting_approval")  # any other: asked


def test_always_with_the_packaged_policy_or_without_yes_decides_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, waiting = _run(tmp_path, capsys)
    assert code == 3
    assert main(["approve", *request_args(waiting["task_id"]), "--always", "--yes"]) == 2
    assert "packaged default policy" in capsys.readouterr().err
    policy = tmp_path / "policies.toml"
    shutil.copy(REPO / "policies" / "default.toml", policy)
    code, mine = _run(tmp_path, capsys, "--policy", str(policy))
    before = policy.read_text()
    assert main(["approve", *request_args(mine["task_id"]), "--always", "--no-prompt"]) == 2
    assert "give --yes" in capsys.readouterr().err
    assert policy.read_text() == before
    assert main(["tasks", "--json"]) == 0
    listed = {t["task_id"]: t["status"] for t in json.loads(capsys.readouterr().out)}
    assert listed[waiting["task_id"]] == listed[mine["task_id"]] == "awaiting_approval"
