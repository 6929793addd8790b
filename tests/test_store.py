"""The SQLite event store, against real SQLite files and real processes.

Several processes share one store in practice (a runner, a reviewer's CLI, a second runner that
must be refused), and any of them may be killed with -9 (DESIGN invariant 1). These tests start
real processes (spawned, so none inherits an open SQLite connection) and kill them for real.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.synchronize import Barrier
from multiprocessing.synchronize import Event as SyncEvent
from pathlib import Path
from typing import Any, get_args

import pytest

from agent.approvals import NothingToApprove, Seen, decide
from agent.backends.base import ModelResponse, ToolCall, Usage
from agent.events import (
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalGiven,
    ApprovalRequested,
    CallRejected,
    EgressDecided,
    Event,
    GateDecided,
    InstructionAdded,
    IntentRecorded,
    LateResult,
    Limits,
    LimitsRaised,
    ModelResponded,
    OutcomeUnknown,
    PlanProposed,
    ReplanRequested,
    ReplyRejected,
    Status,
    StepFinished,
    StepStarted,
    TaskCreated,
    TaskFailed,
    TaskFinished,
    TaskPaused,
    TaskResumed,
    TaskStuck,
    ToolResulted,
    ToolsOffered,
)
from agent.state import TaskState
from agent.store import Store
from base.errors import ConflictingWrite, StoreError, TaskBusy, TaskNotFound
from base.toolspec import ToolSpec

from .conftest import pending

SPAWN = multiprocessing.get_context("spawn")
HASH = "3f" * 32


# --- building events ---------------------------------------------------------------------------


def created(task: str = "create a user for Dana, then deploy signup") -> TaskCreated:
    return TaskCreated(task=task, model="scripted:/tmp/script.json", limits=Limits())


def plan_response(steps: Sequence[str], tokens: tuple[int, int] = (800, 40)) -> ModelResponded:
    arguments = '{"steps": [' + ", ".join(f'"{s}"' for s in steps) + "]}"
    return ModelResponded(
        purpose="plan",
        response=ModelResponse(
            tool_calls=(ToolCall(id="call_plan", name="submit_plan", arguments=arguments),),
            usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        ),
        seconds=0.5,
    )


def act_response(
    *calls: tuple[str, str], tokens: tuple[int, int] = (1200, 30), text: str = ""
) -> ModelResponded:
    return ModelResponded(
        purpose="act",
        response=ModelResponse(
            text=text,
            tool_calls=tuple(
                ToolCall(id=f"call_{i}", name=name, arguments=arguments)
                for i, (name, arguments) in enumerate(calls)
            ),
            usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        ),
        seconds=0.25,
        cost_usd=0.001,
    )


def one_of_each() -> list[Event]:
    """A realistic instance of every class in the `Event` union (the task_created one first)."""
    return [
        TaskCreated(
            task="Log into the staging admin, create a user for Dana Ölund, deploy signup",
            model="openai:gpt-5.5",
            limits=Limits(max_steps=20, max_tokens=None, max_cost_usd=1.5, stuck_repeats=5),
        ),
        plan_response(["Create the user", "Deploy signup"]),
        PlanProposed(steps=("Create the user", "Deploy signup"), replan_reason=None),
        StepStarted(index=0, title="Create the user"),
        ModelResponded(
            purpose="act",
            response=ModelResponse(
                text="Filling the form now.",
                tool_calls=(
                    ToolCall(id="c0", name="forms.fill", arguments='{"name": "Dana Ölund"}'),
                    ToolCall(id="c1", name="shell", arguments='{"cmd": "' + "x" * 40 + '"}'),
                ),
                usage=Usage(input_tokens=1500, output_tokens=60),
                model="gpt-5.5-2026-01-01",
            ),
            seconds=1.75,
            cost_usd=0.0123,
            oversized={1: 2_000_000},  # int keys: JSON makes them strings on the way
        ),
        CallRejected(ref="2.1", tool="shell", error="the arguments are 2,000,000 bytes"),
        GateDecided(
            ref="2.0",
            tool="forms.fill",
            arguments={
                "url": "https://admin.staging.example/users/new",
                "fields": {"name": "Dana Ölund", "admin": False, "quota": 1.5, "groups": ["ops"]},
                "note": None,
            },
            call_hash=HASH,
            verdict="ask",
            reason="forms on the admin site need a reviewer",
            rule="admin-forms",
        ),
        ApprovalRequested(
            approval_id="t1-2.0",
            ref="2.0",
            call_hash=HASH,
            reason="forms on the admin site need a reviewer",
            preview="POST /users/new\nname=Dana Ölund\nadmin=false",
        ),
        ApprovalGiven(approval_id="t1-2.0", call_hash="ab" * 32, reviewer="kim"),
        ApprovalEscalated(approval_id="t1-2.0", call_hash="ab" * 32, to=["dana"], expire_after=60),
        InstructionAdded(text="mind the cat"),
        ApprovalDecided(approval_id="t1-2.0", approved=True, reason="ok", reviewer="sam"),
        IntentRecorded(ref="2.0", call_hash=HASH, idempotency_key="t1-2.0-k", approval_id="t1-2.0"),
        ToolResulted(
            ref="2.0",
            ok=False,
            content='timeout after 30 s; page said "<b>saving…</b>"\n\ttab',
            error_code="timeout",
            seconds=30.0,
            recovery="reconciled",
        ),
        OutcomeUnknown(ref="2.0", reason="deploy timed out after 30 s"),
        LateResult(ref="2.0", tool="deploy", ok=True, content="deployed", printed="building\n"),
        ToolsOffered(
            tools=(ToolSpec(name="deploy", description="Deploy.", parameters={"type": "object"}),),
            digest="0123456789abcdef",
        ),
        ReplyRejected(error="the reply had no tool call"),
        StepFinished(index=0, summary="Dana exists (user 42)"),
        ReplanRequested(reason="the deploy target does not exist"),
        EgressDecided(
            method="CONNECT", host="pkgs.example.org", port=443, allowed=True, reason="allowlisted"
        ),
        TaskPaused(reason="budget_exhausted", detail="tokens: 500000 of 500000 used"),
        LimitsRaised(limits=Limits(max_tokens=1_000_000, max_seconds=None)),
        TaskResumed(),
        TaskStuck(reason="the same error 3 times in a row"),
        TaskFailed(reason="the plan failed 4 times"),
        TaskFinished(answer="Dana was created; signup is deployed and /health says ok"),
    ]


def batch(n: int) -> list[Event]:
    """Three events that fold without error in any number, and that a fold can count."""
    return [
        plan_response(["a step"], tokens=(1, 2)),
        ReplyRejected(error=f"batch {n}: not a plan"),
        ReplanRequested(reason=f"batch {n}"),
    ]


def awaiting_log(task_id: str) -> list[Event]:
    """The events after `task_created` that leave a task waiting for a reviewer."""
    return [
        plan_response(["Deploy signup"]),
        PlanProposed(steps=("Deploy signup",)),
        StepStarted(index=0, title="Deploy signup"),
        act_response(("deploy", '{"service": "signup", "env": "staging"}')),
        GateDecided(
            ref="2.0",
            tool="deploy",
            arguments={"service": "signup", "env": "staging"},
            call_hash=HASH,
            verdict="ask",
            reason="deploys need a reviewer",
            rule="deploys",
        ),
        ApprovalRequested(
            approval_id=f"{task_id}-2.0",
            ref="2.0",
            call_hash=HASH,
            reason="deploys need a reviewer",
            preview="deploy signup@staging",
        ),
    ]


def load(store: Store, task_id: str) -> TaskState:
    return TaskState.from_store(store, task_id)


def lease_rows(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return [(str(t), int(p)) for t, p in db.execute("SELECT task_id, pid FROM leases")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "events.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store.open(db) as s:
        yield s


# --- processes ---------------------------------------------------------------------------------
# Spawned children import this module, so everything they run is a module-level function. Each
# job gets a barrier first, so that concurrent jobs really start together.


def _job(
    fn: Callable[..., object], args: tuple[Any, ...], barrier: Barrier, results: Any, index: int
) -> None:
    try:
        value = fn(barrier, *args)
    except BaseException as exc:
        results.put((index, False, repr(exc)))
        raise  # and its traceback goes to stderr
    else:
        results.put((index, True, value))


def run_together(jobs: Sequence[tuple[Callable[..., object], tuple[Any, ...]]]) -> list[Any]:
    """Run each `fn(barrier, *args)` in its own process, together; return their results in order.
    A child's exception fails the test."""
    barrier = SPAWN.Barrier(len(jobs), timeout=30)  # a child that dies early frees the rest
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_job, args=(fn, args, barrier, results, i))
        for i, (fn, args) in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    failed = [value for _, ok, value in got if not ok]
    assert not failed, failed
    return [value for _, _, value in sorted(got, key=lambda r: r[0])]


