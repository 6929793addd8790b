"""A decision is bound to the request the reviewer saw: "pay bob 5" denied by one reviewer and
then replaced by "pay mallory 5000" is never approved by another who read only the first.

In process (the decision's rules), by two reviewer processes racing each other 20 times, and at
the inline prompt of `agent run`, where the request changes while the prompt is open.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import NothingToApprove, NotPending, Seen, decide
from agent.events import ApprovalDecided as Decided
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from policies import Gate
from tools import Registry, ToolContext, tool

from .conftest import REPO, pending, request_args, scripted, write_script
from .terminal import agent_in_terminal, read_until

PAY_TOOL = '''
import json, os
from tools import tool

@tool(touches="external")
def pay(to: str, amount: int) -> str:
    """Pay someone.

    Args:
        to: who is paid.
        amount: how much.
    """
    with open(os.environ["PAY_LEDGER"], "a") as ledger:
        ledger.write(json.dumps({"to": to, "amount": amount}) + "\\n")
    return f"paid {to} {amount}"
'''

TURNS: list[Any] = [
    {"plan": ["Pay"]},
    {"tool": "pay", "args": {"to": "bob", "amount": 5}},
    {"tool": "pay", "args": {"to": "mallory", "amount": 5000}},
    {"answer": "paid"},
]


def _paid(ledger: Path) -> list[tuple[str, int]]:
    if not ledger.exists():
        return []
    return [(e["to"], e["amount"]) for e in map(json.loads, ledger.read_text().splitlines())]


# --- in process ----------------------------------------------------------------------------


@pytest.fixture
def paid() -> list[str]:
    return []


@pytest.fixture
def runner(store: Store, paid: list[str]) -> Runner:
    @tool(touches="external")
    def pay(to: str, amount: int, ctx: ToolContext) -> str:
        """Pay someone.

        Args:
            to: who is paid.
            amount: how much.
        """
        paid.append(f"{to} {amount}")
        return f"paid {to} {amount}"

    return Runner(store, Registry([pay]), Gate.default(), planner=scripted(TURNS))


async def test_a_decision_on_a_request_that_was_replaced_is_refused(
    store: Store, runner: Runner, paid: list[str]
) -> None:
    task_id = runner.create("pay")
    state = await runner.run(task_id)
    bob = pending(state)
    assert '"to": "bob"' in bob.preview

    # Reviewer A denies it; the task moves on and asks for mallory.
    decide(store, state, bob, approved=False, reason="no", reviewer="ann")
    state = await runner.resume(task_id)
    mallory = pending(state)
    assert '"to": "mallory"' in mallory.preview
    assert (mallory.approval_id, mallory.call_hash) != (bob.approval_id, bob.call_hash)

    # Reviewer B read only bob's: approving it decides nothing, and says what is pending.
    before = len(store.events(task_id))
    with pytest.raises(NotPending) as refused:
        decide(store, state, Seen.of(bob), approved=True, reviewer="ben")
    message = str(refused.value)
    assert f"request {bob.approval_id} {bob.short_hash} is not the one pending" in message
    assert "(it was denied by ann)" in message
    assert f"Pending now: {mallory.approval_id} {mallory.short_hash}" in message
    assert len(store.events(task_id)) == before
    assert TaskState.from_store(store, task_id).status == "awaiting_approval"
    assert paid == []


async def test_a_decision_must_give_the_hash_it_was_shown(store: Store, runner: Runner) -> None:
    task_id = runner.create("pay")
    state = await runner.run(task_id)
    bob = pending(state)
    for wrong in ("", "0" * 8, bob.call_hash[:7], "f" + bob.call_hash[1:8]):
        with pytest.raises(NotPending, match="is not the one pending"):
            decide(store, state, Seen(bob.approval_id, wrong), approved=True)
    with pytest.raises(NotPending, match="the task never asked it"):
        decide(store, state, Seen(f"{task_id}-9.9", bob.call_hash), approved=True)
    decision = decide(store, state, Seen(bob.approval_id, bob.short_hash.upper()), approved=True)
    assert decision.call_hash == bob.call_hash  # the whole hash is recorded
    with pytest.raises(NothingToApprove, match=r"it was approved"):
        decide(store, state, bob, approved=True)


async def test_a_recorded_decision_with_another_hash_decides_nothing(
    store: Store, runner: Runner, paid: list[str]
) -> None:
    """The fold, too, holds a decision to the hash it names (a writer that skipped `decide`)."""
    task_id = runner.create("pay")
    state = await runner.run(task_id)
    bob = pending(state)
    store.append(
        task_id,
        [Decided(approval_id=bob.approval_id, call_hash="0" * 64, approved=True)],
        after=state.last_seq,
    )
    state = await runner.resume(task_id)
    assert state.status == "awaiting_approval"
    assert pending(state) == bob
    assert paid == []


# --- two reviewer processes, racing --------------------------------------------------------


def test_two_reviewers_racing_never_approve_what_one_did_not_see(
    home: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("RACE_SEED", "0")) or random.randrange(1, 2**32)
    print(f"\nRACE_SEED={seed}")
    rng = random.Random(seed)
    tools = tmp_path / "pay_tool.py"
    tools.write_text(PAY_TOOL)
    model = f"scripted:{write_script(tmp_path / 'pay.json', TURNS)}"
    agent = [sys.executable, "-m", "frontends.cli"]
    outcomes: dict[str, int] = {}
    for round_ in range(20):
        ledger = tmp_path / f"ledger{round_}.jsonl"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PAY_LEDGER": str(ledger)}
        run = [*agent, "run", "pay", "--model", model, "--tools", str(tools), "--json"]
        first = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
        assert first.returncode == 3, first.stderr
        task_id = json.loads(first.stdout)["task_id"]
        bob = request_args(task_id)  # what both reviewers read: "pay bob 5"

        # A denies bob (and goes on: the task then asks for mallory); B approves bob. At once,
        # each a moment after the other in turn.
        deny = [*agent, "deny", *bob, "--reason", "no", "--json"]
        approve = [*agent, "approve", *bob, "--json"]
        started = []
        for command in (deny, approve) if round_ % 2 else (approve, deny):
            started.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
            time.sleep(rng.uniform(0, 0.3))
        (a, b) = started if round_ % 2 else started[::-1]
        _, a_err = a.communicate(timeout=120)
        _, b_err = b.communicate(timeout=120)

        money = _paid(ledger)
        assert ("mallory", 5000) not in money, (round_, money, a_err, b_err)
        with Store.open() as store:
            state = TaskState.from_store(store, task_id)
            decided = [e.event for e in store.events(task_id) if isinstance(e.event, Decided)]
        # Exactly one of the two decided bob's request; nobody decided mallory's.
        assert len(decided) == 1, (round_, a_err, b_err)
        assert decided[0].approval_id == bob[1]
        loser, loser_err = (b, b_err) if not decided[0].approved else (a, a_err)
        assert loser.returncode == 2, (round_, loser_err)
        assert any(
            why in " ".join(loser_err.split())
            for why in ("is not the one pending", "is not waiting for an approval", "moved on")
        ), loser_err
        assert money == ([("bob", 5)] if decided[0].approved else [])
        assert state.status == "awaiting_approval"  # mallory waits for someone who reads it
        outcomes["approved" if decided[0].approved else "denied"] = (
            outcomes.get("approved" if decided[0].approved else "denied", 0) + 1
        )
    print(f"who decided bob's request first, over 20 rounds: {outcomes}")


# --- the inline prompt ---------------------------------------------------------------------


def test_the_inline_prompt_asks_again_when_the_request_changed_while_it_was_open(
    home: Path, tmp_path: Path
) -> None:
    tools = tmp_path / "pay_tool.py"
    tools.write_text(PAY_TOOL)
    ledger = tmp_path / "ledger.jsonl"
    model = f"scripted:{write_script(tmp_path / 'pay.json', TURNS)}"
    pid, fd = agent_in_terminal(
        "run", "pay", "--model", model, "--tools", str(tools), env={"PAY_LEDGER": str(ledger)}
    )
    screen = read_until(fd, b"Approve?")
    assert b'"bob"' in screen
    with Store.open() as store:
        [row] = store.tasks()
    task_id = row.id
    bob = request_args(task_id)

    # Meanwhile, another reviewer denies bob and the task goes on to ask for mallory. The
    # prompt is held still meanwhile: it looks at the task about once a second, and seeing it
    # run or ask anew would show mallory before the answer below is typed, which is not the
    # moment this test is about (an answer typed while the prompt still shows bob).
    os.kill(pid, signal.SIGSTOP)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAY_LEDGER": str(ledger)}
    other = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "deny", *bob, "--reason", "no", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode == 3, other.stderr
    mallory = request_args(task_id)
    assert mallory[1:] != bob[1:]

    # The person at the prompt, who saw bob, answers yes.
    os.write(fd, b"y\n")
    os.kill(pid, signal.SIGCONT)
    screen = read_until(fd, b"Approve?")
    assert b"the request changed while the prompt was open" in screen
    assert b'"mallory"' in screen  # shown the request pending now, before being asked again
    assert mallory[2].encode() in screen  # its hash, in the panel's title
    os.write(fd, b"\x03")  # Ctrl-C: the task keeps waiting
    read_until(fd, b"awaiting_approval")
    os.waitpid(pid, 0)
    assert _paid(ledger) == []
    with Store.open() as store:
        state = TaskState.from_store(store, task_id)
        decided = [e.event for e in store.events(task_id) if isinstance(e.event, Decided)]
    assert state.status == "awaiting_approval"
    assert [(d.approval_id, d.approved) for d in decided] == [(bob[1], False)]
