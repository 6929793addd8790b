"""What happens when a run stops in the middle of a call: the intent is on record, the result is
not. Such a call is never silently sent again (DESIGN invariant 2): it is reconciled through the
tool, re-run only where that is safe, or handed to a reviewer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import decide
from agent.backends.scripted import ScriptedBackend, parse_script
from agent.events import LateResult
from agent.live import Live
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store, StoredEvent
from tools import Registry, ToolContext, ToolError, tool

from .conftest import make_runner, pending, tool_results


class World:
    """A tool's effects, and a switch that interrupts the run around one of them."""

    def __init__(self) -> None:
        self.effects: list[str] = []
        self.interrupt: str | None = None  # "before" or "after" the effect, once

    def act(self, key: str) -> str:
        if self.interrupt == "before":
            self.interrupt = None
            raise KeyboardInterrupt
        self.effects.append(key)
        if self.interrupt == "after":
            self.interrupt = None
            raise KeyboardInterrupt
        return f"sent {len(self.effects)}"

    def find(self, ctx: ToolContext) -> str | None:
        return (
            f"sent (found {ctx.idempotency_key})" if ctx.idempotency_key in self.effects else None
        )


def registry(world: World) -> Registry:
    @tool(touches="external", reconcile=world.find)
    def send(to: str, ctx: ToolContext) -> str:
        """Send a message.

        Args:
            to: who to.
        """
        return world.act(ctx.idempotency_key)

    @tool(touches="external")
    def blind_send(to: str, ctx: ToolContext) -> str:
        """Send a message through a service that cannot say what it received.

        Args:
            to: who to.
        """
        return world.act(ctx.idempotency_key)

    @tool(touches="external", idempotent=True)
    def keyed_send(to: str, ctx: ToolContext) -> str:
        """Send a message through a service that drops repeats of an idempotency key.

        Args:
            to: who to.
        """
        if ctx.idempotency_key in world.effects and world.interrupt is None:
            return "sent (already)"
        return world.act(ctx.idempotency_key)

    return Registry([send, blind_send, keyed_send])


def _turns(tool_name: str) -> list[dict[str, Any]]:
    return [{"plan": ["Send it"]}, {"tool": tool_name, "args": {"to": "dana"}}, {"answer": "ok"}]


