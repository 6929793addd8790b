"""Following a task's log from another process: `Store.tail` gives what is there after a given
sequence number, then each event another process appends, in order, as it is committed; and a
runner's live stream carries the same events, with command output and model deltas beside them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from agent.events import Limits, TaskCreated, TaskResumed
from agent.live import Live, ModelDelta
from agent.store import Store, StoredEvent
from base.errors import TaskNotFound

from .conftest import REPO, make_runner

WRITER = """
import sys, time
from pathlib import Path
from agent.events import TaskResumed
from agent.store import Store
with Store.open(Path(sys.argv[1])) as store:
    for _ in range(3):
        time.sleep(0.2)
        store.append(sys.argv[2], [TaskResumed()])
"""


def new_task(store: Store) -> str:
    return store.create_task(TaskCreated(task="t", model="m", limits=Limits()))


async def test_tail_follows_what_another_process_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with Store.open(path) as store:
        task_id = new_task(store)
        store.append(task_id, [TaskResumed()])  # seq 2, before the tail starts
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(path),
            task_id,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        seen: list[tuple[int, float]] = []
        try:
            async with asyncio.timeout(30):
                async for stored in store.tail(task_id, after=1):
                    seen.append((stored.seq, time.time() - stored.ts))
                    if stored.seq == 5:
                        break
        finally:
            assert await writer.wait() == 0
    assert [seq for seq, _ in seen] == [2, 3, 4, 5]  # after=1: the task's creation is skipped
    # Each of the other process's events arrived within a fraction of a second of its commit.
    assert all(lag < 1.0 for _, lag in seen[1:]), seen


async def test_tail_of_a_task_the_store_does_not_hold_says_so(tmp_path: Path) -> None:
    with Store.open(tmp_path / "events.db") as store, pytest.raises(TaskNotFound):
        async for _ in store.tail("nope"):
            pass


async def test_the_live_stream_carries_events_and_model_deltas_in_one_subscription(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "events.db") as store:
        runner, _ = make_runner(
            store, [{"plan": ["answer"]}, {"text": "thinking it over"}, {"answer": "42"}]
        )
        items: list[Live] = []
        runner.subscribe(items.append)
        task_id = runner.create("what is the answer")
        state = await runner.run(task_id)
        logged = [s.seq for s in store.events(task_id)]
    assert state.status == "done"
    events = [i for i in items if isinstance(i, StoredEvent)]
    assert [e.seq for e in events] == logged  # every event, once, in order
    assert any(isinstance(i, ModelDelta) for i in items), "its text turn streamed"
