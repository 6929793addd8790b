"""What reviewers wait for: a decision made through the HTTP API until its action starts, with a
worker running; listing the inbox with 10,000 requests waiting; verifying an audit log of
100,000 entries.

The decision is timed from the moment its POST is sent to the moment the approved call's intent
is in the store (the worker, polling every 50 ms, has taken the task, built its runner, judged
the call again and is about to run it), over ROUNDS tasks, each made waiting first by `agent run`.

The store is made first (10,000 tasks, each with 10 audited events, the last a request for
approval: 100,000 entries), and nothing else runs while it is timed. The issue's goals are times
(50 ms, 2 s); each is printed as the median time over the budget, and set beside a reference
measured in the same run doing the least the same answer needs: for the inbox, one plain query
of the same rows from the log (an indexed read of each task's last request, no join, no
filter); for the audit, hashing the same bodies and nothing more (no reads, no checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
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
ACTION_BUDGET = 0.100
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "counted"},
]


def decision_to_action() -> float:
    """The median time from a decision's POST to its call's intent, with a worker running."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {**os.environ, "AGENT_HOME": str(home), "PYTHONPATH": str(ROOT)}
        agent = [sys.executable, "-m", "frontends.cli"]
        script = home / "script.json"
        script.write_text(json.dumps(SCRIPT))
        made = subprocess.run(
            [*agent, "reviewers", "add", "bench", "--json"],
            env=env,
            capture_output=True,
            check=True,
        )
        token = json.loads(made.stdout)["token"]
        port = _free_port()
        serve = subprocess.Popen(
            [*agent, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        worker = subprocess.Popen([*agent, "worker"], env=env, stdout=subprocess.DEVNULL)
        took: list[float] = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
                _until_up(api, token)
                for _ in range(ROUNDS):
                    run = [*agent, "run", "--model", f"scripted:{script}", "--tools"]
                    run += [str(ROOT / "examples" / "tally_tool.py"), "--json", "Count a visitor"]
                    stopped = subprocess.run(run, env=env, capture_output=True, check=False)
                    task = json.loads(stopped.stdout.splitlines()[-1])["task_id"]
                    request = json.loads(stopped.stdout.splitlines()[-1])["pending_approval"]
                    with Store.open(home / "events.db") as store:
                        started = time.perf_counter()
                        answer = api.post(
                            f"/api/requests/{request['approval_id']}/decision",
                            headers={"Authorization": f"Bearer {token}"},
                            json={"approved": True, "call_hash": request["call_hash"]},
                        )
                        assert answer.status_code == 200, answer.text
                        while not any(e.event.kind == "intent" for e in store.events(task)):
                            time.sleep(0.002)
                        took.append(time.perf_counter() - started)
        finally:
            for process in (serve, worker):
                process.terminate()
                process.wait(30)
    print("decision to action, each: " + ", ".join(f"{t * 1e3:.0f} ms" for t in took))
    return statistics.median(took)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _until_up(api: httpx.Client, token: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            api.get("/api/requests", headers={"Authorization": f"Bearer {token}"})
            return
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
    action = decision_to_action()
    print(f"decision to action with a worker: median {action * 1e3:.0f} ms")
    goals = Goals()
    print(goals.add("decision_to_action_vs_100ms", action / ACTION_BUDGET, "<= 1.0x"))
    print(goals.add("inbox_list_10k_vs_50ms", inbox / INBOX_BUDGET, "<= 1.0x"))
    print(goals.add("audit_verify_100k_vs_2s", verify / VERIFY_BUDGET, "<= 1.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