def _append_singles(barrier: Barrier, path: Path, task_id: str, writer: int, n: int) -> list[int]:
    with Store.open(path) as store:
        barrier.wait()
        return [
            store.append(task_id, [ReplanRequested(reason=f"w{writer} #{i}")]) for i in range(n)
        ]


def _append_batches(barrier: Barrier, path: Path, task_id: str, writer: int, n: int) -> int:
    with Store.open(path) as store:
        barrier.wait()
        for i in range(n):
            store.append(task_id, batch(writer * 10_000 + i))
    return n


def _fold_until(barrier: Barrier, path: Path, task_id: str, total: int) -> list[int]:
    """Fold the task again and again until its log has `total` events; return each log length,
    after checking that the fold agrees with it (a partial batch would not)."""
    seen: list[int] = []
    deadline = time.monotonic() + 30
    with Store.open(path) as store:
        barrier.wait()
        while time.monotonic() < deadline:
            events = store.events(task_id)
            state = TaskState.fold(task_id, [(e.seq, e.event) for e in events])
            batches = (len(events) - 1) // 3
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert (len(events) - 1) % 3 == 0, f"saw a partial batch: {len(events)} events"
            assert (state.turns, state.input_tokens, state.output_tokens) == (
                batches,
                batches,
                2 * batches,
            )
            seen.append(len(events))
            if len(events) == total:
                return seen
    raise AssertionError(f"the log never reached {total} events: last saw {seen[-1:]}")


