"""The live stream relayed through the store (agent.relay): a follower reads the log and the
relayed items at one moment and tells each item after the event its activity began at, so the
order is the run's even when items and events are written in between two looks; pieces that
cannot be encoded as they are (half of a character pair) are still relayed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.backends.base import Delta
from agent.events import InstructionAdded, Limits, TaskCreated
from agent.live import CommandOutput, ModelDelta
from agent.relay import Relay, mark, together
from agent.store import Store, StoredEvent


def _said(merged: Sequence[object]) -> list[str]:
    said = []
    for item in merged:
        if isinstance(item, StoredEvent):
            assert isinstance(item.event, InstructionAdded | TaskCreated)
            said.append(f"event {item.seq}")
        elif isinstance(item, CommandOutput):
            said.append(f"output {item.text}")
        elif isinstance(item, ModelDelta):
            said.append(f"delta {item.delta.text}")
    return said


def test_items_are_told_after_the_event_their_activity_began_at(tmp_path: Path) -> None:
    with Store.open(tmp_path / "events.db") as store:
        task = store.create_task(TaskCreated(task="t", model="scripted:x", limits=Limits()))
        start = mark(store)
        # An activity began after event 1: its output is relayed while event 2 is written.
        first = Relay(store, after=1)
        first(CommandOutput(task, "stdout", "one"))
        store.append(task, [InstructionAdded(text="two")], after=1)
        first.flush()
        # The next began after event 2; its pieces come, then event 3 follows them.
        second = Relay(store, after=2)
        second(ModelDelta(task, "act", Delta("text", "\ud83d")))  # half of a pair, cut short
        second(CommandOutput(task, "stdout", "three"))
        second.flush()
        store.append(task, [InstructionAdded(text="four")], after=2)
        merged, later = together(store, task, after=0, mark=start)
        assert _said(merged) == [
            "event 1",
            "output one",
            "event 2",
            "delta \ud83d",
            "output three",
            "event 3",
        ]
        # Read from where it left off: nothing twice.
        again, _ = together(store, task, after=3, mark=later)
        assert again == []
        # Items relayed before a follower began are not told to it.
        assert together(store, task, after=3, mark=mark(store))[0] == []


def test_a_store_no_worker_relayed_to_has_nothing_to_tell(tmp_path: Path) -> None:
    with Store.open(tmp_path / "events.db") as store:
        task = store.create_task(TaskCreated(task="t", model="scripted:x", limits=Limits()))
        assert mark(store) == 0
        merged, at = together(store, task, after=0, mark=0)
        assert _said(merged) == ["event 1"]
        assert at == 0
