"""The audit log: a task's gate decisions, approvals, intents and results chained by hash as the
store takes them (from several processes at once too); `agent audit verify` holds on the log as
written, and names the first entry of one edited with sqlite3 (changed, removed, reordered, cut,
added from outside, or rewritten whole against a head kept elsewhere)."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent import audit
from agent.approvals import decide
from agent.events import Limits, StepStarted, TaskCreated, TaskFinished
from agent.store import Store
from base.errors import StoreError
from frontends.cli import main

from .conftest import make_runner, pending

TURNS: list[Any] = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 2}},
    {"done": "counted"},
]


async def _a_decided_task(store: Store) -> str:
    """A task whose call the default policy asks about, approved, run to its end."""
    runner, _ = make_runner(store, TURNS, policy=None)
    task = runner.create("Count a visitor")
    state = await runner.run(task)
    assert state.status == "awaiting_approval"
    decide(store, state, pending(state), approved=True, reviewer="ann")
    assert (await runner.resume(task)).status == "done"
    return task


def _db(home: Path) -> sqlite3.Connection:
    """The store as someone with sqlite3 and write access to the file would open it."""
    return sqlite3.connect(home / "events.db", isolation_level=None)


async def test_a_task_s_decisions_are_chained_and_verify(store: Store, home: Path) -> None:
    task = await _a_decided_task(store)
    verdict = audit.verify(store.reader())
    assert verdict.ok, verdict.problem
    kinds = [e["kind"] for e in audit.entries(store.reader())]
    for kind in ("task_created", "gate_decided", "approval_requested", "approval_decided"):
        assert kind in kinds
    assert {"intent", "tool_result", "task_finished"} <= set(kinds)
    assert "model_responded" not in kinds  # what decides and does, not every event
    assert verdict.entries == len(kinds) == verdict.head.n
    [decided] = [e for e in audit.entries(store.reader()) if e["kind"] == "approval_decided"]
    assert (decided["task_id"], decided["event"]["reviewer"]) == (task, "ann")


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        (
            "UPDATE events SET body = replace(body, '\"amount\":2', '\"amount\":200') "
            "WHERE kind = 'gate_decided'",
            r"entry 2 \(task \w+ event \d+\), gate_decided: it was changed",
        ),
        ("DELETE FROM audit WHERE n = 3", "entry 3 was removed"),
        (
            "DELETE FROM events WHERE kind = 'intent'",
            r"entry \d+ \(task \w+ event \d+\): its event was removed",
        ),
        (  # entries 4 and 5 swapped: each keeps its own event and hash, in the other's place
            "UPDATE audit SET n = -5 WHERE n = 5; UPDATE audit SET n = 5 WHERE n = 4; "
            "UPDATE audit SET n = 4 WHERE n = -5",
            r"entry 4 .*: it was changed \(or reordered\)",
        ),
        (
            'UPDATE events SET body = replace(body, \'"kind":"step_started"\', '
            '\'"kind":"approval_decided","approval_id":"x","approved":true\') '
            "WHERE kind = 'step_started'",
            r"event \d+: it is filed as step_started but its body is a approval_decided",
        ),
        ("DELETE FROM audit; DELETE FROM audit_head", r"no entry records it .*emptied"),
        ("DELETE FROM audit WHERE n = (SELECT MAX(n) FROM audit)", "the log was cut after entry"),
    ],
    ids=["changed", "removed", "event-removed", "reordered", "cut", "refiled", "emptied"],
)
async def test_an_edit_with_sqlite3_is_found_and_named(
    store: Store, home: Path, edit: str, found: str
) -> None:
    await _a_decided_task(store)
    assert audit.verify(store.reader()).ok  # the probe's control: it held before the edit
    _db(home).executescript(edit)
    verdict = audit.verify(store.reader())
    assert not verdict.ok
    assert verdict.problem is not None
    assert re.search(found, verdict.problem), verdict.problem


@pytest.mark.parametrize("when", ["(SELECT MAX(ts) FROM events)", "0"], ids=["now", "backdated"])
async def test_an_event_written_from_outside_is_found(store: Store, home: Path, when: str) -> None:
    task = await _a_decided_task(store)
    forged = '{"kind":"approval_decided","approval_id":"x","approved":true,"reviewer":"eve"}'
    _db(home).execute(
        f"INSERT INTO events VALUES (?, 99, {when}, 'approval_decided', ?)", (task, forged)
    )
    verdict = audit.verify(store.reader())
    assert verdict.problem is not None
    assert verdict.problem.startswith(f"task {task} event 99, approval_decided: no entry records")


async def test_a_log_rewritten_whole_is_found_with_a_head_kept_elsewhere(
    store: Store, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _a_decided_task(store)
    assert main(["audit", "head"]) == 0
    kept = capsys.readouterr().out.strip()
    # Someone with the file changes an event and recomputes every hash and the head.
    db = _db(home)
    db.execute("UPDATE events SET body = replace(body, '\"ann\"', '\"eve\"')")
    rows = db.execute(
        "SELECT a.n, e.task_id, e.seq, e.ts, e.kind, e.body FROM audit a JOIN events e "
        "ON e.task_id = a.task_id AND e.seq = a.seq ORDER BY a.n"
    ).fetchall()
    previous = "0" * 64
    for n, task_id, seq, ts, kind, body in rows:
        previous = audit.link(previous, n, audit.Entry(task_id, seq, ts, kind, body))
        db.execute("UPDATE audit SET hash = ? WHERE n = ?", (previous, n))
    db.execute("UPDATE audit_head SET hash = ?", (previous,))
    assert main(["audit", "verify"]) == 0  # it holds on its own...
    capsys.readouterr()
    assert main(["audit", "verify", "--head", kept]) == 1  # ...but not against the kept head
    said = capsys.readouterr().out
    assert "is not in this log: it was rewritten" in said


def test_the_commands_say_what_is_wrong(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open() as store:
        store.create_task(TaskCreated(task="t", model="m", limits=Limits()))
    assert main(["audit", "verify", "--head", "12:abc"]) == 2
    assert "not an audit head" in capsys.readouterr().err
    assert main(["audit", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    out = home / "audit.jsonl"
    assert main(["audit", "export", "-o", str(out)]) == 0
    [line] = out.read_text().splitlines()
    assert json.loads(line)["kind"] == "task_created"
    assert main(["audit", "export", "-o", str(home / "no" / "such" / "folder")]) == 2
    assert "cannot write" in capsys.readouterr().err
    # A store written before the audit log existed, read read-only, says so.
    old = home / "old.db"
    sqlite3.connect(old).executescript(
        "CREATE TABLE tasks (id TEXT); CREATE TABLE events (task_id TEXT, seq INTEGER);"
    )
    with Store.open(old, read_only=True) as store, pytest.raises(StoreError, match="no inbox or"):
        store.reader()


def _append_many(path: str, name: str, ready: Any) -> None:
    with Store.open(Path(path)) as store:
        task = store.create_task(TaskCreated(task=name, model="m", limits=Limits()))
        ready.wait(120)  # all at once: every worker (and the test) has come this far
        last = 1
        for number in range(APPENDS):
            last = store.append(task, [StepStarted(index=number, title="s")], after=last)
            last = store.append(task, [TaskFinished(answer=str(number))], after=last)


APPENDS = 1000


def test_processes_writing_at_once_keep_one_chain(home: Path) -> None:
    path = str(home / "events.db")
    Store.open(Path(path)).close()
    spawn = multiprocessing.get_context("spawn")
    # Each starts (a new interpreter: seconds on a busy machine) and makes its task, then all
    # write at once; a fixed wait here let one finish before another had started, on CI.
    ready = spawn.Barrier(4)
    workers = [spawn.Process(target=_append_many, args=(path, f"w{i}", ready)) for i in range(3)]
    for worker in workers:
        worker.start()
    ready.wait(120)
    for worker in workers:
        worker.join(180)  # 2,000 commits each, on a machine CI keeps busy
        assert worker.exitcode == 0, f"a writer ended with {worker.exitcode} (see its stderr)"
    with Store.open(Path(path)) as store:
        verdict = audit.verify(store.reader())
        assert verdict.ok, verdict.problem
        assert verdict.entries == 3 * (1 + APPENDS)  # each: its start, and every end
        order = [e["task_id"] for e in audit.entries(store.reader())]
    # They did write at once: the chain goes from one task to another many times.
    switches = sum(a != b for a, b in itertools.pairwise(order))
    print(f"the chain switched tasks {switches} times")
    assert switches > 2, switches  # one after another would switch twice