def _try_lease(barrier: Barrier, path: Path, task_id: str) -> tuple[str, int, str]:
    """("taken", this pid, "") or ("busy", the holder's pid, the message)."""
    with Store.open(path) as store:
        try:
            with store.lease(task_id):
                return ("taken", os.getpid(), "")
        except TaskBusy as exc:
            return ("busy", exc.context["pid"], str(exc))


def _hold_lease(path: Path, task_id: str, held: SyncEvent, release: SyncEvent) -> None:
    with Store.open(path) as store, store.lease(task_id):
        held.set()
        release.wait(30)


def _append_forever(path: Path, task_id: str, committed: Any, started: SyncEvent) -> None:
    with Store.open(path) as store:
        n = 0
        while True:
            committed.value = store.append(task_id, batch(n))
            started.set()
            n += 1


# --- round trip --------------------------------------------------------------------------------


def test_every_event_kind_round_trips_in_order(db: Path) -> None:
    events = one_of_each()
    union_members = set(get_args(get_args(Event)[0]))
    assert {type(e) for e in events} == union_members, "one_of_each misses an Event class"

    first = events[0]
    assert isinstance(first, TaskCreated)
    with Store.open(db) as store:
        task_id = store.create_task(first)
        # In several batches, so the numbering carries on from one append to the next.
        assert store.append(task_id, events[1:2]) == 2
        assert store.append(task_id, events[2:7]) == 7
        assert store.append(task_id, events[7:], after=7) == len(events)

    with Store.open(db) as store:  # a fresh connection: it came from the file
        stored = store.events(task_id)
        assert [e.seq for e in stored] == list(range(1, len(events) + 1))
        assert [e.event for e in stored] == events
        assert all(e.task_id == task_id for e in stored)
        assert [e.ts for e in stored] == sorted(e.ts for e in stored)
        assert [e.event for e in store.events(task_id, after=15)] == events[15:]
        assert store.events(task_id, after=len(events)) == []
        responded = stored[4].event
        assert isinstance(responded, ModelResponded)
        assert responded.oversized == {1: 2_000_000}
        assert store.task(task_id).task == first.task


def test_an_unknown_task_has_no_events_and_no_row(store: Store) -> None:
    with pytest.raises(TaskNotFound) as info:
        store.events("nope")
    assert info.value.context["task_id"] == "nope"
    with pytest.raises(TaskNotFound):
        store.task("nope")


def test_create_task_uses_the_given_id_or_makes_one(store: Store) -> None:
    given = store.create_task(created(), task_id="my-task")
    made = store.create_task(created())
    assert given == "my-task"
    assert len(made) == 8
    assert made != given
    assert {t.id for t in store.tasks()} == {"my-task", made}


