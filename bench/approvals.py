"""What reviewers wait for: listing the inbox with 10,000 requests waiting, and verifying an audit
log of 100,000 entries.

The store is made first (10,000 tasks, each with 10 audited events, the last a request for
approval: 100,000 entries), and nothing else runs while it is timed. The issue's goals are times
(50 ms, 2 s); each is printed as the median time over the budget, and set beside a reference
measured in the same run doing the least the same answer needs: for the inbox, one plain query
of the same rows from the log (an indexed read of each task's last request, no join, no
filter); for the audit, hashing the same bodies and nothing more (no reads, no checks).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _goals import Goals, machine

from agent import audit
from agent.events import ApprovalRequested, GateDecided, Limits, TaskCreated
from agent.inbox import waiting
from agent.store import Store

TASKS = 10_000
#: audited events per task besides its start and its request: 10 in all
MORE = 8
ROUNDS = 7
INBOX_BUDGET = 0.050
VERIFY_BUDGET = 2.0


def fill(store: Store) -> None:
    """TASKS tasks, each waiting for a reviewer, with 10 audited events each."""
    limits = Limits()
    for number in range(TASKS):
        task = store.create_task(TaskCreated(task=f"task {number}", model="m", limits=limits))
        gate = GateDecided(
            ref="1.0",
            tool="http_request",
            arguments={"url": f"https://api.example.com/items/{number}", "method": "POST"},
            call_hash=hashlib.sha256(str(number).encode()).hexdigest(),
            verdict="ask",
            reason="this call has effects outside the task",
            rule="default.toml:196",
        )
        asked = ApprovalRequested(
            approval_id=f"{task}-1.0",
            ref="1.0",
            call_hash=gate.call_hash,
            reason=gate.reason,
            preview=f"POST https://api.example.com/items/{number}",
            tool="http_request",
            rule=gate.rule,
            risk="external",
        )
        store.append(task, [gate] * MORE + [asked], after=1)


def timed(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    """The median time of `work()` over `rounds`."""
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def main() -> None:
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "events.db") as store:
        started = time.perf_counter()
        fill(store)
        db = store.reader()
        print(
            f"store: {TASKS} tasks waiting, {audit.head(db).n} audit entries "
            f"(made in {time.perf_counter() - started:.1f} s)"
        )
        assert len(waiting(db)) == TASKS
        inbox = timed(lambda: waiting(db))
        plain = timed(
            lambda: db.execute(
                "SELECT task_id, seq, ts, body FROM events WHERE kind = 'approval_requested'"
            ).fetchall()
        )
        assert audit.verify(db).ok
        verify = timed(lambda: audit.verify(db), rounds=3)
        bodies = [b for (b,) in db.execute("SELECT body FROM events")]
        hashing = timed(lambda: [hashlib.sha256(b.encode()).hexdigest() for b in bodies], rounds=3)
    print(
        f"inbox list of {TASKS}: {inbox * 1e3:.1f} ms; for context: a plain scan of the log for "
        f"the same requests {plain * 1e3:.1f} ms ({inbox / plain:.2f}x)"
    )
    print(
        f"audit verify of {TASKS * (MORE + 2)} entries: {verify:.2f} s; for context: hashing "
        f"the same bodies alone {hashing:.2f} s ({verify / hashing:.2f}x)"
    )
    print("not measured yet: a decision to its action with a worker (no worker or HTTP API yet)")
    goals = Goals()
    print(goals.add("inbox_list_10k_vs_50ms", inbox / INBOX_BUDGET, "<= 1.0x"))
    print(goals.add("audit_verify_100k_vs_2s", verify / VERIFY_BUDGET, "<= 1.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
