"""The event store on PostgreSQL (`AGENT_STORE_URL`), which workers on many hosts share: the
same log, inbox, audit chain, reviewers, outbox and relay as SQLite's, several processes
appending at once, a server that restarts under it, and what a bad URL or an absent server
says. Against a real PostgreSQL server of the tests' own, on loopback."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from agent import audit, inbox, relay, reviewers
from agent._postgres import WRITE_LOCK
from agent._process import process_start
from agent.approvals import decide
from agent.events import ReplanRequested
from agent.live import CommandOutput
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError, ConflictingWrite, StoreError, TaskBusy, TaskNotFound
from frontends.doctor import _check_store

from .conftest import REPO, pending
from .postgres import Server, postgres, rows, shared_url
from .temporal_env import agent as command
from .temporal_env import agent_env
from .test_store import awaiting_log, batch, created, one_of_each

__all__ = ["postgres", "shared_url"]  # fixtures, used by name

QUICKSTART = REPO / "examples" / "quickstart.json"


def test_the_log_round_trips_lists_and_refuses_a_moved_append(shared_url: str) -> None:
    with Store.open() as store, Store.open() as theirs:
        assert store.shared is not None
        assert store.location == store.shared
        task_id = store.create_task(created())
        other = store.create_task(created("another"), task_id="abc123")
        last = store.append(task_id, one_of_each())
        events = [e.event for e in theirs.events(task_id)]  # another connection reads it
        assert events == [created(), *one_of_each()]
        assert len(events) == last
        assert [row.id for row in store.tasks()] == [other, task_id]  # newest first
        assert store.resolve("abc") == other
        theirs.append(task_id, batch(0), after=last)
        with pytest.raises(ConflictingWrite):  # its log moved on under it: nothing written
            store.append(task_id, batch(1), after=last)
        assert len(store.events(task_id)) == last + 3
        with pytest.raises(TaskNotFound):
            store.events("nope")
        assert store.check() == "ok"
    # The tables are the store's, with no file beside it.
    assert rows(shared_url, "SELECT COUNT(*) FROM events")[0][0] == last + 4


def _append(url: str, task_id: str, writer: int, n: int) -> None:
    os.environ["AGENT_STORE_URL"] = url
    with Store.open() as store:
        for i in range(n):
            for _ in range(100):  # a busy store is a retryable failure: try again
                try:
                    store.append(task_id, batch(writer * 1000 + i))
                    break
                except StoreError as exc:
                    if not exc.retryable:
                        raise


def test_four_processes_appending_at_once_lose_and_repeat_nothing(shared_url: str) -> None:
    with Store.open() as store:
        task_id = store.create_task(created())
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_append, args=(shared_url, task_id, w, 25)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    with Store.open() as store:
        seqs = [e.seq for e in store.events(task_id)]
        assert seqs == list(range(1, 1 + 1 + 4 * 25 * 3))  # no gap, no repeat
        events = [e.event for e in store.events(task_id)]
        reasons = [e.reason for e in events if isinstance(e, ReplanRequested)]
        assert len(reasons) == len(set(reasons)) == 100
        assert audit.verify(store.reader()).ok  # one chain, in the order the store took them


def test_a_lease_held_by_a_live_process_makes_others_busy(shared_url: str) -> None:
    with Store.open() as store:
        task_id = store.create_task(created())
        with store.lease(task_id):
            (host, pid) = rows(shared_url, "SELECT host, pid FROM leases")[0]
            assert pid == os.getpid()
        assert rows(shared_url, "SELECT COUNT(*) FROM leases")[0][0] == 0
        started = process_start(1)
        rows(shared_url, "INSERT INTO leases VALUES (%s, %s, 1, %s, 0)", task_id, host, started)
        with pytest.raises(TaskBusy), store.lease(task_id):  # pid 1 lives, and is not us
            pass


def test_a_request_is_listed_decided_audited_and_announced(shared_url: str) -> None:
    with Store.open() as store:
        task_id = store.create_task(created())
        store.append(task_id, awaiting_log(task_id))
        db = store.reader()
        [waiting] = inbox.waiting(db)
        assert (waiting.approval_id, waiting.preview) == (f"{task_id}-2.0", "deploy signup@staging")
        before = inbox.marker(db)
        state = TaskState.from_store(store, task_id)
        decide(store, state, pending(state), approved=True, reviewer="sam")
        assert inbox.waiting(db) == []
        assert inbox.marker(db) != before
        described = inbox.describe(db, waiting.approval_id)
        assert described is not None
        assert (described["approved"], described["reviewer"]) == (True, "sam")
        assert "rowid" not in described
        outbox = rows(shared_url, "SELECT event FROM outbox ORDER BY n")
        assert outbox == [("approval.requested",), ("approval.decided",)]
        token = reviewers.add(store.reader(), "ana")
        assert reviewers.who(store.reader(), token) == "ana"
        verdict = audit.verify(store.reader())
        assert verdict.ok
        assert verdict.entries > 0
    # Positive control: an event changed from outside is found, as on SQLite.
    rows(
        shared_url,
        "UPDATE events SET body = replace(body, 'deploy signup', 'deploy billing') "
        "WHERE task_id = %s AND kind = 'approval_requested'",
        task_id,
    )
    with Store.open() as store:
        verdict = audit.verify(store.reader())
        assert not verdict.ok
        assert "changed" in str(verdict.problem)


def test_the_live_relay_reads_with_the_log_at_one_moment(shared_url: str) -> None:
    with Store.open() as store:
        task_id = store.create_task(created())
        start = relay.mark(store)
        assert start == 0  # nothing relayed yet: no table, no failure
        told, _ = relay.together(store, task_id, after=0, mark=0)  # a read past a failed SELECT
        assert [getattr(t, "seq", "item") for t in told] == [1]
        piped = relay.Relay(store, after=1)
        piped(CommandOutput(task_id, "stdout", "one\n", "command"))
        piped.flush()
        store.append(task_id, batch(0))
        told, mark = relay.together(store, task_id, after=0, mark=start)
        assert [getattr(t, "seq", "item") for t in told] == [1, "item", 2, 3, 4]
        assert mark > start


def test_a_server_restart_is_a_retryable_failure_then_the_store_goes_on(
    postgres: Server, shared_url: str
) -> None:
    with Store.open() as store:
        task_id = store.create_task(created())
        postgres.stop()
        try:
            with pytest.raises(StoreError) as lost:
                store.append(task_id, batch(0))
            assert lost.value.retryable
            assert "did not answer" in str(lost.value)
        finally:
            postgres.start()
        assert store.append(task_id, batch(1)) == 4  # a new connection; nothing half written
        assert [e.seq for e in store.events(task_id)] == [1, 2, 3, 4]


def test_a_bad_url_or_an_absent_server_says_so(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AGENT_STORE_URL", "mysql://db/agent")
    with pytest.raises(ConfigError, match="must be a PostgreSQL URL"):
        Store.open()
    # a port nothing listens on (this machine's discard port): the password is not repeated
    monkeypatch.setenv("AGENT_STORE_URL", "postgresql://agent:s3cret@127.0.0.1:9/agent")
    with pytest.raises(StoreError) as absent:
        Store.open()
    said = str(absent.value)
    assert "agent:***@127.0.0.1:9" in said
    assert "s3cret" not in said
    assert absent.value.retryable
    doctor = _check_store()
    assert not doctor.ok
    assert "s3cret" not in doctor.detail
    assert doctor.fix is not None
    assert "AGENT_STORE_URL" in doctor.fix
    # A path given is a SQLite file, whatever the environment says.
    with Store.open(home / "events.db") as store:
        assert store.shared is None


def test_the_doctor_names_the_shared_store_it_reached(shared_url: str) -> None:
    with Store.open() as store:
        store.create_task(created())
    doctor = _check_store()
    assert doctor.ok
    assert doctor.detail == f"{shared_url} (shared; 1 tasks)"


def test_a_task_run_in_one_home_is_approved_and_shown_from_others(
    shared_url: str, tmp_path: Path
) -> None:
    """Three homes with nothing on disk in common, as three hosts: one runs the quickstart,
    another approves its requests, a third lists and shows it."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[tools]\nmodules = ["{REPO / "examples" / "tally_tool.py"}"]\n')
    runner, reviewer, reader = (agent_env(tmp_path / name) for name in ("a", "b", "c"))
    ran = command(config, runner, "run", "--model", f"scripted:{QUICKSTART}", "count visitors")
    assert ran.returncode == 3, ran.stderr  # waiting for a reviewer
    for _ in range(2):
        with Store.open() as store:
            task_id = store.tasks(limit=1)[0].id
            request = pending(TaskState.from_store(store, task_id))
        approved = command(
            config, reviewer, "approve", task_id, request.approval_id, request.short_hash
        )
        assert approved.returncode in (0, 3), approved.stderr
    shown = command(config, reader, "show", task_id)
    assert shown.returncode == 0, shown.stderr
    with Store.open() as store:
        assert store.task(task_id).status == "done"
    assert not (tmp_path / "a" / "events.db").exists()
    assert not (tmp_path / "b" / "events.db").exists()