# --- the tasks listing -------------------------------------------------------------------------


def test_status_follows_each_appended_batch(store: Store) -> None:
    task_id = store.create_task(created())
    assert store.task(task_id).status == "running"
    steps: list[tuple[list[Event], Status]] = [
        (awaiting_log(task_id)[:4], "running"),  # kinds with no status of their own
        (awaiting_log(task_id)[4:], "awaiting_approval"),
        ([ApprovalDecided(approval_id=f"{task_id}-2.0", approved=True)], "running"),
        ([TaskPaused(reason="interrupted", detail="Ctrl-C")], "paused"),
        # the last event with a status wins, whatever follows it in the batch
        (
            [
                TaskResumed(),
                TaskPaused(reason="model_error", detail="503"),
                ReplyRejected(error="x"),
            ],
            "paused",
        ),
        ([LimitsRaised(limits=Limits(max_steps=99)), TaskResumed()], "running"),
        ([TaskStuck(reason="same error")], "stuck"),
        ([TaskResumed(), TaskFailed(reason="gave up")], "failed"),
        ([TaskResumed(), TaskFinished(answer="deployed")], "done"),
    ]
    updated = store.task(task_id).updated
    for events, status in steps:
        store.append(task_id, events)
        row = store.task(task_id)
        assert row.status == status, [e.kind for e in events]
        assert load(store, task_id).status == status  # the listing agrees with the fold
        assert row.updated >= updated
        updated = row.updated
    assert store.task(task_id).updated > store.task(task_id).created


def test_tasks_are_listed_newest_first_and_filtered_by_status(store: Store) -> None:
    first = store.create_task(created("first"))
    second = store.create_task(created("second"))
    third = store.create_task(created("third"))
    fourth = store.create_task(created("fourth"))
    store.append(first, [TaskFinished(answer="ok")])
    store.append(second, [TaskPaused(reason="interrupted", detail="")])
    store.append(third, awaiting_log(third))

    assert [t.id for t in store.tasks()] == [fourth, third, second, first]
    assert [t.task for t in store.tasks()] == ["fourth", "third", "second", "first"]
    assert [t.id for t in store.tasks(statuses=["done"])] == [first]
    assert [t.id for t in store.tasks(statuses=["running", "paused"])] == [fourth, second]
    assert [t.id for t in store.tasks(statuses=["awaiting_approval"])] == [third]
    assert store.tasks(statuses=["stuck"]) == []
    assert [t.id for t in store.tasks(limit=2)] == [fourth, third]
    assert store.tasks(statuses=[]) == store.tasks()  # no filter, not "none of them"


def test_resolve_a_unique_an_unknown_and_an_ambiguous_prefix(store: Store) -> None:
    for task_id in ("ab12cd34", "ab99ef00", "c0ffee11", "x_1", "xy2"):
        store.create_task(created(), task_id=task_id)

    assert store.resolve("ab1") == "ab12cd34"
    assert store.resolve("c") == "c0ffee11"
    assert store.resolve("ab99ef00") == "ab99ef00"  # a whole id is its own prefix

    with pytest.raises(TaskNotFound) as unknown:
        store.resolve("dead")
    assert "'dead'" in str(unknown.value)
    assert "agent tasks" in str(unknown.value)  # says where to look

    with pytest.raises(TaskNotFound) as ambiguous:
        store.resolve("ab")
    assert "more than one" in str(ambiguous.value)
    assert "'ab'" in str(ambiguous.value)

    # LIKE's wildcards are characters of the id here, not patterns.
    assert store.resolve("x_") == "x_1"
    with pytest.raises(TaskNotFound, match="no task id starts with '_'"):
        store.resolve("_")
    with pytest.raises(TaskNotFound, match="no task id starts with '%1'"):
        store.resolve("%1")


# --- conflicting writes ------------------------------------------------------------------------


