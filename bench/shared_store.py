"""The shared store's figures: appends a second to a PostgreSQL store (the one workers on many
hosts share, `AGENT_STORE_URL`) against the SQLite store, under the same conditions.

Each writer is a process of its own that appends a call's turn (the gate's decision and the
result, both audited) 400 times
to its own task, the writers started together: 1 writer, then 4. The PostgreSQL server is one
of the tests' own, on this machine (loopback; `fsync=off`, as SQLite's default `normal` does not
wait for the disk either); it shares the machine's cores with the writers, as SQLite's writers
share them with nothing. Median of 3 rounds. There is no goal: the figures say what bounds a
cluster's events per second (docs/scaling.md), and are printed for context.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from _goals import Goals, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.events import Event, GateDecided, Limits, TaskCreated, ToolResulted
from agent.store import STORE_URL, Store
from tests.postgres import Server

APPENDS = 400
ROUNDS = 3


def _turn(n: int) -> list[Event]:
    """A read-only call's turn as the runner appends it: the gate's decision, then the
    result (both audited: each adds an entry to the audit chain)."""
    ref = f"{n}.0"
    return [
        GateDecided(
            ref=ref,
            tool="read_file",
            arguments={"path": f"notes/{n}.txt"},
            call_hash="3f" * 32,
            verdict="allow",
            reason="reads are allowed",
        ),
        ToolResulted(ref=ref, ok=True, content=f"note {n}"),
    ]


def _open(where: str) -> Store:
    if where.startswith("postgresql://"):
        os.environ[STORE_URL] = where
        return Store.open()
    os.environ.pop(STORE_URL, None)
    return Store.open(Path(where))


def _writer(where: str, task_id: str, ready: Barrier, done: Queue[float]) -> None:
    with _open(where) as store:
        ready.wait()  # all connected: the clock starts for every writer at once
        started = time.perf_counter()
        for n in range(APPENDS):
            store.append(task_id, _turn(n))
        done.put(time.perf_counter() - started)


def appends_per_second(where: str, writers: int) -> float:
    """Appends a second of `writers` processes appending at once to the store at `where`."""
    with _open(where) as store:
        created = TaskCreated(task="bench", model="scripted", limits=Limits())
        tasks = [store.create_task(created) for _ in range(writers)]
    spawn = multiprocessing.get_context("spawn")
    done: Queue[float] = spawn.Queue()
    ready = spawn.Barrier(writers)
    processes = [spawn.Process(target=_writer, args=(where, t, ready, done)) for t in tasks]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a writer failed (exit {process.exitcode})")
    slowest = max(done.get() for _ in processes)  # the writers ran together: the last one ends it
    return writers * APPENDS / slowest


def main() -> None:
    print(machine())
    goals = Goals()
    with (
        tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="agent-pg-") as pg,
    ):
        server = Server(Path(pg))
        try:
            for writers in (1, 4):
                shared, local = [], []
                for n in range(ROUNDS):
                    shared.append(appends_per_second(server.schema(), writers))
                    local.append(appends_per_second(f"{tmp}/{writers}-{n}.db", writers))
                on_pg, on_sqlite = statistics.median(shared), statistics.median(local)
                print(
                    f"{writers} writer(s), {APPENDS} appends each, median of {ROUNDS}: "
                    f"PostgreSQL {on_pg:.0f} appends/s, SQLite {on_sqlite:.0f} appends/s"
                )
                print(
                    f"appends_postgres_vs_sqlite_{writers}: {on_pg / on_sqlite:.2f}x (for context)"
                )
        finally:
            server.stop()
    goals.finish()


if __name__ == "__main__":
    main()