def _write_past_a_failure(store: Store) -> None:
    """A write transaction in which one statement fails, caught, and another succeeds."""
    with store.writing() as db:
        db.execute("INSERT INTO reviewers VALUES ('ana', 'h', 0, NULL)")
        with contextlib.suppress(sqlite3.Error):
            db.execute("SELECT * FROM no_such_table")


def test_what_the_review_found_holds_on_postgresql(shared_url: str) -> None:
    """A NUL in an event, a transaction a failed statement aborted, a connection the server
    dropped while idle, a reader while a writer holds the lock, an id typed in capitals."""
    with Store.open() as store:
        task_id = store.create_task(created())
        store.append(task_id, [ReplanRequested(reason="binary \x00 output")])
        assert audit.verify(store.reader()).ok  # PostgreSQL's JSON refuses a NUL: not used
        with pytest.raises(StoreError, match="rolled back"):
            _write_past_a_failure(store)
        assert rows(shared_url, "SELECT COUNT(*) FROM reviewers")[0][0] == 0  # none kept
        rows(
            shared_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'agent' AND pid <> pg_backend_pid()",
        )
        assert len(store.events(task_id)) == 2  # connected again, asked again
        assert store.resolve(task_id[:4].upper()) == task_id
    with psycopg.connect(shared_url, autocommit=True) as writer:
        writer.execute("BEGIN")
        writer.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (WRITE_LOCK,)
        )
        with Store.open(read_only=True, busy_timeout=1) as reader:  # takes no lock to read
            assert [t.id for t in reader.tasks()] == [task_id]
        with pytest.raises(StoreError) as busy:
            Store.open(busy_timeout=1).append(task_id, batch(0))
        assert busy.value.retryable
        writer.execute("ROLLBACK")