def test_append_after_a_moved_log_writes_nothing(db: Path) -> None:
    with Store.open(db) as mine, Store.open(db) as theirs:
        task_id = mine.create_task(created())
        assert mine.append(task_id, awaiting_log(task_id)[:2]) == 3
        before = mine.events(task_id)

        # another writer appends first
        assert theirs.append(task_id, [ReplyRejected(error="theirs")], after=3) == 4

        stale: list[Event] = [
            ReplanRequested(reason="mine"),
            TaskPaused(reason="interrupted", detail=""),
        ]
        with pytest.raises(ConflictingWrite) as info:
            mine.append(task_id, stale, after=3)
        assert info.value.retryable
        assert info.value.context["task_id"] == task_id

        after = mine.events(task_id)
        assert len(after) == len(before) + 1  # theirs only: not even the first of mine
        assert [e.event for e in after[:-1]] == [e.event for e in before]
        assert after[-1].event == ReplyRejected(error="theirs")
        assert mine.task(task_id).status == "running"  # the paused in the batch left no trace

        # the failed append left no transaction open: the writer carries on
        assert mine.append(task_id, stale, after=4) == 6
        assert theirs.task(task_id).status == "paused"


def test_append_after_a_seq_the_log_has_not_reached_writes_nothing(store: Store) -> None:
    task_id = store.create_task(created())
    store.append(task_id, [ReplanRequested(reason="one")])
    with pytest.raises(ConflictingWrite):
        store.append(task_id, [ReplanRequested(reason="gap")], after=5)
    assert [e.seq for e in store.events(task_id)] == [1, 2]  # no seq 6 after a hole


def test_append_to_an_unknown_task_raises_and_writes_nothing(store: Store) -> None:
    with pytest.raises(TaskNotFound) as info:
        store.append("nope", [ReplanRequested(reason="x")])
    assert info.value.context["task_id"] == "nope"
    with pytest.raises(StoreError):  # with `after`, too (TaskNotFound or ConflictingWrite)
        store.append("nope", [ReplanRequested(reason="x")], after=0)
    with pytest.raises(TaskNotFound):
        store.events("nope")
    assert store.tasks() == []


# --- several processes -------------------------------------------------------------------------


def test_four_processes_appending_at_once_lose_and_repeat_nothing(db: Path) -> None:
    writers, each = 4, 200
    with Store.open(db) as store:
        task_id = store.create_task(created())

    returned = run_together([(_append_singles, (db, task_id, w, each)) for w in range(writers)])

    all_returned = sorted(seq for seqs in returned for seq in seqs)
    assert all_returned == list(range(2, writers * each + 2))  # each seq handed out once
    with Store.open(db) as store:
        events = store.events(task_id)
        assert [e.seq for e in events] == list(range(1, writers * each + 2))
        by_seq = {e.seq: e.event for e in events}
        for w, seqs in enumerate(returned):
            assert seqs == sorted(seqs)  # a writer's own appends keep their order
            for i, seq in enumerate(seqs):
                assert by_seq[seq] == ReplanRequested(reason=f"w{w} #{i}")
        assert load(store, task_id).last_seq == writers * each + 1


def test_a_reader_never_sees_part_of_a_batch(db: Path) -> None:
    writers, each = 2, 150
    total = 1 + writers * each * 3
    with Store.open(db) as store:
        task_id = store.create_task(created())

    *counts, seen = run_together(
        [(_append_batches, (db, task_id, w, each)) for w in range(writers)]
        + [(_fold_until, (db, task_id, total))]
    )

    assert counts == [each] * writers
    assert seen[-1] == total
    assert seen == sorted(seen)  # the log only grows
    assert any(1 < n < total for n in seen), f"the reader never overlapped the writers: {seen}"


# --- leases ------------------------------------------------------------------------------------


def test_a_live_holder_makes_others_busy_until_it_is_killed(db: Path) -> None:
    with Store.open(db) as store:
        task_id = store.create_task(created())
        held, release = SPAWN.Event(), SPAWN.Event()
        holder = SPAWN.Process(target=_hold_lease, args=(db, task_id, held, release))
        holder.start()
        try:
            assert held.wait(30)
            assert holder.pid is not None
            assert lease_rows(db) == [(task_id, holder.pid)]

            with pytest.raises(TaskBusy) as info, store.lease(task_id):
                pass
            assert info.value.context["pid"] == holder.pid
            assert f"process {holder.pid}" in str(info.value)
            assert info.value.retryable
            assert lease_rows(db) == [(task_id, holder.pid)]  # a refusal changes nothing

            os.kill(holder.pid, signal.SIGKILL)
            # Wait for it to die but do not reap it: a zombie is dead, and holds nothing.
            os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)
            started = time.monotonic()
            with store.lease(task_id):
                assert lease_rows(db) == [(task_id, os.getpid())]
            assert time.monotonic() - started < 1.0  # taken over at once, no waiting
            assert lease_rows(db) == []
        finally:
            holder.kill()
            holder.join()
        assert holder.exitcode == -signal.SIGKILL


