""" "Always allow calls like this": the rule saved is never wider than the call (every argument
pinned, with its type; none more or fewer; the effect; the task, when scoped to it), is shown
before it is saved, is saved only as shown, and is saved only with a decision recorded: a
request that expired, was decided first elsewhere, needs two reviewers, or runs on the packaged
policy saves nothing."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.always import RuleRefused, Scope, allow_always, propose
from agent.approvals import Expired, NotPending, Seen, decide
from agent.events import ApprovalDecided
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError, ConflictingWrite
from examples.tally_tool import read_ledger
from frontends.cli import main
from frontends.serve import app
from policies import Allow, Gate, RequireApproval
from policies.allowing import Pinned, rule_for
from tools import ToolContext, tool
from tools.tool import EFFECT

from .apis import task_waiting
from .conftest import REPO, pending, request_args, scripted, tools
from .terminal import agent_in_terminal, read_until

DEFAULT_POLICY = (REPO / "policies" / "default.toml").read_text()


@tool(touches="external")
def send(to: str, body: str, copies: int = 1, tags: list[str] | None = None) -> str:
    """Send a message (a stand-in for any call a reviewer might always allow).

    Args:
        to: who.
        body: what.
        copies: how many.
        tags: labels.
    """
    return "sent"


async def _reads_effect(_ctx: ToolContext, _arguments: dict[str, Any]) -> dict[str, Any]:
    return {}


@tool(touches="external", effect=_reads_effect)
def post(to: str, body: str) -> str:
    """Post a form (its values and where it goes are read from the page: its effect).

    Args:
        to: who.
        body: what.
    """
    return "posted"


def _gate(rule: str) -> Gate:
    return Gate.from_text(rule + '\n[default]\naction = "ask"\n', source="policy.toml")


def test_the_rule_pins_every_argument_with_its_type_and_nothing_more() -> None:
    approved: dict[str, Any] = {"to": "ann*", "body": "hi\u202e", "copies": 1, "tags": ["a"]}
    rule = rule_for(Pinned("send", "external", approved, None), who="bo", request="a1")
    assert 'tool = "send"' in rule
    assert '"to" = "ann[*]"' not in rule  # values are exact, not globs: nothing to escape
    assert '"body" = "hi\\u202e"' in rule  # nothing in the file hides or reorders text
    gate = _gate(rule)
    assert isinstance(gate.evaluate(send, approved), Allow)
    for unlike in (
        {**approved, "to": "ann.smith"},  # a glob would have taken it
        {**approved, "copies": 1.0},
        {**approved, "copies": True},
        {**approved, "copies": "1"},
        {**approved, "tags": ["a", "b"]},
        {**approved, "tags": "a"},
        {k: v for k, v in approved.items() if k != "tags"},  # an argument the call had, left out
        {**approved, EFFECT: {"origin": "http://x.test"}},  # one more
    ):
        assert isinstance(gate.evaluate(send, unlike), RequireApproval), unlike


def test_a_rule_for_a_task_and_for_an_effect_is_held_to_them() -> None:
    judged = {"to": "ann", "body": "hi", EFFECT: {"origin": "https://a.test", "fields": [1]}}
    rule = rule_for(Pinned("post", "external", judged, "t1"), who="bo", request="a1")
    gate = _gate(rule)
    assert isinstance(gate.evaluate(post, judged, task="t1"), Allow)
    assert isinstance(gate.evaluate(post, judged, task="t2"), RequireApproval)
    assert isinstance(gate.evaluate(post, judged), RequireApproval)
    elsewhere = {**judged, EFFECT: {"origin": "https://b.test", "fields": [1]}}
    assert isinstance(gate.evaluate(post, elsewhere, task="t1"), RequireApproval)
    assert isinstance(gate.evaluate(send, judged, task="t1"), RequireApproval)  # another tool


def test_nulls_and_characters_beyond_the_basic_plane_are_pinned_too() -> None:
    # Optional arguments left out are judged as null: a rule must be able to say so.
    approved: dict[str, Any] = {"to": "\U0001f600 ann", "body": "hi", "copies": 1, "tags": None}
    rule = rule_for(Pinned("send", "external", approved, None), who="bo", request="a1")
    assert 'exactly_null = ["tags"]' in rule
    assert "\\U0001f600" in rule  # nothing outside printable ASCII in the file
    gate = _gate(rule)
    assert isinstance(gate.evaluate(send, approved), Allow)
    for unlike in (
        {**approved, "tags": []},
        {k: v for k, v in approved.items() if k != "tags"},
        {**approved, "to": "\U0001f601 ann"},
    ):
        assert isinstance(gate.evaluate(send, unlike), RequireApproval), unlike


def test_a_call_no_rule_can_pin_is_refused() -> None:
    with pytest.raises(ConfigError, match="the argument tags holds a null inside it"):
        rule_for(Pinned("send", "external", {"to": "a", "tags": [None]}, None), who="", request="")


def test_a_malformed_exactly_or_task_is_refused_with_its_line() -> None:
    for text, said in (
        ('[[rule]]\naction = "allow"\n[rule.exactly]\nwhen = 1979-05-27\n', "policy.toml:4"),
        ('[[rule]]\naction = "allow"\ntask = "a b"\n', "policy.toml:3"),
    ):
        with pytest.raises(ConfigError, match=said):
            Gate.from_text(text, source="policy.toml")


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_POLICY)
    return path


def _state(task: str) -> TaskState:
    with Store.open() as store:
        return TaskState.from_store(store, task)


def test_agent_approve_always_shows_the_rule_saves_it_and_calls_like_it_run_unasked(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _policy(tmp_path)
    task = task_waiting(tmp_path, capsys, "--policy", str(policy))
    # No one to ask and no --yes: nothing is saved or decided.
    assert main(["approve", *request_args(task), "--always", "project"]) == 2
    assert "give --yes" in capsys.readouterr().err
    assert policy.read_text() == DEFAULT_POLICY
    assert _state(task).status == "awaiting_approval"
    assert main(["approve", *request_args(task), "--always", "project", "--yes"]) == 0
    said = capsys.readouterr().out
    assert "this rule goes at the top of" in said
    assert '"counter" = "front"' in said
    assert read_ledger()[-1]["amount"] == 1
    with Store.open() as store:
        decided = [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]
    rule = decided[-1].always
    assert rule is not None
    assert '"counter" = "front"' in rule
    saved = policy.read_text()
    assert saved.replace(rule + "\n", "") == DEFAULT_POLICY  # added, and nothing else changed
    assert saved.index(rule) < saved.index("\n[[rule]]\n", saved.index(rule))  # ahead of the rest
    # Another task, the same call: it runs unasked. Another amount: asked again.
    script = tmp_path / "again.json"
    turns: list[Any] = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
        {"tool": "tally", "args": {"counter": "front", "amount": 2}},
        {"done": "counted"},
    ]
    script.write_text(json.dumps({"turns": turns}))
    tally = str(REPO / "examples" / "tally_tool.py")
    run = ["run", "--model", f"scripted:{script}", "--tools", tally, "--policy", str(policy)]
    assert main([*run, "--json", "Count again"]) == 3
    assert [e["amount"] for e in read_ledger()] == [1, 1]
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    assert pending(_state(again)).tool == "tally"


def test_a_rule_for_the_task_allows_nothing_in_another_task(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _policy(tmp_path)
    first = task_waiting(tmp_path, capsys, "--policy", str(policy))
    assert main(["approve", *request_args(first), "--always", "task", "--yes"]) == 0
    assert f'task = "{first}"' in policy.read_text()
    second = task_waiting(tmp_path, capsys, "--policy", str(policy))
    assert _state(second).status == "awaiting_approval"
    assert len(read_ledger()) == 1


def test_nothing_is_saved_without_a_decision(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _policy(tmp_path)
    on_default = task_waiting(tmp_path, capsys)
    with Store.open() as store:
        state = TaskState.from_store(store, on_default)
        with pytest.raises(RuleRefused, match="packaged default policy"):
            propose(store, state, pending(state), scope="task", reviewer="ann")
    task = task_waiting(tmp_path, capsys, "--policy", str(policy))
    with Store.open() as store:
        state = TaskState.from_store(store, task)
        asked = pending(state)
        proposal = propose(store, state, asked, scope="project", reviewer="ann")
        # Not the rule shown; a stale hash.
        with pytest.raises(RuleRefused, match="not the one you were shown"):
            allow_always(
                store,
                state,
                asked,
                scope="task",
                confirmed=proposal.digest,
                reviewer="ann",
                origin="cli",
            )
        with pytest.raises(NotPending):
            allow_always(
                store,
                state,
                Seen(asked.approval_id, "0" * 12),
                scope="project",
                confirmed=proposal.digest,
                reviewer="ann",
                origin="cli",
            )
        # Decided first by another reviewer, from a fresher read: the rule is taken back.
        decide(store, TaskState.from_store(store, task), asked, approved=False, reviewer="bo")
        with pytest.raises(ConflictingWrite):
            allow_always(
                store,
                state,
                asked,
                scope="project",
                confirmed=proposal.digest,
                reviewer="ann",
                origin="cli",
            )
    assert policy.read_text() == DEFAULT_POLICY


def test_an_expired_request_saves_no_rule_and_is_denied(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _policy(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = 0.1\n")
    task = task_waiting(tmp_path, capsys, "--policy", str(policy), "--config", str(config))
    with Store.open() as store:
        state = TaskState.from_store(store, task)
        proposal = propose(store, state, pending(state), scope="task", reviewer="ann")
        time.sleep(0.2)
        with pytest.raises(Expired):
            allow_always(
                store,
                state,
                pending(state),
                scope="task",
                confirmed=proposal.digest,
                reviewer="ann",
                origin="cli",
            )
    assert policy.read_text() == DEFAULT_POLICY
    [decided] = [e for e in _state(task).calls.values() if e.decision is not None]
    assert decided.decision is not None
    assert decided.decision.expired


def test_always_allow_from_agent_review_the_api_and_the_web_inbox(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _policy(tmp_path)
    # agent review: r, the scope, the rule shown, y.
    task = task_waiting(tmp_path, capsys, "--policy", str(policy))
    pid, fd = agent_in_terminal("review", env={"COLUMNS": "160"})
    read_until(fd, b"a number opens a request")
    os.write(fd, b"1\n")
    read_until(fd, b"always allow calls like this")
    os.write(fd, b"r\n")
    read_until(fd, b"(t/p, Enter: back)")
    os.write(fd, b"t\n")
    screen = read_until(fd, b"save it and approve? [y/N]")
    assert b'"counter" = "front"' in screen
    assert f'task = "{task}"'.encode() in screen
    os.write(fd, b"y\n")
    read_until(fd, b"run unasked from now on")
    os.write(fd, b"q\n")
    os.waitpid(pid, 0)
    assert f'task = "{task}"' in policy.read_text()
    [decided] = _decisions(task)
    assert (decided.origin, decided.always is not None) == ("review", True)
    # The API: the rule to show, then the decision that names it.
    assert main(["reviewers", "add", "ann", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    second = task_waiting(tmp_path, capsys, "--policy", str(policy))
    asked = pending(_state(second))

    async def over_http() -> None:
        with Store.open() as store:
            transport = httpx.ASGITransport(app=app(store))
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://agent",
                headers={"Authorization": f"Bearer {token}"},
            ) as api:
                shown = await api.get(f"/api/requests/{asked.approval_id}/rule?scope=project")
                assert shown.status_code == 200, shown.text
                assert "task =" not in shown.json()["rule"]
                path = f"/api/requests/{asked.approval_id}/decision"
                body: dict[str, Any] = {"approved": True, "call_hash": asked.call_hash}
                wrong = {**body, "always": {"scope": "task", "digest": shown.json()["digest"]}}
                refused = await api.post(path, json=wrong)
                assert (refused.status_code, refused.json()["code"]) == (400, "rule_refused")
                right = {**body, "always": {"scope": "project", "digest": shown.json()["digest"]}}
                assert (await api.post(path, json=right)).status_code == 200

    asyncio.run(over_http())
    [decided] = _decisions(second)
    assert decided.always is not None
    assert decided.always in policy.read_text()
    assert "task =" not in decided.always


def _allow_as_shown(store: Store, state: TaskState, scope: Scope) -> ApprovalDecided:
    """Always allow the pending request, with the rule a reviewer would have been shown."""
    proposal = propose(store, state, pending(state), scope=scope, reviewer="ann")
    return allow_always(
        store,
        state,
        pending(state),
        scope=scope,
        confirmed=proposal.digest,
        reviewer="ann",
        origin="cli",
    )


def _decisions(task: str) -> list[ApprovalDecided]:
    with Store.open() as store:
        return [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]


def test_rules_saved_at_once_are_both_kept_and_go_ahead_of_a_commented_header(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[default]\naction = "ask"\n\n'
        '[[rule]]  # ask before counting\naction = "ask"\ntool = "tally"\n'
    )
    tasks = [task_waiting(tmp_path, capsys, "--policy", str(policy)) for _ in range(2)]

    def save(task: str) -> None:
        with Store.open() as store:
            _allow_as_shown(store, TaskState.from_store(store, task), "task")

    threads = [threading.Thread(target=save, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = policy.read_text()
    for task in tasks:
        assert text.index(f'task = "{task}"') < text.index("[[rule]]  # ask before counting")
    assert all(_state(task).status == "running" for task in tasks)  # approved, to run on


async def test_a_runner_that_is_running_picks_up_a_rule_saved_meanwhile(
    store: Store, tmp_path: Path
) -> None:
    policy = _policy(tmp_path)
    turns: list[Any] = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
        {"done": "counted"},
    ]
    runner = Runner(store, tools(), Gate.from_file(policy), planner=scripted(turns * 2))
    first = runner.create("Count", policy=str(policy))
    _allow_as_shown(store, await runner.run(first), "project")
    assert (await runner.resume(first)).status == "done"
    second = runner.create("Count", policy=str(policy))
    assert (await runner.run(second)).status == "done"  # unasked: the gate read the new rule
    assert len(read_ledger()) == 2


def test_the_inline_prompt_edits_and_always_allows(home: Path, tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    turns: list[Any] = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
        {"tool": "tally", "args": {"counter": "front", "amount": 2}},
        {"done": "counted"},
    ]
    script = tmp_path / "inline.json"
    script.write_text(json.dumps({"turns": turns}))
    tally = str(REPO / "examples" / "tally_tool.py")
    pid, fd = agent_in_terminal(
        "run",
        "count",
        "--model",
        f"scripted:{script}",
        "--tools",
        tally,
        "--policy",
        str(policy),
        env={"COLUMNS": "160"},
    )
    read_until(fd, b"Approve?")
    os.write(fd, b'e {"amount": 3\n')  # not JSON: asked again
    read_until(fd, b"not JSON")
    os.write(fd, b'e {"amount": 3}\n')
    read_until(fd, b"Approve?")
    os.write(fd, b"a task\n")
    screen = read_until(fd, b"save it and approve?")
    assert b'"amount" = 2' in screen
    os.write(fd, b"y\n")
    read_until(fd, b"counted")
    os.waitpid(pid, 0)
    assert [e["amount"] for e in read_ledger()] == [3, 2]
    assert '"amount" = 2' in policy.read_text()