async def _interrupted(store: Store, world: World, tool_name: str, when: str) -> tuple[Runner, str]:
    runner, _ = make_runner(store, _turns(tool_name), registry=registry(world))
    task_id = runner.create("send a message")
    world.interrupt = when
    with pytest.raises(KeyboardInterrupt):
        await runner.run(task_id)
    state = runner.load(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "interrupted"
    kinds = [e.event.kind for e in store.events(task_id)]
    assert "intent" in kinds
    assert "tool_result" not in kinds
    return runner, task_id


async def test_effect_happened_then_the_tool_reconciles_it(store: Store) -> None:
    world = World()
    runner, task_id = await _interrupted(store, world, "send", "after")
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert world.effects == [f"{task_id}/2.0"], "exactly once"
    [result] = tool_results(store, task_id)
    assert result.recovery == "reconciled"
    assert result.content == f"sent (found {task_id}/2.0)"


async def test_effect_did_not_happen_then_it_runs_once(store: Store) -> None:
    world = World()
    runner, task_id = await _interrupted(store, world, "send", "before")
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert world.effects == [f"{task_id}/2.0"]
    [result] = tool_results(store, task_id)
    assert result.recovery == "rerun"


async def test_an_idempotent_tool_is_sent_again_with_the_same_key(store: Store) -> None:
    world = World()
    runner, task_id = await _interrupted(store, world, "keyed_send", "after")
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert world.effects == [f"{task_id}/2.0"], "the service dropped the repeat of the key"
    [result] = tool_results(store, task_id)
    assert (result.recovery, result.content) == ("rerun", "sent (already)")


@pytest.mark.parametrize("approve", [True, False])
async def test_a_tool_that_cannot_tell_goes_to_a_reviewer(store: Store, approve: bool) -> None:
    world = World()
    runner, task_id = await _interrupted(store, world, "blind_send", "after")
    state = await runner.resume(task_id)
    assert state.status == "awaiting_approval", "never re-sent on its own"
    assert world.effects == [f"{task_id}/2.0"]
    call = state.awaiting
    assert call is not None
    assert call.approval is not None
    assert call.approval.cause == "reconcile"
    assert "cannot tell whether it took effect" in call.approval.reason

    decide(
        store, state, pending(state), approved=approve, reason="checked the outbox", reviewer="rev"
    )
    state = await runner.resume(task_id)
    assert state.status == "done"
    if approve:
        assert world.effects == [f"{task_id}/2.0"] * 2, "the reviewer chose to send it again"
    else:
        assert world.effects == [f"{task_id}/2.0"]
        observation = state_observation(store, task_id)
        assert (
            "not sent again: its outcome is unknown and a reviewer declined to repeat it: "
            "checked the outbox" in observation
        )


def state_observation(store: Store, task_id: str) -> str:
    """What the model was shown in the task's last step."""
    state = TaskState.from_store(store, task_id)
    return "\n".join(m.content for exchange in state.window for m in exchange)


async def test_a_crashing_tool_pauses_the_task_and_resume_goes_on(store: Store) -> None:
    broken = {"yes": True}

    @tool
    def fragile(n: int) -> str:
        """Look something up.

        Args:
            n: which.
        """
        if broken["yes"]:
            raise RuntimeError("bug in the tool")
        return f"value {n}"

    runner, _ = make_runner(
        store,
        [{"plan": ["Look"]}, {"tool": "fragile", "args": {"n": 3}}, {"answer": "value 3"}],
        registry=Registry([fragile]),
    )
    task_id = runner.create("look")
    state = await runner.run(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "tool_crashed"
    first_line = state.pause.detail.split("\n", 1)[0]
    assert "RuntimeError: bug in the tool at " in first_line
    assert "test_recovery.py:" in first_line, "it says where the tool raised"
    assert "Traceback" in state.pause.detail

    broken["yes"] = False  # the developer fixes the tool
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert [r.content for r in tool_results(store, task_id)] == ["value 3"]


async def test_a_tool_error_is_an_observation_not_a_pause(store: Store) -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up.

        Args:
            key: the key.
        """
        raise ToolError(f"no such key: {key}", code="not_found")

    runner, backend = make_runner(
        store,
        [{"plan": ["Look"]}, {"tool": "lookup", "args": {"key": "k"}}, {"answer": "missing"}],
        registry=Registry([lookup]),
    )
    state = await runner.run(runner.create("look"))
    assert state.status == "done"
    assert backend.requests[-1].messages[-1].content == "Error: no such key: k"


async def test_a_failing_model_pauses_and_a_new_backend_resumes(store: Store) -> None:
    runner, _ = make_runner(store, [{"plan": ["Add"]}])
    task_id = runner.create("add")
    state = await runner.run(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "model_error"
    assert "the script has 1 turns and the run asked for turn 2" in state.pause.detail

    longer = ScriptedBackend(
        parse_script(
            [
                {"plan": ["Add"]},
                {"tool": "calculate", "args": {"expression": "2+2"}},
                {"answer": "4"},
            ]
        )
    )
    resumed = Runner(store, runner.registry, runner.gate, planner=longer)
    state = await resumed.resume(task_id)
    assert (state.status, state.answer) == ("done", "4")
    assert [r.turn for r in longer.requests] == [1, 2], "turns already recorded are not re-asked"


async def test_an_approval_is_bound_to_the_exact_call(store: Store, home: Path) -> None:
    world = World()
    runner, _ = make_runner(store, _turns("send"), policy=None, registry=registry(world))
    task_id = runner.create("send a message")
    state = await runner.run(task_id)
    assert state.status == "awaiting_approval"
    decide(store, state, pending(state), approved=True, reviewer="rev")

    # Someone rewrites the recorded arguments after the approval: the approval no longer fits.
    db = sqlite3.connect(home / "events.db")
    db.execute(
        "UPDATE events SET body = replace(body, '\"dana\"', '\"mallory\"') "
        "WHERE task_id = ? AND kind = 'gate_decided'",
        (task_id,),
    )
    db.commit()
    db.close()

    state = await runner.resume(task_id)
    assert world.effects == [], "nothing was sent to anyone"
    assert state.status == "done"
    assert "the approval does not match this call; it was not run" in state_observation(
        store, task_id
    )


@pytest.mark.parametrize("when", ["approval_requested", "task_finished"])
async def test_an_interrupt_never_pauses_a_task_that_is_done_or_waiting(
    store: Store, when: str
) -> None:
    """A second Ctrl-C landing while the terminal prints the last event must not reopen the
    task (a finished task resumed would act again) or hide an approval request."""
    world = World()
    policy = None if when == "approval_requested" else '[default]\naction = "allow"\n'
    runner, _ = make_runner(store, _turns("send"), policy=policy, registry=registry(world))

    def interrupt_on(item: Live) -> None:
        if isinstance(item, StoredEvent) and item.event.kind == when:
            raise KeyboardInterrupt

    runner.subscribe(interrupt_on)
    task_id = runner.create("send a message")
    with pytest.raises(KeyboardInterrupt):
        await runner.run(task_id)
    state = runner.load(task_id)
    assert state.status == ("awaiting_approval" if when == "approval_requested" else "done")
    assert "task_paused" not in [e.event.kind for e in store.events(task_id)]


async def test_a_timed_out_side_effect_is_settled_not_retried(store: Store) -> None:
    """The call timed out but its effect landed later: the model must not be told 'failed' and
    send it again (that would pay twice). The reconciler finds it; without one, a reviewer
    decides; the call is never sent a second time on its own."""
    effects: list[str] = []

    def paid(ctx: ToolContext) -> str | None:
        return "paid (found)" if ctx.idempotency_key in effects else None

    @tool(touches="external", timeout=0.2, reconcile=paid)
    async def pay(amount: int, ctx: ToolContext) -> str:
        """Pay an amount.

        Args:
            amount: euros.
        """
        await asyncio.sleep(0.4)
        effects.append(ctx.idempotency_key)  # not reached: the call is abandoned at 0.2 s
        return "paid"

    @tool(touches="external", timeout=0.2)
    def slow_pay(amount: int, ctx: ToolContext) -> str:
        """Pay an amount through a service that cannot be asked what it received.

        Args:
            amount: euros.
        """
        time.sleep(0.4)
        effects.append(ctx.idempotency_key)  # a thread cannot be stopped: this happens
        return "paid"

    turns = [{"plan": ["Pay"]}, {"tool": "slow_pay", "args": {"amount": 5}}, {"answer": "ok"}]
    runner, _ = make_runner(store, turns, registry=Registry([pay, slow_pay]))
    task_id = runner.create("pay")
    state = await runner.run(task_id)
    assert state.status == "awaiting_approval"
    call = state.awaiting
    assert call is not None
    assert call.approval is not None
    assert call.approval.reason.startswith("this call timed out and may still take effect")
    kinds = [e.event.kind for e in store.events(task_id)]
    assert "outcome_unknown" in kinds
    assert "tool_result" not in kinds
    await asyncio.sleep(0.4)  # the abandoned thread finishes its effect meanwhile
    assert effects == [f"{task_id}/2.0"], "exactly once, though the run gave up waiting"

    effects.clear()
    turns = [{"plan": ["Pay"]}, {"tool": "pay", "args": {"amount": 5}}, {"answer": "ok"}]
    runner, _ = make_runner(store, turns, registry=Registry([pay, slow_pay]))
    state = await runner.run(runner.create("pay"))
    # The async call was cancelled before its effect, and the reconciler says so: but a
    # timed-out call may still be in flight somewhere, so a reviewer decides, not a re-send.
    assert state.status == "awaiting_approval"
    assert effects == []


async def test_a_crashing_reconciler_pauses_the_task(store: Store) -> None:
    def broken(ctx: ToolContext) -> str | None:
        raise RuntimeError("the ledger is unreadable")

    world = World()

    @tool(touches="external", reconcile=broken)
    def send(to: str, ctx: ToolContext) -> str:
        """Send a message.

        Args:
            to: who to.
        """
        return world.act(ctx.idempotency_key)

    runner, _ = make_runner(store, _turns("send"), registry=Registry([send]))
    task_id = runner.create("send")
    world.interrupt = "after"
    with pytest.raises(KeyboardInterrupt):
        await runner.run(task_id)
    state = await runner.resume(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "tool_crashed"
    assert "RuntimeError: the ledger is unreadable" in state.pause.detail
    assert world.effects == [f"{task_id}/2.0"]


async def test_an_approved_read_is_not_read_again_without_a_reviewer(store: Store) -> None:
    reads: list[str] = []

    @tool
    def peek(path: str) -> str:
        """Read a sensitive file.

        Args:
            path: which file.
        """
        reads.append(path)
        if len(reads) == 1:
            raise KeyboardInterrupt  # the run stops right after the read
        return "secret"

    runner, _ = make_runner(
        store,
        [{"plan": ["Peek"]}, {"tool": "peek", "args": {"path": "/secret"}}, {"answer": "ok"}],
        policy='[default]\naction = "ask"\n',
        registry=Registry([peek]),
    )
    task_id = runner.create("peek")
    state = await runner.run(task_id)
    decide(store, state, pending(state), approved=True, reviewer="rev")
    with pytest.raises(KeyboardInterrupt):
        await runner.resume(task_id)
    state = await runner.resume(task_id)
    assert state.status == "awaiting_approval", "the approval was used once; ask again"
    assert reads == ["/secret"]


async def test_an_approval_does_not_pass_to_another_function_of_the_same_name(
    store: Store,
) -> None:
    """The runner restarts with a different registry: a `send` that is not the one approved."""
    world = World()
    runner, _ = make_runner(store, _turns("send"), policy=None, registry=registry(world))
    task_id = runner.create("send a message")
    state = await runner.run(task_id)
    decide(store, state, pending(state), approved=True, reviewer="rev")

    impostor_ran: list[str] = []

    @tool(touches="external")
    def send(to: str) -> str:
        """Send a message, another way.

        Args:
            to: who to.
        """
        impostor_ran.append(to)
        return "sent"

    other, _ = make_runner(store, _turns("send"), policy=None, registry=Registry([send]))
    state = await other.resume(task_id)
    assert impostor_ran == []
    assert world.effects == []
    assert "the approval does not match this call" in state_observation(store, task_id)


async def _timed_out_send_approved_again(
    store: Store,
) -> tuple[Runner, list[str], str, Registry]:
    """A send that timed out, whose reconciler found nothing then, approved by a reviewer to be
    sent again after its abandoned call has landed: the runner that gave up on it, the effects
    seen, the task and the tools."""
    effects: list[str] = []

    def sent(ctx: ToolContext) -> str | None:
        return "sent (found)" if ctx.idempotency_key in effects else None

    @tool(touches="external", timeout=0.2, reconcile=sent)
    def send(to: str, ctx: ToolContext) -> str:
        """Send.

        Args:
            to: who to.
        """
        time.sleep(0.4)
        effects.append(ctx.idempotency_key)
        return "sent"

    registry = Registry([send])
    runner, _ = make_runner(store, _turns("send"), registry=registry)
    task_id = runner.create("send")
    state = await runner.run(task_id)
    assert state.status == "awaiting_approval"
    await asyncio.sleep(0.4)  # the abandoned call lands
    decide(store, state, pending(state), approved=True, reviewer="rev")
    return runner, effects, task_id, registry


async def test_approving_a_rerun_asks_the_reconciler_again_first(store: Store) -> None:
    """The call timed out; the reconciler found nothing yet; a reviewer said 'run it again'. By
    then the abandoned call has landed: running it again would do it twice."""
    runner, effects, task_id, _ = await _timed_out_send_approved_again(store)
    state = await runner.resume(task_id)
    assert state.status == "done"
    assert effects == [f"{task_id}/2.0"], "once"
    # Its own result came in the meantime (its thread ran on), and settled it.
    assert tool_results(store, task_id) == []
    [late] = [e.event for e in store.events(task_id) if isinstance(e.event, LateResult)]
    assert (late.ref, late.ok, late.content) == ("2.0", True, "sent")
    assert state.seconds >= 0.2, "the time spent waiting for it counts against the budget"


async def test_approving_a_rerun_asks_the_reconciler_again_when_the_call_is_lost(
    store: Store,
) -> None:
    """As above, but the runner that gave up on the call is gone (its thread with it): the
    reconciler is asked again, and finds that the call landed."""
    _, effects, task_id, registry = await _timed_out_send_approved_again(store)
    another, _ = make_runner(store, _turns("send"), registry=registry)
    state = await another.resume(task_id)
    assert state.status == "done"
    assert effects == [f"{task_id}/2.0"], "once"
    results = tool_results(store, task_id)
    assert [r.recovery for r in results] == ["reconciled"]


async def test_stopping_the_run_during_a_call_records_what_the_call_did(store: Store) -> None:
    """Ctrl-C while a call with effects runs in a thread: the thread cannot be stopped, so the
    run waits for it, records its result, and then stops. Resuming needs no reviewer."""
    effects: list[str] = []
    started = threading.Event()

    @tool(touches="external")
    def send(to: str, ctx: ToolContext) -> str:
        """Send a message (through a service that cannot say what it received).

        Args:
            to: who to.
        """
        started.set()
        time.sleep(0.3)
        effects.append(ctx.idempotency_key)
        return f"sent to {to}"

    runner, _ = make_runner(store, _turns("send"), registry=Registry([send]))
    task_id = runner.create("send")
    running = asyncio.create_task(runner.run(task_id))
    await asyncio.to_thread(started.wait, 5)
    running.cancel()  # what asyncio.run does on Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await running

    assert effects == [f"{task_id}/2.0"]
    [result] = tool_results(store, task_id)
    assert result.content == "sent to dana"
    state = runner.load(task_id)
    assert state.status == "paused"
    assert state.pause is not None
    assert state.pause.reason == "interrupted"

    state = await runner.resume(task_id)
    assert state.status == "done", "its outcome was known: nothing to reconcile or ask"
    assert effects == [f"{task_id}/2.0"]


async def test_a_tool_timeout_is_still_a_timeout_not_a_stop(store: Store) -> None:
    @tool(timeout=0.1)
    def slow() -> str:
        """Take a while."""
        time.sleep(0.3)
        return "late"

    runner, backend = make_runner(
        store,
        [{"plan": ["Wait"]}, {"tool": "slow"}, {"answer": "gave up"}],
        registry=Registry([slow]),
    )
    state = await runner.run(runner.create("wait"))
    assert state.status == "done"
    assert backend.requests[-1].messages[-1].content == "Error: slow timed out after 0.1 s"