def test_a_lease_is_released_on_normal_exit(db: Path) -> None:
    with Store.open(db) as store:
        task_id = store.create_task(created())
    held, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lease, args=(db, task_id, held, release))
    holder.start()
    assert held.wait(30)
    assert holder.pid is not None
    assert lease_rows(db) == [(task_id, holder.pid)]
    release.set()
    holder.join(30)
    assert holder.exitcode == 0
    assert lease_rows(db) == []
    [(outcome, pid, _)] = run_together([(_try_lease, (db, task_id))])
    assert outcome == "taken"
    assert pid != holder.pid


def test_the_same_process_reenters_and_others_are_refused_meanwhile(db: Path) -> None:
    with Store.open(db) as store:
        task_id = store.create_task(created())
        other = store.create_task(created())
        with store.lease(task_id):
            [(outcome, pid, message)] = run_together([(_try_lease, (db, task_id))])
            assert (outcome, pid) == ("busy", os.getpid())
            assert f"process {os.getpid()} on {socket.gethostname()}" in message
            [(outcome, _, _)] = run_together([(_try_lease, (db, other))])
            assert outcome == "taken"  # a lease is per task
        with store.lease(task_id):  # again, sequentially
            assert lease_rows(db) == [(task_id, os.getpid())]
        with pytest.raises(RuntimeError), store.lease(task_id):
            raise RuntimeError("the run failed")
        assert lease_rows(db) == []  # released when the body raised, too


def test_a_lease_row_of_a_reused_pid_or_another_host(db: Path) -> None:
    with Store.open(db) as store:
        task_id = store.create_task(created())
        # The parent process is alive, but it started at another time than the row says: the
        # pid was reused, and the holder it named is gone.
        with sqlite3.connect(db) as raw:
            raw.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?)",
                (task_id, socket.gethostname(), os.getppid(), "1", time.time()),
            )
        with store.lease(task_id):
            assert lease_rows(db) == [(task_id, os.getpid())]

        # A process on another machine cannot be checked: it is taken to be alive.
        with sqlite3.connect(db) as raw:
            raw.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?)",
                (task_id, "elsewhere.example", 4242, "1", time.time()),
            )
        with (
            pytest.raises(TaskBusy, match=r"process 4242 on elsewhere\.example"),
            store.lease(task_id),
        ):
            pass


# --- durability --------------------------------------------------------------------------------


def test_kill_9_mid_append_leaves_a_log_of_whole_batches(db: Path) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")) or None)
    with Store.open(db) as store:
        task_id = store.create_task(created())
    for _ in range(3):
        committed = SPAWN.Value("q", 0, lock=False)  # no lock: its holder is about to be killed
        started = SPAWN.Event()
        child = SPAWN.Process(target=_append_forever, args=(db, task_id, committed, started))
        child.start()
        assert started.wait(30)
        time.sleep(rng.uniform(0.0, 0.2))
        child.kill()
        child.join()
        assert child.exitcode == -signal.SIGKILL

        with Store.open(db) as store:
            events = store.events(task_id)
            n = len(events)
            assert [e.seq for e in events] == list(range(1, n + 1))
            assert (n - 1) % 3 == 0, f"the log ends inside a batch: {n} events"
            assert n >= committed.value  # every append that returned survived
            state = load(store, task_id)
            assert state.turns == state.input_tokens == (n - 1) // 3
            assert state.replan_reason is not None
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- opening -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["parent is a file", "path is a directory", "not a database"])
def test_open_on_an_unusable_path_raises_store_error(tmp_path: Path, case: str) -> None:
    if case == "parent is a file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "events.db"
    elif case == "path is a directory":
        path = tmp_path / "events.db"
        path.mkdir()
    else:
        path = tmp_path / "events.db"
        path.write_bytes(b"this is not SQLite, " * 100)

    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert type(info.value) is StoreError
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, (OSError, sqlite3.Error))


def test_open_creates_the_directory_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.db"
    with Store.open(path, synchronous="full") as store:
        task_id = store.create_task(created())
    with Store.open(path) as store:
        assert store.task(task_id).status == "running"
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- approvals ---------------------------------------------------------------------------------


