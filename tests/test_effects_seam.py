"""The seam between the loop's decisions and its effects: a whole task driven through an
`Effects` written here (no Docker, no model, no tool function ever called), and a resume after a
crash between a call's intent and its result that asks the effects to reconcile, never to run it
again. What a Temporal runner will do with activities, a test does with a dict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.backends.base import ModelRequest, ModelResponse, Purpose, ToolCall
from agent.effects import Effects, Ran, Reconciled, Stopped
from agent.events import (
    IntentRecorded,
    Limits,
    ModelResponded,
    TaskCreated,
    TaskPaused,
    ToolResulted,
)
from agent.loop import Loop
from agent.loop_tools import EXECUTOR
from agent.recorder import Recorder
from agent.state import Call, TaskState
from agent.steps import drive
from agent.store import Store
from policies import Gate
from tools.registry import Registry
from tools.tool import Tool, ToolResult, tool


def note(text: str) -> str:
    """Write a note."""
    raise AssertionError("the effects run tools here, never the loop")


NOTE = tool(touches="write", reconcile=lambda _ctx: None)(note)


def answer(name: str, **arguments: Any) -> ModelResponse:
    call = ToolCall(id=f"c-{name}", name=name, arguments=json.dumps(arguments))
    return ModelResponse(tool_calls=(call,), model="fake")


@dataclass
class ScriptedEffects:
    """Effects from a script: the model's answers in order, each tool's result by name."""

    answers: list[ModelResponse]
    results: dict[str, ToolResult]
    ran: list[tuple[str, str]] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    asked: list[Purpose] = field(default_factory=list)
    found: Reconciled = "unknown"

    async def ask_model(
        self, purpose: Purpose, request: ModelRequest
    ) -> ModelResponded | TaskPaused:
        self.asked.append(purpose)
        return ModelResponded(purpose=purpose, response=self.answers.pop(0), seconds=0.0)

    async def run_tool(self, tool: Tool, call: Call, key: str) -> Ran | Stopped:
        self.ran.append((tool.name, key))
        return Ran(self.results[tool.name], 0.01)

    async def read_effect(
        self, tool: Tool, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any] | TaskPaused:
        return {}

    async def reconcile(self, tool: Tool, call: Call) -> Reconciled:
        self.reconciled.append(call.ref)
        return self.found

    def keep_whole(self, result: ToolResulted, limit: int) -> ToolResulted:
        return result


def loop_for(store: Store, task_id: str, effects: Effects) -> Loop:
    registry = Registry()
    registry.add(NOTE)
    state = TaskState.from_store(store, task_id)
    offered = (NOTE.spec, *EXECUTOR.specs())
    return Loop(Recorder(store, state, []), effects, registry, Gate.default(), offered, None)


def new_task(store: Store) -> str:
    return store.create_task(TaskCreated(task="note that it works", model="fake", limits=Limits()))


async def test_a_whole_task_runs_through_effects_written_in_the_test(tmp_path: Path) -> None:
    with Store.open(tmp_path / "log.db") as store:
        task_id = new_task(store)
        effects = ScriptedEffects(
            answers=[
                answer("submit_plan", steps=["write the note"]),
                answer("note", text="it works"),
                answer("complete_step", summary="noted"),
            ],
            results={"note": ToolResult(True, "written")},
        )
        await drive(loop_for(store, task_id, effects))
        state = TaskState.from_store(store, task_id)  # read back from the log, not memory
        ref = note_ref(store, task_id)
    assert state.status == "done"
    assert state.answer == "noted"
    assert effects.asked == ["plan", "act", "act"]
    assert effects.ran == [("note", f"{task_id}/{ref}")]
    kinds = [type(e.event).__name__ for e in store_events(tmp_path, task_id)]
    assert kinds.index("IntentRecorded") < kinds.index("ToolResulted")  # intent first


async def test_a_resume_after_a_crash_asks_the_effects_to_reconcile_not_to_run(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "log.db") as store:
        task_id = new_task(store)
        first = ScriptedEffects(
            answers=[answer("submit_plan", steps=["write"]), answer("note", text="once")],
            results={"note": ToolResult(True, "written")},
        )
        loop = loop_for(store, task_id, first)

        class Crash(Exception):
            pass

        async def crash_after_intent(tool: Tool, call: Call, key: str) -> Ran | Stopped:
            # The intent is durable; the process dies before the result is recorded.
            assert any(isinstance(e.event, IntentRecorded) for e in store.events(task_id))
            raise Crash

        first.run_tool = crash_after_intent  # type: ignore[method-assign]
        try:
            await drive(loop)
        except Crash:
            pass
        else:
            raise AssertionError("the crash did not land between intent and result")
        second = ScriptedEffects(
            answers=[answer("complete_step", summary="noted")],
            results={},
            found=ToolResult(True, "written, found by the reconciler"),
        )
        await drive(loop_for(store, task_id, second))
        state = TaskState.from_store(store, task_id)
        results = [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]
        ref = note_ref(store, task_id)
    assert second.ran == []  # never sent again
    assert second.reconciled == [ref]  # the reconcile path ran
    assert [r.recovery for r in results] == ["reconciled"]
    assert state.status == "done"


def note_ref(store: Store, task_id: str) -> str:
    """The note call's ref, from its intent in the log."""
    [ref] = [e.event.ref for e in store.events(task_id) if isinstance(e.event, IntentRecorded)]
    return ref


def store_events(path: Path, task_id: str) -> list[Any]:
    with Store.open(path / "log.db") as store:
        return list(store.events(task_id))