def test_decide_refuses_when_nothing_waits(store: Store) -> None:
    task_id = store.create_task(created())
    store.append(task_id, awaiting_log(task_id)[:4])  # an act turn, not yet gated
    state = load(store, task_id)
    with pytest.raises(NothingToApprove) as info:
        decide(store, state, Seen(f"{task_id}-2.0", "0" * 8), approved=True)
    assert "running" in str(info.value)
    assert info.value.context["task_id"] == task_id
    assert len(store.events(task_id)) == 5  # nothing recorded


@pytest.mark.parametrize("approved", [True, False])
def test_decide_records_the_decision(store: Store, approved: bool) -> None:
    task_id = store.create_task(created())
    store.append(task_id, awaiting_log(task_id))
    state = load(store, task_id)
    assert state.status == "awaiting_approval"
    assert store.task(task_id).status == "awaiting_approval"

    state_before = load(store, task_id)
    decision = decide(
        store, state, pending(state), approved=approved, reason="not on a Friday", reviewer="sam"
    )

    expected = ApprovalDecided(
        approval_id=f"{task_id}-2.0",
        call_hash=pending(state_before).call_hash,
        approved=approved,
        reason="not on a Friday",
        reviewer="sam",
    )
    assert decision == expected
    last = store.events(task_id)[-1]
    assert (last.seq, last.event) == (8, expected)
    assert store.task(task_id).status == "running"
    # the state it was given moved on with the log, as a fold of the log would
    again = load(store, task_id)
    assert (state.status, state.last_seq) == (again.status, again.last_seq) == ("running", 8)
    assert state.awaiting is None
    call = again.calls["2.0"]
    assert call.decision == expected
    if approved:
        assert call.observation is None  # to be executed
    else:
        assert call.observation == "Error: a reviewer declined this call: not on a Friday"

    with pytest.raises(NothingToApprove, match=r"it was (approved|denied) by sam"):  # once
        decide(store, again, Seen.of(pending(state_before)), approved=True)
    assert len(store.events(task_id)) == 8


def test_decide_on_a_stale_state_raises_and_records_nothing(db: Path) -> None:
    with Store.open(db) as mine, Store.open(db) as theirs:
        task_id = mine.create_task(created())
        mine.append(task_id, awaiting_log(task_id))
        stale = load(mine, task_id)

        decide(theirs, load(theirs, task_id), pending(stale), approved=True, reviewer="sam")

        with pytest.raises(ConflictingWrite):
            decide(mine, stale, pending(stale), approved=False, reason="no", reviewer="kim")
        decisions = [e.event for e in mine.events(task_id) if e.event.kind == "approval_decided"]
        assert decisions == [
            ApprovalDecided(
                approval_id=f"{task_id}-2.0",
                call_hash=pending(stale).call_hash,
                approved=True,
                reviewer="sam",
            )
        ]
        assert stale.last_seq == 7  # not advanced
        assert stale.awaiting is not None


# --- fold and apply ----------------------------------------------------------------------------


def whole_run(task_id: str) -> list[list[Event]]:
    """A two-step task, batch by batch as a runner would append it: a call allowed, a call that
    waits for a reviewer, a rejected reply, a pause and resume, and the answer."""
    deploy_args = '{"service": "signup"}'
    return [
        [plan_response(["Create Dana", "Deploy signup"], tokens=(700, 50))],
        [
            PlanProposed(steps=("Create Dana", "Deploy signup")),
            StepStarted(index=0, title="Create Dana"),
        ],
        [act_response(("forms.fill", '{"name": "Dana"}'), tokens=(1000, 20))],
        [
            GateDecided(
                ref="2.0",
                tool="forms.fill",
                arguments={"name": "Dana"},
                call_hash="a" * 64,
                verdict="allow",
                reason="",
            ),
            IntentRecorded(ref="2.0", call_hash="a" * 64, idempotency_key="k1"),
        ],
        [ToolResulted(ref="2.0", ok=True, content="user 42 created", seconds=0.3)],
        [act_response(tokens=(1100, 10), text="I think it is done.")],
        [ReplyRejected(error="the reply had no tool call")],
        [act_response(("complete_step", '{"summary": "Dana is user 42"}'), tokens=(1200, 15))],
        [
            StepFinished(index=0, summary="Dana is user 42"),
            StepStarted(index=1, title="Deploy signup"),
        ],
        [act_response(("deploy", deploy_args), ("http.get", '{"url": "/health"}'))],
        [
            GateDecided(
                ref="5.0",
                tool="deploy",
                arguments={"service": "signup"},
                call_hash="b" * 64,
                verdict="ask",
                reason="deploys need a reviewer",
            ),
            ApprovalRequested(
                approval_id=f"{task_id}-5.0",
                ref="5.0",
                call_hash="b" * 64,
                reason="deploys need a reviewer",
                preview="deploy signup",
            ),
        ],
        [ApprovalDecided(approval_id=f"{task_id}-5.0", approved=True, reviewer="sam")],
        [
            IntentRecorded(
                ref="5.0", call_hash="b" * 64, idempotency_key="k2", approval_id=f"{task_id}-5.0"
            )
        ],
        [TaskPaused(reason="interrupted", detail="Ctrl-C")],
        [TaskResumed()],
        [ToolResulted(ref="5.0", ok=True, content="deployed signup v7", recovery="reconciled")],
        [
            GateDecided(
                ref="5.1",
                tool="http.get",
                arguments={"url": "/health"},
                call_hash="c" * 64,
                verdict="deny",
                reason="no raw HTTP",
            )
        ],
        [act_response(("complete_step", '{"summary": "signup v7 is healthy"}'))],
        [
            StepFinished(index=1, summary="signup v7 is healthy"),
            TaskFinished(answer="Dana is user 42; signup v7 is deployed and healthy"),
        ],
    ]


def snapshot(state: TaskState) -> tuple[object, ...]:
    awaiting = state.awaiting
    return (
        state.status,
        state.plan,
        state.step,
        tuple(state.completed),
        state.steps_taken,
        state.turns,
        state.input_tokens,
        state.output_tokens,
        round(state.cost_usd, 9),
        state.answer,
        state.last_seq,
        awaiting.ref if awaiting is not None else None,
        frozenset(state.used_approvals),
        state.pause,
        state.observations,
    )


def test_fold_of_the_log_equals_the_state_applied_as_it_was_written(store: Store) -> None:
    first = created()
    task_id = store.create_task(first)
    live = TaskState(task_id)
    live.apply(first, 1)
    along: list[tuple[object, ...]] = [snapshot(live)]
    for events in whole_run(task_id):
        last = store.append(task_id, events, after=live.last_seq)
        for event in events:
            live.apply(event, live.last_seq + 1)
            along.append(snapshot(live))
        assert live.last_seq == last
        assert load(store, task_id).status == store.task(task_id).status == live.status

    stored = store.events(task_id)
    pairs = [(e.seq, e.event) for e in stored]
    assert snapshot(TaskState.fold(task_id, pairs)) == snapshot(live)
    # every prefix of the log folds to the state the runner had at that point
    assert [snapshot(TaskState.fold(task_id, pairs[:k])) for k in range(1, len(pairs) + 1)] == (
        along
    )

    # and the state is the one the run describes, not merely self-consistent
    assert live.status == "done"
    assert live.plan == ("Create Dana", "Deploy signup")
    assert live.completed == [
        ("Create Dana", "Dana is user 42"),
        ("Deploy signup", "signup v7 is healthy"),
    ]
    assert live.step == 2
    assert live.steps_taken == 5
    assert live.turns == 6
    assert (live.input_tokens, live.output_tokens) == (
        700 + 1000 + 1100 + 1200 + 2 * 1200,
        50 + 20 + 10 + 15 + 2 * 30,
    )
    assert live.answer == "Dana is user 42; signup v7 is deployed and healthy"
    assert live.used_approvals == {f"{task_id}-5.0"}
    assert live.pause is None
    assert live.last_seq == len(stored) == 25


def test_sqlite_failures_are_store_errors_with_retryable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with Store.open(path, busy_timeout=0.2) as store:
        task_id = store.create_task(created())
        with pytest.raises(StoreError) as duplicate:
            store.create_task(created(), task_id=task_id)
        assert duplicate.value.code == "store_integrity"

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
        try:
            with pytest.raises(StoreError) as locked:
                store.append(task_id, [TaskResumed()])
            assert locked.value.retryable
            assert "another process holds it" in str(locked.value)
            with pytest.raises(StoreError):
                store.create_task(created())
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.append(task_id, [TaskResumed()]) == 2, "usable again once the lock is gone"
